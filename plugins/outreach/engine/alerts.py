"""Account health alerts: an account whose recent sends fail too often is paused, with an ALERT event.

Failure rate = (FAILED + BOUNCED events of the account) / (its last ``window`` ATTEMPTED events), counting only
what happened after the account's previous alert (so an account resumed by an operator starts afresh) and only
once at least ``min_attempts`` attempts are in the window. Above ``failure_rate`` the account is set PAUSED and an
``ALERT`` event (reason ``failure_rate``) is written, in one statement: two overlapping checks pause it once.

Called at the end of every cycle (``outreach tick``) and by the DAG's ``aggregate_metrics`` task, which also sends
the alerts through the Airflow notifier (``outreach.notifiers``). Thresholds: arguments, else the environment
(``OUTREACH_ALERT_FAILURE_RATE``, ``OUTREACH_ALERT_WINDOW``, ``OUTREACH_ALERT_MIN_ATTEMPTS``), else 20% over the
last 50 sends. The DAG reads them from Airflow Variables of the same names in lower case.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

log = logging.getLogger(__name__)

DEFAULT_FAILURE_RATE = 0.2
DEFAULT_WINDOW = 50


@dataclass(frozen=True)
class AlertConfig:
    failure_rate: float = DEFAULT_FAILURE_RATE  # pause above this share of failed sends
    window: int = DEFAULT_WINDOW                # over the account's last N attempts
    min_attempts: int | None = None             # judge only with at least this many (default: window)

    def __post_init__(self):
        if not 0 < self.failure_rate <= 1:
            raise ValueError(f"failure_rate must be in (0, 1], got {self.failure_rate!r}")
        if self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window!r}")
        if self.min_attempts is not None and not 1 <= self.min_attempts <= self.window:
            raise ValueError(f"min_attempts must be between 1 and window ({self.window}), got {self.min_attempts!r}")

    @property
    def minimum(self) -> int:
        return self.min_attempts or self.window

    @classmethod
    def resolve(cls, failure_rate=None, window=None, min_attempts=None, env: dict | None = None) -> "AlertConfig":
        """Explicit values, else the environment, else the defaults. Strings are parsed ('20%' or '0.2')."""
        env = os.environ if env is None else env

        def pick(value, name):
            if value in (None, ""):
                value = env.get(f"OUTREACH_ALERT_{name}")
            return None if value in (None, "") else value

        rate = pick(failure_rate, "FAILURE_RATE")
        win = pick(window, "WINDOW")
        mn = pick(min_attempts, "MIN_ATTEMPTS")
        if isinstance(rate, str):
            rate = float(rate.strip().rstrip("%")) / (100 if rate.strip().endswith("%") else 1)
        return cls(failure_rate=float(rate) if rate is not None else DEFAULT_FAILURE_RATE,
                   window=int(win) if win is not None else DEFAULT_WINDOW,
                   min_attempts=int(mn) if mn is not None else None)


# Per account: the last alert (a reset point), the last ``window`` attempts after it, the failures since the
# oldest of those. Index probes only (events_account_attempts, events_account_failures, events_account_alerts).
RATES_SQL = """
SELECT a.id, a.name, a.provider, a.status, la.at AS last_alert_at, w.attempted, w.since, coalesce(f.failed, 0) AS failed
FROM sender_accounts a
CROSS JOIN LATERAL (SELECT max(occurred_at) AS at FROM events
                    WHERE kind = 'ALERT' AND account_id = a.id AND occurred_at <= :now) la
CROSS JOIN LATERAL (
    SELECT count(*) AS attempted, min(t.occurred_at) AS since FROM (
        SELECT occurred_at FROM events
        WHERE kind = 'ATTEMPTED' AND account_id = a.id AND occurred_at <= :now
          AND (la.at IS NULL OR occurred_at > la.at)
        ORDER BY occurred_at DESC LIMIT :window) t
) w
LEFT JOIN LATERAL (
    SELECT count(*) AS failed FROM events
    WHERE kind IN ('FAILED', 'BOUNCED') AND account_id = a.id AND occurred_at >= w.since AND occurred_at <= :now
      AND (la.at IS NULL OR occurred_at > la.at)
) f ON w.since IS NOT NULL
WHERE (CAST(:ids AS bigint[]) IS NULL OR a.id = ANY(CAST(:ids AS bigint[])))
"""

CHECK_SQL = sa.text(f"""
WITH rates AS ({RATES_SQL}),
over AS (
    SELECT * FROM rates
    WHERE status = 'ACTIVE' AND attempted >= :minimum AND failed > :rate * attempted
),
paused AS (
    UPDATE sender_accounts s SET status = 'PAUSED', updated_at = now()
    FROM over WHERE s.id = over.id AND s.status = 'ACTIVE'
    RETURNING s.id
)
INSERT INTO events (occurred_at, kind, account_id, provider, reason, dedupe_key, data)
SELECT :now, 'ALERT', o.id, o.provider, 'failure_rate',
       'alert:failure_rate:' || o.id || ':' || CAST(extract(epoch FROM CAST(:now AS timestamptz)) AS bigint),
       jsonb_build_object('account', o.name, 'failed', o.failed, 'attempted', o.attempted,
                          'rate', round(o.failed::numeric / o.attempted, 4), 'threshold', :rate,
                          'window', :window, 'since', o.since, 'action', 'paused')
FROM over o JOIN paused p ON p.id = o.id
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING account_id, data
""")


def failure_rates(conn: sa.Connection, now: datetime, window: int = DEFAULT_WINDOW,
                  account_ids: list[int] | None = None) -> list[dict]:
    """Every account's recent failure rate (the dashboard shows these). Rate None with no attempts."""
    rows = conn.execute(sa.text(RATES_SQL + " ORDER BY a.name"),
                        {"now": now, "window": window, "ids": account_ids}).all()
    return [{"account_id": r.id, "account": r.name, "status": r.status, "attempted": int(r.attempted),
             "failed": int(r.failed), "since": r.since, "last_alert_at": r.last_alert_at,
             "rate": (r.failed / r.attempted) if r.attempted else None} for r in rows]


def check_accounts(engine: sa.Engine, now: datetime, config: AlertConfig | None = None) -> dict:
    """Pause every active account whose failure rate is above the threshold; one ALERT event each.

    Returns a small summary: ``{"paused": n}``, with ``"alerts": [{account, failed, attempted, rate, threshold,
    window, since}]`` when n > 0."""
    cfg = config or AlertConfig.resolve()
    with engine.begin() as conn:
        rows = conn.execute(CHECK_SQL, {"now": now, "window": cfg.window, "minimum": cfg.minimum,
                                        "rate": cfg.failure_rate, "ids": None}).all()
    alerts = [dict(r.data, account_id=r.account_id) for r in rows]
    for a in alerts:
        log.warning("ALERT: account %s paused: %s of its last %s attempts failed (%.0f%% > %.0f%%)",
                    a["account"], a["failed"], a["attempted"], 100 * float(a["rate"]), 100 * cfg.failure_rate)
    return {"paused": len(alerts), **({"alerts": alerts} if alerts else {})}


def describe(alert: dict) -> str:
    """One line for a notification."""
    return (f"outreach: account {alert['account']} paused: {alert['failed']} of its last {alert['attempted']} "
            f"sends failed ({100 * float(alert['rate']):.0f}% > {100 * float(alert['threshold']):.0f}%)")

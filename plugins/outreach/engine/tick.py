"""One whole cycle (poll, ingest, advance, metrics) and the pieces the DAG maps over.

``outreach tick`` and the ``outreach_sequences`` DAG call exactly these functions.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime, timedelta

import sqlalchemy as sa

from outreach.engine import alerts, metrics, signals
from outreach.engine.experiments import decide_winners
from outreach.engine.advance import AdvanceConfig, advance_account, new_owner
from outreach.providers import registry

log = logging.getLogger(__name__)

ACCOUNT_SQL = sa.text("""
SELECT id, name, provider, conn_id, user_id, timezone, limits, status, blocked_until, send_window, spacing, warmup,
       first_send_at
FROM sender_accounts
WHERE (CAST(:ids AS bigint[]) IS NULL OR id = ANY(CAST(:ids AS bigint[])))
  AND (CAST(:providers AS text[]) IS NULL OR provider = ANY(CAST(:providers AS text[])))
ORDER BY id
""")


def accounts(engine: sa.Engine, ids: list[int] | None = None, providers: list[str] | None = None) -> list:
    with engine.connect() as conn:
        return conn.execute(ACCOUNT_SQL, {"ids": ids, "providers": providers}).all()


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def poll_batches(engine: sa.Engine, provider: str, batch_size: int = 20) -> list[list[int]]:
    """Active accounts of ``provider`` in batches (the DAG maps one poll task per batch)."""
    ids = [a.id for a in accounts(engine, providers=[provider]) if a.status == "ACTIVE"]
    return _chunks(ids, batch_size)


def due_batches(engine: sa.Engine, provider: str, now: datetime, sequences: list[str] | None = None,
                batch_size: int = 20) -> list[list[int]]:
    """Accounts of ``provider`` with due work, in batches. Empty: the provider's advance task is skipped."""
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.text("""
            SELECT DISTINCT e.account_id FROM enrollments e
            JOIN sender_accounts a ON a.id = e.account_id JOIN sequences s ON s.id = e.sequence_id
            WHERE e.status = 'ACTIVE' AND e.phase = 'pending' AND e.next_run_at <= :now AND a.provider = :p
              AND a.status = 'ACTIVE' AND s.status = 'ACTIVE'
              AND (CAST(:seqs AS text[]) IS NULL OR s.name = ANY(CAST(:seqs AS text[])))
            ORDER BY 1"""), {"now": now, "p": provider, "seqs": sequences})]
    return _chunks(ids, batch_size)


def poll(engine: sa.Engine, account_ids: list[int], stream_kind: str, now: datetime) -> dict:
    """Poll one stream kind ('inbox' or 'relationships') for the given accounts."""
    counts: Counter = Counter()
    for acc in accounts(engine, ids=account_ids):
        stream = signals.STREAMS[stream_kind].get(acc.provider)
        if not stream or acc.provider not in registry.IMPLEMENTED:
            continue
        client = registry.build(acc.provider, acc.conn_id)
        counts.update(signals.poll_account(engine, acc, client, stream, now))
        counts["accounts"] += 1
    return dict(counts)


def ingest(engine: sa.Engine, now: datetime) -> dict:
    counts = signals.ingest(engine, now)
    counts.update(signals.fire_timeouts(engine, now))
    return dict(counts)


def advance(engine: sa.Engine, account_ids: list[int], now: datetime, config: AdvanceConfig | None = None) -> dict:
    cfg = config or AdvanceConfig()
    if cfg.clock_origin is None:  # ``now`` was read just before: leases count from here (see AdvanceConfig)
        cfg = AdvanceConfig(**{**cfg.__dict__, "clock_origin": time.monotonic()})
    counts: Counter = Counter()
    owner = new_owner()
    for acc in accounts(engine, ids=account_ids):
        if cfg.max_actions is not None and counts["attempted"] >= cfg.max_actions:
            break
        sub = AdvanceConfig(**{**cfg.__dict__, "max_actions": None if cfg.max_actions is None
                               else cfg.max_actions - counts["attempted"]})
        client = registry.build(acc.provider, acc.conn_id)
        if acc.provider == "linkedin" and not cfg.dry_run and acc.status == "ACTIVE":
            from outreach.providers.linkedin import withdraw_stale_invitations

            counts.update(withdraw_stale_invitations(engine, acc, client, now))
        c = advance_account(engine, acc, client, now=now, config=sub, owner=owner)
        log.info("account %s: %s", acc.name, _line(c))
        counts.update(c)
        counts["accounts"] += 1
    return dict(counts)


def aggregate(engine: sa.Engine, start: datetime, end: datetime) -> dict:
    return metrics.aggregate(engine, start, end)


def run_tick(engine: sa.Engine, now: datetime, providers: list[str] | None = None,
             sequences: list[str] | None = None, dry_run: bool = False, max_actions: int | None = None) -> dict:
    """Poll, ingest, advance and aggregate, in that order, for every implemented provider."""
    clock_origin = time.monotonic()  # polling takes time too: advance's leases count from here
    summary: dict = {"now": now.isoformat()}
    wanted = [p for p in (providers or registry.IMPLEMENTED) if p in registry.IMPLEMENTED]
    if not dry_run:  # a dry run changes nothing: no cursors move, no signal is stored or applied
        for p in wanted:
            for batch in poll_batches(engine, p):
                for kind in ("inbox", "relationships"):
                    _merge(summary, f"poll_{kind}", poll(engine, batch, kind, now))
        summary["ingest"] = ingest(engine, now)
    cfg = AdvanceConfig(dry_run=dry_run, max_actions=max_actions, sequences=sequences, clock_origin=clock_origin)
    for p in wanted:
        for batch in due_batches(engine, p, now, sequences):
            _merge(summary, f"advance_{p}", advance(engine, batch, now, cfg))
    if not dry_run:
        summary["metrics"] = aggregate(engine, now - timedelta(days=1), now)
        summary["experiments"] = decide_winners(engine, now)
        summary["alerts"] = alerts.check_accounts(engine, now)  # pause accounts failing too often (ALERT event)
    return summary


def _merge(summary: dict, key: str, counts: dict) -> None:
    c = Counter(summary.get(key, {}))
    c.update(counts)
    summary[key] = dict(c)


def _line(counts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "nothing to do"

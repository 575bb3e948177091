"""What the dashboard reads: the rollups (metrics_daily, metrics_latency), the event log through its indexes
(one enrollment's events, an account's recent attempts and alerts), and small tables (sequences, their actions
and triggers, sender_accounts, rate_budgets, variant_decisions, NEEDS_REVIEW enrollments).

No query here scans the event log or the rollups as a whole: each is bounded by an index (see
include/sql/004_observability.sql), so a page costs the same with 10 thousand or 10 million events.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from outreach.domain import pacing
from outreach.engine import alerts, metrics

OVERVIEW_METRICS = ("ENROLLED", "ATTEMPTED", "SENT", "REPLIED", "REPLIED:positive", "FAILED", "FOLLOWED_BACK",
                    "CONNECTION_ACCEPTED")
HEALTH_METRICS = ("ATTEMPTED", "SENT", "FAILED", "BOUNCED", "RETRY_SCHEDULED", "DEFERRED:rate_limited",
                  "DEFERRED:provider_remaining_0", "DEFERRED:account_error")


def anchor_day(conn: sa.Connection, now: datetime) -> date | None:
    """The last day with rollup data, at or before ``now`` (charts end there). Index: metrics_daily's key."""
    return conn.execute(sa.text("SELECT max(day) FROM metrics_daily WHERE day <= :d"), {"d": now.date()}).scalar()


def overview(conn: sa.Connection) -> list[dict]:
    seqs = conn.execute(sa.text("""
        SELECT s.id, s.name, s.status, s.accounts, (SELECT max(version) FROM sequence_versions v
                                                    WHERE v.sequence_id = s.id) AS version
        FROM sequences s ORDER BY s.name""")).all()
    totals: dict[int, dict] = defaultdict(dict)
    for r in conn.execute(sa.text("""
            SELECT metric, sequence_id, sum(value)::bigint AS value FROM metrics_daily
            WHERE metric = ANY(:m) GROUP BY 1, 2"""), {"m": list(OVERVIEW_METRICS)}):
        totals[r.sequence_id][r.metric] = int(r.value)
    review = dict(conn.execute(sa.text("""
        SELECT sequence_id, count(*) FROM enrollments WHERE status = 'NEEDS_REVIEW' GROUP BY 1""")).all())
    out = []
    for s in seqs:
        t = totals.get(s.id, {})
        sent = t.get("SENT", 0)
        out.append({"id": s.id, "name": s.name, "status": s.status, "version": s.version,
                    "accounts": list(s.accounts or []), "review": int(review.get(s.id, 0)),
                    "enrolled": t.get("ENROLLED", 0), "attempted": t.get("ATTEMPTED", 0), "sent": sent,
                    "replied": t.get("REPLIED", 0), "positive": t.get("REPLIED:positive", 0),
                    "failed": t.get("FAILED", 0),
                    "responses": t.get("REPLIED", 0) + t.get("FOLLOWED_BACK", 0) + t.get("CONNECTION_ACCEPTED", 0),
                    "reply_rate": metrics._rate(t.get("REPLIED", 0), sent),
                    "positive_rate": metrics._rate(t.get("REPLIED:positive", 0), sent)})
    return out


def sequence(conn: sa.Connection, name: str) -> sa.Row | None:
    return conn.execute(sa.text("""
        SELECT s.id, s.name, s.status, s.accounts, s.created_at,
               (SELECT max(version) FROM sequence_versions v WHERE v.sequence_id = s.id) AS version
        FROM sequences s WHERE s.name = :n"""), {"n": name}).first()


def sequence_detail(conn: sa.Connection, seq, now: datetime, days: int | None, chart_days: int = 60) -> dict:
    """Everything the sequence page shows. ``days``: only the last N days (all days when None)."""
    anchor = anchor_day(conn, now) or now.date()
    since = anchor - timedelta(days=days - 1) if days else None
    until = anchor + timedelta(days=1) if days else None
    graph = metrics.graphs(conn, [seq.id])[seq.id]
    rollup = metrics.rollup_by_variant(conn, [seq.id], since, until)
    latency = metrics.latency_rows(conn, [seq.id], since, until, signal=None)
    funnel = metrics.build_funnel({seq.id: seq.name}, {seq.id: graph}, rollup, latency)
    winners = dict(conn.execute(sa.text("""
        SELECT d.step, d.winner FROM variant_decisions d JOIN sequence_versions v ON v.id = d.version_id
        WHERE v.sequence_id = :s ORDER BY v.version"""), {"s": seq.id}).all())
    chart_from = max(anchor - timedelta(days=chart_days - 1), since) if since else anchor - timedelta(days=chart_days - 1)
    series = metrics.daily(conn, seq.id, ("SENT", "REPLIED", "REPLIED:positive", "REPLIED:unsubscribe"),
                           chart_from, anchor + timedelta(days=1))
    first = min((d for s in series.values() for d in s), default=anchor)  # charts start at the first day with data
    chart_from = max(chart_from, min(first, anchor - timedelta(days=13)))
    buckets: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    sums: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for r in latency:
        buckets[r.signal][r.bucket] += int(r.count)
        sums[r.signal][r.bucket] += int(r.sum_seconds)
    latency_summary = []
    for signal in metrics.RESPONSE_SIGNALS:
        b = buckets.get(signal)
        if b:
            n = sum(b.values())
            latency_summary.append({"signal": signal, "count": n, "mean_s": sum(sums[signal].values()) / n,
                                    "p50_s": metrics.quantile(b, 0.5, sums[signal]),
                                    "p90_s": metrics.quantile(b, 0.9, sums[signal])})
    review = conn.execute(sa.text(
        "SELECT count(*) FROM enrollments WHERE status = 'NEEDS_REVIEW' AND sequence_id = :s"), {"s": seq.id}).scalar()
    return {"anchor": anchor, "since": since, "until": until, "graph": graph, "funnel": funnel,
            "edges": metrics.edges_conversion(graph, funnel), "variants": metrics.variants(rollup, seq.id, winners),
            "reasons": metrics.reasons(rollup, seq.id), "series": series,
            "chart_days": [chart_from + timedelta(days=i) for i in range((anchor - chart_from).days + 1)],
            "reply_buckets": {lo: buckets.get("REPLIED", {}).get(lo, 0) for lo in metrics.LATENCY_EDGES},
            "latency": latency_summary, "review": int(review)}


def accounts_health(conn: sa.Connection, now: datetime, window: int = alerts.DEFAULT_WINDOW,
                    recent_days: int = 7, chart_days: int = 14) -> dict:
    """Per sender account: status and blocks, sends against every limit window (from rate_budgets' send log and
    the effective limits), the last ``recent_days`` of the rollup (sent, failed, 429 releases), the failure rate
    the alert judges, and the account's last alerts."""
    from outreach.engine.budget import account_limits

    accts = conn.execute(sa.text("""
        SELECT id, name, provider, status, blocked_until, limits, warmup, first_send_at, timezone
        FROM sender_accounts ORDER BY name""")).all()
    budgets: dict[int, list] = defaultdict(list)
    for b in conn.execute(sa.text("""
            SELECT account_id, action_type, tat, blocked_until, last_limit, last_remaining, last_reset_at
            FROM rate_budgets ORDER BY account_id, action_type""")):
        budgets[b.account_id].append(b)
    anchor = anchor_day(conn, now) or now.date()
    since = anchor - timedelta(days=max(recent_days, chart_days) - 1)
    per_day: dict[int, dict[str, dict[date, int]]] = defaultdict(lambda: defaultdict(dict))
    recent: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    recent_from = anchor - timedelta(days=recent_days - 1)
    for r in conn.execute(sa.text("""
            SELECT account_id, day, metric, sum(value)::bigint AS value FROM metrics_daily
            WHERE account_id = ANY(:ids) AND day >= :since AND day <= :anchor AND metric = ANY(:m)
            GROUP BY 1, 2, 3"""), {"ids": [a.id for a in accts], "since": since, "anchor": anchor,
                                   "m": list(HEALTH_METRICS)}):
        per_day[r.account_id][r.metric][r.day] = int(r.value)
        if r.day >= recent_from:
            recent[r.account_id][r.metric] += int(r.value)
    rates = {r["account_id"]: r for r in alerts.failure_rates(conn, now, window)}
    alert_rows: dict[int, list] = defaultdict(list)
    for r in conn.execute(sa.text("""
            SELECT a.id AS account_id, x.occurred_at, x.reason, x.data FROM sender_accounts a
            CROSS JOIN LATERAL (SELECT occurred_at, reason, data FROM events
                                WHERE kind = 'ALERT' AND account_id = a.id ORDER BY occurred_at DESC LIMIT 5) x""")):
        alert_rows[r.account_id].append(r)
    ts = now.timestamp()
    out = []
    for a in accts:
        limits_rows = []
        for b in budgets.get(a.id, []):
            eff = pacing.effective_limits(b.action_type, account_limits(a, b.action_type, now))
            log = (b.tat or {}).get(pacing.LOG, [])
            for w, limit in sorted(eff.items(), key=lambda kv: pacing.WINDOWS[kv[0]]):
                used = sum(n for t, n in log if t > ts - pacing.WINDOWS[w])
                limits_rows.append({"action_type": b.action_type, "window": w, "used": max(0, used),
                                    "limit": limit})
        blocked = [(b.action_type, b.blocked_until) for b in budgets.get(a.id, [])
                   if b.blocked_until and b.blocked_until > now]
        rec = recent.get(a.id, {})
        out.append({
            "id": a.id, "name": a.name, "provider": a.provider, "status": a.status,
            "blocked_until": a.blocked_until if a.blocked_until and a.blocked_until > now else None,
            "action_blocks": blocked, "limits": limits_rows,
            "last_seen": [{"action_type": b.action_type, "limit": b.last_limit, "remaining": b.last_remaining,
                           "reset_at": b.last_reset_at} for b in budgets.get(a.id, []) if b.last_limit is not None],
            "recent": {m: int(rec.get(m, 0)) for m in HEALTH_METRICS},
            "rate_limited": int(rec.get("DEFERRED:rate_limited", 0)) + int(rec.get("DEFERRED:provider_remaining_0", 0)),
            "failure": rates.get(a.id), "alerts": alert_rows.get(a.id, []),
            "per_day": per_day.get(a.id, {}),
        })
    return {"anchor": anchor, "recent_days": recent_days, "window": window,
            "chart_days": [anchor - timedelta(days=chart_days - 1 - i) for i in range(chart_days)], "accounts": out}


def review(conn: sa.Connection, seq_id: int | None, limit: int, offset: int) -> tuple[int, list]:
    total = conn.execute(sa.text("""
        SELECT count(*) FROM enrollments WHERE status = 'NEEDS_REVIEW'
          AND (CAST(:s AS bigint) IS NULL OR sequence_id = :s)"""), {"s": seq_id}).scalar()
    rows = conn.execute(sa.text("""
        SELECT e.id, e.current_step, e.updated_at, e.ended_reason, e.attempts, s.name AS sequence, p.name AS person,
               a.name AS account, last.kind AS last_kind, last.reason AS last_reason, last.occurred_at AS last_at
        FROM enrollments e
        JOIN sequences s ON s.id = e.sequence_id
        JOIN people p ON p.id = e.person_id
        LEFT JOIN sender_accounts a ON a.id = e.account_id
        LEFT JOIN LATERAL (SELECT kind, reason, occurred_at FROM events x WHERE x.enrollment_id = e.id
                           ORDER BY x.id DESC LIMIT 1) last ON true
        WHERE e.status = 'NEEDS_REVIEW' AND (CAST(:s AS bigint) IS NULL OR e.sequence_id = :s)
        ORDER BY e.updated_at DESC, e.id DESC LIMIT :limit OFFSET :offset"""),
        {"s": seq_id, "limit": limit, "offset": offset}).all()
    return int(total), rows


def lead(conn: sa.Connection, enrollment_id: int, limit: int = 1000) -> dict | None:
    e = conn.execute(sa.text("""
        SELECT e.*, s.name AS sequence, v.version, p.name AS person, a.name AS account
        FROM enrollments e JOIN sequences s ON s.id = e.sequence_id
        JOIN sequence_versions v ON v.id = e.version_id JOIN people p ON p.id = e.person_id
        LEFT JOIN sender_accounts a ON a.id = e.account_id WHERE e.id = :id"""), {"id": enrollment_id}).first()
    if e is None:
        return None
    identities = conn.execute(sa.text("SELECT kind, value FROM identities WHERE person_id = :p ORDER BY kind"),
                              {"p": e.person_id}).all()
    events = conn.execute(sa.text("""
        SELECT x.id, x.occurred_at, x.kind, x.step, x.variant, x.attempt, x.reason, x.provider_ref, x.data,
               a.name AS account
        FROM events x LEFT JOIN sender_accounts a ON a.id = x.account_id
        WHERE x.enrollment_id = :id ORDER BY x.id LIMIT :limit"""), {"id": enrollment_id, "limit": limit}).all()
    return {"enrollment": e, "identities": identities, "events": events}


def inbound(conn: sa.Connection, now: datetime, hours: int = 24, refusals: int = 50) -> dict:
    """Webhook deliveries in the window by provider/outcome/reason, the last refusals, the unprocessed backlog."""
    since = now - timedelta(hours=hours)
    by = [dict(r._mapping) for r in conn.execute(sa.text("""
        SELECT provider, outcome, reason, status, count(*) AS n, sum(signals) AS signals, sum(new_signals) AS new,
               max(received_at) AS last
        FROM webhook_deliveries WHERE received_at > :since AND received_at <= :now
        GROUP BY provider, outcome, reason, status ORDER BY provider, outcome, n DESC"""),
        {"since": since, "now": now})]
    last = [dict(r._mapping) for r in conn.execute(sa.text("""
        SELECT received_at, provider, status, reason, remote, body_bytes, body_sha256 FROM webhook_deliveries
        WHERE outcome = 'refused' AND received_at <= :now ORDER BY received_at DESC, id DESC LIMIT :k"""),
        {"now": now, "k": refusals})]
    n, oldest = conn.execute(sa.text(
        "SELECT count(*), min(received_at) FROM inbound_signals WHERE processed_at IS NULL")).one()
    return {"hours": hours, "by": by, "refusals": last, "pending": {"n": n, "oldest": oldest},
            "accepted": sum(r["n"] for r in by if r["outcome"] == "accepted"),
            "refused": sum(r["n"] for r in by if r["outcome"] == "refused"),
            "new_signals": sum(r["new"] or 0 for r in by)}

"""Metrics from the event log: the rollups (include/sql/metrics_rollup.sql) and everything read from them.

Write side: ``aggregate`` recomputes whole UTC days from the events and upserts ``metrics_daily`` and
``metrics_latency`` in one transaction (a rerun or a backfill gives identical numbers).

Read side (the CLI's ``outreach metrics`` and the web dashboard use the same functions): the funnel per sequence
and step in graph order with step-to-step conversion and time to reply, the per-variant table, daily series and
latency distributions. These read only the rollups and the small catalogue tables, never the event log.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from outreach.store.migrate import SQL_DIR

FUNNEL_METRICS = ("ENROLLED", "ATTEMPTED", "SENT", "FOLLOWED_BACK", "REPLIED", "CONNECTION_ACCEPTED",
                  "SKIPPED", "FAILED", "NEEDS_REVIEW", "RECONCILED")
# signals that answer a step: they make its response rate, and their latency is rolled up
RESPONSE_SIGNALS = ("REPLIED", "FOLLOWED_BACK", "CONNECTION_ACCEPTED", "REPLIED_TO_NOTE")
# lower bounds (seconds) of the latency buckets: 0, 1m, 5m, 15m, 30m, 1h, 2h, 4h, 8h, 12h, 1d, 2d, 3d, 5d, 7d, 14d, 30d
LATENCY_EDGES = (0, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800, 259200, 432000, 604800,
                 1209600, 2592000)
# derived names: what the issue calls them, from the rollup's metric names
ALIASES = {"POSITIVE": "REPLIED:positive", "UNSUBSCRIBED": "REPLIED:unsubscribe"}


def _days(start: datetime | date, end: datetime | date) -> tuple[date, date]:
    d0 = start.date() if isinstance(start, datetime) else start
    d1 = end.date() if isinstance(end, datetime) else end
    if isinstance(end, datetime) and (end.time() != datetime.min.time() or d1 == d0):
        d1 = d1 + timedelta(days=1)
    return d0, d1


def aggregate(engine: sa.Engine, start: datetime | date, end: datetime | date) -> dict:
    """Recompute the UTC days overlapping [start, end) in one transaction. Returns a small summary."""
    d0, d1 = _days(start, end)
    statements = [s.strip() for s in (SQL_DIR / "metrics_rollup.sql").read_text().split(";") if _code(s)]
    params = {"start_day": d0, "end_day": d1, "edges": list(LATENCY_EDGES)}
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # days are UTC days whatever the server's zone
        # the day's groups (~100k for 10M events) hash in memory instead of spilling to disk at the default 4 MB
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        for stmt in statements:
            conn.execute(sa.text(stmt), params)
        rows, latency = conn.execute(sa.text("""
            SELECT (SELECT count(*) FROM metrics_daily WHERE day >= :a AND day < :b),
                   (SELECT count(*) FROM metrics_latency WHERE day >= :a AND day < :b)"""), {"a": d0, "b": d1}).one()
    return {"start_day": d0.isoformat(), "end_day": d1.isoformat(), "rollup_rows": rows, "latency_rows": latency}


def _code(stmt: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in stmt.splitlines())


# ---------------------------------------------------------------------------------------------------- catalogue
def sequence_ids(conn: sa.Connection, sequence: str | None = None) -> dict[int, str]:
    """id -> name of one sequence (by name) or of all."""
    return dict(conn.execute(sa.text("""
        SELECT id, name FROM sequences WHERE CAST(:n AS text) IS NULL OR name = :n ORDER BY name"""),
        {"n": sequence}).all())


def graphs(conn: sa.Connection, seq_ids: list[int]) -> dict[int, dict]:
    """Per sequence: steps in graph order (breadth first from the start, latest version first, then steps only
    older versions have), action types, and the edges ``(from, trigger, to)`` of every version."""
    if not seq_ids:
        return {}
    versions = conn.execute(sa.text("""
        SELECT v.sequence_id, v.id, v.version, v.definition ->> 'start' AS start FROM sequence_versions v
        WHERE v.sequence_id = ANY(:ids) ORDER BY v.sequence_id, v.version DESC"""), {"ids": seq_ids}).all()
    actions = conn.execute(sa.text("""
        SELECT v.sequence_id, a.version_id, a.key, a.type FROM sequence_actions a
        JOIN sequence_versions v ON v.id = a.version_id WHERE v.sequence_id = ANY(:ids)"""), {"ids": seq_ids}).all()
    triggers = conn.execute(sa.text("""
        SELECT v.sequence_id, t.version_id, t.from_action, t.kind, t.to_action FROM sequence_triggers t
        JOIN sequence_versions v ON v.id = t.version_id WHERE v.sequence_id = ANY(:ids) ORDER BY t.id"""),
        {"ids": seq_ids}).all()
    out: dict[int, dict] = {sid: {"order": [], "types": {}, "edges": [], "start": None, "versions": 0}
                            for sid in seq_ids}
    by_version_edges: dict[int, list] = defaultdict(list)
    for t in triggers:
        by_version_edges[t.version_id].append((t.from_action, t.kind, t.to_action))
    types_by_version: dict[int, dict] = defaultdict(dict)
    for a in actions:
        types_by_version[a.version_id][a.key] = a.type
    for v in versions:  # latest version first: its order and types win
        g = out[v.sequence_id]
        g["versions"] += 1
        g["start"] = g["start"] or v.start
        for k, t in types_by_version[v.id].items():
            g["types"].setdefault(k, t)
        for e in by_version_edges[v.id]:
            if e not in g["edges"]:
                g["edges"].append(e)
        queue = [v.start] if v.start else []
        while queue:
            step = queue.pop(0)
            if step in g["order"] or step not in types_by_version[v.id]:
                continue
            g["order"].append(step)
            queue.extend(to for f, _, to in by_version_edges[v.id] if f == step and to)
        for k in sorted(types_by_version[v.id]):
            if k not in g["order"]:
                g["order"].append(k)
    return out


# ------------------------------------------------------------------------------------------------------ rollup
def _window_sql(alias: str = "m") -> str:
    return (f"(CAST(:since AS date) IS NULL OR {alias}.day >= CAST(:since AS date)) "
            f"AND (CAST(:until AS date) IS NULL OR {alias}.day < CAST(:until AS date))")


def rollup_by_variant(conn: sa.Connection, seq_ids: list[int], since: date | None = None,
                      until: date | None = None) -> list:
    """Rows (sequence_id, step, variant, metric, value) summed over the days [since, until)."""
    return conn.execute(sa.text(f"""
        SELECT m.sequence_id, m.step, m.variant, m.metric, sum(m.value)::bigint AS value
        FROM metrics_daily m
        WHERE m.sequence_id = ANY(:ids) AND {_window_sql()}
        GROUP BY 1, 2, 3, 4"""), {"ids": seq_ids, "since": since, "until": until}).all()


def latency_rows(conn: sa.Connection, seq_ids: list[int], since: date | None = None, until: date | None = None,
                 signal: str | None = "REPLIED") -> list:
    """Rows (sequence_id, step, variant, signal, bucket, count, sum_seconds) summed over the days."""
    return conn.execute(sa.text(f"""
        SELECT m.sequence_id, m.step, m.variant, m.signal, m.bucket, sum(m.count)::bigint AS count,
               sum(m.sum_seconds)::bigint AS sum_seconds
        FROM metrics_latency m
        WHERE m.sequence_id = ANY(:ids) AND (CAST(:signal AS text) IS NULL OR m.signal = :signal) AND {_window_sql()}
        GROUP BY 1, 2, 3, 4, 5"""), {"ids": seq_ids, "since": since, "until": until, "signal": signal}).all()


def daily(conn: sa.Connection, seq_id: int, metrics: tuple[str, ...], since: date | None = None,
          until: date | None = None) -> dict[str, dict[date, int]]:
    """metric -> day -> value for one sequence (all steps, variants and accounts)."""
    rows = conn.execute(sa.text(f"""
        SELECT m.metric, m.day, sum(m.value)::bigint AS value FROM metrics_daily m
        WHERE m.sequence_id = :sid AND m.metric = ANY(:metrics) AND {_window_sql()}
        GROUP BY 1, 2 ORDER BY 2"""), {"sid": seq_id, "metrics": list(metrics), "since": since,
                                       "until": until}).all()
    out: dict[str, dict[date, int]] = {m: {} for m in metrics}
    for r in rows:
        out[r.metric][r.day] = int(r.value)
    return out


# ---------------------------------------------------------------------------------------------- distributions
def quantile(buckets: dict[int, int], q: float, sums: dict[int, int] | None = None) -> float | None:
    """The q-quantile (seconds) of a bucketed distribution, interpolated linearly inside its bucket (the last,
    open-ended bucket uses its mean). None when empty."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    target = q * total
    seen = 0
    edges = list(LATENCY_EDGES)
    for i, lo in enumerate(edges):
        n = buckets.get(lo, 0)
        if n <= 0:
            continue
        if seen + n >= target:
            if i + 1 < len(edges):
                hi = edges[i + 1]
                return lo + (hi - lo) * max(0.0, min(1.0, (target - seen) / n))
            return (sums or {}).get(lo, lo * n) / n
        seen += n
    return None


def bucket_label(lo: int) -> str:
    i = LATENCY_EDGES.index(lo)
    hi = LATENCY_EDGES[i + 1] if i + 1 < len(LATENCY_EDGES) else None
    return f"{human_seconds(lo)}-{human_seconds(hi)}" if hi is not None else f"{human_seconds(lo)}+"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    if s < 86400:
        return f"{s / 3600:.1f}h".replace(".0h", "h")
    return f"{s / 86400:.1f}d".replace(".0d", "d")


def _rate(num: int, den: int) -> float | None:
    return round(100.0 * num / den, 1) if den else None


# ------------------------------------------------------------------------------------------------------ funnel
def funnel(engine: sa.Engine, sequence: str | None = None, since: date | None = None,
           until: date | None = None) -> list[dict]:
    """Per sequence and step (graph order): the rollup's counts summed over [since, until) (all days by default),
    plus POSITIVE and UNSUBSCRIBED (replies by intent), ``conversion`` (% of the preceding steps' performed
    actions, or of the enrolled for the start step), ``response_rate`` (% of sent answered by a reply,
    follow-back or acceptance) and ``reply_p50_s`` (median time to reply, seconds, from the latency buckets)."""
    with engine.connect() as conn:
        seqs = sequence_ids(conn, sequence)
        if not seqs:
            return []
        ids = list(seqs)
        return build_funnel(seqs, graphs(conn, ids), rollup_by_variant(conn, ids, since, until),
                            latency_rows(conn, ids, since, until))


def build_funnel(seqs: dict[int, str], graph: dict[int, dict], rollup: list, latency: list) -> list[dict]:
    counts: dict[tuple[int, str], dict] = defaultdict(lambda: defaultdict(int))
    for r in rollup:
        counts[(r.sequence_id, r.step)][r.metric] += int(r.value)
    lat: dict[tuple[int, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    lat_sum: dict[tuple[int, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for r in latency:
        if r.signal == "REPLIED":
            lat[(r.sequence_id, r.step)][r.bucket] += int(r.count)
            lat_sum[(r.sequence_id, r.step)][r.bucket] += int(r.sum_seconds)
    out = []
    for sid, name in sorted(seqs.items(), key=lambda kv: kv[1]):
        g = graph.get(sid, {"order": [], "types": {}, "edges": [], "start": None})
        # graph order, then steps only the event log knows (a step of a version since removed); sequence-level
        # events without a step are not a funnel row
        steps = list(g["order"]) + sorted({s for (q, s) in counts if q == sid and s and s not in g["order"]})
        preds: dict[str, set] = defaultdict(set)
        for f, _, to in g["edges"]:
            if to:
                preds[to].add(f)
        for step in steps:
            c = counts.get((sid, step))
            if c is None and step not in g["order"]:
                continue
            c = dict(c or {})
            row = {"sequence": name, "step": step, "action": g["types"].get(step, "")}
            row.update({k: int(v) for k, v in c.items()})
            for alias, metric in ALIASES.items():
                row[alias] = int(c.get(metric, 0))
            performed = c.get("SENT", 0) + c.get("CHECKED", 0)
            if preds.get(step):
                base = sum(counts.get((sid, p), {}).get("SENT", 0) + counts.get((sid, p), {}).get("CHECKED", 0)
                           for p in preds[step])
            else:
                base = c.get("ENROLLED", 0)
            row["conversion"] = _rate(performed, base)
            row["response_rate"] = _rate(sum(c.get(s, 0) for s in RESPONSE_SIGNALS), c.get("SENT", 0))
            row["positive_rate"] = _rate(c.get("REPLIED:positive", 0), c.get("SENT", 0))
            buckets = dict(lat.get((sid, step), {}))
            row["reply_p50_s"] = quantile(buckets, 0.5, lat_sum.get((sid, step)))
            row["reply_p90_s"] = quantile(buckets, 0.9, lat_sum.get((sid, step)))
            out.append(row)
    return out


def edges_conversion(graph: dict, rows: list[dict]) -> list[dict]:
    """Step-to-step conversion for one sequence: per edge (from, trigger, to), the target step's performed
    actions as a share of the source step's (a step reached from several steps shares its count)."""
    by_step = {r["step"]: r for r in rows}

    def performed(step: str) -> int:
        r = by_step.get(step, {})
        return int(r.get("SENT", 0)) + int(r.get("CHECKED", 0))

    out = []
    for f, kind, to in graph.get("edges", []):
        fired = int(by_step.get(f, {}).get(kind, 0)) if kind in RESPONSE_SIGNALS else \
            int(by_step.get(f, {}).get(f"TRIGGER_FIRED:{kind}", 0))
        out.append({"from": f, "trigger": kind, "to": to or "END", "from_performed": performed(f),
                    "fired": fired, "to_performed": performed(to) if to else None,
                    "conversion": _rate(performed(to), performed(f)) if to else _rate(fired, performed(f))})
    return out


def variants(rollup: list, seq_id: int, winners: dict[str, str] | None = None) -> list[dict]:
    """Per step and variant of one sequence: sent, replies, positive replies and their rates."""
    agg: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(int))
    for r in rollup:
        if r.sequence_id == seq_id:
            agg[(r.step, r.variant)][r.metric] += int(r.value)
    steps_with_variants = {s for (s, v) in agg if v}
    out = []
    for (step, variant), c in sorted(agg.items()):
        if step not in steps_with_variants or not variant:
            continue
        out.append({"step": step, "variant": variant, "sent": c.get("SENT", 0), "replied": c.get("REPLIED", 0),
                    "positive": c.get("REPLIED:positive", 0), "reply_rate": _rate(c.get("REPLIED", 0), c.get("SENT", 0)),
                    "positive_rate": _rate(c.get("REPLIED:positive", 0), c.get("SENT", 0)),
                    "winner": (winners or {}).get(step) == variant})
    return out


def reasons(rollup: list, seq_id: int, kinds: tuple[str, ...] = ("FAILED", "SKIPPED", "DEFERRED",
                                                                   "RETRY_SCHEDULED", "NEEDS_REVIEW")) -> list[dict]:
    """Per kind and reason of one sequence: the count (all steps)."""
    agg: dict[tuple[str, str], int] = defaultdict(int)
    for r in rollup:
        if r.sequence_id == seq_id and ":" in r.metric:
            kind, _, reason = r.metric.partition(":")
            if kind in kinds:
                agg[(kind, reason)] += int(r.value)
    return [{"kind": k, "reason": why, "count": n} for (k, why), n in sorted(agg.items(), key=lambda kv: (kv[0][0], -kv[1]))]

"""Metrics rollups from the event log (include/sql/metrics_rollup.sql) and the funnel read from them."""
from __future__ import annotations

from datetime import date, datetime, timedelta

import sqlalchemy as sa

from outreach.store.migrate import SQL_DIR

FUNNEL_METRICS = ("ENROLLED", "ATTEMPTED", "SENT", "FOLLOWED_BACK", "REPLIED", "CONNECTION_ACCEPTED",
                  "SKIPPED", "FAILED", "NEEDS_REVIEW", "RECONCILED")


def aggregate(engine: sa.Engine, start: datetime | date, end: datetime | date) -> dict:
    """Recompute the days overlapping [start, end) in one transaction. Returns a small summary."""
    d0 = start.date() if isinstance(start, datetime) else start
    d1 = end.date() if isinstance(end, datetime) else end
    if isinstance(end, datetime) and (end.time() != datetime.min.time() or d1 == d0):
        d1 = d1 + timedelta(days=1)
    statements = [s.strip() for s in (SQL_DIR / "metrics_rollup.sql").read_text().split(";") if _code(s)]
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # days are UTC days whatever the server's zone
        for stmt in statements:
            conn.execute(sa.text(stmt), {"start_day": d0, "end_day": d1})
        rows = conn.execute(sa.text(
            "SELECT count(*) FROM metrics_daily WHERE day >= :a AND day < :b"), {"a": d0, "b": d1}).scalar()
    return {"start_day": d0.isoformat(), "end_day": d1.isoformat(), "rollup_rows": rows}


def _code(stmt: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in stmt.splitlines())


def funnel(engine: sa.Engine, sequence: str | None = None) -> list[dict]:
    """Per sequence and step: the funnel counts summed over the rollup's days, steps in graph order."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("""
            SELECT s.name AS sequence, m.step, m.metric, sum(m.value) AS value
            FROM metrics_daily m JOIN sequences s ON s.id = m.sequence_id
            WHERE (CAST(:seq AS text) IS NULL OR s.name = :seq)
            GROUP BY s.name, m.step, m.metric"""), {"seq": sequence}).all()
        types = dict(((r.name, r.key), r.type) for r in conn.execute(sa.text("""
            SELECT DISTINCT s.name, a.key, a.type FROM sequence_actions a
            JOIN sequence_versions v ON v.id = a.version_id JOIN sequences s ON s.id = v.sequence_id""")))
    out: dict[tuple, dict] = {}
    for r in rows:
        d = out.setdefault((r.sequence, r.step), {"sequence": r.sequence, "step": r.step,
                                                   "action": types.get((r.sequence, r.step), "")})
        d[r.metric] = int(r.value)
    return sorted(out.values(), key=lambda d: (d["sequence"], -d.get("ENROLLED", 0), -d.get("SENT", 0), d["step"]))

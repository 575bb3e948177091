"""Declare A/B/n winners from the metrics rollup (positive replies per send), record the decision as an event."""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime

import sqlalchemy as sa

from outreach.domain.experiments import decide
from outreach.domain.templates import CONTROL


def decide_winners(engine: sa.Engine, now: datetime, min_sample: int = 100, alpha: float = 0.05) -> dict:
    """For every step with variants and no decision yet: test, and record a winner when the rule allows one.
    New leads reaching the step get the winner; leads already assigned keep their arm."""
    with engine.begin() as conn:
        open_steps = conn.execute(sa.text("""
            SELECT a.version_id, a.key, v.sequence_id, a.definition -> 'variants' AS variants
            FROM sequence_actions a JOIN sequence_versions v ON v.id = a.version_id
            WHERE jsonb_array_length(coalesce(a.definition -> 'variants', '[]'::jsonb)) > 0
              AND NOT EXISTS (SELECT 1 FROM variant_decisions d WHERE d.version_id = a.version_id AND d.step = a.key)
        """)).all()
        if not open_steps:
            return {"open_experiments": 0, "decided": 0}
        stats = conn.execute(sa.text("""
            SELECT m.version_id, m.step, m.variant,
                   sum(m.value) FILTER (WHERE m.metric = 'SENT') AS sent,
                   sum(m.value) FILTER (WHERE m.metric = 'REPLIED:positive') AS positive
            FROM metrics_daily m
            JOIN jsonb_to_recordset(CAST(:steps AS jsonb)) AS s(version_id bigint, key text)
              ON s.version_id = m.version_id AND s.key = m.step
            GROUP BY m.version_id, m.step, m.variant"""),
            {"steps": json.dumps([{"version_id": r.version_id, "key": r.key} for r in open_steps])}).all()
        by_step: dict = defaultdict(dict)
        for r in stats:
            by_step[(r.version_id, r.step)][r.variant] = (int(r.sent or 0), int(r.positive or 0))
        decided = []
        for r in open_steps:
            weights = {v["name"]: v["weight"] for v in r.variants}
            arms = [v["name"] for v in r.variants] + ([CONTROL] if sum(weights.values()) < 100 else [])
            observed = {a: by_step[(r.version_id, r.key)].get(a, (0, 0)) for a in arms}
            d = decide(observed, min_sample=min_sample, alpha=alpha)
            if d:
                decided.append({"version_id": r.version_id, "step": r.key, "sequence_id": r.sequence_id,
                                "winner": d.winner, "data": {"rates": d.rates, "p_values": d.p_values,
                                                             "test": d.test, "arms": observed,
                                                             "min_sample": min_sample, "alpha": alpha}})
        if decided:
            conn.execute(sa.text("""
                WITH x AS (SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                           AS x(version_id bigint, step text, sequence_id bigint, winner text, data jsonb)),
                ins AS (INSERT INTO variant_decisions (version_id, step, winner, decided_at, data)
                        SELECT version_id, step, winner, :now, data FROM x ON CONFLICT DO NOTHING
                        RETURNING version_id, step)
                INSERT INTO events (occurred_at, kind, sequence_id, version_id, step, variant, reason, dedupe_key, data)
                SELECT :now, 'VARIANT_WINNER', x.sequence_id, x.version_id, x.step, x.winner, 'positive_reply_rate',
                       'win:' || x.version_id || ':' || x.step, x.data
                FROM x JOIN ins USING (version_id, step)"""), {"rows": json.dumps(decided), "now": now})
    return {"open_experiments": len(open_steps), "decided": len(decided)}

"""The reactions path: ingest what arrived, then advance only the enrollments a signal moved.

Same engine functions as the backbone (``signals.ingest``, ``advance.advance_account`` with the claim
restricted to the given ids), so the same exactly-once guarantees hold: a lead moved here and also due in an
overlapping backbone run is claimed by one of them (lease, ``FOR UPDATE SKIP LOCKED``), sent once (intent key).
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from outreach.engine import signals

MAX_IDS = 10_000  # per reaction run (XCom stays small); more: the rest are due and the backbone takes them

AFFECTED_SQL = sa.text("""
SELECT a.provider, e.account_id, array_agg(e.id ORDER BY e.id) AS ids
FROM enrollments e JOIN sender_accounts a ON a.id = e.account_id
WHERE e.id = ANY(:ids) AND e.status = 'ACTIVE' AND e.phase = 'pending' AND e.next_run_at <= :now
GROUP BY a.provider, e.account_id
ORDER BY a.provider, e.account_id
""")


def ingest_and_plan(engine: sa.Engine, now: datetime, accounts_per_task: int = 20) -> dict:
    """Ingest every unprocessed signal; return the counts and, per provider, the advance partitions
    ``[{"account_ids": [...], "enrollment_ids": [...]}]`` of the enrollments due now because a signal moved them."""
    moved: list[int] = []
    counts = signals.ingest(engine, now, moved=moved)
    plan: dict[str, list[dict]] = {}
    if moved:
        capped = sorted(set(moved))[:MAX_IDS]
        counts["moved"] = len(set(moved))
        if len(capped) < counts["moved"]:
            counts["left_to_backbone"] = counts["moved"] - len(capped)
        with engine.connect() as c:
            rows = c.execute(AFFECTED_SQL, {"ids": capped, "now": now}).all()
        by_provider: dict[str, list] = {}
        for r in rows:
            by_provider.setdefault(r.provider, []).append(r)
        for provider, accs in by_provider.items():
            plan[provider] = [{"account_ids": [r.account_id for r in chunk],
                               "enrollment_ids": [i for r in chunk for i in r.ids]}
                              for chunk in (accs[i:i + accounts_per_task]
                                            for i in range(0, len(accs), accounts_per_task))]
        counts["due_now"] = sum(len(r.ids) for r in rows)
    return {"counts": dict(counts), "plan": plan}

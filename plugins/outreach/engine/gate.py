"""Batch lookups for the gate: recipients' identities and suppressions. One statement each per batch."""
from __future__ import annotations

import sqlalchemy as sa

IDENTITIES_SQL = sa.text("""
SELECT person_id, kind, value FROM identities WHERE person_id = ANY(:ids)
""")

SUPPRESSED_SQL = sa.text("""
SELECT p.id AS person_id, s.kind, s.reason FROM people p JOIN suppressions s ON s.kind = 'global'
WHERE p.id = ANY(:ids)
UNION ALL
SELECT p.id, s.kind, s.reason FROM people p JOIN suppressions s ON s.kind = 'person' AND s.value = p.id::text
WHERE p.id = ANY(:ids)
UNION ALL
SELECT p.id, s.kind, s.reason FROM people p JOIN suppressions s ON s.kind = 'domain' AND s.value = p.company_domain
WHERE p.id = ANY(:ids)
UNION ALL
SELECT i.person_id, s.kind, s.reason FROM identities i JOIN suppressions s ON s.kind = i.kind AND s.value = i.value
WHERE i.person_id = ANY(:ids)
UNION ALL
SELECT i.person_id, s.kind, s.reason FROM identities i
JOIN suppressions s ON s.kind = 'domain' AND s.value = split_part(i.value, '@', 2)
WHERE i.person_id = ANY(:ids) AND i.kind = 'email'
""")


def recipients(conn: sa.Connection, person_ids: list[int]) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {pid: {} for pid in person_ids}
    for r in conn.execute(IDENTITIES_SQL, {"ids": person_ids}):
        out[r.person_id][r.kind] = r.value
    return out


def suppressed(conn: sa.Connection, person_ids: list[int]) -> dict[int, str]:
    """person id -> reason, for the suppressed ones."""
    out: dict[int, str] = {}
    for r in conn.execute(SUPPRESSED_SQL, {"ids": person_ids}):
        out.setdefault(r.person_id, f"suppressed:{r.kind}:{r.reason}")
    return out


def replied_since(conn: sa.Connection, pairs: list[tuple[int, object]]) -> set[int]:
    """Person ids (of (person_id, since) pairs) with a REPLIED event after ``since``."""
    if not pairs:
        return set()
    rows = conn.execute(sa.text("""
        SELECT DISTINCT x.pid FROM unnest(CAST(:p AS bigint[]), CAST(:t AS timestamptz[])) AS x(pid, since)
        JOIN events ev ON ev.person_id = x.pid AND ev.kind = 'REPLIED' AND ev.occurred_at >= x.since"""),
        {"p": [p for p, _ in pairs], "t": [t for _, t in pairs]}).all()
    return {r[0] for r in rows}

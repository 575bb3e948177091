"""Batch lookups for the gate: recipients' identities and suppressions. One statement each per batch."""
from __future__ import annotations

import sqlalchemy as sa

PEOPLE_SQL = sa.text("""
SELECT p.id AS person_id, p.timezone, i.kind, i.value
FROM people p LEFT JOIN identities i ON i.person_id = p.id WHERE p.id = ANY(:ids)
""")

HISTORY_SQL = sa.text("""
SELECT 'started' AS k, person_id, id AS enrollment_id, NULL::timestamptz AS last FROM enrollments
WHERE person_id = ANY(:ids) AND status = 'ACTIVE' AND last_action_at IS NOT NULL
UNION ALL
SELECT 'sent', person_id, enrollment_id, max(occurred_at) FROM events
WHERE person_id = ANY(:ids) AND kind = 'SENT' GROUP BY person_id, enrollment_id
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
    """person id -> {identity kind: value, "timezone": tz} (one statement for the batch)."""
    out: dict[int, dict[str, str]] = {pid: {} for pid in person_ids}
    for r in conn.execute(PEOPLE_SQL, {"ids": person_ids}):
        if r.kind:
            out[r.person_id][r.kind] = r.value
        if r.timezone:
            out[r.person_id]["timezone"] = r.timezone
    return out


class History:
    """Who else is talking to these people: started active enrollments and the last send per enrollment."""

    def __init__(self, conn: sa.Connection, person_ids: list[int]):
        self.started: dict[int, set[int]] = {}
        self.sent: dict[int, dict[int, object]] = {}
        for r in conn.execute(HISTORY_SQL, {"ids": person_ids}):
            if r.k == "started":
                self.started.setdefault(r.person_id, set()).add(r.enrollment_id)
            else:
                self.sent.setdefault(r.person_id, {})[r.enrollment_id] = r.last

    def active_elsewhere(self, person_id: int, enrollment_id: int) -> bool:
        return bool(self.started.get(person_id, set()) - {enrollment_id})

    def last_sent(self, person_id: int, exclude_enrollment: int | None = None):
        times = [t for e, t in self.sent.get(person_id, {}).items() if e != exclude_enrollment and t]
        return max(times) if times else None


def suppressed(conn: sa.Connection, person_ids: list[int]) -> dict[int, str]:
    """person id -> reason, for the suppressed ones."""
    out: dict[int, str] = {}
    for r in conn.execute(SUPPRESSED_SQL, {"ids": person_ids}):
        out.setdefault(r.person_id, f"suppressed:{r.kind}:{r.reason}")
    return out


def winners(conn: sa.Connection, version_ids) -> dict[tuple[int, str], str]:
    """(version, step) -> the declared A/B/n winner."""
    return {(r.version_id, r.step): r.winner for r in conn.execute(
        sa.text("SELECT version_id, step, winner FROM variant_decisions WHERE version_id = ANY(:v)"),
        {"v": list(version_ids)})}


def replied_since_enrolment(conn: sa.Connection, pairs: list[tuple[int, int]]) -> set[int]:
    """Enrollment ids (of (enrollment_id, person_id) pairs) whose person replied, on any channel, after the
    enrolment. Both times are on the engine clock (the ENROLLED event), so simulations see replies too."""
    if not pairs:
        return set()
    rows = conn.execute(sa.text("""
        SELECT DISTINCT x.eid FROM unnest(CAST(:e AS bigint[]), CAST(:p AS bigint[])) AS x(eid, pid)
        JOIN events en ON en.enrollment_id = x.eid AND en.kind = 'ENROLLED'
        JOIN events ev ON ev.person_id = x.pid AND ev.kind = 'REPLIED' AND ev.occurred_at >= en.occurred_at"""),
        {"e": [e for e, _ in pairs], "p": [p for _, p in pairs]}).all()
    return {r[0] for r in rows}

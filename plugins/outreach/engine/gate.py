"""Batch lookups for the gate: recipients' identities, suppressions and conversation history.

The advance reads all of them in one statement per batch (``lookup``)."""
from __future__ import annotations

import sqlalchemy as sa

_STARTED = """SELECT person_id, id AS enrollment_id FROM enrollments
WHERE person_id = ANY(:ids) AND status = 'ACTIVE' AND last_action_at IS NOT NULL"""
# an index-only scan of events_person_sent (006_perf.sql): the SENT events of these people, never the heap
_SENT = """SELECT person_id, enrollment_id, max(occurred_at) AS last FROM events
WHERE person_id = ANY(:ids) AND kind = 'SENT' GROUP BY person_id, enrollment_id"""


def recipients(conn: sa.Connection, person_ids: list[int]) -> dict[int, dict[str, str]]:
    """person id -> {identity kind: value, "timezone": tz}: the recipients part of ``lookup``."""
    return lookup(conn, person_ids, history=False)[0]


class History:
    """Who else is talking to these people: started active enrollments and the last send per enrollment."""

    def __init__(self) -> None:  # filled by ``lookup``
        self.started: dict[int, set[int]] = {}
        self.sent: dict[int, dict[int, object]] = {}

    def add(self, k: str, person_id: int, enrollment_id: int, last) -> None:
        if k == "started":
            self.started.setdefault(person_id, set()).add(enrollment_id)
        else:
            self.sent.setdefault(person_id, {})[enrollment_id] = last

    def active_elsewhere(self, person_id: int, enrollment_id: int) -> bool:
        return bool(self.started.get(person_id, set()) - {enrollment_id})

    def last_sent(self, person_id: int, exclude_enrollment: int | None = None):
        times = [t for e, t in self.sent.get(person_id, {}).items() if e != exclude_enrollment and t]
        return max(times) if times else None


# One statement for the whole gate of a batch. The batch's people and identities are read once (materialized),
# and every lookup hangs off them: recipients (k 0-1), suppressions (k 2-6, in this order of precedence:
# global, person, company domain, identity, email domain), and, when asked, the history (k 7-8).
_LOOKUP = """
WITH p AS MATERIALIZED (SELECT id, timezone, company_domain FROM people WHERE id = ANY(:ids)),
     i AS MATERIALIZED (SELECT person_id, kind, value FROM identities WHERE person_id = ANY(:ids))
SELECT 0 AS k, p.id AS person_id, NULL AS kind, p.timezone AS value, NULL::bigint AS eid,
       NULL::timestamptz AS at FROM p
UNION ALL SELECT 1, i.person_id, i.kind, i.value, NULL, NULL FROM i
UNION ALL SELECT 2, p.id, s.kind, s.reason, NULL, NULL FROM p JOIN suppressions s ON s.kind = 'global'
UNION ALL SELECT 3, p.id, s.kind, s.reason, NULL, NULL FROM p
          JOIN suppressions s ON s.kind = 'person' AND s.value = p.id::text
UNION ALL SELECT 4, p.id, s.kind, s.reason, NULL, NULL FROM p
          JOIN suppressions s ON s.kind = 'domain' AND s.value = p.company_domain
UNION ALL SELECT 5, i.person_id, s.kind, s.reason, NULL, NULL FROM i
          JOIN suppressions s ON s.kind = i.kind AND s.value = i.value
UNION ALL SELECT 6, i.person_id, s.kind, s.reason, NULL, NULL FROM i
          JOIN suppressions s ON s.kind = 'domain' AND s.value = split_part(i.value, '@', 2) WHERE i.kind = 'email'
"""
LOOKUP_SQL = sa.text(_LOOKUP)
LOOKUP_HISTORY_SQL = sa.text(_LOOKUP + f"""
UNION ALL SELECT 7, person_id, NULL, NULL, enrollment_id, NULL FROM ({_STARTED}) st
UNION ALL SELECT 8, person_id, NULL, NULL, enrollment_id, last FROM ({_SENT}) se
""")


def lookup(conn: sa.Connection, person_ids: list[int], history: bool
           ) -> tuple[dict[int, dict[str, str]], dict[int, str], History | None]:
    """(recipients, person id -> suppression reason, History or None) for a batch's people, in one statement.
    The history is read only when asked for."""
    people: dict[int, dict[str, str]] = {pid: {} for pid in person_ids}
    blocked: dict[int, tuple[int, str]] = {}
    hist = History() if history else None
    for k, pid, kind, value, eid, at in conn.execute(LOOKUP_HISTORY_SQL if history else LOOKUP_SQL,
                                                     {"ids": person_ids}):
        if k == 0:
            if value:
                people[pid]["timezone"] = value
        elif k == 1:
            people[pid][kind] = value
        elif k <= 6:
            if pid not in blocked or k < blocked[pid][0]:
                blocked[pid] = (k, f"suppressed:{kind}:{value}")
        else:
            hist.add("started" if k == 7 else "sent", pid, eid, at)
    return people, {pid: why for pid, (_k, why) in blocked.items()}, hist


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

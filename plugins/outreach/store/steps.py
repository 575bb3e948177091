"""The hot queries: claim due enrollments under a lease, and apply transitions fenced on what was read.

Every function here is set-based: one statement for a whole batch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

CLAIM_SQL = sa.text("""
WITH due AS (
    SELECT e.id, e.in_flight AS was_in_flight
    FROM enrollments e
    JOIN sequence_actions a ON a.version_id = e.version_id AND a.key = e.current_step
    JOIN sequences s ON s.id = e.sequence_id
    WHERE e.account_id = :account_id AND e.status = 'ACTIVE' AND e.phase = 'pending'
      AND e.next_run_at <= :now AND a.type = :action_type AND s.status = 'ACTIVE'
      AND (CAST(:sequences AS text[]) IS NULL OR s.name = ANY(CAST(:sequences AS text[])))
      AND (CAST(:ids AS bigint[]) IS NULL OR e.id = ANY(CAST(:ids AS bigint[])))
    ORDER BY e.next_run_at, e.id
    LIMIT :limit
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE enrollments e
SET lease_owner = :owner, lease_expires_at = :lease_from + make_interval(secs => :lease),
    next_run_at = :lease_from + make_interval(secs => :lease), attempts = e.attempts + 1, updated_at = now(),
    -- the advance marks the rows it is about to attempt in this same write (its ATTEMPTED events follow in the
    -- same commit; a lead the gate then holds back gets its mark back from that decision's write)
    in_flight = e.in_flight OR CAST(:mark_in_flight AS boolean)
FROM due
WHERE e.id = due.id
RETURNING e.id, e.sequence_id, e.version_id, e.person_id, e.current_step, e.attempts,
          due.was_in_flight AS in_flight,
          e.variables, e.variants, e.last_action_at, e.created_at,
          -- reconcile looks back to the FIRST unresolved attempt of this step (steps are never revisited: the
          -- trigger graph is acyclic); the latest attempt may be one that never reached the provider
          CASE WHEN due.was_in_flight THEN (SELECT min(ev.occurred_at) FROM events ev WHERE ev.enrollment_id = e.id
                                            AND ev.kind = 'ATTEMPTED' AND ev.step = e.current_step) END
              AS first_attempt_at
""")

DUE_SQL = sa.text("""
SELECT a.type AS action_type, count(*) AS n
FROM enrollments e
JOIN sequence_actions a ON a.version_id = e.version_id AND a.key = e.current_step
JOIN sequences s ON s.id = e.sequence_id
WHERE e.account_id = :account_id AND e.status = 'ACTIVE' AND e.phase = 'pending' AND e.next_run_at <= :now
  AND s.status = 'ACTIVE' AND (CAST(:sequences AS text[]) IS NULL OR s.name = ANY(CAST(:sequences AS text[])))
  AND (CAST(:ids AS bigint[]) IS NULL OR e.id = ANY(CAST(:ids AS bigint[])))
GROUP BY a.type
""")


def due_types(conn: sa.Connection, *, account_id: int, now: datetime, sequences: list[str] | None = None,
              enrollment_ids: list[int] | None = None) -> dict[str, int]:
    """Action type -> how many of the account's enrollments are due at ``now`` (one GROUP BY over the due index).
    The advance loops over these types only, instead of claiming nothing for every other type."""
    return {r.action_type: r.n for r in conn.execute(DUE_SQL, {
        "account_id": account_id, "now": now, "sequences": sequences, "ids": enrollment_ids})}


def claim(conn: sa.Connection, *, account_id: int, action_type: str, now: datetime, owner: str,
          limit: int, lease_seconds: int, sequences: list[str] | None = None,
          lease_from: datetime | None = None, enrollment_ids: list[int] | None = None,
          mark_in_flight: bool = False) -> list:
    """Claim due rows (due at ``now``; only ``enrollment_ids`` when given: the reactions path); the lease runs from ``lease_from`` (default ``now``): the engine clock
    moved on by the time a long advance claims its later batches, so a lease from a stale ``now`` would
    already be over for a worker that reads the clock afresh.

    ``mark_in_flight``: also set ``in_flight`` in this write (the advance, whose ATTEMPTED events follow in the
    same transaction through ``intend``). The rows returned carry ``in_flight`` as it was before the claim."""
    if limit <= 0:
        return []
    return conn.execute(CLAIM_SQL, {
        "account_id": account_id, "action_type": action_type, "now": now, "owner": owner, "limit": limit,
        "lease": lease_seconds, "sequences": sequences, "lease_from": lease_from or now,
        "ids": enrollment_ids, "mark_in_flight": mark_in_flight,
    }).all()


@dataclass
class Transition:
    """One enrollment's change, guarded by what the writer read (step, phase, lease owner)."""

    id: int
    expect_step: str
    expect_phase: str
    status: str
    step: str
    phase: str
    next_run_at: datetime | None
    event_kind: str
    occurred_at: datetime
    provider: str | None = None  # switch the enrollment's account to its account of this provider
    in_flight: bool = False
    keep_lease: bool = False
    reset_attempts: bool = False
    refund_attempt: bool = False
    performed: bool = False  # the step's action was performed: update last_action(_at)
    reason: str | None = None
    ended_reason: str | None = None
    dedupe_key: str | None = None
    provider_ref: str | None = None
    variant: str | None = None
    data: dict = field(default_factory=dict)


# The batch travels as one typed array per column (unnest), not as a JSON document: no per-row dict, isoformat
# and json.dumps on the way out, no JSON parsing on the server.
_COLUMNS = (("id", "bigint"), ("expect_step", "text"), ("expect_phase", "text"), ("status", "text"),
            ("step", "text"), ("phase", "text"), ("next_run_at", "timestamptz"), ("event_kind", "text"),
            ("occurred_at", "timestamptz"), ("provider", "text"), ("in_flight", "boolean"),
            ("keep_lease", "boolean"), ("reset_attempts", "boolean"), ("refund_attempt", "boolean"),
            ("performed", "boolean"), ("reason", "text"), ("ended_reason", "text"), ("dedupe_key", "text"),
            ("provider_ref", "text"), ("variant", "text"), ("data", "jsonb"))

APPLY_SQL = sa.text("""
WITH v AS (
    SELECT * FROM unnest(""" + ", ".join(f"CAST(:t_{c} AS {t}[])" for c, t in _COLUMNS) + """)
        AS v(""" + ", ".join(c for c, _ in _COLUMNS) + """)
), upd AS (
    UPDATE enrollments e SET
        status = v.status, current_step = v.step, phase = v.phase, next_run_at = v.next_run_at,
        -- a system write over a dead worker's expired lease keeps its in-flight mark
        in_flight = CASE WHEN CAST(:owner AS text) IS NULL AND e.lease_owner IS NOT NULL THEN e.in_flight
                         ELSE v.in_flight END,
        -- the arm a lead is given at its first attempt of a step is kept for good
        variants = CASE WHEN v.event_kind = 'ATTEMPTED' AND v.variant IS NOT NULL AND NOT e.variants ? v.expect_step
                        THEN e.variants || jsonb_build_object(v.expect_step, v.variant) ELSE e.variants END,
        account_id = coalesce((e.accounts ->> v.provider)::bigint, e.account_id),
        lease_owner = CASE WHEN v.keep_lease THEN e.lease_owner END,
        lease_expires_at = CASE WHEN v.keep_lease THEN e.lease_expires_at END,
        attempts = CASE WHEN v.reset_attempts THEN 0 WHEN v.refund_attempt THEN greatest(e.attempts - 1, 0)
                        ELSE e.attempts END,
        last_action = CASE WHEN v.performed THEN v.expect_step ELSE e.last_action END,
        last_action_at = CASE WHEN v.performed THEN v.occurred_at ELSE e.last_action_at END,
        ended_reason = coalesce(v.ended_reason, e.ended_reason),
        updated_at = now()
    FROM v
    WHERE e.id = v.id AND e.current_step = v.expect_step AND e.phase = v.expect_phase AND e.status = 'ACTIVE'
      AND (e.lease_owner IS NOT DISTINCT FROM CAST(:owner AS text)
           -- ingest and timeouts (no owner) may also move a row whose worker's lease has run out
           OR (CAST(:owner AS text) IS NULL AND e.lease_expires_at <= CAST(:now AS timestamptz)))
    RETURNING e.id, e.person_id, e.sequence_id, e.version_id, e.account_id, e.attempts
)
INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step, variant,
                    account_id, provider, attempt, reason, provider_ref, dedupe_key, data)
SELECT v.occurred_at, v.event_kind, upd.id, upd.person_id, upd.sequence_id, upd.version_id, v.expect_step,
       v.variant, coalesce(CAST(:account_id AS bigint), upd.account_id), CAST(:provider AS text), upd.attempts,
       v.reason, v.provider_ref, v.dedupe_key, v.data
FROM upd JOIN v ON v.id = upd.id
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING enrollment_id
""")


def _json(d: dict) -> str | None:
    return json.dumps(d, default=str) if d is not None else None


def apply(conn: sa.Connection, transitions: list[Transition], *, owner: str | None,
          account_id: int | None = None, provider: str | None = None, now: datetime | None = None) -> set[int]:
    """Apply transitions whose fence still holds; write one event each. Returns the ids that passed.

    ``owner`` None is a system write (ingest, timeouts): it applies to unleased rows, and to rows whose lease
    expired before ``now``."""
    if not transitions:
        return set()
    params = {f"t_{c}": [getattr(t, c) for t in transitions] for c, _ in _COLUMNS if c != "data"}
    params["t_data"] = [_json(t.data) for t in transitions]
    params.update(owner=owner, account_id=account_id, provider=provider, now=now)
    return {r[0] for r in conn.execute(APPLY_SQL, params)}


# The intent of a batch (commit 1 of DESIGN section 4): one ATTEMPTED event per lead about to be called. The
# claim already wrote the lease, the attempt and the in-flight mark into the row (``claim(mark_in_flight=True)``,
# same transaction), so the row is not written a second time here, except to keep the arm (A/B variant) of a
# lead's first attempt of a step. The fence still holds: our lease, the expected step, pending, active.
INTENT_SQL = sa.text("""
WITH v AS (
    SELECT * FROM unnest(CAST(:id AS bigint[]), CAST(:step AS text[]), CAST(:variant AS text[]),
                         CAST(:dedupe_key AS text[]), CAST(:data AS jsonb[])) AS v(id, step, variant, dedupe_key, data)
), mine AS (
    SELECT e.id, e.person_id, e.sequence_id, e.version_id, e.attempts, v.step, v.variant, v.dedupe_key, v.data,
           v.variant IS NOT NULL AND NOT e.variants ? v.step AS new_arm
    FROM v JOIN enrollments e ON e.id = v.id
    WHERE e.lease_owner = CAST(:owner AS text) AND e.current_step = v.step AND e.phase = 'pending'
      AND e.status = 'ACTIVE' AND e.in_flight
), arm AS (
    UPDATE enrollments e SET variants = e.variants || jsonb_build_object(m.step, m.variant)
    FROM mine m WHERE e.id = m.id AND m.new_arm
), first_send AS (  -- the warm-up ramp counts days from the account's first send
    UPDATE sender_accounts SET first_send_at = CAST(:occurred_at AS timestamptz)
    WHERE id = CAST(:account_id AS bigint) AND first_send_at IS NULL AND EXISTS (SELECT 1 FROM mine)
)
INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step, variant,
                    account_id, provider, attempt, dedupe_key, data)
SELECT CAST(:occurred_at AS timestamptz), 'ATTEMPTED', m.id, m.person_id, m.sequence_id, m.version_id, m.step,
       m.variant, CAST(:account_id AS bigint), CAST(:provider AS text), m.attempts, m.dedupe_key, m.data
FROM mine m
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING enrollment_id
""")


@dataclass
class Intent:
    """One lead about to be called: its claimed row (id, step) and what its ATTEMPTED event says."""

    id: int
    step: str
    dedupe_key: str
    variant: str | None = None
    data: dict = field(default_factory=dict)


def intend(conn: sa.Connection, intents: list[Intent], *, owner: str, occurred_at: datetime, account_id: int,
           provider: str | None) -> set[int]:
    """Write the ATTEMPTED events of leads claimed (``claim(mark_in_flight=True)``) in this same transaction,
    fenced on the lease, and the account's ``first_send_at`` if unset; returns the ids written. Commit it before
    any provider call."""
    if not intents:
        return set()
    return {r[0] for r in conn.execute(INTENT_SQL, {
        "id": [i.id for i in intents], "step": [i.step for i in intents], "variant": [i.variant for i in intents],
        "dedupe_key": [i.dedupe_key for i in intents], "data": [_json(i.data) for i in intents],
        "owner": owner, "occurred_at": occurred_at, "account_id": account_id, "provider": provider})}

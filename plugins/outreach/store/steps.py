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
    SELECT e.id
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
    next_run_at = :lease_from + make_interval(secs => :lease), attempts = e.attempts + 1, updated_at = now()
FROM due
WHERE e.id = due.id
RETURNING e.id, e.sequence_id, e.version_id, e.person_id, e.current_step, e.attempts, e.in_flight,
          e.variables, e.variants, e.last_action_at, e.created_at,
          -- reconcile looks back to the FIRST unresolved attempt of this step (steps are never revisited: the
          -- trigger graph is acyclic); the latest attempt may be one that never reached the provider
          CASE WHEN e.in_flight THEN (SELECT min(ev.occurred_at) FROM events ev WHERE ev.enrollment_id = e.id
                                      AND ev.kind = 'ATTEMPTED' AND ev.step = e.current_step) END AS first_attempt_at
""")

DUE_SQL = sa.text("""
SELECT a.type AS action_type, count(*) AS n
FROM enrollments e
JOIN sequence_actions a ON a.version_id = e.version_id AND a.key = e.current_step
JOIN sequences s ON s.id = e.sequence_id
WHERE e.account_id = :account_id AND e.status = 'ACTIVE' AND e.phase = 'pending' AND e.next_run_at <= :now
  AND s.status = 'ACTIVE' AND (CAST(:sequences AS text[]) IS NULL OR s.name = ANY(CAST(:sequences AS text[])))
GROUP BY a.type
""")


def claim(conn: sa.Connection, *, account_id: int, action_type: str, now: datetime, owner: str,
          limit: int, lease_seconds: int, sequences: list[str] | None = None,
          lease_from: datetime | None = None, enrollment_ids: list[int] | None = None) -> list:
    """Claim due rows (due at ``now``; only ``enrollment_ids`` when given: the reactions path); the lease runs from ``lease_from`` (default ``now``): the engine clock
    moved on by the time a long advance claims its later batches, so a lease from a stale ``now`` would
    already be over for a worker that reads the clock afresh."""
    if limit <= 0:
        return []
    return conn.execute(CLAIM_SQL, {
        "account_id": account_id, "action_type": action_type, "now": now, "owner": owner, "limit": limit,
        "lease": lease_seconds, "sequences": sequences, "lease_from": lease_from or now,
        "ids": enrollment_ids,
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


APPLY_SQL = sa.text("""
WITH v AS (
    SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
        id bigint, expect_step text, expect_phase text, status text, step text, phase text,
        next_run_at timestamptz, event_kind text, occurred_at timestamptz, provider text, in_flight boolean,
        keep_lease boolean, reset_attempts boolean, refund_attempt boolean, performed boolean, reason text,
        ended_reason text, dedupe_key text, provider_ref text, variant text, data jsonb)
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


def _row(t: Transition) -> dict:
    d = dict(t.__dict__)
    for k in ("next_run_at", "occurred_at"):
        d[k] = d[k].isoformat() if d[k] else None
    return d


def apply(conn: sa.Connection, transitions: list[Transition], *, owner: str | None,
          account_id: int | None = None, provider: str | None = None, now: datetime | None = None) -> set[int]:
    """Apply transitions whose fence still holds; write one event each. Returns the ids that passed.

    ``owner`` None is a system write (ingest, timeouts): it applies to unleased rows, and to rows whose lease
    expired before ``now``."""
    if not transitions:
        return set()
    rows = conn.execute(APPLY_SQL, {"rows": json.dumps([_row(t) for t in transitions], default=str),
                                    "owner": owner, "account_id": account_id, "provider": provider,
                                    "now": now}).all()
    return {r[0] for r in rows}

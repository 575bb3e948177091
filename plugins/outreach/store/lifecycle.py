"""Sequence lifecycle: version history and diff, explicit migrations of in-flight enrollments, pause/resume/archive."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from outreach.domain import machine
from outreach.domain.model import SequenceDef
from outreach.store.catalog import NotFound


def history(conn: sa.Connection, name: str) -> list:
    rows = conn.execute(sa.text("""
        SELECT v.version, v.published_at, v.digest, v.source_file,
               count(e.id) FILTER (WHERE e.status IN ('ACTIVE', 'PAUSED')) AS in_flight,
               count(e.id) AS enrolled
        FROM sequences s JOIN sequence_versions v ON v.sequence_id = s.id
        LEFT JOIN enrollments e ON e.version_id = v.id
        WHERE s.name = :n GROUP BY v.id ORDER BY v.version"""), {"n": name}).all()
    if not rows:
        raise NotFound(f"no sequence named {name!r}")
    return rows


def version(conn: sa.Connection, name: str, number: int) -> tuple[int, SequenceDef]:
    row = conn.execute(sa.text("""
        SELECT v.id, s.accounts, v.definition FROM sequences s JOIN sequence_versions v ON v.sequence_id = s.id
        WHERE s.name = :n AND v.version = :v"""), {"n": name, "v": number}).first()
    if not row:
        raise NotFound(f"sequence {name!r} has no version {number}")
    return row.id, SequenceDef.from_canonical(name, tuple(row.accounts), row.definition)


def diff(a: SequenceDef, b: SequenceDef) -> list[str]:
    """Human-readable differences from ``a`` to ``b``."""
    out = []
    if a.start != b.start:
        out.append(f"~ start: {a.start} -> {b.start}")
    for key in sorted(a.actions.keys() | b.actions.keys()):
        x, y = a.actions.get(key), b.actions.get(key)
        if x is None:
            out.append(f"+ action {key} ({y.type})")
        elif y is None:
            out.append(f"- action {key} ({x.type})")
        else:
            for f in ("type", "message", "fallback_message", "subject", "note", "variants"):
                if getattr(x, f) != getattr(y, f):
                    out.append(f"~ action {key}.{f}: {getattr(x, f)!r} -> {getattr(y, f)!r}")

    def tkey(t):
        return (t.from_action, t.kind)

    ta, tb = {tkey(t): t for t in a.triggers}, {tkey(t): t for t in b.triggers}
    for k in sorted(ta.keys() | tb.keys()):
        x, y = ta.get(k), tb.get(k)
        label = f"trigger {k[0]} {k[1]}"
        if x is None:
            out.append(f"+ {label} -> {y.to or 'END'}" + (f" after {y.after_seconds}s" if y.after_seconds else ""))
        elif y is None:
            out.append(f"- {label} -> {x.to or 'END'}")
        elif x != y:
            out.append(f"~ {label}: to {x.to or 'END'} after {x.after_seconds} within {x.within_seconds} -> "
                       f"to {y.to or 'END'} after {y.after_seconds} within {y.within_seconds}")
    if a.exclude_already_contacted != b.exclude_already_contacted:
        out.append(f"~ exclude_already_contacted: {a.exclude_already_contacted} -> {b.exclude_already_contacted}")
    return out


@dataclass
class MigrationPlan:
    moves: Counter = field(default_factory=Counter)  # (from_step, phase, to_step) -> leads
    stranded: Counter = field(default_factory=Counter)  # (step, phase, why) -> leads
    busy: int = 0  # leased by a worker right now

    @property
    def total(self) -> int:
        return sum(self.moves.values())


def plan_migration(conn: sa.Connection, name: str, v_from: int, v_to: int, mapping: dict[str, str],
                   now: datetime, lock: bool = False) -> tuple[MigrationPlan, dict, int, int, SequenceDef]:
    """Count where every in-flight enrollment of ``v_from`` would go in ``v_to``. With ``lock`` the rows are
    locked (FOR UPDATE) so the real run moves exactly what was counted."""
    from_id, seq_a = version(conn, name, v_from)
    to_id, seq_b = version(conn, name, v_to)
    for old, new in mapping.items():
        if old not in seq_a.actions:
            raise ValueError(f"--map {old}={new}: version {v_from} has no step {old!r}")
        if new not in seq_b.actions:
            raise ValueError(f"--map {old}={new}: version {v_to} has no step {new!r}")
    if lock:  # the real run moves exactly the rows it counted
        conn.execute(sa.text("SELECT id FROM enrollments WHERE version_id = :vid AND status IN ('ACTIVE', 'PAUSED') "
                             "FOR UPDATE"), {"vid": from_id})
    counts = conn.execute(sa.text("""
        SELECT current_step, phase, count(*) AS n,
               count(*) FILTER (WHERE lease_owner IS NOT NULL AND lease_expires_at > :now) AS busy
        FROM enrollments WHERE version_id = :vid AND status IN ('ACTIVE', 'PAUSED')
        GROUP BY current_step, phase"""), {"vid": from_id, "now": now}).all()
    # pending leads moving to a step of another provider need a sender account of that provider
    need = [{"step": r.current_step, "provider": seq_b.actions[new].provider}
            for r in counts if r.phase == "pending"
            for new in [mapping.get(r.current_step, r.current_step)] if new in seq_b.actions
            and seq_b.actions[new].provider]
    lacking = dict(conn.execute(sa.text("""
        SELECT e.current_step, count(*) FROM enrollments e
        JOIN jsonb_to_recordset(CAST(:need AS jsonb)) AS x(step text, provider text) ON x.step = e.current_step
        WHERE e.version_id = :vid AND e.status IN ('ACTIVE', 'PAUSED') AND e.phase = 'pending'
          AND NOT (e.accounts ? x.provider)
        GROUP BY e.current_step"""), {"need": json.dumps(need), "vid": from_id}).all()) if need else {}
    plan, targets = MigrationPlan(), {}
    for r in counts:
        plan.busy += r.busy
        new = mapping.get(r.current_step, r.current_step if r.current_step in seq_b.actions else None)
        why = None
        if new is None:
            why = f"no step {r.current_step!r} in v{v_to} and no --map for it"
        elif r.phase == "waiting" and seq_a.actions[r.current_step].type != seq_b.actions[new].type:
            why = (f"waiting after {seq_a.actions[r.current_step].type}; {new!r} is "
                   f"{seq_b.actions[new].type} (a waiting lead can only map to the same action type)")
        if why:
            plan.stranded[(r.current_step, r.phase, why)] += r.n
            continue
        short = lacking.get(r.current_step, 0) if r.phase == "pending" else 0
        if short:
            plan.stranded[(r.current_step, r.phase,
                           f"{new!r} needs a {seq_b.actions[new].provider} account these leads do not have")] += short
        if r.n - short:
            plan.moves[(r.current_step, r.phase, new)] += r.n - short
            targets[(r.current_step, r.phase)] = new
    return plan, targets, from_id, to_id, seq_b


def migrate(conn: sa.Connection, name: str, v_from: int, v_to: int, mapping: dict[str, str], now: datetime,
            dry_run: bool) -> MigrationPlan:
    """Move in-flight enrollments from ``v_from`` to ``v_to``: one transaction (the caller's), an event per lead.
    Refuses (ValueError) when any lead would be stranded or is being advanced right now."""
    plan, targets, from_id, to_id, seq_b = plan_migration(conn, name, v_from, v_to, mapping, now, lock=not dry_run)
    if dry_run:
        return plan
    if plan.stranded:
        raise ValueError(f"{sum(plan.stranded.values())} leads would be stranded; nothing moved "
                         "(map their steps with --map old=new, or run with --dry-run to see them)")
    if plan.busy:
        raise ValueError(f"{plan.busy} leads are being advanced right now; nothing moved, try again shortly")
    rows = []
    for (old, phase), new in targets.items():
        offset = None
        if phase == "waiting":
            epoch = datetime.fromtimestamp(0, now.tzinfo)
            nxt = machine.after_action(seq_b, new, epoch)
            offset = (nxt.next_run_at - epoch).total_seconds() if nxt.next_run_at else None
        rows.append({"old": old, "phase": phase, "new": new, "offset": offset,
                     "provider": seq_b.actions[new].provider})
    moved = conn.execute(sa.text("""
        WITH m AS (SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                   AS m(old text, phase text, new text, "offset" float8, provider text)),
        upd AS (
            UPDATE enrollments e SET version_id = :to_id, current_step = m.new,
                next_run_at = CASE WHEN m.phase = 'waiting'
                                   THEN e.last_action_at + make_interval(secs => m."offset") ELSE e.next_run_at END,
                account_id = coalesce((e.accounts ->> m.provider)::bigint, e.account_id), updated_at = now()
            FROM m WHERE e.version_id = :from_id AND e.status IN ('ACTIVE', 'PAUSED')
              AND e.current_step = m.old AND e.phase = m.phase
            RETURNING e.id, e.person_id, e.sequence_id, e.account_id, m.old, m.new)
        INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step, account_id,
                            reason, data)
        SELECT :now, 'MIGRATED', id, person_id, sequence_id, :to_id, new, account_id, 'v' || :vf || '->v' || :vt,
               jsonb_build_object('from_step', old, 'to_step', new, 'from_version', :vf, 'to_version', :vt)
        FROM upd"""), {"rows": json.dumps(rows), "to_id": to_id, "from_id": from_id, "now": now,
                       "vf": v_from, "vt": v_to}).rowcount
    if moved != plan.total:
        raise RuntimeError(f"migration moved {moved} leads but planned {plan.total}; rolled back")
    return plan


def set_account_status(conn: sa.Connection, name: str, status: str) -> None:
    if not conn.execute(sa.text("UPDATE sender_accounts SET status = :s, updated_at = now() WHERE name = :n"),
                        {"s": status, "n": name}).rowcount:
        raise NotFound(f"no account named {name!r}")


def set_enrollment_status(conn: sa.Connection, enrollment_id: int, status: str, now: datetime) -> str:
    """Pause (ACTIVE -> PAUSED) or resume (PAUSED -> ACTIVE) one enrollment; it keeps its step and time."""
    want_from = "ACTIVE" if status == "PAUSED" else "PAUSED"
    row = conn.execute(sa.text("""
        WITH upd AS (UPDATE enrollments SET status = :to, updated_at = now()
                     WHERE id = :id AND status = :from RETURNING id, person_id, sequence_id, version_id, current_step)
        INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step)
        SELECT :now, :kind, id, person_id, sequence_id, version_id, current_step FROM upd RETURNING enrollment_id"""),
        {"to": status, "from": want_from, "id": enrollment_id, "now": now,
         "kind": "PAUSED" if status == "PAUSED" else "RESUMED"}).first()
    if row:
        return status
    cur = conn.execute(sa.text("SELECT status FROM enrollments WHERE id = :id"), {"id": enrollment_id}).scalar()
    if cur is None:
        raise NotFound(f"no enrollment with id {enrollment_id}")
    raise ValueError(f"enrollment {enrollment_id} is {cur}; only {want_from} enrollments can be "
                     f"{'paused' if status == 'PAUSED' else 'resumed'}")

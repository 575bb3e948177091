"""Polling (incremental, with stored cursors), ingest of inbound signals, and timeout triggers."""
from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import datetime

import sqlalchemy as sa

from outreach.domain import machine
from outreach.domain.intent import classify
from outreach.domain.model import SequenceDef
from outreach.providers.base import ProviderError
from outreach.store import catalog, steps
from outreach.store.steps import Transition

log = logging.getLogger(__name__)

# provider -> identity kind of its user ids
IDENTITY_KIND = {"x": "twitter", "linkedin": "linkedin", "email": "email", "xmtp": "xmtp"}
STREAMS = {"inbox": {"x": "inbox"}, "relationships": {"x": "followers"}}


def poll_account(engine: sa.Engine, account, provider_client, stream: str, now: datetime) -> Counter:
    """Read what is new on one stream of one account; store signals and the cursor in one transaction."""
    counts: Counter = Counter()
    with engine.connect() as conn:
        cursor = conn.execute(sa.text(
            "SELECT cursor FROM provider_cursors WHERE account_id = :a AND stream = :s"),
            {"a": account.id, "s": stream}).scalar()
    try:
        signals, new_cursor = provider_client.poll(account.user_id, stream, cursor)
    except ProviderError as e:  # a failed poll is retried next tick; the cursor did not move
        log.warning("poll %s/%s failed: %s", account.name, stream, e)
        counts["poll_errors"] += 1
        return counts
    counts["polled"] += len(signals)
    with engine.begin() as conn:
        if signals:
            inserted = conn.execute(sa.text("""
                INSERT INTO inbound_signals (provider, account_id, kind, external_id, conversation_id, provider_ref,
                                             text, occurred_at, source)
                SELECT :p, :a, x.kind, x.external_id, x.conversation_id, x.provider_ref, x.text,
                       coalesce(x.occurred_at, :now), 'poll'
                FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(kind text, external_id text, conversation_id text,
                     provider_ref text, text text, occurred_at timestamptz)
                ON CONFLICT (provider, provider_ref) DO NOTHING"""), {
                "p": account.provider, "a": account.id, "now": now,
                "rows": json.dumps([{**s.__dict__, "occurred_at": s.occurred_at.isoformat() if s.occurred_at else None}
                                    for s in signals]),
            }).rowcount
            counts["new_signals"] += inserted
            counts["duplicate_signals"] += len(signals) - inserted
        conn.execute(sa.text("""
            INSERT INTO provider_cursors (account_id, stream, cursor, updated_at) VALUES (:a, :s, :c, now())
            ON CONFLICT (account_id, stream) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()"""),
            {"a": account.id, "s": stream, "c": new_cursor})
    return counts


MATCH_SQL = sa.text("""
WITH sig AS (
    SELECT * FROM inbound_signals WHERE processed_at IS NULL ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
)
SELECT sig.id AS signal_id, sig.kind, sig.provider, sig.provider_ref, sig.occurred_at, sig.account_id,
       sig.external_id, sig.text, m.id AS enrollment_id, m.person_id, m.sequence_id, m.version_id, m.current_step,
       m.phase, m.status, m.last_action, m.last_action_at, m.leased, m.variants
FROM sig
LEFT JOIN LATERAL (
    -- the enrollments this signal answers: same person, same sender account for the provider. Every ACTIVE one
    -- (a reply or a follow-back concerns the person, whichever sequence is waiting for it); else the latest.
    SELECT * FROM (
        SELECT e.id, e.person_id, e.sequence_id, e.version_id, e.current_step, e.phase, e.status, e.last_action,
               e.last_action_at, e.variants, (e.lease_owner IS NOT NULL AND e.lease_expires_at > :now) AS leased,
               rank() OVER (ORDER BY (e.status = 'ACTIVE') DESC,
                            CASE WHEN e.status = 'ACTIVE' THEN 0 ELSE e.id END DESC) AS pick
        FROM identities i
        JOIN enrollments e ON e.person_id = i.person_id AND e.accounts ->> sig.provider = sig.account_id::text
        WHERE i.kind = CASE sig.provider WHEN 'x' THEN 'twitter' WHEN 'linkedin' THEN 'linkedin'
                           WHEN 'email' THEN 'email' WHEN 'xmtp' THEN 'xmtp' END
          AND i.value = sig.external_id
    ) c WHERE c.pick = 1
) m ON true
ORDER BY sig.id
""")


def ingest(engine: sa.Engine, now: datetime, limit: int = 5000) -> Counter:
    """Match unprocessed signals to enrollments, log them, and fire the event triggers they satisfy.

    One transaction per batch of signals: the match, the events, the transitions, the processed marks.
    A signal matched to an enrollment that a worker holds right now is left for the next ingest.
    """
    counts: Counter = Counter()
    while True:
        with engine.begin() as conn:
            rows = conn.execute(MATCH_SQL, {"limit": limit, "now": now}).all()
            if not rows:
                return counts
            versions = catalog.load_versions(conn, {r.version_id for r in rows if r.version_id})
            by_signal: dict[int, list] = {}
            for r in rows:
                by_signal.setdefault(r.signal_id, []).append(r)
            done, events, transitions, seen_enr = [], [], [], set()
            for signal_id, matches in by_signal.items():
                if any(r.leased or r.enrollment_id in seen_enr for r in matches if r.enrollment_id):
                    counts["deferred"] += 1  # a worker holds one of its enrollments, or it got a signal already
                    continue
                done.append(signal_id)
                for r in matches:
                    if r.enrollment_id is None:
                        counts["unmatched"] += 1
                        events.append(_signal_event(r, None))
                        continue
                    counts["matched"] += 1
                    seen_enr.add(r.enrollment_id)
                    nxt = None
                    if r.status == "ACTIVE":
                        nxt = machine.on_signal(versions[r.version_id], r.current_step, r.phase, r.last_action_at,
                                                r.kind, r.occurred_at, now)
                    if nxt is None:
                        events.append(_signal_event(r, r.enrollment_id))
                        continue
                    transitions.append((r, nxt, Transition(
                        id=r.enrollment_id, expect_step=r.current_step, expect_phase=r.phase, status=nxt.status,
                        step=nxt.step, phase=nxt.phase, next_run_at=nxt.next_run_at, event_kind=r.kind,
                        occurred_at=r.occurred_at, provider=nxt.provider, reset_attempts=True,
                        ended_reason=nxt.reason if nxt.status != "ACTIVE" else None,
                        dedupe_key=_signal_key(r), provider_ref=r.provider_ref,
                        variant=(r.variants or {}).get(r.last_action),
                        data={"next": nxt.step if nxt.status == "ACTIVE" else nxt.status, "fired": nxt.fired,
                              "text": (r.text or "")[:500], "answers": r.last_action, **_intent(r)},
                    )))
            passed = steps.apply(conn, [t for _, _, t in transitions], owner=None, now=now)
            for r, nxt, t in transitions:
                if t.id in passed:
                    counts["fired:" + (nxt.fired or nxt.reason or "?")] += 1
                elif r.signal_id in done:  # the state moved under us: take the signal again next time
                    done.remove(r.signal_id)
                    counts["retry_later"] += 1
            events = [e for e in events if e["signal_id"] in done]
            _insert_events(conn, events)
            counts["opt_outs"] += _suppress_opt_outs(conn, [ms[0] for sid, ms in by_signal.items() if sid in done], now)
            conn.execute(sa.text("UPDATE inbound_signals SET processed_at = :now WHERE id = ANY(:ids)"),
                         {"now": now, "ids": done})
            counts["ingested"] += len(done)
            if len(rows) < limit or not done:
                return counts


def _intent(r) -> dict:
    return {"intent": classify(r.text)} if r.kind == "REPLIED" else {}


def _suppress_opt_outs(conn: sa.Connection, rows: list, now: datetime) -> int:
    """A reply whose intent is unsubscribe suppresses that identity (and its person) on every channel."""
    out = [{"kind": IDENTITY_KIND[r.provider], "value": r.external_id, "person": r.person_id,
            "source": f"reply:{r.provider}:{r.provider_ref}"}
           for r in rows if r.kind == "REPLIED" and classify(r.text) == "unsubscribe"]
    if not out:
        return 0
    conn.execute(sa.text("""
        INSERT INTO suppressions (kind, value, reason, source, created_at)
        SELECT x.kind, x.value, 'opt_out_reply', x.source, :now FROM jsonb_to_recordset(CAST(:rows AS jsonb))
             AS x(kind text, value text, person bigint, source text)
        UNION ALL
        SELECT 'person', x.person::text, 'opt_out_reply', x.source, :now FROM jsonb_to_recordset(CAST(:rows AS jsonb))
             AS x(kind text, value text, person bigint, source text) WHERE x.person IS NOT NULL
        ON CONFLICT (kind, value) DO NOTHING"""), {"rows": json.dumps(out), "now": now})
    return len(out)


def _signal_key(r) -> str:
    """One log entry per (signal, enrollment): a signal can answer several of a person's enrollments."""
    base = f"sig:{r.provider}:{r.provider_ref}"
    return f"{base}:{r.enrollment_id}" if r.enrollment_id else base


def _signal_event(r, enrollment_id: int | None) -> dict:
    return {
        "signal_id": r.signal_id,
        "occurred_at": r.occurred_at.isoformat(), "kind": r.kind if enrollment_id else "UNMATCHED_SIGNAL",
        "enrollment_id": enrollment_id, "person_id": r.person_id, "sequence_id": r.sequence_id,
        "version_id": r.version_id, "step": r.last_action, "account_id": r.account_id, "provider": r.provider,
        "provider_ref": r.provider_ref, "dedupe_key": _signal_key(r),
        "variant": (r.variants or {}).get(r.last_action) if enrollment_id else None,
        "data": {"external_id": r.external_id, "text": (r.text or "")[:500], "signal": r.kind, **_intent(r)},
    }


def _insert_events(conn: sa.Connection, events: list[dict]) -> None:
    if not events:
        return
    conn.execute(sa.text("""
        INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step, variant,
                            account_id, provider, provider_ref, dedupe_key, data)
        SELECT occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step, variant, account_id,
               provider, provider_ref, dedupe_key, data
        FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(occurred_at timestamptz, kind text, enrollment_id bigint,
             person_id bigint, sequence_id bigint, version_id bigint, step text, variant text, account_id bigint,
             provider text, provider_ref text, dedupe_key text, data jsonb)
        ON CONFLICT (dedupe_key) DO NOTHING"""), {"rows": json.dumps(events)})


DEADLINE_SQL = sa.text("""
SELECT e.id, e.version_id, e.current_step FROM enrollments e
JOIN sequences s ON s.id = e.sequence_id
WHERE e.status = 'ACTIVE' AND e.phase = 'waiting' AND e.next_run_at <= :now AND s.status = 'ACTIVE'
ORDER BY e.next_run_at LIMIT :limit FOR UPDATE OF e SKIP LOCKED
""")


def fire_timeouts(engine: sa.Engine, now: datetime, limit: int = 5000) -> Counter:
    """Waiting enrollments whose deadline passed with no signal: fire their timeout trigger (or finish)."""
    counts: Counter = Counter()
    versions: dict[int, SequenceDef] = {}
    while True:
        with engine.begin() as conn:
            rows = conn.execute(DEADLINE_SQL, {"now": now, "limit": limit}).all()
            if not rows:
                return counts
            missing = {r.version_id for r in rows} - versions.keys()
            versions.update(catalog.load_versions(conn, missing))
            transitions = []
            for r in rows:
                nxt = machine.on_deadline(versions[r.version_id], r.current_step, now)
                counts["fired:" + (nxt.fired or nxt.reason)] += 1
                transitions.append(Transition(
                    id=r.id, expect_step=r.current_step, expect_phase="waiting", status=nxt.status, step=nxt.step,
                    phase=nxt.phase, next_run_at=nxt.next_run_at, event_kind="TRIGGER_FIRED", occurred_at=now,
                    provider=nxt.provider, reset_attempts=True, reason=nxt.fired or nxt.reason,
                    ended_reason=nxt.reason if nxt.status != "ACTIVE" else None,
                    dedupe_key=f"tmo:{r.id}:{r.current_step}",
                    data={"next": nxt.step if nxt.status == "ACTIVE" else nxt.status, "fired": nxt.fired},
                ))
            steps.apply(conn, transitions, owner=None, now=now)
            if len(rows) < limit:
                return counts

"""Polling (incremental, with stored cursors), ingest of inbound signals, and timeout triggers."""
from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import datetime, timedelta

import sqlalchemy as sa

from outreach.domain import machine
from outreach.domain.intent import classify, return_date
from outreach.domain.model import SequenceDef
from outreach.providers.base import ProviderError
from outreach.store import catalog, steps
from outreach.store.steps import Transition

log = logging.getLogger(__name__)

# provider -> identity kind of its user ids
IDENTITY_KIND = {"x": "twitter", "linkedin": "linkedin", "email": "email", "xmtp": "xmtp"}
STREAMS = {"inbox": {"x": "inbox", "linkedin": "events", "xmtp": "messages", "email": "imap"},
           "relationships": {"x": "followers"}}
# how far back a provider's inbox history reaches (X dm_events: 30 days): a longer gap between two polls of such
# a stream loses replies, so a POLL_GAP event is logged and NOT_REPLIED timeouts over it become REPLY_UNKNOWN
HISTORY_DAYS = {("x", "inbox"): 30}


INSERT_SQL = sa.text("""
INSERT INTO inbound_signals (provider, account_id, kind, external_id, conversation_id, provider_ref, text,
                             occurred_at, source)
SELECT :p, :a, x.kind, x.external_id, x.conversation_id, x.provider_ref, x.text, coalesce(x.occurred_at, :now),
       :source
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(kind text, external_id text, conversation_id text,
     provider_ref text, text text, occurred_at timestamptz)
ON CONFLICT (provider, provider_ref) DO NOTHING
RETURNING id
""")


def insert_signals(conn: sa.Connection, provider: str, account_id: int, signals: list, source: str,
                   now: datetime) -> list[int]:
    """Store signals of one account, one statement; a (provider, provider_ref) already stored, by either path
    (``poll`` or ``webhook``), is skipped. Returns the ids of the new rows."""
    if not signals:
        return []
    return [r[0] for r in conn.execute(INSERT_SQL, {
        "p": provider, "a": account_id, "now": now, "source": source,
        "rows": json.dumps([s.as_row() for s in signals])})]


def poll_account(engine: sa.Engine, account, provider_client, stream: str, now: datetime) -> Counter:
    """Read what is new on one stream of one account; store signals and the cursor in one transaction."""
    counts: Counter = Counter()
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT cursor, updated_at FROM provider_cursors WHERE account_id = :a AND stream = :s"),
            {"a": account.id, "s": stream}).first()
    cursor, last_polled = (row.cursor, row.updated_at) if row else (None, None)
    try:
        signals, new_cursor = provider_client.poll(account.user_id, stream, cursor)
    except ProviderError as e:  # a failed poll is retried next tick; the cursor did not move
        log.warning("poll %s/%s failed: %s", account.name, stream, e)
        counts["poll_errors"] += 1
        return counts
    counts["polled"] += len(signals)
    with engine.begin() as conn:
        if signals:
            inserted = len(insert_signals(conn, account.provider, account.id, signals, "poll", now))
            counts["new_signals"] += inserted
            counts["duplicate_signals"] += len(signals) - inserted
        conn.execute(sa.text("""
            INSERT INTO provider_cursors (account_id, stream, cursor, updated_at) VALUES (:a, :s, :c, :now)
            ON CONFLICT (account_id, stream) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = EXCLUDED.updated_at"""),
            {"a": account.id, "s": stream, "c": new_cursor, "now": now})
        days = HISTORY_DAYS.get((account.provider, stream))
        if days and last_polled is not None and now - last_polled > timedelta(days=days):
            counts["poll_gaps"] += 1  # replies in the gap may be gone: timeouts over it are unknown, not "no"
            conn.execute(sa.text("""
                INSERT INTO events (occurred_at, kind, account_id, provider, reason, dedupe_key, data)
                VALUES (:now, 'POLL_GAP', :a, :p, :s, :k, CAST(:d AS jsonb)) ON CONFLICT (dedupe_key) DO NOTHING"""),
                {"now": now, "a": account.id, "p": account.provider, "s": stream,
                 "k": f"gap:{account.id}:{stream}:{now.isoformat()}",
                 "d": json.dumps({"from": last_polled.isoformat(), "to": now.isoformat()})})
    return counts


MATCH_SQL = sa.text("""
WITH sig AS (
    SELECT * FROM inbound_signals WHERE processed_at IS NULL ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
)
SELECT sig.id AS signal_id, sig.kind, sig.provider, sig.provider_ref, sig.occurred_at, sig.account_id,
       sig.external_id, sig.text, m.id AS enrollment_id, m.person_id, m.sequence_id, m.version_id, m.current_step,
       m.phase, m.status, m.last_action, m.last_action_at, m.leased, m.variants, m.next_run_at
FROM sig
LEFT JOIN LATERAL (
    -- the enrollments this signal answers: same person, same sender account for the provider. Every ACTIVE one
    -- (a reply or a follow-back concerns the person, whichever sequence is waiting for it); else the latest.
    SELECT * FROM (
        SELECT e.id, e.person_id, e.sequence_id, e.version_id, e.current_step, e.phase, e.status, e.last_action,
               e.last_action_at, e.variants, e.next_run_at, (e.lease_owner IS NOT NULL AND e.lease_expires_at > :now) AS leased,
               rank() OVER (ORDER BY (e.status = 'ACTIVE') DESC,
                            CASE WHEN e.status = 'ACTIVE' THEN 0 ELSE e.id END DESC) AS pick
        -- a UNION of two index-driven branches: an OR here forced a scan of all enrollments per signal
        FROM (SELECT e1.* FROM identities i JOIN enrollments e1 ON e1.person_id = i.person_id
              WHERE i.kind = CASE sig.provider WHEN 'x' THEN 'twitter' WHEN 'linkedin' THEN 'linkedin'
                                 WHEN 'email' THEN 'email' WHEN 'xmtp' THEN 'xmtp' END
                AND i.value = sig.external_id
              UNION
              -- an email answering our Message-ID <outreach.{enrollment}...>, provided we recorded it as sent
              SELECT e2.* FROM enrollments e2
              WHERE sig.provider = 'email'
                AND e2.id = CAST(substring(sig.conversation_id from '^<outreach\\.([0-9]+)\\.') AS bigint)
                AND EXISTS (SELECT 1 FROM events ev WHERE ev.enrollment_id = e2.id AND ev.kind = 'SENT'
                            AND ev.provider_ref = sig.conversation_id)) e
        WHERE e.accounts ->> sig.provider = sig.account_id::text
    ) c WHERE c.pick = 1
) m ON true
ORDER BY sig.id
""")


def ingest(engine: sa.Engine, now: datetime, limit: int = 5000, moved: list[int] | None = None) -> Counter:
    """Match unprocessed signals to enrollments, log them, and fire the event triggers they satisfy.

    ``moved``, when given, receives the ids of the enrollments a signal moved (the reactions DAG advances those).

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
            again = False  # a signal waits only because another one moved its enrollment in this batch
            for signal_id, matches in by_signal.items():
                if any(r.leased for r in matches if r.enrollment_id):
                    counts["deferred"] += 1  # a worker holds one of its enrollments: the next ingest takes it
                    continue
                if any(r.enrollment_id in seen_enr for r in matches if r.enrollment_id):
                    counts["deferred"] += 1  # its enrollment got a signal already: the next batch takes it
                    again = True
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
                    ooo = _out_of_office(r)
                    if ooo is not None:  # an auto-reply is no answer: the lead waits until after the return date
                        if ooo[1] is not None and r.status == "ACTIVE":
                            resume = max(ooo[1], r.next_run_at) if r.next_run_at else ooo[1]
                            transitions.append((r, machine.Next("ACTIVE", r.current_step, r.phase, resume, None,
                                                                reason="out_of_office", fired="OUT_OF_OFFICE"),
                                                Transition(
                                id=r.enrollment_id, expect_step=r.current_step, expect_phase=r.phase, status="ACTIVE",
                                step=r.current_step, phase=r.phase, next_run_at=resume, event_kind="OUT_OF_OFFICE",
                                occurred_at=r.occurred_at, reason="paused_until_return", dedupe_key=_signal_key(r),
                                provider_ref=r.provider_ref, variant=(r.variants or {}).get(r.last_action),
                                data={"resume_at": resume.isoformat(), "return_date": ooo[0],
                                      "text": (r.text or "")[:500], "intent": "out_of_office"})))
                        else:
                            events.append(_signal_event(r, r.enrollment_id))
                        continue
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
                    if moved is not None:
                        moved.append(t.id)
                elif r.signal_id in done:  # the state moved under us: take the signal again next time
                    done.remove(r.signal_id)
                    counts["retry_later"] += 1
            events = [e for e in events if e["signal_id"] in done]
            replied = [r for sid in done for r in by_signal[sid] if r.kind == "REPLIED" and r.person_id]
            counts["stopped_elsewhere"] += _stop_other_conversations(
                conn, replied, {r.enrollment_id for r in replied}, versions, now)
            _insert_events(conn, events)
            counts["opt_outs"] += _suppress_opt_outs(conn, [ms[0] for sid, ms in by_signal.items() if sid in done], now)
            conn.execute(sa.text("UPDATE inbound_signals SET processed_at = :now WHERE id = ANY(:ids)"),
                         {"now": now, "ids": done})
            counts["ingested"] += len(done)
            if (len(rows) < limit and not again) or not done:
                return counts


def _stop_other_conversations(conn: sa.Connection, replied: list, handled: set[int], versions: dict,
                              now: datetime) -> int:
    """A reply on any channel ends the person's other active enrollments (and, when the replied-to sequence
    sets ``stop_company_on_reply``, those of everyone at the same company domain). One statement."""
    if not replied:
        return 0
    people = sorted({r.person_id for r in replied})
    company = sorted({r.person_id for r in replied
                      if r.version_id and versions[r.version_id].extras.get("stop_company_on_reply")})
    return conn.execute(sa.text("""
        WITH targets AS (
            SELECT unnest(CAST(:p AS bigint[])) AS pid, 'replied_elsewhere' AS why
            UNION ALL
            SELECT p2.id, 'company_replied' FROM people p1
            JOIN people p2 ON p2.company_domain = p1.company_domain AND p2.id <> p1.id
            WHERE p1.id = ANY(CAST(:pc AS bigint[])) AND p1.company_domain IS NOT NULL
        ), upd AS (
            UPDATE enrollments e SET status = 'COMPLETED', ended_reason = t.why, updated_at = now()
            FROM targets t
            WHERE e.person_id = t.pid AND e.status = 'ACTIVE' AND NOT (e.id = ANY(CAST(:handled AS bigint[])))
              AND (e.lease_owner IS NULL OR e.lease_expires_at <= :now)
            RETURNING e.id, e.person_id, e.sequence_id, e.version_id, e.current_step, e.account_id, t.why
        )
        INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step, account_id,
                            reason, dedupe_key)
        SELECT :now, 'STOPPED', id, person_id, sequence_id, version_id, current_step, account_id, why, 'stop:' || id
        FROM upd ON CONFLICT (dedupe_key) DO NOTHING"""),
        {"p": people, "pc": company, "handled": sorted(handled), "now": now}).rowcount


def _intent(r) -> dict:
    return {"intent": classify(r.text)} if r.kind == "REPLIED" else {}


def _out_of_office(r) -> tuple[str | None, datetime | None] | None:
    """(return date as ISO text, resume time) for an out-of-office reply; None for anything else.
    The lead resumes at 00:00 UTC on the day after the return date; without a date nothing changes."""
    if r.kind != "REPLIED" or classify(r.text) != "out_of_office":
        return None
    back = return_date(r.text, r.occurred_at)
    if back is None:
        return None, None
    resume = datetime(back.year, back.month, back.day, tzinfo=r.occurred_at.tzinfo) + timedelta(days=1)
    return back.isoformat(), resume


def _suppress_opt_outs(conn: sa.Connection, rows: list, now: datetime) -> int:
    """A reply whose intent is unsubscribe suppresses that identity (and its person) on every channel."""
    out = [{"kind": IDENTITY_KIND[r.provider], "value": r.external_id, "person": r.person_id,
            "source": f"reply:{r.provider}:{r.provider_ref}"}
           for r in rows if r.kind == "REPLIED" and classify(r.text) == "unsubscribe"]
    # channel-level stops: a denied XMTP consent or a hard bounce suppresses that address (not the person)
    channel = [{"kind": IDENTITY_KIND[r.provider], "value": r.external_id, "person": None,
                "source": f"{r.kind.lower()}:{r.provider}:{r.provider_ref}",
                "reason": "consent_denied" if r.kind == "CONSENT_DENIED" else "bounced"}
               for r in rows if r.kind in ("CONSENT_DENIED", "BOUNCED")]
    if channel:
        conn.execute(sa.text("""
            INSERT INTO suppressions (kind, value, reason, source, created_at)
            SELECT x.kind, x.value, x.reason, x.source, :now FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                 AS x(kind text, value text, reason text, source text)
            ON CONFLICT (kind, value) DO NOTHING"""), {"rows": json.dumps(channel), "now": now})
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


UNKNOWN_SQL = sa.text("""
SELECT x.id FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(id bigint, step text, account bigint, since timestamptz)
WHERE EXISTS (SELECT 1 FROM events v WHERE v.dedupe_key = 'out:' || x.id || ':' || x.step
                                       AND v.data ->> 'replies_visible' = 'false')
   OR EXISTS (SELECT 1 FROM events g WHERE g.kind = 'POLL_GAP' AND g.account_id = x.account
                                       AND g.occurred_at > x.since + interval '30 days')
""")


def _replies_unknown(conn: sa.Connection, rows: list) -> set[int]:
    """Enrollments waiting for a reply that the provider could not have shown us: the channel hides replies
    (XMTP conversations the gateway cannot read), or the inbox was not polled for longer than its history
    reaches (X keeps 30 days of DM events) after our action."""
    if not rows:
        return set()
    payload = [{"id": r.id, "step": r.current_step, "account": r.account_id,
                "since": r.last_action_at.isoformat() if r.last_action_at else None} for r in rows]
    return {x for (x,) in conn.execute(UNKNOWN_SQL, {"rows": json.dumps(payload)})}


DEADLINE_SQL = sa.text("""
SELECT e.id, e.version_id, e.current_step, e.account_id, e.last_action_at FROM enrollments e
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
            unknown = _replies_unknown(conn, [r for r in rows if machine.waits_for_reply(versions[r.version_id],
                                                                                          r.current_step)])
            for r in rows:
                if r.id in unknown:  # we could not have seen a reply: record "unknown", never a blind NOT_REPLIED
                    nxt = machine.on_reply_unknown(versions[r.version_id], r.current_step, now)
                else:
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

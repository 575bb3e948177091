"""Advance leads of one sender account: claim -> gate -> intent -> call -> record (DESIGN section 4).

Per batch: commit 1 holds the claim (lease), the gate's decisions and the ATTEMPTED intents; then the provider
calls run with no transaction open; commit 2 records every outcome, fenced on (lease owner, step, phase).
"""
from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from outreach.domain import machine, windows
from outreach.domain.model import SequenceDef
from outreach.domain.pacing import backoff_seconds
from outreach.engine import gate
from outreach.engine.budget import Budget, account_limits, feedback, refund
from outreach.engine.compose import compose, variables_for
from outreach.engine.signals import IDENTITY_KIND
from outreach.providers.base import AccountError, PermanentError, RateLimited, RetryableError
from outreach.providers.registry import action_types
from outreach.store import catalog, steps
from outreach.store.steps import Transition

log = logging.getLogger(__name__)

ENDPOINT_OF = {"FOLLOW_ON_TWITTER": "follow", "UNFOLLOW_ON_TWITTER": "unfollow", "SEND_TWITTER_DM": "dm",
               "SEND_CONNECTION_REQUEST": "invitation", "SEND_LINKEDIN_DM": "message", "SEND_XMTP_DM": "message"}


@dataclass
class AdvanceConfig:
    batch_size: int = 200
    lease_seconds: int = 300
    max_attempts: int = 5
    backoff_base: float = 60.0
    backoff_cap: float = 6 * 3600.0
    max_actions: int | None = None
    dry_run: bool = False
    sequences: list[str] | None = None
    # only these enrollments (the reactions DAG advances just the leads a signal moved), else every due one
    enrollment_ids: list[int] | None = None
    # time.monotonic() when the caller read ``now``: leases run from now + the whole seconds elapsed since,
    # so a long advance never hands out leases that already expired on the clock other workers read
    clock_origin: float | None = None


@dataclass
class _Go:
    row: object
    seq: SequenceDef
    text: str
    variant: str | None
    recipient: dict
    reconcile: bool  # an earlier attempt has no outcome: ask the provider before re-sending


def new_owner() -> str:
    return f"w-{uuid.uuid4().hex[:12]}"


def advance_account(engine: sa.Engine, account, provider_client, *, now: datetime,
                    config: AdvanceConfig | None = None, owner: str | None = None,
                    rng: random.Random | None = None) -> Counter:
    """Advance every due enrollment of ``account`` (a sender_accounts row) until nothing is due or no budget."""
    cfg = config or AdvanceConfig()
    if cfg.clock_origin is None:
        cfg = AdvanceConfig(**{**cfg.__dict__, "clock_origin": time.monotonic()})
    if 2 * _call_timeout(provider_client) >= cfg.lease_seconds:
        raise ValueError(f"lease_seconds={cfg.lease_seconds} leaves no time for a provider call (HTTP timeout "
                         f"{_call_timeout(provider_client):g}s, up to two calls per lead): raise lease_seconds")
    owner = owner or new_owner()
    rng = rng or random.Random()
    counts: Counter = Counter()
    if account.status != "ACTIVE" or (account.blocked_until and account.blocked_until > now):
        counts["account_blocked"] += 1
        return counts
    versions: dict[int, SequenceDef] = {}
    # One connection for the account's batches (no pool checkout and pre-ping per batch); it never holds a
    # transaction open across a provider call (see _batch).
    conn = engine.connect()
    try:
        with conn.begin():  # which action types have due work at all: only those are claimed
            due = steps.due_types(conn, account_id=account.id, now=now, sequences=cfg.sequences,
                                  enrollment_ids=cfg.enrollment_ids)
        for action_type in action_types(account.provider):
            if not due.get(action_type):
                continue
            while True:
                budget_left = None if cfg.max_actions is None else cfg.max_actions - counts["attempted"]
                if budget_left is not None and budget_left <= 0:
                    return counts
                if not _batch(conn, account, provider_client, action_type, now, cfg, owner, rng, versions, counts,
                              budget_left):
                    break
    finally:
        conn.close()
    return counts


def _batch(conn, account, provider_client, action_type, now, cfg, owner, rng, versions, counts, budget_left) -> bool:
    """One batch. Returns whether another batch of this action type may find more to do: False when it claimed
    fewer rows than it asked for (nothing more is due now), or had to stop (budget, rate limit, lease deadline)."""
    with conn.begin() as tx:
        limit = cfg.batch_size if budget_left is None else min(cfg.batch_size, budget_left)
        budget = None
        if action_type != "CHECK_FOR_REPLY":
            budget = Budget(conn, account.id, action_type, account_limits(account, action_type, now), now)
            limit = min(limit, budget.available())
            if limit <= 0:
                counts["budget_exhausted" if not budget.blocked else "rate_blocked"] += 1
                return False
        # The lease runs from the engine clock as it is now (whole seconds since ``now`` was read), and this
        # worker stops starting provider calls early enough that its last call ends before the lease does:
        # after that another worker may take the lead over and reconcile, and must not race a call of ours.
        elapsed = int(time.monotonic() - cfg.clock_origin)
        lease_from = now + timedelta(seconds=elapsed)
        call_deadline = (cfg.clock_origin + elapsed + cfg.lease_seconds
                         - max(0.2 * cfg.lease_seconds, 2 * _call_timeout(provider_client)))  # read + send
        # the claim writes the lease, the attempt and (for sends) the in-flight mark: the one write of the row
        # in this commit; the intents below only add their ATTEMPTED events
        rows = steps.claim(conn, account_id=account.id, action_type=action_type, now=now, owner=owner,
                           limit=limit, lease_seconds=cfg.lease_seconds, sequences=cfg.sequences,
                           lease_from=lease_from, enrollment_ids=cfg.enrollment_ids,
                           mark_in_flight=action_type != "CHECK_FOR_REPLY")
        if not rows:
            return False
        counts["claimed"] += len(rows)
        more = len(rows) >= limit
        missing = {r.version_id for r in rows} - versions.keys()
        if missing:
            versions.update(catalog.load_versions(conn, missing))
        person_ids = sorted({r.person_id for r in rows})
        # the conversation history is read only when a lead of the batch is a first contact or its sequence
        # caps the touch frequency (what _conversation_rule looks at)
        need_history = action_type != "CHECK_FOR_REPLY" and any(
            r.last_action_at is None or versions[r.version_id].extras.get("frequency_cap") for r in rows)
        people, blocked, history = gate.lookup(conn, person_ids, history=need_history)
        winners = gate.winners(conn, {r.version_id for r in rows})
        starting: set[int] = set()  # people whose first conversation starts in this batch
        intents, decided, gos = [], [], []
        if action_type == "CHECK_FOR_REPLY":
            replied = gate.replied_since_enrolment(conn, [(r.id, r.person_id) for r in rows])
        for r in rows:
            seq = versions[r.version_id]
            action = seq.actions[r.current_step]
            if r.person_id in blocked:
                decided.append(_end(r, "SKIPPED", "SKIPPED", blocked[r.person_id], now))
                counts["skipped:suppressed"] += 1
                continue
            policy = seq.extras
            if history is not None:
                why = _conversation_rule(r, seq, history, starting, now)
                if why is not None:
                    kind, reason, until = why
                    decided.append(_defer(r, until, reason, now, in_flight=r.in_flight) if kind == "DEFERRED"
                                   else _end(r, "SKIPPED", "SKIPPED", reason, now))
                    counts[f"{kind.lower()}:{reason}"] += 1
                    continue
            window = policy.get("send_window") or account.send_window
            if window and action_type != "CHECK_FOR_REPLY":
                tz = windows.zone(people[r.person_id].get("timezone"), account.timezone)
                opens = windows.next_open(now, window, tz)
                if opens > now:  # outside the lead's send window: wait for it to open, keep the place
                    decided.append(_defer(r, opens, "send_window", now, in_flight=r.in_flight,
                                          data={"timezone": tz.key}))
                    counts["deferred:send_window"] += 1
                    continue
            if action_type == "CHECK_FOR_REPLY":
                nxt = machine.after_action(seq, r.current_step, now)
                if r.id in replied:
                    nxt = machine.on_signal(seq, r.current_step, "waiting", now, "REPLIED", now, now) or nxt
                decided.append(_to(r, nxt, "CHECKED", now, performed=True))
                counts["checked"] += 1
                continue
            text, variant, skip = compose(action, r.id, variables_for(r.variables, people[r.person_id]),
                                          (r.variants or {}).get(r.current_step),
                                          winners.get((r.version_id, r.current_step)))
            if skip:
                decided.append(_end(r, "SKIPPED", "SKIPPED", skip, now))
                counts["skipped:" + skip.split(":")[0]] += 1
                continue
            gos.append(_Go(r, seq, text, variant, people[r.person_id], reconcile=r.in_flight))
            intents.append(steps.Intent(id=r.id, step=r.current_step,
                                        dedupe_key=f"att:{r.id}:{r.current_step}:{r.attempts}", variant=variant,
                                        data={"action": action.type, "reconcile": r.in_flight}))
        if cfg.dry_run:
            counts["would_send"] += len(gos)
            for g in gos:
                log.info("dry run: would %s enrollment %s%s: %r", action_type, g.row.id,
                         f" (variant {g.variant})" if g.variant else "", g.text[:200])
            tx.rollback()
            return False  # a dry run looks at one batch per action type and changes nothing
        if budget is not None:
            budget.spend(len(gos))
        steps.apply(conn, decided, owner=owner, account_id=account.id, provider=account.provider)
        # (the intent statement also sets the account's first_send_at, from which the warm-up ramp counts days)
        steps.intend(conn, intents, owner=owner, occurred_at=now, account_id=account.id,
                     provider=account.provider)
        counts["attempted"] += len(gos)
    # ---- commit 1 done: intents are durable. Provider calls, with no transaction open. ----
    outcomes, released, release_at, blocks = [], [], None, []
    stop: str | None = None
    rate_info = None
    spacing = account.spacing or {}
    for i, g in enumerate(gos):
        r = g.row
        if i and spacing and not stop:  # a human-like random gap between consecutive sends of one account
            gap = rng.uniform(spacing["min_seconds"], spacing["max_seconds"])
            if time.monotonic() + gap > call_deadline:
                stop = "lease_deadline"
            else:
                time.sleep(gap)
        if stop or time.monotonic() > call_deadline:
            released.append(g)  # never called: given back untouched (an earlier in-flight mark is kept)
            continue
        try:
            if g.reconcile:
                since = (r.first_attempt_at or now - timedelta(days=7)) - timedelta(seconds=60)  # clock skew
                by_key = {"idempotency_key": f"{r.id}:{r.current_step}"} if getattr(
                    provider_client, "reconcile_by_key", False) else {}  # gateways look the key up
                status, ref = provider_client.reconcile(action_type, account.user_id, g.recipient, g.text, since,
                                                        **by_key)
                counts["reconciled"] += 1
                if status == "landed":
                    outcomes.append(_sent(r, g, ref, now, reconciled=True))
                    counts["sent"] += 1
                    continue
                if status == "unknown":
                    outcomes.append(_end(r, "NEEDS_REVIEW", "NEEDS_REVIEW", "reconcile_unknown", now))
                    counts["needs_review"] += 1
                    continue
            ctx = {"context": {"subject": g.seq.actions[r.current_step].subject,
                               "variables": variables_for(r.variables, g.recipient)}} if getattr(
                provider_client, "wants_context", False) else {}  # email: the subject template
            result = provider_client.perform(action_type, account.user_id, g.recipient, g.text,
                                             idempotency_key=f"{r.id}:{r.current_step}", **ctx)
            outcomes.append(_sent(r, g, result.provider_ref, now))
            if (result.data or {}).get("replies_visible") is False:  # "unknown is not no" (signals.py)
                outcomes[-1].data["replies_visible"] = False
            counts["sent"] += 1
        except RateLimited as e:
            stop, release_at = "rate_limited", e.reset_at or now + timedelta(minutes=15)
            released.append(g)
            counts["rate_limited"] += 1
            rate_info = (None, None, e.reset_at, True)
            continue
        except AccountError as e:
            stop = "account_error"
            released.append(g)
            log.error("account %s cannot act: %s", account.name, e)
            counts["account_error"] += 1
            continue
        except RetryableError as e:
            outcomes.append(_retry(r, g, e, now, cfg, rng))
            counts["retried" if r.attempts < cfg.max_attempts else "failed:" + e.reason] += 1
            continue
        except PermanentError as e:
            outcomes.append(_end(r, "FAILED", "FAILED", e.reason, now, variant=g.variant,
                                 dedupe=f"out:{r.id}:{r.current_step}", data={"detail": e.detail[:300]}))
            counts["failed:" + e.reason] += 1
            kind = IDENTITY_KIND.get(account.provider)
            if e.reason == "blocked" and g.recipient.get(kind):  # a block suppresses that identity
                blocks.append({"kind": kind, "value": g.recipient[kind], "source": f"block:{account.name}"})
            continue
        info = getattr(provider_client.client, "last_rate", {}).get(ENDPOINT_OF.get(action_type, ""))
        if info is not None and info.remaining == 0:
            stop, release_at = "provider_remaining_0", info.reset_at
            rate_info = (info.remaining, info.limit, info.reset_at, False)
    if rate_info is None:
        info = getattr(provider_client.client, "last_rate", {}).get(ENDPOINT_OF.get(action_type, ""))
        if info is not None:
            rate_info = (info.remaining, info.limit, info.reset_at, False)
    # ---- commit 2: outcomes, fenced on the lease ----
    with conn.begin():
        passed = steps.apply(conn, outcomes, owner=owner, account_id=account.id, provider=account.provider)
        if len(passed) < len(outcomes):
            counts["fenced"] += len(outcomes) - len(passed)
            log.warning("%d outcomes lost their lease (another worker took over); they will be reconciled",
                        len(outcomes) - len(passed))
        if released:
            # never called: the lease and the budget are given back; a lead that was already in flight
            # before this batch keeps its mark (its earlier attempt still needs reconciling)
            steps.apply(conn, [_defer(g.row, release_at or now, stop or "lease_deadline", now,
                                      in_flight=g.reconcile) for g in released],
                        owner=owner, account_id=account.id, provider=account.provider)
            if action_type != "CHECK_FOR_REPLY":
                refund(conn, account.id, action_type, account_limits(account, action_type, now), now,
                       len(released))
            counts["released"] += len(released)
        if rate_info is not None and action_type != "CHECK_FOR_REPLY":
            remaining, limit_, reset_at, was_429 = rate_info
            until = feedback(conn, account.id, action_type, account_limits(account, action_type, now), now,
                             remaining, limit_, reset_at, was_429, rng)
            if until:
                log.info("account %s %s blocked until %s (provider limit)", account.name, action_type,
                         until.isoformat())
        if blocks:
            conn.execute(sa.text("""
                INSERT INTO suppressions (kind, value, reason, source, created_at)
                SELECT kind, value, 'blocked_us', source, :now
                FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(kind text, value text, source text)
                ON CONFLICT (kind, value) DO NOTHING"""), {"rows": json.dumps(blocks), "now": now})
        if stop == "account_error":
            conn.execute(sa.text("UPDATE sender_accounts SET blocked_until = :t WHERE id = :a"),
                         {"t": now + timedelta(hours=1), "a": account.id})
    return more and not stop


def _conversation_rule(r, seq: SequenceDef, history: "gate.History", starting: set[int], now: datetime):
    """One person, one conversation. Returns (SKIPPED|DEFERRED, reason, until) or None when the lead may go.

    - a sequence's first send waits for no one but is refused while another of the person's enrollments is in
      conversation (unless the sequence sets ``allow_parallel``), or when the person was contacted by another
      enrollment within ``contact_cooldown`` (default 30 days) and the sequence sets ``exclude_already_contacted``;
    - ``frequency_cap``: at most one touch per person per that duration, across all sequences (deferred).
    """
    policy = seq.extras
    if r.last_action_at is None:  # this enrollment has not contacted the person yet
        if not policy.get("allow_parallel") and (history.active_elsewhere(r.person_id, r.id)
                                                 or r.person_id in starting):
            return "SKIPPED", "active_elsewhere", None
        if seq.exclude_already_contacted:
            last = history.last_sent(r.person_id, exclude_enrollment=r.id)
            if last and last > now - timedelta(seconds=policy.get("contact_cooldown", 30 * 86400)):
                return "SKIPPED", "already_contacted", None
        starting.add(r.person_id)
    cap = policy.get("frequency_cap")
    if cap:
        last = history.last_sent(r.person_id)
        if last and last > now - timedelta(seconds=cap):
            return "DEFERRED", "frequency_cap", last + timedelta(seconds=cap)
    return None


def _defer(r, until: datetime, reason: str, now: datetime, in_flight: bool, data: dict | None = None) -> Transition:
    """Not now: the lead keeps its place and is due again at ``until`` (its attempt is given back)."""
    return Transition(id=r.id, expect_step=r.current_step, expect_phase="pending", status="ACTIVE",
                      step=r.current_step, phase="pending", next_run_at=until, event_kind="DEFERRED",
                      occurred_at=now, in_flight=in_flight, refund_attempt=True, reason=reason,
                      data={"until": until.isoformat(), **(data or {})})


def _call_timeout(provider_client) -> float:
    """The longest one provider call can take (its HTTP timeout), 0 when the client does not say."""
    timeout = getattr(getattr(provider_client, "client", None), "timeout", None)
    return float(timeout) if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) else 0.0


def _to(r, nxt: machine.Next, kind: str, now: datetime, performed: bool = False, **kw) -> Transition:
    return Transition(id=r.id, expect_step=r.current_step, expect_phase="pending", status=nxt.status, step=nxt.step,
                      phase=nxt.phase, next_run_at=nxt.next_run_at, event_kind=kind, occurred_at=now,
                      provider=nxt.provider, performed=performed, reset_attempts=True,
                      ended_reason=nxt.reason if nxt.status != "ACTIVE" else None,
                      data={"next": nxt.step if nxt.status == "ACTIVE" else nxt.status, "fired": nxt.fired}, **kw)


def _sent(r, g: _Go, ref: str | None, now: datetime, reconciled: bool = False) -> Transition:
    nxt = machine.after_action(g.seq, r.current_step, now)
    t = _to(r, nxt, "SENT", now, performed=True, provider_ref=ref, variant=g.variant,
            dedupe_key=f"out:{r.id}:{r.current_step}", reason="reconciled" if reconciled else None)
    t.data["text_len"] = len(g.text)
    return t


def _end(r, status: str, kind: str, reason: str, now: datetime, variant: str | None = None,
         dedupe: str | None = None, data: dict | None = None) -> Transition:
    return Transition(id=r.id, expect_step=r.current_step, expect_phase="pending", status=status,
                      step=r.current_step, phase="pending", next_run_at=None, event_kind=kind, occurred_at=now,
                      reason=reason, ended_reason=reason, variant=variant, dedupe_key=dedupe, data=data or {})


def _retry(r, g: _Go, e: RetryableError, now: datetime, cfg: AdvanceConfig, rng: random.Random) -> Transition:
    if r.attempts >= cfg.max_attempts:
        status = "NEEDS_REVIEW" if e.maybe_landed or r.in_flight else "FAILED"
        return _end(r, status, status, f"{e.reason}:max_attempts", now, variant=g.variant,
                    dedupe=f"out:{r.id}:{r.current_step}", data={"detail": e.detail[:300]})
    delay = backoff_seconds(r.attempts, cfg.backoff_base, cfg.backoff_cap, rng)
    return Transition(id=r.id, expect_step=r.current_step, expect_phase="pending", status="ACTIVE",
                      step=r.current_step, phase="pending", next_run_at=now + timedelta(seconds=delay),
                      event_kind="RETRY_SCHEDULED", occurred_at=now, in_flight=e.maybe_landed or r.in_flight,
                      reason=e.reason, variant=g.variant,
                      data={"detail": e.detail[:300], "maybe_landed": e.maybe_landed, "delay_s": round(delay)})

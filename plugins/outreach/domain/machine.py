"""The per-enrollment state machine (DESIGN section 4). Pure: definitions and times in, next state out.

An enrollment is either *pending* on a step (its action is due at ``next_run_at``) or *waiting* after a step
(the action was performed; its triggers are armed, and ``next_run_at`` is the timeout, if any).

- Event triggers (REPLIED, FOLLOWED_BACK, CONNECTION_ACCEPTED, REPLIED_TO_NOTE) fire when a matching signal,
  later than the action and inside ``within`` (if set), is ingested. Optional ``after`` delays the next action.
- Timeout triggers (NOT_REPLIED, NOT_FOLLOWED_BACK, CONNECTION_NOT_ACCEPTED) fire when ``after`` passes with
  no such signal (a signal would have moved the enrollment on first).
- NORMAL_EDGE fires unconditionally after ``after`` (default 0). END finishes the enrollment after ``after``.
- When only event triggers with ``within`` are armed and all windows pass, the enrollment finishes
  (reason ``no_signal_within``); with no deadline at all it waits for a signal indefinitely.
- A REPLIED signal on a step with no REPLIED trigger stops the enrollment (reason ``replied``): a person who
  answered is never sent the rest of an automated sequence.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from outreach.domain.model import EVENT_TRIGGERS, TIMEOUT_TRIGGERS, UNCONDITIONAL_TRIGGERS, SequenceDef, Trigger

TIMEOUT_CLASS = TIMEOUT_TRIGGERS | UNCONDITIONAL_TRIGGERS


@dataclass(frozen=True)
class Next:
    status: str  # ACTIVE | COMPLETED
    step: str
    phase: str  # pending | waiting
    next_run_at: datetime | None
    provider: str | None  # provider of the step (to pick the enrollment's account); None: unchanged
    reason: str | None = None  # why it finished, or which trigger fired
    fired: str | None = None  # trigger kind that fired, if any


def _timeout_trigger(seq: SequenceDef, step: str) -> Trigger | None:
    return next((t for t in seq.triggers_from(step) if t.kind in TIMEOUT_CLASS), None)


def fire(seq: SequenceDef, trigger: Trigger, now: datetime) -> Next:
    """Follow ``trigger`` out of its action at ``now``."""
    if trigger.to is None:
        return Next("COMPLETED", trigger.from_action, "waiting", None, None,
                    reason=trigger.kind.lower(), fired=trigger.kind)
    delay = trigger.after_seconds if trigger.kind in EVENT_TRIGGERS and trigger.after_seconds else 0
    target = seq.actions[trigger.to]
    return Next("ACTIVE", trigger.to, "pending", now + timedelta(seconds=delay), target.provider,
                reason=trigger.kind, fired=trigger.kind)


def after_action(seq: SequenceDef, step: str, done_at: datetime) -> Next:
    """State right after ``step``'s action was performed (or confirmed) at ``done_at``."""
    triggers = seq.triggers_from(step)
    if not triggers:
        return Next("COMPLETED", step, "waiting", None, None, reason="end_of_sequence")
    timeout = _timeout_trigger(seq, step)
    if timeout is not None:
        after = timeout.after_seconds or 0
        if after == 0 and timeout.kind in UNCONDITIONAL_TRIGGERS:
            return fire(seq, timeout, done_at)
        return Next("ACTIVE", step, "waiting", done_at + timedelta(seconds=after), None)
    windows = [t.within_seconds for t in triggers if t.kind in EVENT_TRIGGERS]
    deadline = done_at + timedelta(seconds=max(windows)) if windows and all(w is not None for w in windows) else None
    return Next("ACTIVE", step, "waiting", deadline, None)


def on_deadline(seq: SequenceDef, step: str, now: datetime) -> Next:
    """A waiting enrollment's ``next_run_at`` passed with no signal."""
    timeout = _timeout_trigger(seq, step)
    if timeout is not None:
        return fire(seq, timeout, now)
    return Next("COMPLETED", step, "waiting", None, None, reason="no_signal_within")


def waits_for_reply(seq: SequenceDef, step: str) -> bool:
    """Is the step's timeout a NOT_REPLIED (so a hidden reply would make it wrong)?"""
    t = _timeout_trigger(seq, step)
    return t is not None and t.kind == "NOT_REPLIED"


def on_reply_unknown(seq: SequenceDef, step: str, now: datetime) -> Next:
    """The NOT_REPLIED deadline passed but the provider could not have shown a reply ("unknown is not no").
    A REPLY_UNKNOWN trigger from the step says where such leads go; without one the enrollment finishes
    (reason ``reply_unknown``): never a follow-up sent to someone who may have answered."""
    for t in seq.triggers_from(step):
        if t.kind == "REPLY_UNKNOWN":
            return fire(seq, t, now)
    return Next("COMPLETED", step, "waiting", None, None, reason="reply_unknown", fired="REPLY_UNKNOWN")


def on_signal(seq: SequenceDef, step: str, phase: str, last_action_at: datetime | None, kind: str,
              occurred_at: datetime, now: datetime) -> Next | None:
    """A signal of ``kind`` for an enrollment at ``step``/``phase``. None: it changes nothing."""
    if phase == "waiting" and last_action_at is not None and occurred_at >= last_action_at:
        for t in seq.triggers_from(step):
            if t.kind == kind:
                if t.within_seconds is not None and occurred_at > last_action_at + timedelta(seconds=t.within_seconds):
                    break  # too late for this trigger; a late reply still stops the enrollment below
                return fire(seq, t, now)
    if kind == "REPLIED":
        return Next("COMPLETED", step, phase, None, None, reason="replied", fired=None)
    if kind == "BOUNCED":  # the address does not take mail: stop the lead with the reason
        return Next("FAILED", step, phase, None, None, reason="bounced", fired=None)
    return None

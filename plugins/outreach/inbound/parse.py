"""Webhook payloads to signals, through the SAME parsers the polls use, so an event seen by both paths carries
the same provider reference and is stored once (``UNIQUE (provider, provider_ref)`` on ``inbound_signals``).

Each parser returns ``(account user id, [Signal])`` and raises :class:`Malformed` on a payload it cannot read.
"""
from __future__ import annotations

import base64
import binascii
from datetime import datetime, timezone

from outreach.providers.base import Signal


class Malformed(ValueError):
    """The payload is not the shape the endpoint takes (HTTP 400)."""


def _need(d, key: str, kind=str):
    v = d.get(key) if isinstance(d, dict) else None
    if not isinstance(v, kind) or (kind is str and not v):
        raise Malformed(f"`{key}` is required ({kind.__name__})")
    return v


def x_account_activity(payload: dict) -> tuple[str, list[Signal], list[datetime]]:
    """X account activity: ``direct_message_events`` (message_create) and ``follow_events`` (follow).

    A DM is ``dm:{event id}`` as in ``GET /2/dm_events``; a follow of our user is ``follower:{me}:{id}`` as in
    the followers poll. Returns the events' creation times too (X signs no timestamp: replays are judged by them).
    """
    me = _need(payload, "for_user_id")
    out, times = [], []
    for ev in payload.get("direct_message_events") or []:
        if not isinstance(ev, dict) or ev.get("type") != "message_create":
            continue
        mc = ev.get("message_create")
        eid, sender = ev.get("id"), mc.get("sender_id") if isinstance(mc, dict) else None
        if not isinstance(eid, str) or not isinstance(sender, str):
            raise Malformed("direct_message_events need `id` and `message_create.sender_id`")
        when = _epoch_ms(ev.get("created_timestamp"))
        times.append(when)
        if sender == me:
            continue  # our own message
        text = (mc.get("message_data") or {}).get("text") if isinstance(mc.get("message_data"), dict) else None
        out.append(Signal("REPLIED", sender, f"dm:{eid}", when, None, text))
    for ev in payload.get("follow_events") or []:
        if not isinstance(ev, dict) or ev.get("type") != "follow":
            continue
        src, tgt = (ev.get("source") or {}).get("id"), (ev.get("target") or {}).get("id")
        if not isinstance(src, str) or not isinstance(tgt, str):
            raise Malformed("follow_events need `source.id` and `target.id`")
        when = _epoch_ms(ev.get("created_timestamp"))
        times.append(when)
        if tgt == me:
            out.append(Signal("FOLLOWED_BACK", src, f"follower:{me}:{src}", when))
    return me, out, times


def linkedin(payload: dict) -> tuple[str, list[Signal]]:
    from outreach.providers.linkedin import signal_from_event

    account = _need(payload, "account_id")
    return account, _events(payload, signal_from_event)


def xmtp(payload: dict) -> tuple[str, list[Signal]]:
    from outreach.providers.xmtp import signal_from_event

    inbox = _need(payload, "inbox")
    return inbox, _events(payload, lambda ev: signal_from_event(ev, inbox))


def email(payload: dict) -> tuple[str, list[Signal]]:
    """``{"mailbox": our address, "raw": base64 RFC 822}``: read like an IMAP message (``imap:<Message-ID>``)."""
    from outreach.providers.email import norm_email, signals_from_message

    mailbox = norm_email(_need(payload, "mailbox"))
    try:
        raw = base64.b64decode(_need(payload, "raw"), validate=True)
    except (binascii.Error, ValueError) as e:
        raise Malformed("`raw` must be base64 of an RFC 822 message") from e
    sigs = signals_from_message(raw, "webhook")
    if any(s.provider_ref.startswith("webhook") for s in sigs):  # replies "webhook", bounces "webhook:{addr}"
        raise Malformed("the message has no Message-ID")
    return mailbox, sigs


def _events(payload: dict, parse) -> list[Signal]:
    events = _need(payload, "events", list)
    out = []
    for ev in events:
        try:
            sig = parse(ev)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise Malformed(f"bad event: {type(e).__name__}") from e
        if sig is not None:
            out.append(sig)
    return out


def _epoch_ms(value) -> datetime:
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError) as e:
        raise Malformed("`created_timestamp` must be epoch milliseconds") from e

"""LinkedIn through an HTTP messaging gateway (LinkedIn has no public messaging API). Shapes: docs/providers.md.

The gateway takes an idempotency key on every write, so reconcile is a lookup by key, not a guess.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Callable

from outreach.domain.model import NOTE_LIMIT
from outreach.providers.base import PermanentError, ProviderError, RateInfo, SendResult, Signal
from outreach.providers.gateway import GatewayClient, conn_base_url, parse_time

try:
    from airflow.sdk import BaseHook
except ImportError:  # pragma: no cover
    BaseHook = object  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

DEFAULT_WITHDRAW_AFTER_DAYS = 21
EVENT_KINDS = {"connection_accepted": "CONNECTION_ACCEPTED", "message_received": "REPLIED",
               "note_reply": "REPLIED_TO_NOTE"}


def signal_from_event(ev: dict) -> Signal | None:
    """One gateway event (as polled from /v1/events or pushed to the webhook) as a signal; None if not one."""
    kind = EVENT_KINDS.get(ev.get("type"))
    if kind is None:
        return None
    return Signal(kind=kind, external_id=str(ev["recipient_id"]), provider_ref=f"ev:{ev['id']}",
                  occurred_at=parse_time(ev["at"]), conversation_id=ev.get("conversation_id"), text=ev.get("text"))


class LinkedInProvider:
    provider = "linkedin"
    streams = ("events",)
    reconcile_by_key = True

    def __init__(self, client: GatewayClient, withdraw_after: timedelta = timedelta(days=DEFAULT_WITHDRAW_AFTER_DAYS)):
        self.client = client
        self.withdraw_after = withdraw_after

    def perform(self, action_type: str, sender_user_id: str, recipient: dict, text: str,
                idempotency_key: str, **_: Any) -> SendResult:
        target = recipient.get("linkedin")
        if not target:
            raise PermanentError("no_linkedin_id", "lead has no LinkedIn member id")
        if action_type == "SEND_CONNECTION_REQUEST":
            note = text or None
            if note and len(note) > NOTE_LIMIT:
                raise PermanentError("note_too_long", f"{len(note)} > {NOTE_LIMIT} characters")
            body = self.client.request("POST", "/v1/invitations", "invitation", json={
                "account_id": sender_user_id, "recipient_id": target, "note": note,
                "idempotency_key": idempotency_key})
            inv = body.get("invitation") or {}
            return SendResult(provider_ref=f"inv:{inv.get('id')}", data=inv)
        if action_type == "SEND_LINKEDIN_DM":
            body = self.client.request("POST", "/v1/messages", "message", json={
                "account_id": sender_user_id, "recipient_id": target, "text": text,
                "idempotency_key": idempotency_key})
            msg = body.get("message") or {}
            return SendResult(provider_ref=f"msg:{msg.get('id')}", data=msg)
        raise PermanentError("unsupported_action", action_type)

    def reconcile(self, action_type: str, sender_user_id: str, recipient: dict, text: str,
                  attempted_at: datetime, idempotency_key: str | None = None) -> tuple[str, str | None]:
        if not idempotency_key:
            return "unknown", None
        kind, path = (("inv", "/v1/invitations") if action_type == "SEND_CONNECTION_REQUEST"
                      else ("msg", "/v1/messages"))
        try:
            body = self.client.request("GET", path, "read", params={"account_id": sender_user_id,
                                                                   "idempotency_key": idempotency_key})
        except ProviderError as e:
            log.warning("reconcile by idempotency key failed: %s", e)
            return "unknown", None
        found = body.get("invitations" if kind == "inv" else "messages") or []
        return ("landed", f"{kind}:{found[0]['id']}") if found else ("absent", None)

    def poll(self, sender_user_id: str, stream: str, cursor: str | None) -> tuple[list[Signal], str | None]:
        if stream != "events":
            raise ValueError(f"unknown stream {stream!r}")
        events, cursor = self.client.pages("/v1/events", "events", "events",
                                           {"account_id": sender_user_id, "limit": 100}, cursor)
        return [sig for ev in events if (sig := signal_from_event(ev)) is not None], cursor

    def pending_invitations(self, sender_user_id: str) -> list[dict]:
        items, _ = self.client.pages("/v1/invitations", "read", "invitations",
                                     {"account_id": sender_user_id, "status": "pending"}, None)
        return items

    def withdraw_stale(self, sender_user_id: str, now: datetime) -> list[dict]:
        """Withdraw pending invitations sent more than ``withdraw_after`` before ``now``; return them."""
        done = []
        for inv in self.pending_invitations(sender_user_id):
            if parse_time(inv["created_at"]) <= now - self.withdraw_after:
                self.client.request("DELETE", f"/v1/invitations/{inv['id']}", "invitation")
                done.append(inv)
        return done


class LinkedInHook(BaseHook):
    """host = gateway base URL, password = gateway API key; extra ``withdraw_pending_after_days`` (default 21)."""

    conn_name_attr = "linkedin_conn_id"
    default_conn_name = "linkedin_default"
    conn_type = "linkedin_gateway"
    hook_name = "LinkedIn messaging gateway"

    def __init__(self, linkedin_conn_id: str = default_conn_name, timeout: float = 10.0,
                 on_rate: Callable[[RateInfo], None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.linkedin_conn_id = linkedin_conn_id
        self.timeout = timeout
        self.on_rate = on_rate

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {"hidden_fields": ["schema", "port", "login"],
                "relabeling": {"host": "Gateway base URL", "password": "Gateway API key"}}

    @cached_property
    def _conn(self):
        conn = self.get_connection(self.linkedin_conn_id)
        if not conn.password:
            raise ValueError(f"LinkedIn connection {self.linkedin_conn_id!r} has no password (the gateway API key)")
        if not conn.host:
            raise ValueError(f"LinkedIn connection {self.linkedin_conn_id!r} has no host (the gateway base URL)")
        return conn

    @cached_property
    def client(self) -> GatewayClient:
        conn = self._conn
        return GatewayClient(conn_base_url(conn, ""), conn.password, self.timeout, self.on_rate,
                             self.linkedin_conn_id)

    def get_conn(self) -> GatewayClient:
        return self.client

    def get_provider(self) -> LinkedInProvider:
        days = float((self._conn.extra_dejson or {}).get("withdraw_pending_after_days", DEFAULT_WITHDRAW_AFTER_DAYS))
        return LinkedInProvider(self.client, timedelta(days=days))


def withdraw_stale_invitations(engine, account, provider: LinkedInProvider, now: datetime) -> dict:
    """Withdraw the account's pending invitations older than the provider's ``withdraw_after`` and log one
    ``INVITATION_WITHDRAWN`` event per invitation (linked to the person's latest enrolment on this account).
    Called from the advance path (``engine.tick.advance``) for LinkedIn accounts."""
    import json

    import sqlalchemy as sa

    try:
        done = provider.withdraw_stale(account.user_id, now)
    except ProviderError as e:  # tried again next tick
        log.warning("withdrawal of stale invitations for %s failed: %s", account.name, e)
        return {"withdraw_errors": 1}
    if not done:
        return {}
    rows = [{"inv": str(i["id"]), "rcpt": str(i["recipient_id"]), "created": i.get("created_at")} for i in done]
    with engine.begin() as conn:
        conn.execute(sa.text("""
            INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step,
                                account_id, provider, provider_ref, dedupe_key, reason, data)
            SELECT :now, 'INVITATION_WITHDRAWN', m.id, m.person_id, m.sequence_id, m.version_id, m.last_action,
                   :a, 'linkedin', 'inv:' || x.inv, 'wd:linkedin:' || x.inv, 'pending_too_long',
                   jsonb_build_object('recipient_id', x.rcpt, 'sent_at', x.created)
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(inv text, rcpt text, created text)
            LEFT JOIN LATERAL (
                SELECT e.* FROM identities i JOIN enrollments e ON e.person_id = i.person_id
                WHERE i.kind = 'linkedin' AND i.value = x.rcpt AND e.accounts ->> 'linkedin' = CAST(:a AS text)
                ORDER BY e.id DESC LIMIT 1) m ON true
            ON CONFLICT (dedupe_key) DO NOTHING"""), {"now": now, "a": account.id, "rows": json.dumps(rows)})
    return {"invitations_withdrawn": len(done)}

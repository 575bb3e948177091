"""XMTP through an HTTP gateway (XMTP has no HTTP API of its own). Shapes: docs/providers.md.

Addresses are Ethereum addresses (``0x`` + 40 hex) or ENS names (``name.eth``), validated before any call.
Consent states: unknown, allowed, denied; a ``denied`` becomes a CONSENT_DENIED signal and ingest suppresses
the address (suppressions kind ``xmtp``). When the gateway says it cannot read a conversation's replies
(``replies_visible: false``), the SENT event records it, and a NOT_REPLIED timeout becomes REPLY_UNKNOWN.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime
from functools import cached_property
from typing import Any, Callable

from outreach.providers.base import PermanentError, ProviderError, RateInfo, SendResult, Signal
from outreach.providers.gateway import GatewayClient, conn_base_url, parse_time

try:
    from airflow.sdk import BaseHook
except ImportError:  # pragma: no cover
    BaseHook = object  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
ENS_RE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+eth$")


def valid_address(value: str | None) -> str | None:
    """The normalised address (lower-case), or None when it is neither 0x+40 hex nor an ENS name."""
    v = (value or "").strip().lower()
    return v if ADDRESS_RE.match(v) or ENS_RE.match(v) else None


def signal_from_event(ev: dict, inbox: str) -> Signal | None:
    """One gateway event of ``inbox`` (polled or pushed to the webhook) as a signal; None if not one."""
    peer = valid_address(ev.get("peer")) or str(ev.get("peer"))
    sender = valid_address(ev.get("sender")) or str(ev.get("sender"))
    if ev.get("type") == "message" and sender != (valid_address(inbox) or inbox):
        return Signal("REPLIED", peer, f"ev:{ev['id']}", parse_time(ev["at"]), ev.get("conversation_id"),
                      ev.get("text"))
    if ev.get("type") == "consent":
        state = ev.get("state", "unknown")
        return Signal(f"CONSENT_{state.upper()}", peer, f"ev:{ev['id']}", parse_time(ev["at"]),
                      ev.get("conversation_id"), None)
    return None


class XmtpProvider:
    provider = "xmtp"
    streams = ("messages",)
    reconcile_by_key = True

    def __init__(self, client: GatewayClient):
        self.client = client

    def perform(self, action_type: str, sender_user_id: str, recipient: dict, text: str,
                idempotency_key: str, **_: Any) -> SendResult:
        if action_type != "SEND_XMTP_DM":
            raise PermanentError("unsupported_action", action_type)
        to = valid_address(recipient.get("xmtp"))
        if not to:
            raise PermanentError("invalid_xmtp_address", f"not an 0x address or ENS name: {recipient.get('xmtp')!r}")
        body = self.client.request("POST", "/v1/messages", "message", json={
            "from": sender_user_id, "to": to, "text": text, "idempotency_key": idempotency_key})
        msg = body.get("message") or {}
        data = {"conversation_id": msg.get("conversation_id"), "replies_visible": msg.get("replies_visible", True),
                "consent": msg.get("consent")}
        return SendResult(provider_ref=f"msg:{msg.get('id')}", data=data)

    def reconcile(self, action_type: str, sender_user_id: str, recipient: dict, text: str,
                  attempted_at: datetime, idempotency_key: str | None = None) -> tuple[str, str | None]:
        if not idempotency_key:
            return "unknown", None
        try:
            body = self.client.request("GET", "/v1/messages", "read",
                                       params={"from": sender_user_id, "idempotency_key": idempotency_key})
        except ProviderError as e:
            log.warning("reconcile by idempotency key failed: %s", e)
            return "unknown", None
        found = body.get("messages") or []
        return ("landed", f"msg:{found[0]['id']}") if found else ("absent", None)

    def poll(self, sender_user_id: str, stream: str, cursor: str | None) -> tuple[list[Signal], str | None]:
        if stream != "messages":
            raise ValueError(f"unknown stream {stream!r}")
        events, cursor = self.client.pages("/v1/events", "events", "events",
                                           {"inbox": sender_user_id, "limit": 100}, cursor)
        return [sig for ev in events if (sig := signal_from_event(ev, sender_user_id)) is not None], cursor


class XmtpHook(BaseHook):
    """host = gateway base URL, password = gateway API key."""

    conn_name_attr = "xmtp_conn_id"
    default_conn_name = "xmtp_default"
    conn_type = "xmtp_gateway"
    hook_name = "XMTP gateway"

    def __init__(self, xmtp_conn_id: str = default_conn_name, timeout: float = 10.0,
                 on_rate: Callable[[RateInfo], None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.xmtp_conn_id = xmtp_conn_id
        self.timeout = timeout
        self.on_rate = on_rate

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {"hidden_fields": ["schema", "port", "login", "extra"],
                "relabeling": {"host": "Gateway base URL", "password": "Gateway API key"}}

    @cached_property
    def client(self) -> GatewayClient:
        conn = self.get_connection(self.xmtp_conn_id)
        if not conn.password or not conn.host:
            raise ValueError(f"XMTP connection {self.xmtp_conn_id!r} needs host (gateway URL) and password (API key)")
        return GatewayClient(conn_base_url(conn, ""), conn.password, self.timeout, self.on_rate, self.xmtp_conn_id)

    def get_conn(self) -> GatewayClient:
        return self.client

    def get_provider(self) -> XmtpProvider:
        return XmtpProvider(self.client)

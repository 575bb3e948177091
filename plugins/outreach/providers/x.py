"""X (Twitter) API v2: a plain ``requests`` client and the Airflow hook that owns its connection.

Why plain requests rather than the official ``xdk`` SDK: we need the rate-limit headers of every
response (the SDK hides them behind its return types), exact control of timeouts and of which failures
are retried (a retried DM without reconcile is a double send), and one more heavy dependency pinned
against Airflow's constraints buys nothing for five endpoints. See docs/architecture.md.
"""
from __future__ import annotations

import logging
from datetime import datetime
from functools import cached_property
from typing import Any, Callable, Iterator

import requests

from outreach.providers.base import (
    AccountError,
    BearerHTTPClient,
    PermanentError,
    RateInfo,
    RateLimited,
    RetryableError,
    SendResult,
    Signal,
)

try:  # the hook needs Airflow; the client does not
    from airflow.sdk import BaseHook
except ImportError:  # pragma: no cover
    BaseHook = object  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.x.com"


def _parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


class XClient(BearerHTTPClient):
    """The five X API v2 calls the engine needs, with pagination and rate-limit headers on every response."""

    provider = "x"

    # -- transport -------------------------------------------------------------------
    def _request(self, method: str, path: str, endpoint: str, **kw: Any) -> dict:
        url = self.base_url + path
        try:
            resp = self.session.request(method, url, timeout=self.timeout, **kw)
        except requests.ConnectionError as e:
            # a refused connection never reached the provider; a reset mid-request may have
            landed = not isinstance(e, requests.ConnectTimeout) and "refused" not in str(e).lower()
            raise RetryableError("connection_error", type(e).__name__, maybe_landed=landed and method != "GET") from e
        except requests.Timeout as e:
            raise RetryableError("timeout", f"{method} {endpoint}", maybe_landed=method != "GET") from e
        self._read_rate(endpoint, resp)
        if resp.status_code < 300:
            return resp.json() if resp.content else {}
        self._raise_for(resp, method, endpoint)
        raise AssertionError("unreachable")

    def _raise_for(self, resp: requests.Response, method: str, endpoint: str) -> None:
        status = resp.status_code
        try:
            body = resp.json()
        except ValueError:
            body = {}
        detail = str(body.get("detail") or (body.get("errors") or [{}])[0].get("message") or resp.reason)[:300]
        text = str(body).lower()
        if status == 429:
            info = self.last_rate.get(endpoint)
            raise RateLimited(f"{method} {endpoint}", info.reset_at if info else None)
        if status in (401,):
            raise AccountError("unauthorized", f"connection {self.conn_id!r}: {detail}", status)
        if status >= 500:
            raise RetryableError("server_error", f"{status} {detail}", status, maybe_landed=method != "GET")
        if "resource-not-found" in text or status == 404 or "not found" in text:
            raise PermanentError("user_not_found", detail, status)
        if status == 403:
            if "blocked" in text:  # the user blocked this account: the engine suppresses the identity
                raise PermanentError("blocked", detail, status)
            if "message" in text or endpoint == "dm":
                raise PermanentError("dms_closed", detail, status)
            raise PermanentError("protected_account", detail, status)
        raise PermanentError("invalid_request", detail, status)

    # -- actions -----------------------------------------------------------------------
    def follow(self, source_user_id: str, target_user_id: str) -> SendResult:
        body = self._request("POST", f"/2/users/{source_user_id}/following", "follow",
                             json={"target_user_id": str(target_user_id)})
        return SendResult(provider_ref=f"follow:{source_user_id}:{target_user_id}", data=body.get("data") or {})

    def unfollow(self, source_user_id: str, target_user_id: str) -> SendResult:
        body = self._request("DELETE", f"/2/users/{source_user_id}/following/{target_user_id}", "unfollow")
        return SendResult(provider_ref=f"unfollow:{source_user_id}:{target_user_id}", data=body.get("data") or {})

    def send_dm(self, participant_id: str, text: str) -> SendResult:
        body = self._request("POST", f"/2/dm_conversations/with/{participant_id}/messages", "dm",
                             json={"text": text})
        data = body.get("data") or {}
        return SendResult(provider_ref=data.get("dm_event_id"), data=data)

    # -- reads -------------------------------------------------------------------------
    def _pages(self, path: str, endpoint: str, params: dict) -> Iterator[dict]:
        token = None
        while True:
            q = dict(params)
            if token:
                q["pagination_token"] = token
            body = self._request("GET", path, endpoint, params=q)
            yield from body.get("data") or []
            token = (body.get("meta") or {}).get("next_token")
            if not token:
                return

    def dm_events(self, max_results: int = 100) -> Iterator[dict]:
        """The authenticated user's DM events, newest first (X keeps 30 days)."""
        return self._pages("/2/dm_events", "dm_events", {
            "max_results": max_results,
            "dm_event.fields": "id,text,event_type,created_at,sender_id,dm_conversation_id,participant_ids",
        })

    def conversation_events(self, participant_id: str, max_results: int = 100) -> Iterator[dict]:
        return self._pages(f"/2/dm_conversations/with/{participant_id}/dm_events", "dm_events", {
            "max_results": max_results,
            "dm_event.fields": "id,text,event_type,created_at,sender_id,dm_conversation_id",
        })

    def followers(self, user_id: str, max_results: int = 1000) -> Iterator[dict]:
        """The user's followers, most recent first."""
        return self._pages(f"/2/users/{user_id}/followers", "followers", {"max_results": max_results})


class XProvider:
    """The engine's view of X: perform an action, reconcile an unknown outcome, poll for signals."""

    provider = "x"

    def __init__(self, client: XClient):
        self.client = client

    def perform(self, action_type: str, sender_user_id: str, recipient: dict, text: str,
                idempotency_key: str) -> SendResult:
        # X takes no idempotency key; exactly-once rests on intent + reconcile (docs/architecture.md).
        target = recipient.get("twitter")
        if not target:
            raise PermanentError("no_twitter_id", "lead has no X user id")
        if action_type == "FOLLOW_ON_TWITTER":
            return self.client.follow(sender_user_id, target)
        if action_type == "UNFOLLOW_ON_TWITTER":
            return self.client.unfollow(sender_user_id, target)
        if action_type == "SEND_TWITTER_DM":
            return self.client.send_dm(target, text)
        raise PermanentError("unsupported_action", action_type)

    def reconcile(self, action_type: str, sender_user_id: str, recipient: dict, text: str,
                  attempted_at: datetime) -> tuple[str, str | None]:
        """Did an attempt whose outcome is unknown land? Returns ('landed'|'absent'|'unknown', provider_ref)."""
        target = recipient.get("twitter")
        if action_type in ("FOLLOW_ON_TWITTER", "UNFOLLOW_ON_TWITTER"):
            return "absent", None  # idempotent on X: re-sending is harmless
        if action_type != "SEND_TWITTER_DM" or not target:
            return "unknown", None
        try:
            for ev in self.client.conversation_events(target):
                created = _parse_time(ev["created_at"])
                if created < attempted_at:
                    return "absent", None  # newest first: nothing of ours after the attempt
                if ev.get("sender_id") == str(sender_user_id) and ev.get("text") == text:
                    return "landed", ev["id"]
        except (RetryableError, PermanentError) as e:
            log.warning("reconcile of a DM to %s could not read the conversation: %s", target, e)
            return "unknown", None
        return "absent", None

    def poll(self, sender_user_id: str, stream: str, cursor: str | None) -> tuple[list[Signal], str | None]:
        """Read what is new since ``cursor`` on one stream; return signals and the new cursor."""
        if stream == "inbox":
            return self._poll_inbox(sender_user_id, cursor)
        if stream == "followers":
            return self._poll_followers(sender_user_id, cursor)
        raise ValueError(f"unknown stream {stream!r}")

    def _poll_inbox(self, me: str, cursor: str | None) -> tuple[list[Signal], str | None]:
        # Events come newest first; stop at the newest id seen last time (ids grow monotonically).
        signals, newest = [], cursor
        stop = int(cursor) if cursor else None
        for ev in self.client.dm_events():
            eid = int(ev["id"])
            if stop is not None and eid <= stop:
                break
            if newest is None or eid > int(newest):
                newest = str(eid)
            if ev.get("event_type", "MessageCreate") != "MessageCreate" or ev.get("sender_id") == str(me):
                continue  # our own messages are not signals
            signals.append(Signal(
                kind="REPLIED", external_id=str(ev["sender_id"]), provider_ref=f"dm:{ev['id']}",
                occurred_at=_parse_time(ev["created_at"]), conversation_id=ev.get("dm_conversation_id"),
                text=ev.get("text"),
            ))
        return signals, newest

    def _poll_followers(self, me: str, cursor: str | None) -> tuple[list[Signal], str | None]:
        # Followers come most recent first; stop at the most recent follower seen last time.
        # X gives no follow time, so a follow-back is dated when it is first observed (engine clock).
        signals, first = [], None
        for user in self.client.followers(me):
            if user["id"] == cursor:
                break
            if first is None:
                first = user["id"]
            signals.append(Signal(
                kind="FOLLOWED_BACK", external_id=str(user["id"]),
                provider_ref=f"follower:{me}:{user['id']}", occurred_at=None,  # type: ignore[arg-type]
            ))
        return signals, first or cursor


class XHook(BaseHook):
    """Owns an X connection: host = API base URL (default https://api.x.com), password = OAuth 2.0 user token.

    The client is built once per hook and reused.
    """

    conn_name_attr = "x_conn_id"
    default_conn_name = "x_default"
    conn_type = "x"
    hook_name = "X (Twitter)"

    def __init__(self, x_conn_id: str = default_conn_name, timeout: float = 10.0,
                 on_rate: Callable[[RateInfo], None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.x_conn_id = x_conn_id
        self.timeout = timeout
        self.on_rate = on_rate

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port", "login", "extra"],
            "relabeling": {"host": "API base URL", "password": "OAuth 2.0 user access token"},
            "placeholders": {"host": DEFAULT_BASE_URL},
        }

    @cached_property
    def client(self) -> XClient:
        conn = self.get_connection(self.x_conn_id)
        if not conn.password:
            raise ValueError(f"X connection {self.x_conn_id!r} has no password (the OAuth 2.0 user access token)")
        host = (conn.host or DEFAULT_BASE_URL).rstrip("/")
        if "://" not in host:
            host = f"{conn.schema or 'https'}://{host}"
            if conn.port:
                host = f"{host}:{conn.port}"
        return XClient(host, conn.password, timeout=self.timeout, on_rate=self.on_rate, conn_id=self.x_conn_id)

    def get_conn(self) -> XClient:
        return self.client

    def get_provider(self) -> XProvider:
        return XProvider(self.client)

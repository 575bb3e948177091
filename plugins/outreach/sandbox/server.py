"""Local HTTP sandbox of the X (Twitter) API v2 subset the outreach engine uses.

Standard library only. All state lives in :class:`SandboxState` behind one lock;
the HTTP layer (:func:`make_server`) is a thin, silent, keep-alive JSON adapter.

API endpoints (exact X API v2 paths; ``Authorization: Bearer <token>`` required):

* ``POST   /2/users/{id}/following``                    body ``{"target_user_id": "..."}``
* ``DELETE /2/users/{source_user_id}/following/{target_user_id}``
* ``POST   /2/dm_conversations/with/{participant_id}/messages`` body ``{"text": "..."}``
* ``GET    /2/dm_events``                               ``max_results`` 1..100, ``pagination_token``
* ``GET    /2/dm_conversations/with/{participant_id}/dm_events``
* ``GET    /2/users/{id}/followers``                    ``max_results`` 1..1000, ``pagination_token``
* ``GET    /2/users/me``                                the bearer token's user

For follow/unfollow/followers the path's user id is the acting user; for DM endpoints
the acting user comes from the token: ``sandbox-<userid>`` acts as ``<userid>``, any
other non-empty token acts as ``"1000"``.

Control endpoints (no auth): ``GET|POST /_sandbox/clock``, ``GET|POST /_sandbox/faults``,
``GET /_sandbox/calls?since=<seq>``, ``GET /_sandbox/summary``, ``POST /_sandbox/reset``,
``GET /_sandbox/health``, ``GET|POST /_sandbox/latency`` (``{"ms": 50}``: every API call answers that much later,
outside the lock, like a remote API), ``GET|POST /_sandbox/webhooks`` (``{"x": {"url", "secret"}, "linkedin":
..., "xmtp": ...}``: where replies are pushed, signed as in :mod:`outreach.inbound.signing`), ``POST
/_sandbox/reply`` (``{"provider": "x", "from": recipient, "to": our user, "text"}``: the recipient replies now;
the reply is stored, visible to polls, and pushed to the provider's webhook), ``GET /_sandbox/deliveries``.

Simulated recipients are deterministic from ``sha256(f"{seed}:{recipient_id}:{purpose}")``;
see :meth:`SandboxState.predict`.

The LinkedIn and XMTP messaging-gateway shapes are served under ``/linkedin/v1/...`` and ``/xmtp/v1/...`` by
:mod:`outreach.sandbox.gateways` (same clock, call log and summary; shapes in docs/providers.md).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

__all__ = [
    "SandboxState",
    "SandboxResponse",
    "SandboxHTTPServer",
    "make_server",
    "serve",
    "start_in_thread",
    "user_for_token",
]

# --------------------------------------------------------------------------- constants

MINUTE_MS = 60_000
WINDOW_MS = 15 * MINUTE_MS
DAY_MS = 24 * 60 * MINUTE_MS
DM_LOOKBACK_MS = 30 * DAY_MS
TWITTER_EPOCH_MS = 1288834974657  # snowflake epoch
DEFAULT_TOKEN_USER = "1000"
MAX_DM_TEXT = 10_000

FOLLOW_BACK_RATE = 0.60
FOLLOW_BACK_MIN_MS = 10 * MINUTE_MS
FOLLOW_BACK_MAX_MS = 4 * 60 * MINUTE_MS
REPLY_RATE = 0.50
REPLY_MIN_MS = 5 * MINUTE_MS
REPLY_MAX_MS = 3 * 60 * MINUTE_MS
OPT_OUT_RATE = 0.05

REPLY_TEXTS = (
    "Thanks for reaching out!",
    "Sounds interesting, tell me more.",
    "Sure, happy to chat.",
    "Not right now, but thanks.",
    "Who is this?",
    "Can you send more details?",
    "What's the pricing?",
    "Thanks, I'll take a look.",
)
OPT_OUT_TEXTS = (
    "stop",
    "please unsubscribe me",
    "STOP",
    "unsubscribe",
    "Please stop messaging me.",
)
FIRST_NAMES = ("Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery", "Quinn")
LAST_NAMES = ("Smith", "Garcia", "Chen", "Okafor", "Müller", "Rossi", "Kim", "Novak", "Silva", "Dubois")

# endpoint -> (15-minute limit, daily limit or None)
RATE_LIMITS: dict[str, tuple[int, int | None]] = {
    "follow": (50, 400),
    "unfollow": (50, None),
    "dm_send": (200, 1000),
    "dm_events": (300, None),
    "dm_conversation_events": (300, None),
    "followers": (15, None),
    "me": (75, None),
    "unknown": (300, None),  # headers only; never consumed
}
# fault "paths" category of each endpoint
FAULT_CATEGORY = {
    "follow": "follow",
    "unfollow": "unfollow",
    "dm_send": "dm",
    "dm_events": "read",
    "dm_conversation_events": "read",
    "followers": "read",
    "me": "read",
}
FAULT_MODES = ("500", "429", "timeout", "accept_then_500")  # 429: throttled by a limit we cannot see
FAULT_PATHS = ("dm", "follow", "unfollow", "read")
DEFAULT_FAULT_PATHS = ("dm", "follow")

INVALID_REQUEST_TYPE = "https://api.twitter.com/2/problems/invalid-request"
NOT_FOUND_TYPE = "https://api.twitter.com/2/problems/resource-not-found"

_ID_RE = re.compile(r"^[0-9]{1,19}$")
_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"^/2/users/([^/]+)/following$"), "follow"),
    ("DELETE", re.compile(r"^/2/users/([^/]+)/following/([^/]+)$"), "unfollow"),
    ("POST", re.compile(r"^/2/dm_conversations/with/([^/]+)/messages$"), "dm_send"),
    ("GET", re.compile(r"^/2/dm_events$"), "dm_events"),
    ("GET", re.compile(r"^/2/dm_conversations/with/([^/]+)/dm_events$"), "dm_conversation_events"),
    ("GET", re.compile(r"^/2/users/me$"), "me"),
    ("GET", re.compile(r"^/2/users/([^/]+)/followers$"), "followers"),
)


# --------------------------------------------------------------------------- helpers


def _iso_ms(ms: int) -> str:
    """Epoch milliseconds -> ``2026-01-05T09:00:00.000Z``."""
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _parse_iso(value: str) -> int:
    """ISO-8601 instant (``Z`` or offset; naive means UTC) -> epoch milliseconds."""
    dt = datetime.fromisoformat(value.strip().replace("z", "Z").replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return round(dt.timestamp() * 1000)


def _unit(*parts: object) -> float:
    """Deterministic uniform float in [0, 1) from sha256 of the colon-joined parts."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def user_for_token(token: str) -> str:
    """Acting user of a bearer token: ``sandbox-<digits>`` -> digits, else ``"1000"``."""
    if token.startswith("sandbox-"):
        uid = token[len("sandbox-"):]
        if _ID_RE.match(uid):
            return uid
    return DEFAULT_TOKEN_USER


def _conversation_id(a: str, b: str) -> str:
    lo, hi = sorted((a, b), key=int)
    return f"{lo}-{hi}"


def _problem(status: int, title: str, detail: str, type_: str = "about:blank") -> dict:
    return {"title": title, "detail": detail, "type": type_, "status": status}


def _invalid(detail: str) -> tuple[int, dict]:
    return 400, _problem(400, "Invalid Request", detail, INVALID_REQUEST_TYPE)


def _not_found(user_id: str, parameter: str) -> tuple[int, dict]:
    return 400, {
        "errors": [
            {
                "value": user_id,
                "detail": f"Could not find user with {parameter}: [{user_id}].",
                "title": "Not Found Error",
                "resource_type": "user",
                "parameter": parameter,
                "resource_id": user_id,
                "type": NOT_FOUND_TYPE,
                "message": "user not found",
            }
        ],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": INVALID_REQUEST_TYPE,
        "status": 400,
    }


def _encode_token(*parts: object) -> str:
    raw = ":".join(str(p) for p in parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, n: int) -> list[int] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        parts = [int(p) for p in raw.split(":")]
    except (ValueError, UnicodeDecodeError):
        return None
    return parts if len(parts) == n else None


class SandboxResponse:
    """Result of :meth:`SandboxState.handle`: status, JSON payload, headers, pre-answer delay."""

    __slots__ = ("status", "payload", "headers", "delay")

    def __init__(self, status: int, payload: dict | None, headers: dict[str, str] | None = None,
                 delay: float = 0.0) -> None:
        self.status = status
        self.payload = payload
        self.headers = headers or {}
        self.delay = delay

    def body(self) -> bytes:
        if self.payload is None:
            return b""
        return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"SandboxResponse({self.status}, {self.payload!r})"


# --------------------------------------------------------------------------- state


class SandboxState:
    """All sandbox state and logic, usable without HTTP. Thread-safe (one lock).

    The main entry point is :meth:`handle` (method, path-with-query, body, authorization)
    which returns a :class:`SandboxResponse`; the HTTP server only sleeps ``delay``
    seconds (timeout fault) outside the lock and writes the response.
    """

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed
        self._lock = threading.Lock()
        self._frozen_ms: int | None = None
        self._seq = 0  # monotonic across reset so `since=` cursors stay valid
        self._faults: dict | None = None
        self.latency_s = 0.0
        from outreach.sandbox.webhooks import WebhookPusher

        self.webhooks = WebhookPusher()
        self._reset_locked()

    # ----------------------------------------------------------------- clock

    def _now_ms(self) -> int:
        if self._frozen_ms is not None:
            return self._frozen_ms
        return int(time.time() * 1000)

    def now_ms(self) -> int:
        with self._lock:
            return self._now_ms()

    def now_iso(self) -> str:
        return _iso_ms(self.now_ms())

    def set_clock(self, now: str | int | datetime | None) -> str:
        """Freeze the clock (ISO string, epoch ms, or aware datetime) or, with None, return to real time."""
        if now is None:
            ms = None
        elif isinstance(now, datetime):
            ms = round((now if now.tzinfo else now.replace(tzinfo=timezone.utc)).timestamp() * 1000)
        elif isinstance(now, (int, float)) and not isinstance(now, bool):
            ms = int(now)
        elif isinstance(now, str):
            ms = _parse_iso(now)
        else:
            raise ValueError("now must be an ISO-8601 string or null")
        with self._lock:
            self._frozen_ms = ms
            return _iso_ms(self._now_ms())

    def advance_clock(self, seconds: float) -> str:
        """Move the clock forward (freezing it at real now + seconds if it was running)."""
        with self._lock:
            self._frozen_ms = self._now_ms() + round(seconds * 1000)
            return _iso_ms(self._frozen_ms)

    # ----------------------------------------------------------------- admin

    def _reset_locked(self) -> None:
        self._calls: list[dict] = []
        self._following: dict[tuple[str, str], int] = {}        # current follows -> since ms
        self._ever_followed: dict[tuple[str, str], int] = {}    # first follow ms
        self._followers: dict[str, list[tuple[int, str]]] = {}  # user -> [(at_ms, follower_id)]
        self._events_by_user: dict[str, list[dict]] = {}
        self._events_by_conv: dict[str, list[dict]] = {}
        self._event_ids: set[int] = set()
        self._id_counter = 0
        self._replies: list[dict] = []
        self._dm_counts: dict[tuple[str, str, str], int] = {}
        self._dmed: set[tuple[str, str]] = set()
        self._rate: dict[tuple[str, str], list[int]] = {}  # -> [window_start, count, day_start, day_count]
        self._n_follow_calls = 0
        self._n_dms = 0
        self._n_unfollows = 0
        self._faults = None
        from outreach.sandbox.gateways import Gateways

        self.gateways = Gateways(self)  # the LinkedIn and XMTP gateway shapes (sandbox/gateways.py)

    def reset(self) -> None:
        """Clear all state (follows, DMs, calls, rate limits, faults, webhooks); keep seed, clock and latency."""
        with self._lock:
            self._reset_locked()
        self.webhooks.configure({})
        self.webhooks.clear()

    def set_faults(self, spec: dict | None) -> dict | None:
        """Configure fault injection (see module docs); an empty dict / None clears faults."""
        if not spec:
            with self._lock:
                self._faults = None
            return None
        if not isinstance(spec, dict):
            raise ValueError("faults must be a JSON object")
        rate = spec.get("error_rate", 1.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ValueError("error_rate must be a number in [0, 1]")
        mode = str(spec.get("mode", "500"))
        if mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {list(FAULT_MODES)}")
        paths = spec.get("paths", list(DEFAULT_FAULT_PATHS))
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or any(p not in FAULT_PATHS for p in paths):
            raise ValueError(f"paths must be a list drawn from {list(FAULT_PATHS)}")
        timeout = spec.get("timeout_seconds", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError("timeout_seconds must be a non-negative number")
        faults = {
            "error_rate": float(rate),
            "mode": mode,
            "seed": spec.get("seed", 1),
            "paths": list(paths),
            "timeout_seconds": float(timeout),
        }
        with self._lock:
            self._faults = faults
        return dict(faults)

    def get_faults(self) -> dict | None:
        with self._lock:
            return dict(self._faults) if self._faults else None

    def calls(self, since: int = 0) -> list[dict]:
        """Recorded /2/ calls with ``seq > since`` (copies)."""
        with self._lock:
            own = [dict(c) for c in self._calls if c["seq"] > since]
            gateways = self.gateways
        return sorted(own + gateways.calls_since(since), key=lambda c: c["seq"])

    def summary(self) -> dict:
        gateways = self.gateways.summary()
        with self._lock:
            now = self._now_ms()
            return {**gateways,
                "follows": self._n_follow_calls,
                "unique_follows": len(self._ever_followed),
                "dms": self._n_dms,
                "duplicate_dms": sum(1 for n in self._dm_counts.values() if n > 1),
                "duplicate_dm_copies": sum(n - 1 for n in self._dm_counts.values() if n > 1),
                "follow_backs_visible": sum(
                    1 for lst in self._followers.values() for at, _ in lst if at <= now
                ),
                "replies_visible": sum(1 for e in self._replies if e["ms"] <= now),
                "unfollows": self._n_unfollows,
            }

    def reply_now(self, data: dict) -> dict:
        """A recipient replies now: store the message (visible to polls) and push it to the provider's webhook."""
        provider = data.get("provider", "x")
        sender, user, text = data.get("from"), data.get("to"), data.get("text") or "Thanks, sounds good."
        if not isinstance(sender, str) or not isinstance(user, str) or not sender or not user:
            raise ValueError("`from` (the recipient) and `to` (our user id) are required strings")
        if provider == "x":
            if not _ID_RE.match(sender) or not _ID_RE.match(user):
                raise ValueError("X user ids are digit strings")
            with self._lock:
                ev = self._store_event(sender, user, text, self._now_ms())
                self._dmed.add((user, sender))  # no simulated reply on top of this one
            payload = {"for_user_id": user, "direct_message_events": [{
                "type": "message_create", "id": str(ev["id"]), "created_timestamp": str(ev["ms"]),
                "message_create": {"target": {"recipient_id": user}, "sender_id": sender,
                                   "message_data": {"text": text}}}]}
            ref = f"dm:{ev['id']}"
        elif provider in ("linkedin", "xmtp"):
            payload = self.gateways.reply_now(provider, sender, user, text)
            ref = f"ev:{payload['events'][0]['id']}"
        else:
            raise ValueError("provider must be one of x, linkedin, xmtp")
        delivery = self.webhooks.push(provider, payload)
        return {"provider": provider, "provider_ref": ref, "delivery": delivery}

    # ----------------------------------------------------------------- simulated recipients

    def predict(self, recipient_id: str) -> dict:
        """Deterministic behaviour of a simulated recipient under this seed."""
        rid = str(recipient_id)
        s = self.seed
        follows_back = _unit(s, rid, "follow_back") < FOLLOW_BACK_RATE
        fb_delay = FOLLOW_BACK_MIN_MS + int(_unit(s, rid, "follow_back_delay") * (FOLLOW_BACK_MAX_MS - FOLLOW_BACK_MIN_MS))
        replies = _unit(s, rid, "reply") < REPLY_RATE
        reply_delay = REPLY_MIN_MS + int(_unit(s, rid, "reply_delay") * (REPLY_MAX_MS - REPLY_MIN_MS))
        opt_out = _unit(s, rid, "opt_out") < OPT_OUT_RATE
        texts = OPT_OUT_TEXTS if opt_out else REPLY_TEXTS
        text = texts[int(_unit(s, rid, "reply_text") * len(texts))]
        return {
            "recipient_id": rid,
            "follows_back": follows_back,
            "follow_back_delay_seconds": fb_delay / 1000,
            "replies": replies,
            "reply_delay_seconds": reply_delay / 1000,
            "reply_text": text,
            "opt_out": opt_out,
            "name": self.profile(rid)["name"],
            "username": f"user{rid}",
        }

    def profile(self, user_id: str) -> dict:
        uid = str(user_id)
        first = FIRST_NAMES[int(_unit(self.seed, uid, "first_name") * len(FIRST_NAMES))]
        last = LAST_NAMES[int(_unit(self.seed, uid, "last_name") * len(LAST_NAMES))]
        return {"id": uid, "name": f"{first} {last}", "username": f"user{uid}"}

    # ----------------------------------------------------------------- rate limits

    def _rate_view(self, user: str, endpoint: str, now: int, consume: bool) -> tuple[bool, dict[str, str]]:
        """Return (allowed, headers). With consume=True and allowed, count the request."""
        limit, daily = RATE_LIMITS[endpoint]
        w_start = now - now % WINDOW_MS
        d_start = now - now % DAY_MS
        rec = self._rate.get((user, endpoint)) if endpoint != "unknown" else None
        count = day_count = 0
        if rec is not None:
            count = rec[1] if rec[0] == w_start else 0
            day_count = rec[3] if rec[2] == d_start else 0
        allowed = count < limit and (daily is None or day_count < daily)
        if consume and allowed and endpoint != "unknown":
            count += 1
            day_count += 1
            self._rate[(user, endpoint)] = [w_start, count, d_start, day_count]
        remaining = max(0, limit - count)
        reset = (w_start + WINDOW_MS) // 1000
        headers = {"x-rate-limit-limit": str(limit)}
        if daily is not None:
            day_remaining = max(0, daily - day_count)
            day_reset = (d_start + DAY_MS) // 1000
            if day_remaining == 0:
                remaining, reset = 0, day_reset
            headers["x-user-limit-24hour-limit"] = str(daily)
            headers["x-user-limit-24hour-remaining"] = str(day_remaining)
            headers["x-user-limit-24hour-reset"] = str(day_reset)
        headers["x-rate-limit-remaining"] = str(remaining)
        headers["x-rate-limit-reset"] = str(reset)
        return allowed, headers

    # ----------------------------------------------------------------- events

    def _new_event_id(self, ms: int) -> int:
        self._id_counter += 1
        eid = (max(0, ms - TWITTER_EPOCH_MS) << 22) | (self._id_counter & 0x3FFFFF)
        while eid in self._event_ids:
            eid += 1
        self._event_ids.add(eid)
        return eid

    def _store_event(self, sender: str, recipient: str, text: str, ms: int) -> dict:
        conv = _conversation_id(sender, recipient)
        ev = {
            "id": self._new_event_id(ms),
            "ms": ms,
            "text": text,
            "sender_id": sender,
            "conv": conv,
            "participants": sorted((sender, recipient), key=int),
        }
        self._events_by_user.setdefault(sender, []).append(ev)
        if recipient != sender:
            self._events_by_user.setdefault(recipient, []).append(ev)
        self._events_by_conv.setdefault(conv, []).append(ev)
        return ev

    @staticmethod
    def _event_json(ev: dict) -> dict:
        return {
            "id": str(ev["id"]),
            "event_type": "MessageCreate",
            "text": ev["text"],
            "sender_id": ev["sender_id"],
            "dm_conversation_id": ev["conv"],
            "created_at": _iso_ms(ev["ms"]),
            "participant_ids": list(ev["participants"]),
        }

    # ----------------------------------------------------------------- operations (locked)

    def _op_follow(self, user: str, body: bytes, now: int) -> tuple[int, dict, bool, str | None, None]:
        data, err = _json_object(body)
        if err:
            return (*err, False, None, None)
        target = data.get("target_user_id")
        if isinstance(target, int) and not isinstance(target, bool):
            target = str(target)
        if not isinstance(target, str) or not target:
            return (*_invalid("The `target_user_id` field is required and must be a string."), False, None, None)
        if not _ID_RE.match(target):
            return (*_invalid(f"The `target_user_id` query parameter value [{target}] is not valid"), False, target, None)
        if target == user:
            return (*_invalid("You cannot follow yourself."), False, target, None)
        if target.startswith("404"):
            return (*_not_found(target, "target_user_id"), False, target, None)
        if target.startswith("40319"):  # a user who blocked us
            return (403, _problem(403, "Forbidden", "You have been blocked from following this account at the "
                                                     "request of the user."), False, target, None)
        if target.startswith("403"):
            return (403, _problem(403, "Forbidden", "You cannot follow this user because they are protected."),
                    False, target, None)
        key = (user, target)
        self._n_follow_calls += 1
        effect = key not in self._following
        if effect:
            self._following[key] = now
            if key not in self._ever_followed:
                self._ever_followed[key] = now
                p = self.predict(target)
                if p["follows_back"]:
                    at = now + int(p["follow_back_delay_seconds"] * 1000)
                    self._followers.setdefault(user, []).append((at, target))
        return 200, {"data": {"following": True, "pending_follow": False}}, effect, target, None

    def _op_unfollow(self, user: str, target: str, now: int) -> tuple[int, dict, bool, str | None, None]:
        if target.startswith("404"):
            return (*_not_found(target, "target_user_id"), False, target, None)
        effect = self._following.pop((user, target), None) is not None
        if effect:
            self._n_unfollows += 1
        return 200, {"data": {"following": False}}, effect, target, None

    def _op_dm(self, user: str, participant: str, body: bytes, now: int) -> tuple[int, dict, bool, str | None, str | None]:
        data, err = _json_object(body)
        if err:
            return (*err, False, participant, None)
        text = data.get("text")
        if text is None:
            return (*_invalid("The `text` field is required."), False, participant, None)
        if not isinstance(text, str):
            return (*_invalid("The `text` field must be a string."), False, participant, None)
        if not text.strip():
            return (*_invalid("The `text` field must not be empty."), False, participant, text)
        if len(text) > MAX_DM_TEXT:
            return (*_invalid(f"The `text` field must be at most {MAX_DM_TEXT} characters."), False, participant, text)
        if participant == user:
            return (*_invalid("You cannot send a direct message to yourself."), False, participant, text)
        if participant.startswith("404"):
            return (*_not_found(participant, "participant_id"), False, participant, text)
        if participant.startswith("40319"):  # a user who blocked us
            return (403, _problem(403, "Forbidden", "You have been blocked by this user."), False, participant, text)
        if participant.startswith("403"):
            return (403, _problem(403, "Forbidden", "You cannot send messages to this user."),
                    False, participant, text)
        ev = self._store_event(user, participant, text, now)
        self._n_dms += 1
        key = (user, participant, text)
        self._dm_counts[key] = self._dm_counts.get(key, 0) + 1
        if (user, participant) not in self._dmed:
            self._dmed.add((user, participant))
            p = self.predict(participant)
            if p["replies"]:
                at = now + int(p["reply_delay_seconds"] * 1000)
                self._replies.append(self._store_event(participant, user, p["reply_text"], at))
        payload = {"data": {"dm_conversation_id": ev["conv"], "dm_event_id": str(ev["id"])}}
        return 201, payload, True, participant, text

    def _op_list_events(self, events: list[dict], query: dict, now: int) -> tuple[int, dict]:
        max_results, err = _int_param(query, "max_results", 100, 1, 100)
        if err:
            return err
        cursor = None
        token = query.get("pagination_token")
        if token:
            parts = _decode_token(token, 1)
            if parts is None:
                return _invalid(f"The `pagination_token` query parameter value [{token}] is not valid")
            cursor = parts[0]
        lo = now - DM_LOOKBACK_MS
        visible = [e for e in events if lo <= e["ms"] <= now and (cursor is None or e["id"] < cursor)]
        visible.sort(key=lambda e: e["id"], reverse=True)
        page = visible[:max_results]
        meta: dict = {"result_count": len(page)}
        payload: dict = {}
        if page:
            payload["data"] = [self._event_json(e) for e in page]
            if len(visible) > max_results:
                meta["next_token"] = _encode_token(page[-1]["id"])
        payload["meta"] = meta
        return 200, payload

    def _op_followers(self, user: str, query: dict, now: int) -> tuple[int, dict]:
        max_results, err = _int_param(query, "max_results", 100, 1, 1000)
        if err:
            return err
        cursor = None
        token = query.get("pagination_token")
        if token:
            parts = _decode_token(token, 2)
            if parts is None:
                return _invalid(f"The `pagination_token` query parameter value [{token}] is not valid")
            cursor = (parts[0], parts[1])
        items = [(at, int(fid)) for at, fid in self._followers.get(user, ()) if at <= now]
        if cursor is not None:
            items = [it for it in items if it < cursor]
        items.sort(reverse=True)
        page = items[:max_results]
        payload: dict = {}
        meta: dict = {"result_count": len(page)}
        if page:
            payload["data"] = [self.profile(str(fid)) for _, fid in page]
            if len(items) > max_results:
                meta["next_token"] = _encode_token(page[-1][0], page[-1][1])
        payload["meta"] = meta
        return 200, payload

    # ----------------------------------------------------------------- dispatcher

    def _fault_for(self, seq: int, endpoint: str) -> dict | None:
        f = self._faults
        if not f or f["error_rate"] <= 0 or FAULT_CATEGORY.get(endpoint) not in f["paths"]:
            return None
        if f["error_rate"] >= 1 or _unit(f["seed"], seq, "fault") < f["error_rate"]:
            return f
        return None

    def handle(self, method: str, target: str, body: bytes = b"", authorization: str | None = None) -> SandboxResponse:
        """Process one request. ``target`` is the path with optional ``?query``."""
        path, _, qs = target.partition("?")
        if path.startswith("/2/"):
            return self._handle_api(method.upper(), path, qs, body, authorization)
        if path.startswith(("/linkedin/v1/", "/xmtp/v1/")):
            return self.gateways.handle(method.upper(), path, qs, body, authorization)
        if path == "/_sandbox" or path.startswith("/_sandbox/"):
            return self._handle_admin(method.upper(), path, qs, body)
        return SandboxResponse(404, _problem(404, "Not Found", f"No route for {method} {path}"))

    def _handle_api(self, method: str, path: str, qs: str, body: bytes, authorization: str | None) -> SandboxResponse:
        endpoint, params = "unknown", ()
        for m, rx, name in _ROUTES:
            if m == method:
                mt = rx.match(path)
                if mt:
                    endpoint, params = name, mt.groups()
                    break
        token = ""
        if authorization:
            scheme, _, cred = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                token = cred.strip()
        token_user = user_for_token(token) if token else None
        if endpoint in ("follow", "unfollow", "followers"):
            acting = params[0]
        else:
            acting = token_user
        target_id = None
        if endpoint == "unfollow":
            target_id = params[1]
        elif endpoint in ("dm_send", "dm_conversation_events"):
            target_id = params[0]

        with self._lock:
            now = self._now_ms()
            self._seq += 1
            seq = self._seq
            call = {
                "seq": seq, "at": _iso_ms(now), "method": method, "path": path,
                "user_id": acting, "target_id": target_id, "text": None,
                "status": 0, "effect": False,
            }
            self._calls.append(call)
            rl_user = acting if acting is not None else DEFAULT_TOKEN_USER

            def finish(status: int, payload: dict | None, headers: dict, effect: bool = False,
                       delay: float = 0.0) -> SandboxResponse:
                call["status"] = status
                call["effect"] = effect
                return SandboxResponse(status, payload, headers, delay)

            if endpoint == "unknown":
                _, headers = self._rate_view(rl_user, "unknown", now, consume=False)
                return finish(404, _problem(404, "Not Found", f"No route for {method} {path}"), headers)
            if not token:
                _, headers = self._rate_view(rl_user, endpoint, now, consume=False)
                return finish(401, _problem(401, "Unauthorized", "Unauthorized"), headers)
            bad = next((p for p in params if not _ID_RE.match(p)), None)
            if bad is not None:
                _, headers = self._rate_view(rl_user, endpoint, now, consume=False)
                return finish(*_invalid(f"The `id` query parameter value [{bad}] is not valid"), headers)

            allowed, headers = self._rate_view(acting, endpoint, now, consume=False)
            if not allowed:
                return finish(429, _problem(429, "Too Many Requests", "Too Many Requests"), headers)
            fault = self._fault_for(seq, endpoint)
            if fault is not None and fault["mode"] == "500":
                return finish(503, _problem(503, "Service Unavailable", "Service Unavailable"), headers)
            if fault is not None and fault["mode"] == "429":
                return finish(429, _problem(429, "Too Many Requests", "Too Many Requests"), headers)
            _, headers = self._rate_view(acting, endpoint, now, consume=True)

            query = _query(qs)
            effect = False
            if endpoint == "follow":
                status, payload, effect, tgt, _ = self._op_follow(acting, body, now)
                call["target_id"] = tgt
            elif endpoint == "unfollow":
                status, payload, effect, _, _ = self._op_unfollow(acting, target_id, now)
            elif endpoint == "dm_send":
                status, payload, effect, _, text = self._op_dm(acting, target_id, body, now)
                call["text"] = text
            elif endpoint == "dm_events":
                status, payload = self._op_list_events(self._events_by_user.get(acting, []), query, now)
            elif endpoint == "dm_conversation_events":
                if target_id.startswith("404"):
                    status, payload = _not_found(target_id, "participant_id")
                else:
                    conv = _conversation_id(acting, target_id)
                    status, payload = self._op_list_events(self._events_by_conv.get(conv, []), query, now)
            elif endpoint == "followers":
                status, payload = self._op_followers(acting, query, now)
            else:  # me
                status, payload = 200, {"data": self.profile(acting)}

            if fault is not None and 200 <= status < 300:
                if fault["mode"] == "accept_then_500":
                    return finish(500, _problem(500, "Internal Server Error", "Internal Server Error"),
                                  headers, effect)
                return finish(status, payload, headers, effect, delay=fault["timeout_seconds"])
            return finish(status, payload, headers, effect)

    def _handle_admin(self, method: str, path: str, qs: str, body: bytes) -> SandboxResponse:
        query = _query(qs)
        try:
            if path == "/_sandbox/clock":
                if method == "GET":
                    return SandboxResponse(200, {"now": self.now_iso()})
                if method == "POST":
                    data, err = _json_object(body)
                    if err:
                        return SandboxResponse(*err)
                    if "advance_seconds" in data:
                        adv = data["advance_seconds"]
                        if isinstance(adv, bool) or not isinstance(adv, (int, float)):
                            raise ValueError("advance_seconds must be a number")
                        return SandboxResponse(200, {"now": self.advance_clock(adv)})
                    if "now" not in data:
                        raise ValueError("body must contain `now` (ISO-8601 or null) or `advance_seconds`")
                    return SandboxResponse(200, {"now": self.set_clock(data["now"])})
            elif path == "/_sandbox/faults":
                if method == "GET":
                    return SandboxResponse(200, {"faults": self.get_faults()})
                if method == "POST":
                    data, err = _json_object(body, allow_empty=True)
                    if err:
                        return SandboxResponse(*err)
                    return SandboxResponse(200, {"faults": self.set_faults(data)})
            elif path == "/_sandbox/calls":
                if method == "GET":
                    since, err = _int_param(query, "since", 0, 0, 2**63)
                    if err:
                        return SandboxResponse(*err)
                    return SandboxResponse(200, {"calls": self.calls(since)})
            elif path == "/_sandbox/summary":
                if method == "GET":
                    return SandboxResponse(200, self.summary())
            elif path == "/_sandbox/reset":
                if method == "POST":
                    self.reset()
                    return SandboxResponse(200, {"reset": True})
            elif path == "/_sandbox/latency":
                if method == "GET":
                    return SandboxResponse(200, {"ms": round(self.latency_s * 1000)})
                if method == "POST":
                    data, err = _json_object(body)
                    if err:
                        return SandboxResponse(*err)
                    ms = data.get("ms")
                    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 <= ms <= 60_000:
                        raise ValueError("ms must be a number of milliseconds in [0, 60000]")
                    self.latency_s = ms / 1000
                    return SandboxResponse(200, {"ms": ms})
            elif path == "/_sandbox/webhooks":
                if method == "GET":
                    return SandboxResponse(200, {"webhooks": self.webhooks.targets()})
                if method == "POST":
                    data, err = _json_object(body, allow_empty=True)
                    if err:
                        return SandboxResponse(*err)
                    return SandboxResponse(200, {"webhooks": self.webhooks.configure(data)})
            elif path == "/_sandbox/deliveries":
                if method == "GET":
                    return SandboxResponse(200, {"deliveries": self.webhooks.deliveries()})
            elif path == "/_sandbox/reply":
                if method == "POST":
                    data, err = _json_object(body)
                    if err:
                        return SandboxResponse(*err)
                    return SandboxResponse(201, self.reply_now(data))
            elif path == "/_sandbox/health":
                if method == "GET":
                    return SandboxResponse(200, {"ok": True, "seed": self.seed})
            else:
                return SandboxResponse(404, _problem(404, "Not Found", f"No route for {method} {path}"))
        except (ValueError, TypeError) as exc:
            return SandboxResponse(*_invalid(str(exc)))
        return SandboxResponse(405, _problem(405, "Method Not Allowed", f"{method} not allowed on {path}"))


def _json_object(body: bytes, allow_empty: bool = False) -> tuple[dict, tuple[int, dict] | None]:
    if allow_empty and not body.strip():
        return {}, None
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}, _invalid("Request body is not valid JSON.")
    if not isinstance(data, dict):
        return {}, _invalid("Request body must be a JSON object.")
    return data, None


def _query(qs: str) -> dict[str, str]:
    if not qs:
        return {}
    return {k: v[-1] for k, v in parse_qs(qs, keep_blank_values=True).items()}


def _int_param(query: dict, name: str, default: int, lo: int, hi: int) -> tuple[int, tuple[int, dict] | None]:
    raw = query.get(name)
    if raw is None or raw == "":
        return default, None
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        return default, _invalid(f"The `{name}` query parameter value [{raw}] is not between {lo} and {hi}")
    return value, None


# --------------------------------------------------------------------------- HTTP layer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "XSandbox/1.0"

    def version_string(self) -> str:
        return self.server_version
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silent
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            resp = SandboxResponse(400, _problem(400, "Bad Request", "Malformed request body"))
        else:
            resp = self.server.state.handle(
                self.command, self.path, body, self.headers.get("Authorization")
            )
        delay = resp.delay
        if self.server.state.latency_s and not self.path.startswith("/_sandbox"):
            delay += self.server.state.latency_s  # simulated network + API latency
        if delay > 0:
            # timeout fault (effect already applied; answer too late) or simulated latency: outside the lock
            self.server.stop_event.wait(delay)
        payload = resp.body()
        self.send_response(resp.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        # end headers and body in one write
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(payload)
        self.flush_headers()

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _dispatch


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], state: SandboxState) -> None:
        self.state = state
        self.stop_event = threading.Event()
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def server_close(self) -> None:
        self.stop_event.set()
        super().server_close()


def make_server(host: str = "127.0.0.1", port: int = 0, seed: int = 42) -> SandboxHTTPServer:
    """Bind (not yet serving) a sandbox server; ``server.state`` is its :class:`SandboxState`."""
    return SandboxHTTPServer((host, port), SandboxState(seed=seed))


def _base_url(server: SandboxHTTPServer) -> str:
    host, port = server.server_address[:2]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def serve(host: str = "127.0.0.1", port: int = 8765, seed: int = 42, latency_ms: float = 0.0) -> None:
    """Print ``sandbox listening on http://HOST:PORT`` and serve until SIGTERM/SIGINT."""
    server = make_server(host, port, seed)
    server.state.latency_s = max(0.0, latency_ms) / 1000

    def _terminate(signum, frame):  # noqa: ANN001
        raise SystemExit(0)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    bound_host, bound_port = server.server_address[:2]
    print(f"sandbox listening on http://{bound_host}:{bound_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


def start_in_thread(seed: int = 42, host: str = "127.0.0.1", port: int = 0) -> tuple[SandboxHTTPServer, str]:
    """Start a sandbox in a daemon thread; stop with ``server.shutdown(); server.server_close()``."""
    server = make_server(host, port, seed)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="x-sandbox", daemon=True)
    thread.start()
    server.thread = thread
    return server, _base_url(server)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local X API v2 sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="answer every API call this much later")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.seed, args.latency_ms)


if __name__ == "__main__":
    main()

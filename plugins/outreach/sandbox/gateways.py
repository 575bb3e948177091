"""The LinkedIn and XMTP messaging-gateway shapes of the sandbox (docs/providers.md), with simulated recipients.

Mounted by :class:`outreach.sandbox.server.SandboxState` under ``/linkedin/v1/...`` and ``/xmtp/v1/...``; they
share its clock, its call log (``/_sandbox/calls``) and its seed. ``Authorization: Bearer <any key>`` required.

Simulated LinkedIn members (deterministic from ``sha256(seed:member:purpose)``, see :meth:`Gateways.predict_linkedin`):
accept ~60% of invitations 1-48 h later; of those who accept an invitation with a note, ~40% reply to the note
5 minutes after accepting; ~50% reply to a DM 5 min-3 h later. Members ``404...`` do not exist. A DM to a member
who is not (yet) connected is refused (403 ``not_connected``). Invitations: 100 per account per rolling week (429).

Simulated XMTP addresses (:meth:`Gateways.predict_xmtp`): ~50% reply 5 min-3 h later (consent becomes
``allowed``), ~10% deny consent 10 min later (later sends: 403 ``consent_denied``), ~20% of conversations are
encrypted in a way the gateway cannot read (``replies_visible: false``; their replies never show).
Addresses ``0xdead...`` are not on the network (404 ``not_on_network``).
"""
from __future__ import annotations

import json
import re
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from outreach.sandbox.server import SandboxState

MIN = 60_000
HOUR = 60 * MIN
WEEK = 7 * 24 * HOUR
INVITES_PER_WEEK = 100
LI_ACCEPT_RATE, LI_NOTE_REPLY_RATE, LI_REPLY_RATE = 0.60, 0.40, 0.50
XMTP_REPLY_RATE, XMTP_DENY_RATE, XMTP_HIDDEN_RATE = 0.50, 0.10, 0.20
NOTE_REPLIES = ("Thanks for the note, happy to connect!", "Sure, let's chat next week.", "Who referred you?")
ADDRESS_RE = re.compile(r"^(0x[0-9a-f]{40}|([a-z0-9-]+\.)+eth)$")
MEMBER_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def _err(status: int, code: str, detail: str) -> tuple[int, dict]:
    return status, {"error": code, "detail": detail}


class Gateways:
    def __init__(self, state: "SandboxState") -> None:
        self.x = state
        self._lock = threading.Lock()
        self.calls: list[dict] = []
        self.li_invitations: dict[str, dict] = {}   # id -> invitation
        self.li_messages: dict[str, dict] = {}
        self.li_events: dict[str, list[dict]] = {}  # account -> events (scheduled; visible when at <= now)
        self.xm_messages: dict[str, dict] = {}
        self.xm_events: dict[str, list[dict]] = {}  # inbox -> events
        self.xm_denied: dict[tuple[str, str], int] = {}  # (from, to) -> denied at
        self.sent_count: dict[tuple, int] = {}  # duplicates check: (gateway, account, recipient, text) -> n
        self._n = 0

    # ---------------------------------------------------------------------------- simulated recipients
    def predict_linkedin(self, member: str) -> dict:
        from outreach.sandbox.server import REPLY_TEXTS, _unit

        s = self.x.seed
        return {
            "accepts": _unit(s, member, "li_accept") < LI_ACCEPT_RATE,
            "accept_delay_ms": HOUR + int(_unit(s, member, "li_accept_delay") * 47 * HOUR),
            "replies_to_note": _unit(s, member, "li_note_reply") < LI_NOTE_REPLY_RATE,
            "note_reply_text": NOTE_REPLIES[int(_unit(s, member, "li_note_text") * len(NOTE_REPLIES))],
            "replies": _unit(s, member, "li_reply") < LI_REPLY_RATE,
            "reply_delay_ms": 5 * MIN + int(_unit(s, member, "li_reply_delay") * (3 * HOUR - 5 * MIN)),
            "reply_text": REPLY_TEXTS[int(_unit(s, member, "li_reply_text") * len(REPLY_TEXTS))],
        }

    def predict_xmtp(self, address: str) -> dict:
        from outreach.sandbox.server import REPLY_TEXTS, _unit

        s, a = self.x.seed, address.lower()
        deny = _unit(s, a, "xm_deny") < XMTP_DENY_RATE
        return {
            "denies": deny,
            "replies": not deny and _unit(s, a, "xm_reply") < XMTP_REPLY_RATE,
            "replies_visible": _unit(s, a, "xm_hidden") >= XMTP_HIDDEN_RATE,
            "reply_delay_ms": 5 * MIN + int(_unit(s, a, "xm_reply_delay") * (3 * HOUR - 5 * MIN)),
            "reply_text": REPLY_TEXTS[int(_unit(s, a, "xm_reply_text") * len(REPLY_TEXTS))],
        }

    # ---------------------------------------------------------------------------- plumbing
    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n:08d}"

    def _event(self, store: dict, owner: str, at: int, **fields) -> dict:
        ev = {"id": self._id("e"), "at_ms": at, **fields}
        store.setdefault(owner, []).append(ev)
        return ev

    def _page(self, events: list[dict], query: dict, now: int) -> dict:
        from outreach.sandbox.server import _iso_ms

        cur = query.get("cursor")
        try:
            at, _, eid = (cur or "-1.").partition(".")
            after = (int(at), eid)
            limit = max(1, min(int(query.get("limit") or 100), 100))
        except ValueError:
            return {"error": "invalid_request", "detail": "bad cursor or limit"}
        visible = sorted((e for e in events if e["at_ms"] <= now and (e["at_ms"], e["id"]) > after),
                         key=lambda e: (e["at_ms"], e["id"]))
        page = visible[:limit]
        out = [{**{k: v for k, v in e.items() if k != "at_ms"}, "at": _iso_ms(e["at_ms"])} for e in page]
        nxt = f"{page[-1]['at_ms']}.{page[-1]['id']}" if page else cur
        return {"events": out, "next_cursor": nxt, "has_more": len(visible) > limit}

    def handle(self, method: str, path: str, qs: str, body: bytes, authorization: str | None):
        from outreach.sandbox.server import SandboxResponse, _iso_ms, _query

        with self._lock:
            now = self.x.now_ms()
            with self.x._lock:
                self.x._seq += 1
                seq = self.x._seq
            call = {"seq": seq, "at": _iso_ms(now), "method": method, "path": path, "user_id": None,
                    "target_id": None, "text": None, "status": 0, "effect": False}
            self.calls.append(call)
            query = _query(qs)
            token = (authorization or "").partition(" ")[2].strip()
            if not token:
                status, payload = _err(401, "unauthorized", "missing API key")
            else:
                try:
                    data = json.loads(body.decode() or "{}") if body.strip() else {}
                    if not isinstance(data, dict):
                        raise ValueError
                except ValueError:
                    status, payload = _err(400, "invalid_request", "body is not a JSON object")
                else:
                    if path.startswith("/linkedin/"):
                        status, payload = self._linkedin(method, path[len("/linkedin"):], query, data, now, call)
                    else:
                        status, payload = self._xmtp(method, path[len("/xmtp"):], query, data, now, call)
            call["status"] = status
            return SandboxResponse(status, payload, {})

    # ---------------------------------------------------------------------------- LinkedIn
    def _li_status(self, inv: dict, now: int) -> str:
        if inv["withdrawn_at"] is not None:
            return "withdrawn"
        return "accepted" if inv["accept_at"] is not None and inv["accept_at"] <= now else "pending"

    def _li_view(self, inv: dict, now: int) -> dict:
        from outreach.sandbox.server import _iso_ms

        return {"id": inv["id"], "account_id": inv["account_id"], "recipient_id": inv["recipient_id"],
                "note": inv["note"], "idempotency_key": inv["key"], "created_at": _iso_ms(inv["created"]),
                "status": self._li_status(inv, now)}

    def _linkedin(self, method: str, path: str, q: dict, d: dict, now: int, call: dict) -> tuple[int, dict]:
        from outreach.sandbox.server import _iso_ms

        if path == "/v1/invitations" and method == "POST":
            acc, rcpt, note, key = d.get("account_id"), str(d.get("recipient_id") or ""), d.get("note"), d.get(
                "idempotency_key")
            call.update(user_id=acc, target_id=rcpt, text=note)
            if not acc or not MEMBER_RE.match(rcpt):
                return _err(400, "invalid_request", "account_id and recipient_id are required")
            if note is not None and len(note) > 300:
                return _err(400, "note_too_long", "a note is at most 300 characters")
            same = next((i for i in self.li_invitations.values() if key and i["key"] == key and i["account_id"] == acc),
                        None)
            if same:
                return 200, {"invitation": self._li_view(same, now), "replayed": True}
            if rcpt.startswith("404"):
                return _err(404, "recipient_not_found", f"no member {rcpt}")
            if rcpt.startswith("blocked"):  # a member who blocked the account
                return _err(403, "blocked", f"{rcpt} has blocked {acc}")
            recent = [i for i in self.li_invitations.values() if i["account_id"] == acc and i["created"] > now - WEEK]
            if len(recent) >= INVITES_PER_WEEK:
                return _err(429, "rate_limited", "weekly invitation limit reached")
            if any(i["account_id"] == acc and i["recipient_id"] == rcpt and self._li_status(i, now) == "pending"
                   for i in self.li_invitations.values()):
                return _err(409, "already_invited", "an invitation to this member is pending")
            p = self.predict_linkedin(rcpt)
            inv = {"id": self._id("inv"), "account_id": acc, "recipient_id": rcpt, "note": note, "key": key,
                   "created": now, "withdrawn_at": None, "accept_at": now + p["accept_delay_ms"] if p["accepts"] else None}
            self.li_invitations[inv["id"]] = inv
            k = ("li_inv", acc, rcpt, note)
            self.sent_count[k] = self.sent_count.get(k, 0) + 1
            if inv["accept_at"] is not None:
                self._event(self.li_events, acc, inv["accept_at"], type="connection_accepted", recipient_id=rcpt,
                            invitation_id=inv["id"])
                if note and p["replies_to_note"]:
                    self._event(self.li_events, acc, inv["accept_at"] + 5 * MIN, type="note_reply", recipient_id=rcpt,
                                invitation_id=inv["id"], text=p["note_reply_text"],
                                conversation_id=f"li:{acc}:{rcpt}")
            call["effect"] = True
            return 201, {"invitation": self._li_view(inv, now)}
        if path == "/v1/invitations" and method == "GET":
            acc = q.get("account_id")
            items = [i for i in self.li_invitations.values() if i["account_id"] == acc
                     and (not q.get("idempotency_key") or i["key"] == q["idempotency_key"])
                     and (not q.get("status") or self._li_status(i, now) == q["status"])]
            return 200, {"invitations": [self._li_view(i, now) for i in items], "has_more": False}
        m = re.match(r"^/v1/invitations/([A-Za-z0-9]+)$", path)
        if m and method == "DELETE":
            inv = self.li_invitations.get(m[1])
            if inv is None:
                return _err(404, "not_found", f"no invitation {m[1]}")
            if self._li_status(inv, now) != "pending":
                return _err(409, "not_pending", f"invitation is {self._li_status(inv, now)}")
            inv["withdrawn_at"] = now
            evs = self.li_events.get(inv["account_id"], [])
            self.li_events[inv["account_id"]] = [e for e in evs if e.get("invitation_id") != inv["id"]]
            call.update(user_id=inv["account_id"], target_id=inv["recipient_id"], effect=True)
            return 200, {"invitation": self._li_view(inv, now)}
        if path == "/v1/messages" and method == "POST":
            acc, rcpt, text, key = d.get("account_id"), str(d.get("recipient_id") or ""), d.get("text"), d.get(
                "idempotency_key")
            call.update(user_id=acc, target_id=rcpt, text=text)
            if not acc or not MEMBER_RE.match(rcpt) or not text:
                return _err(400, "invalid_request", "account_id, recipient_id and text are required")
            same = next((x for x in self.li_messages.values() if key and x["key"] == key and x["account_id"] == acc),
                        None)
            if same:
                return 200, {"message": same["view"], "replayed": True}
            if rcpt.startswith("404"):
                return _err(404, "recipient_not_found", f"no member {rcpt}")
            if rcpt.startswith("blocked"):  # a member who blocked the account
                return _err(403, "blocked", f"{rcpt} has blocked {acc}")
            if not any(i["account_id"] == acc and i["recipient_id"] == rcpt and self._li_status(i, now) == "accepted"
                       for i in self.li_invitations.values()):
                return _err(403, "not_connected", f"{rcpt} is not a connection of {acc}")
            mid = self._id("msg")
            conv = f"li:{acc}:{rcpt}"
            view = {"id": mid, "account_id": acc, "recipient_id": rcpt, "conversation_id": conv,
                    "sent_at": _iso_ms(now), "idempotency_key": key}
            self.li_messages[mid] = {"account_id": acc, "key": key, "view": view}
            k = ("li_msg", acc, rcpt, text)
            self.sent_count[k] = self.sent_count.get(k, 0) + 1
            p = self.predict_linkedin(rcpt)
            if p["replies"] and not any(e["type"] == "message_received" and e["recipient_id"] == rcpt
                                        for e in self.li_events.get(acc, [])):
                self._event(self.li_events, acc, now + p["reply_delay_ms"], type="message_received",
                            recipient_id=rcpt, text=p["reply_text"], conversation_id=conv)
            call["effect"] = True
            return 201, {"message": view}
        if path == "/v1/messages" and method == "GET":
            acc = q.get("account_id")
            items = [x["view"] for x in self.li_messages.values() if x["account_id"] == acc
                     and (not q.get("idempotency_key") or x["key"] == q["idempotency_key"])]
            return 200, {"messages": items, "has_more": False}
        if path == "/v1/events" and method == "GET":
            call["user_id"] = q.get("account_id")
            page = self._page(self.li_events.get(q.get("account_id") or "", []), q, now)
            return (400 if "error" in page else 200), page
        return _err(404, "not_found", f"no route {method} {path}")

    # ---------------------------------------------------------------------------- XMTP
    def _xmtp(self, method: str, path: str, q: dict, d: dict, now: int, call: dict) -> tuple[int, dict]:
        from outreach.sandbox.server import _iso_ms

        if path == "/v1/messages" and method == "POST":
            frm, to, text, key = d.get("from"), str(d.get("to") or "").lower(), d.get("text"), d.get("idempotency_key")
            call.update(user_id=frm, target_id=to, text=text)
            if not frm or not text or not ADDRESS_RE.match(to):
                return _err(400, "invalid_address" if text and frm else "invalid_request",
                            "to must be 0x + 40 hex or an ENS name; from and text are required")
            same = next((x for x in self.xm_messages.values() if key and x["key"] == key and x["from"] == frm), None)
            if same:
                return 200, {"message": same["view"], "replayed": True}
            if to.startswith("0xdead"):
                return _err(404, "not_on_network", f"{to} has no XMTP identity")
            denied = self.xm_denied.get((frm, to))
            if denied is not None and denied <= now:
                return _err(403, "consent_denied", f"{to} denied consent")
            p = self.predict_xmtp(to)
            conv = f"xm:{frm}:{to}"
            view = {"id": self._id("xm"), "from": frm, "to": to, "conversation_id": conv, "sent_at": _iso_ms(now),
                    "replies_visible": p["replies_visible"], "consent": "unknown", "idempotency_key": key}
            self.xm_messages[view["id"]] = {"from": frm, "key": key, "view": view}
            k = ("xmtp", frm, to, text)
            self.sent_count[k] = self.sent_count.get(k, 0) + 1
            first = not any(e.get("peer") == to for e in self.xm_events.get(frm, []))
            if first and p["denies"]:
                self.xm_denied[(frm, to)] = now + 10 * MIN
                self._event(self.xm_events, frm, now + 10 * MIN, type="consent", peer=to, state="denied",
                            conversation_id=conv)
            elif first and p["replies"]:
                at = now + p["reply_delay_ms"]
                if p["replies_visible"]:
                    self._event(self.xm_events, frm, at, type="message", peer=to, sender=to, text=p["reply_text"],
                                conversation_id=conv)
                self._event(self.xm_events, frm, at, type="consent", peer=to, state="allowed", conversation_id=conv)
            call["effect"] = True
            return 201, {"message": view}
        if path == "/v1/messages" and method == "GET":
            items = [x["view"] for x in self.xm_messages.values() if x["from"] == q.get("from")
                     and (not q.get("idempotency_key") or x["key"] == q["idempotency_key"])]
            return 200, {"messages": items, "has_more": False}
        if path == "/v1/events" and method == "GET":
            call["user_id"] = q.get("inbox")
            page = self._page(self.xm_events.get(q.get("inbox") or "", []), q, now)
            return (400 if "error" in page else 200), page
        return _err(404, "not_found", f"no route {method} {path}")

    def reply_now(self, provider: str, sender: str, account: str, text: str) -> dict:
        """The recipient ``sender`` replies to ``account`` now; returns the webhook payload (events as polled)."""
        from outreach.sandbox.server import _iso_ms

        with self._lock:
            now = self.x.now_ms()
            if provider == "linkedin":
                ev = self._event(self.li_events, account, now, type="message_received", recipient_id=sender,
                                 text=text, conversation_id=f"li:{account}:{sender}")
                owner = {"account_id": account}
            else:
                sender = sender.lower()
                ev = self._event(self.xm_events, account, now, type="message", peer=sender, sender=sender,
                                 text=text, conversation_id=f"xm:{account}:{sender}")
                owner = {"inbox": account}
            view = {**{k: v for k, v in ev.items() if k != "at_ms"}, "at": _iso_ms(ev["at_ms"])}
            return {**owner, "events": [view]}

    # ---------------------------------------------------------------------------- inspection
    def summary(self) -> dict:
        now = self.x.now_ms()
        with self._lock:
            li_ev = [e for evs in self.li_events.values() for e in evs if e["at_ms"] <= now]
            xm_ev = [e for evs in self.xm_events.values() for e in evs if e["at_ms"] <= now]
            return {
                "linkedin": {
                    "invitations": len(self.li_invitations),
                    "withdrawn": sum(1 for i in self.li_invitations.values() if i["withdrawn_at"] is not None),
                    "accepted_visible": sum(1 for e in li_ev if e["type"] == "connection_accepted"),
                    "note_replies_visible": sum(1 for e in li_ev if e["type"] == "note_reply"),
                    "messages": len(self.li_messages),
                    "replies_visible": sum(1 for e in li_ev if e["type"] == "message_received"),
                },
                "xmtp": {
                    "messages": len(self.xm_messages),
                    "hidden_conversations": sum(1 for x in self.xm_messages.values()
                                                if not x["view"]["replies_visible"]),
                    "replies_visible": sum(1 for e in xm_ev if e["type"] == "message"),
                    "denied_visible": sum(1 for e in xm_ev if e["type"] == "consent" and e["state"] == "denied"),
                },
                "duplicate_gateway_sends": sum(1 for n in self.sent_count.values() if n > 1),
            }

    def calls_since(self, since: int) -> list[dict]:
        with self._lock:
            return [dict(c) for c in self.calls if c["seq"] > since]

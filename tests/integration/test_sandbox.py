"""Integration tests of the local X API v2 sandbox over real HTTP."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from outreach.sandbox.server import SandboxState, start_in_thread

T0 = "2026-01-05T09:00:00Z"
ME = "1000"
AUTH = {"Authorization": f"Bearer sandbox-{ME}"}
RL_HEADERS = ("x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset")
INVALID_TYPE = "https://api.twitter.com/2/problems/invalid-request"
NOT_FOUND_TYPE = "https://api.twitter.com/2/problems/resource-not-found"
# 2026-01-05T09:15:00Z: end of the 15-minute window containing T0
T0_WINDOW_RESET = 1767604500


class Client:
    def __init__(self, server, base_url: str) -> None:
        self.server = server
        self.state: SandboxState = server.state
        self.url = base_url
        self.s = requests.Session()

    def req(self, method: str, path: str, auth: dict | None = AUTH, **kw) -> requests.Response:
        kw.setdefault("timeout", 5)
        return self.s.request(method, self.url + path, headers=auth or {}, **kw)

    def follow(self, target: str, user: str = ME, **kw) -> requests.Response:
        return self.req("POST", f"/2/users/{user}/following", json={"target_user_id": target}, **kw)

    def unfollow(self, target: str, user: str = ME) -> requests.Response:
        return self.req("DELETE", f"/2/users/{user}/following/{target}")

    def dm(self, to: str, text: str = "hello there", auth: dict = AUTH, **kw) -> requests.Response:
        return self.req("POST", f"/2/dm_conversations/with/{to}/messages", json={"text": text}, auth=auth, **kw)

    def set_clock(self, now: str | None) -> str:
        r = self.s.post(self.url + "/_sandbox/clock", json={"now": now}, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()["now"]

    def advance(self, seconds: float) -> str:
        r = self.s.post(self.url + "/_sandbox/clock", json={"advance_seconds": seconds}, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()["now"]

    def summary(self) -> dict:
        return self.s.get(self.url + "/_sandbox/summary", timeout=5).json()

    def calls(self, since: int | None = None) -> list[dict]:
        params = {"since": since} if since is not None else None
        return self.s.get(self.url + "/_sandbox/calls", params=params, timeout=5).json()["calls"]

    def faults(self, spec: dict) -> requests.Response:
        return self.s.post(self.url + "/_sandbox/faults", json=spec, timeout=5)

    def paginate(self, path: str, max_results: int, auth: dict = AUTH) -> tuple[list[dict], int]:
        items, pages, token = [], 0, None
        while True:
            params = {"max_results": max_results}
            if token:
                params["pagination_token"] = token
            r = self.req("GET", path, params=params, auth=auth)
            assert r.status_code == 200, r.text
            body = r.json()
            pages += 1
            data = body.get("data", [])
            assert body["meta"]["result_count"] == len(data)
            assert len(data) <= max_results
            items.extend(data)
            token = body["meta"].get("next_token")
            if not token:
                return items, pages
            assert pages < 1000


def _start(seed: int = 42) -> Client:
    server, url = start_in_thread(seed=seed)
    c = Client(server, url)
    c.set_clock(T0)
    return c


def _stop(c: Client) -> None:
    c.s.close()
    c.server.shutdown()
    c.server.server_close()


@pytest.fixture
def sb():
    c = _start()
    yield c
    _stop(c)


def _recipients(state: SandboxState, *, n: int, start: int = 2000, **want) -> list[str]:
    """First n recipient ids (numeric, not 403/404-prefixed) whose predicted behaviour matches."""
    out = []
    rid = start
    while len(out) < n:
        rid += 1
        p = state.predict(str(rid))
        if all(p[k] == v for k, v in want.items()):
            out.append(str(rid))
    return out


# --------------------------------------------------------------------------- shapes & auth


def test_auth_required_on_every_api_endpoint(sb: Client):
    unauthorized = {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}
    cases = [
        ("POST", f"/2/users/{ME}/following", {"json": {"target_user_id": "2001"}}),
        ("DELETE", f"/2/users/{ME}/following/2001", {}),
        ("POST", "/2/dm_conversations/with/2001/messages", {"json": {"text": "hi"}}),
        ("GET", "/2/dm_events", {}),
        ("GET", "/2/dm_conversations/with/2001/dm_events", {}),
        ("GET", f"/2/users/{ME}/followers", {}),
    ]
    for auth in (None, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        for method, path, kw in cases:
            r = sb.req(method, path, auth=auth, **kw)
            assert r.status_code == 401, (method, path, auth)
            assert r.json() == unauthorized
            assert all(h in r.headers for h in RL_HEADERS)
    assert sb.summary()["follows"] == 0 and sb.summary()["dms"] == 0
    assert all(c["status"] == 401 and c["effect"] is False for c in sb.calls())


def test_follow_shape_idempotent_and_unfollow(sb: Client):
    r = sb.follow("2001")
    assert r.status_code == 200
    assert r.json() == {"data": {"following": True, "pending_follow": False}}
    assert r.headers["Content-Type"].startswith("application/json")
    assert int(r.headers["Content-Length"]) == len(r.content)
    r2 = sb.follow("2001")
    assert r2.status_code == 200 and r2.json() == r.json()
    r3 = sb.unfollow("2001")
    assert r3.status_code == 200 and r3.json() == {"data": {"following": False}}
    r4 = sb.unfollow("2001")
    assert r4.status_code == 200 and r4.json() == {"data": {"following": False}}
    calls = sb.calls()
    assert [(c["method"], c["target_id"], c["effect"]) for c in calls] == [
        ("POST", "2001", True), ("POST", "2001", False), ("DELETE", "2001", True), ("DELETE", "2001", False),
    ]
    assert all(c["user_id"] == ME for c in calls)
    s = sb.summary()
    assert s["follows"] == 2 and s["unique_follows"] == 1 and s["unfollows"] == 1


def test_dm_shape_and_dm_events(sb: Client):
    empty = sb.req("GET", "/2/dm_events")
    assert empty.status_code == 200 and empty.json() == {"meta": {"result_count": 0}}

    r = sb.dm("2001", "first")
    assert r.status_code == 201
    data = r.json()["data"]
    assert data["dm_conversation_id"] == "1000-2001"
    assert data["dm_event_id"].isdigit() and int(data["dm_event_id"]) >= 1800000000000000000
    # conversation id is numeric-sorted, whoever sends
    r_other = sb.dm("999", "x", auth={"Authorization": "Bearer sandbox-5000"})
    assert r_other.json()["data"]["dm_conversation_id"] == "999-5000"
    # any other token acts as user 1000
    r_any = sb.dm("2002", "second", auth={"Authorization": "Bearer some-real-looking-token"})
    assert r_any.status_code == 201 and r_any.json()["data"]["dm_conversation_id"] == "1000-2002"
    assert int(r_any.json()["data"]["dm_event_id"]) > int(data["dm_event_id"])

    body = sb.req("GET", "/2/dm_events").json()
    assert body["meta"] == {"result_count": 2}
    newest, oldest = body["data"]
    assert oldest == {
        "id": data["dm_event_id"],
        "event_type": "MessageCreate",
        "text": "first",
        "sender_id": ME,
        "dm_conversation_id": "1000-2001",
        "created_at": "2026-01-05T09:00:00.000Z",
        "participant_ids": ["1000", "2001"],
    }
    assert newest["text"] == "second"
    conv = sb.req("GET", "/2/dm_conversations/with/2001/dm_events").json()
    assert [e["text"] for e in conv["data"]] == ["first"]
    calls = [c for c in sb.calls() if c["method"] == "POST"]
    assert calls[0]["text"] == "first" and calls[0]["status"] == 201 and calls[0]["effect"] is True


def test_bad_input_is_400_invalid_request(sb: Client):
    follow_path = f"/2/users/{ME}/following"
    dm_path = "/2/dm_conversations/with/2001/messages"
    bad = [
        ("POST", follow_path, {"data": "{not json", "headers": {**AUTH, "Content-Type": "application/json"}}),
        ("POST", follow_path, {"json": {}}),
        ("POST", follow_path, {"json": {"target_user_id": ""}}),
        ("POST", dm_path, {"data": "nope"}),
        ("POST", dm_path, {"json": {}}),
        ("POST", dm_path, {"json": {"text": ""}}),
        ("POST", dm_path, {"json": {"text": "x" * 10001}}),
        ("GET", "/2/dm_events", {"params": {"max_results": 101}}),
        ("GET", "/2/dm_events", {"params": {"max_results": 0}}),
        ("GET", f"/2/users/{ME}/followers", {"params": {"max_results": 1001}}),
        ("GET", "/2/dm_events", {"params": {"pagination_token": "!!garbage!!"}}),
    ]
    for method, path, kw in bad:
        headers = kw.pop("headers", AUTH)
        r = sb.s.request(method, sb.url + path, headers=headers, timeout=5, **kw)
        assert r.status_code == 400, (path, kw, r.text)
        body = r.json()
        assert body["title"] == "Invalid Request" and body["type"] == INVALID_TYPE and body["status"] == 400
        assert body["detail"]
        assert all(h in r.headers for h in RL_HEADERS)
    assert sb.dm("2001", "x" * 10000).status_code == 201
    s = sb.summary()
    assert s["follows"] == 0 and s["dms"] == 1


def test_simulated_error_recipients(sb: Client):
    r = sb.follow("404123")
    assert r.status_code == 400
    err = r.json()["errors"][0]
    assert err["title"] == "Not Found Error" and err["type"] == NOT_FOUND_TYPE and err["message"]
    r = sb.dm("404123")
    assert r.status_code == 400 and r.json()["errors"][0]["type"] == NOT_FOUND_TYPE
    r = sb.dm("403123")
    assert r.status_code == 403
    assert r.json() == {"title": "Forbidden", "detail": "You cannot send messages to this user.",
                        "type": "about:blank", "status": 403}
    r = sb.follow("403123")
    assert r.status_code == 403 and "protected" in r.json()["detail"]
    assert all(h in r.headers for h in RL_HEADERS)
    s = sb.summary()
    assert (s["follows"], s["unique_follows"], s["dms"]) == (0, 0, 0)
    assert all(c["effect"] is False for c in sb.calls())


def test_unknown_paths_are_404_json(sb: Client):
    for method, path in [("GET", "/nope"), ("GET", "/2/nope"), ("GET", "/_sandbox/nope"),
                         ("GET", f"/2/users/{ME}/following")]:
        r = sb.req(method, path)
        assert r.status_code == 404 and r.json()["status"] == 404
    assert all(h in sb.req("GET", "/2/nope").headers for h in RL_HEADERS)


# --------------------------------------------------------------------------- rate limits


def test_follow_rate_limit_and_window_reset(sb: Client):
    for i in range(50):
        r = sb.follow(str(3000 + i))
        assert r.status_code == 200
        assert r.headers["x-rate-limit-limit"] == "50"
        assert r.headers["x-rate-limit-remaining"] == str(49 - i)
        assert r.headers["x-rate-limit-reset"] == str(T0_WINDOW_RESET)
    r = sb.follow("3999")
    assert r.status_code == 429
    assert r.json() == {"title": "Too Many Requests", "detail": "Too Many Requests",
                        "type": "about:blank", "status": 429}
    assert "Retry-After" not in r.headers
    assert r.headers["x-rate-limit-remaining"] == "0"
    assert r.headers["x-rate-limit-reset"] == str(T0_WINDOW_RESET)
    last = sb.calls()[-1]
    assert last["status"] == 429 and last["effect"] is False
    assert sb.summary()["unique_follows"] == 50
    # other endpoints and other users have their own buckets
    assert sb.follow("3999", user="1001").status_code == 200
    assert sb.dm("3999").status_code == 201
    # a later instant of the same window: still limited
    sb.advance(14 * 60)
    assert sb.follow("3999").status_code == 429
    sb.advance(60)
    r = sb.follow("3999")
    assert r.status_code == 200
    assert r.headers["x-rate-limit-remaining"] == "49"
    assert r.headers["x-rate-limit-reset"] == str(T0_WINDOW_RESET + 900)


def test_follow_daily_limit_reports_day_window(sb: Client):
    n = 0
    for window in range(8):
        for _ in range(50):
            assert sb.follow(str(5000 + n)).status_code == 200
            n += 1
        sb.advance(15 * 60)
    r = sb.follow("9999")
    assert r.status_code == 429 and "Retry-After" not in r.headers
    assert r.headers["x-rate-limit-remaining"] == "0"
    assert r.headers["x-rate-limit-reset"] == str(1767657600)  # 2026-01-06T00:00:00Z
    sb.set_clock("2026-01-06T00:00:00Z")
    assert sb.follow("9999").status_code == 200


def test_rate_limit_headers_on_read_endpoints(sb: Client):
    for i in range(15):
        r = sb.req("GET", f"/2/users/{ME}/followers")
        assert r.status_code == 200 and r.headers["x-rate-limit-remaining"] == str(14 - i)
    r = sb.req("GET", f"/2/users/{ME}/followers")
    assert r.status_code == 429 and "Retry-After" not in r.headers
    r = sb.req("GET", "/2/dm_events")
    assert r.headers["x-rate-limit-limit"] == "300" and r.headers["x-rate-limit-remaining"] == "299"
    r = sb.req("GET", "/2/dm_conversations/with/2001/dm_events")
    assert r.headers["x-rate-limit-limit"] == "300" and r.headers["x-rate-limit-remaining"] == "299"
    r = sb.dm("2001")
    assert r.headers["x-rate-limit-limit"] == "200" and r.headers["x-rate-limit-remaining"] == "199"


# --------------------------------------------------------------------------- reactions


def test_follow_backs_appear_after_delay_only_for_followed(sb: Client):
    backs = _recipients(sb.state, n=3, follows_back=True)
    nots = _recipients(sb.state, n=2, follows_back=False)
    followed_back, not_followed = backs[:2], backs[2]
    for rid in followed_back + nots:
        assert sb.follow(rid).status_code == 200
    assert sb.req("GET", f"/2/users/{ME}/followers").json() == {"meta": {"result_count": 0}}
    delays = {rid: sb.state.predict(rid)["follow_back_delay_seconds"] for rid in followed_back}
    assert all(600 <= d <= 4 * 3600 for d in delays.values())
    first, second = sorted(followed_back, key=delays.get)
    sb.advance(delays[first] - 1)
    assert "data" not in sb.req("GET", f"/2/users/{ME}/followers").json()
    sb.advance(1)
    body = sb.req("GET", f"/2/users/{ME}/followers").json()
    assert body["data"] == [{"id": first, "name": sb.state.predict(first)["name"], "username": f"user{first}"}]
    assert sb.summary()["follow_backs_visible"] == 1
    sb.advance(4 * 3600)
    ids = [u["id"] for u in sb.req("GET", f"/2/users/{ME}/followers").json()["data"]]
    assert ids == [second, first]  # most recent follower first
    assert not_followed not in ids and not set(nots) & set(ids)
    # other users' follower lists are untouched
    assert sb.req("GET", "/2/users/1001/followers").json()["meta"]["result_count"] == 0
    # re-following does not create a second follow-back
    sb.unfollow(first)
    sb.follow(first)
    sb.advance(5 * 3600)
    assert sb.summary()["follow_backs_visible"] == 2


def test_replies_only_after_our_dm(sb: Client):
    repliers = _recipients(sb.state, n=2, replies=True)
    silent = _recipients(sb.state, n=1, replies=False)[0]
    rid, never_dmed = repliers
    p = sb.state.predict(rid)
    assert 300 <= p["reply_delay_seconds"] <= 3 * 3600
    sb.dm(rid, "hi there")
    sb.dm(rid, "hi again")
    sb.dm(silent, "hello?")
    them = {"Authorization": f"Bearer sandbox-{rid}"}
    sb.advance(p["reply_delay_seconds"] - 1)
    assert [e["sender_id"] for e in sb.req("GET", "/2/dm_events").json()["data"]] == [ME, ME, ME]
    assert sb.summary()["replies_visible"] == 0
    sb.advance(1)
    events = sb.req("GET", "/2/dm_events").json()["data"]
    reply = events[0]
    assert reply["sender_id"] == rid and reply["text"] == p["reply_text"]
    assert reply["dm_conversation_id"] == f"1000-{rid}" and reply["participant_ids"] == ["1000", rid]
    assert reply["event_type"] == "MessageCreate"
    conv = sb.req("GET", f"/2/dm_conversations/with/{rid}/dm_events").json()["data"]
    assert [e["text"] for e in conv] == [p["reply_text"], "hi again", "hi there"]
    # visible from the recipient's side too
    theirs = sb.req("GET", "/2/dm_events", auth=them).json()["data"]
    assert [e["id"] for e in theirs] == [e["id"] for e in conv]
    sb.advance(10 * 3600)
    assert sb.summary()["replies_visible"] == 1  # one reply per (user, recipient)
    assert never_dmed not in {e["sender_id"] for e in sb.req("GET", "/2/dm_events").json()["data"]}
    assert silent not in {e["sender_id"] for e in sb.req("GET", "/2/dm_events").json()["data"]}


def test_dm_events_30_day_window(sb: Client):
    sb.dm("2001", "old")
    sb.advance(29 * 86400)
    assert sb.req("GET", "/2/dm_events").json()["meta"]["result_count"] >= 1
    sb.advance(2 * 86400)
    texts = [e["text"] for e in sb.req("GET", "/2/dm_events").json().get("data", [])]
    assert "old" not in texts
    # nothing from the future of the sandbox clock either
    sb.set_clock("2026-01-01T00:00:00Z")
    assert sb.req("GET", "/2/dm_events").json() == {"meta": {"result_count": 0}}


# --------------------------------------------------------------------------- pagination


def test_dm_events_pagination_exactly_once(sb: Client):
    sent = set()
    for i in range(23):
        r = sb.dm(str(7000 + i), f"msg {i}")
        sent.add(r.json()["data"]["dm_event_id"])
        sb.advance(1)
    sb.advance(5 * 3600)  # let replies land too
    expected = sb.req("GET", "/2/dm_events").json()["meta"]["result_count"]
    assert expected > 23
    items, pages = sb.paginate("/2/dm_events", 7)
    ids = [e["id"] for e in items]
    assert len(ids) == len(set(ids)) == expected
    assert sent <= set(ids)
    assert ids == sorted(ids, key=int, reverse=True)
    assert pages == -(-expected // 7)
    # conversation endpoint pagination
    conv_items, _ = sb.paginate("/2/dm_conversations/with/7000/dm_events", 1)
    assert len(conv_items) == len({e["id"] for e in conv_items}) >= 1


def test_followers_pagination_exactly_once(sb: Client):
    backs = _recipients(sb.state, n=12, follows_back=True)
    for rid in backs:
        sb.follow(rid)
    sb.advance(5 * 3600)
    items, pages = sb.paginate(f"/2/users/{ME}/followers", 5)
    ids = [u["id"] for u in items]
    assert sorted(ids) == sorted(backs)
    assert pages == 3
    single, _ = sb.paginate(f"/2/users/{ME}/followers", 1000)
    assert [u["id"] for u in single] == ids


# --------------------------------------------------------------------------- faults


def test_fault_500_has_no_effect(sb: Client):
    assert sb.faults({"error_rate": 1.0, "mode": "500", "paths": ["dm"]}).status_code == 200
    r = sb.dm("2001")
    assert r.status_code == 503 and all(h in r.headers for h in RL_HEADERS)
    assert sb.follow("2001").status_code == 200  # not in paths
    assert sb.summary()["dms"] == 0
    assert sb.calls()[0]["status"] == 503 and sb.calls()[0]["effect"] is False
    assert sb.faults({}).status_code == 200
    assert sb.dm("2001").status_code == 201


def test_fault_accept_then_500_applies_effect(sb: Client):
    sb.faults({"error_rate": 1.0, "mode": "accept_then_500", "paths": ["dm", "follow"]})
    r = sb.dm("2001", "hello")
    assert r.status_code == 500
    assert sb.follow("2002").status_code == 500
    sb.faults({})
    s = sb.summary()
    assert s["dms"] == 1 and s["unique_follows"] == 1
    assert [e["text"] for e in sb.req("GET", "/2/dm_events").json()["data"]] == ["hello"]
    # the client retries blindly -> the duplicate is visible in the summary
    assert sb.dm("2001", "hello").status_code == 201
    assert sb.summary()["duplicate_dms"] == 1
    assert [(c["status"], c["effect"]) for c in sb.calls() if c["method"] == "POST"] == [
        (500, True), (500, True), (201, True)]


def test_fault_timeout_applies_effect_then_hangs(sb: Client):
    sb.faults({"error_rate": 1.0, "mode": "timeout", "timeout_seconds": 1.0, "paths": ["dm"]})
    with pytest.raises(requests.exceptions.ReadTimeout):
        sb.dm("2001", "slow", timeout=0.3)
    assert sb.summary()["dms"] == 1
    call = sb.calls()[-1]
    assert call["effect"] is True and call["text"] == "slow"
    sb.faults({})
    fresh = requests.Session()
    try:
        r = fresh.post(sb.url + "/2/dm_conversations/with/2002/messages", json={"text": "fast"},
                       headers=AUTH, timeout=5)
        assert r.status_code == 201
    finally:
        fresh.close()


def test_faults_deterministic_per_seed_and_sequence():
    def run() -> list[int]:
        c = _start()
        try:
            c.faults({"error_rate": 0.5, "mode": "500", "seed": 7, "paths": ["follow"]})
            return [c.follow(str(2000 + i)).status_code for i in range(30)]
        finally:
            _stop(c)

    a, b = run(), run()
    assert a == b
    assert 503 in a and 200 in a


def test_faults_validation(sb: Client):
    assert sb.faults({"error_rate": 2}).status_code == 400
    assert sb.faults({"mode": "explode"}).status_code == 400
    assert sb.faults({"paths": ["nope"]}).status_code == 400
    r = sb.faults({"error_rate": 0.25})
    assert r.json()["faults"]["mode"] == "500" and r.json()["faults"]["paths"] == ["dm", "follow"]
    assert sb.s.get(sb.url + "/_sandbox/faults").json()["faults"]["error_rate"] == 0.25
    assert sb.faults({}).json() == {"faults": None}


# --------------------------------------------------------------------------- inspection & control


def test_calls_since_and_summary(sb: Client):
    sb.follow("2001")
    sb.follow("2001")
    sb.follow("2002")
    sb.dm("2001", "a")
    sb.dm("2001", "a")
    sb.dm("2001", "b")
    sb.dm("2002", "a")
    sb.unfollow("2002")
    sb.req("GET", "/2/dm_events")
    calls = sb.calls()
    assert [c["seq"] for c in calls] == list(range(1, 10))
    for c in calls:
        assert set(c) == {"seq", "at", "method", "path", "user_id", "target_id", "text", "status", "effect"}
        assert c["at"] == "2026-01-05T09:00:00.000Z"
    assert [c["seq"] for c in sb.calls(since=7)] == [8, 9]
    assert sb.calls(since=9) == []
    s = sb.summary()
    assert {k: s[k] for k in ("follows", "unique_follows", "dms", "duplicate_dms", "unfollows")} == {
        "follows": 3, "unique_follows": 2, "dms": 4, "duplicate_dms": 1, "unfollows": 1}
    assert s["follow_backs_visible"] == 0 and s["replies_visible"] == 0


def test_clock_endpoints(sb: Client):
    assert sb.s.get(sb.url + "/_sandbox/clock").json() == {"now": "2026-01-05T09:00:00.000Z"}
    assert sb.set_clock("2026-02-01T12:30:00+00:00") == "2026-02-01T12:30:00.000Z"
    assert sb.advance(90) == "2026-02-01T12:31:30.000Z"
    real = sb.set_clock(None)
    assert real.startswith("20") and real != "2026-02-01T12:31:30.000Z"
    assert sb.s.post(sb.url + "/_sandbox/clock", json={"now": "yesterday"}).status_code == 400
    assert sb.s.post(sb.url + "/_sandbox/clock", json={}).status_code == 400


def test_reset_keeps_seed_and_clock(sb: Client):
    sb.follow("2001")
    sb.dm("2001")
    sb.advance(60)
    assert sb.s.post(sb.url + "/_sandbox/reset").status_code == 200
    assert sb.calls() == []
    assert sb.summary()["follows"] == 0 and sb.summary()["dms"] == 0
    assert sb.req("GET", "/2/dm_events").json()["meta"]["result_count"] == 0
    assert sb.s.get(sb.url + "/_sandbox/clock").json()["now"] == "2026-01-05T09:01:00.000Z"
    assert sb.state.seed == 42


def test_determinism_same_seed_same_reactions():
    def run(seed: int) -> tuple[list[str], list[tuple[str, str, str]]]:
        c = _start(seed)
        try:
            for i in range(40):
                c.follow(str(8000 + i))
                c.dm(str(8000 + i), "hi")
            c.advance(5 * 3600)
            followers, _ = c.paginate(f"/2/users/{ME}/followers", 1000)
            events, _ = c.paginate("/2/dm_events", 100)
            replies = [(e["sender_id"], e["text"], e["created_at"]) for e in events if e["sender_id"] != ME]
            return [u["id"] for u in followers], replies
        finally:
            _stop(c)

    a, b, other = run(42), run(42), run(43)
    assert a == b
    assert a != other
    followers, replies = a
    assert 10 <= len(followers) <= 35 and 8 <= len(replies) <= 32


def test_state_usable_without_http():
    st = SandboxState(seed=42)
    st.set_clock(T0)
    r = st.handle("POST", f"/2/users/{ME}/following", b'{"target_user_id":"2001"}', "Bearer x")
    assert r.status == 200 and r.payload["data"]["following"] is True
    assert r.headers["x-rate-limit-remaining"] == "49"
    assert st.handle("GET", "/2/dm_events").status == 401
    assert st.summary()["follows"] == 1


def test_serve_cli_prints_one_line_and_stops_on_sigterm():
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root / "plugins")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "outreach.sandbox.server", "--port", "0", "--seed", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        url = line.split(" on ", 1)[1]
        assert requests.get(url + "/_sandbox/health", timeout=5).json() == {"ok": True, "seed": 3}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stdout.read() == "" and proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""XHook and XClient against the sandbox over real HTTP; the connection comes from AIRFLOW_CONN_<ID>."""
from __future__ import annotations

import json
import logging
import socket
from datetime import datetime, timezone

import pytest

from outreach.providers.base import PermanentError, RateInfo, RateLimited, RetryableError
from outreach.providers.x import XClient, XHook

WINDOW_RESET = datetime(2026, 1, 5, 9, 15, tzinfo=timezone.utc)  # end of the 15-minute window holding 09:00
TOKEN = "sandbox-7777"


@pytest.fixture
def conn(sandbox, monkeypatch):
    """An X connection `x_hooktest` for user 7777 via AIRFLOW_CONN_X_HOOKTEST (JSON form)."""
    monkeypatch.setenv("AIRFLOW_CONN_X_HOOKTEST",
                       json.dumps({"conn_type": "x", "host": sandbox.url, "password": TOKEN}))
    return "x_hooktest"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_calls(sandbox, path_part: str = "/2/") -> list[dict]:
    return [c for c in sandbox.calls() if path_part in c["path"]]


# -- the connection ------------------------------------------------------------------------------------------
def test_hook_reads_host_and_token_from_the_airflow_connection(sandbox, conn):
    hook = XHook(x_conn_id=conn)
    client = hook.get_conn()
    assert client.base_url == sandbox.url
    result = client.send_dm("50001", "hello from the hook")
    assert result.provider_ref
    call = api_calls(sandbox)[-1]
    assert call["user_id"] == "7777"  # the sandbox acts as the token's user: the password is the token
    assert call["text"] == "hello from the hook"


def test_hook_accepts_the_uri_form_of_the_connection(sandbox, monkeypatch):
    host, port = sandbox.url.removeprefix("http://").split(":")
    monkeypatch.setenv("AIRFLOW_CONN_X_URI", f"x://:{TOKEN}@{host}:{port}/http")
    client = XHook(x_conn_id="x_uri").get_conn()
    assert client.base_url == sandbox.url
    client.follow("7777", "50002")
    assert api_calls(sandbox)[-1]["status"] == 200


def test_hook_builds_its_client_once(conn):
    hook = XHook(x_conn_id=conn)
    assert hook.get_conn() is hook.get_conn()
    assert hook.client is hook.get_conn()
    assert hook.get_provider().client is hook.get_conn()


def test_a_connection_without_password_is_an_error_naming_the_connection(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_X_NOPW", json.dumps({"conn_type": "x", "host": sandbox.url}))
    with pytest.raises(ValueError, match="'x_nopw'") as err:
        XHook(x_conn_id="x_nopw").get_conn()
    assert "password" in str(err.value)


def test_an_undefined_connection_is_an_error_naming_it():
    with pytest.raises(Exception, match="x_not_defined_anywhere"):
        XHook(x_conn_id="x_not_defined_anywhere").get_conn()


# -- rate-limit headers -----------------------------------------------------------------------------------------
def test_rate_limit_headers_are_parsed_on_every_response(sandbox, conn):
    seen: list[RateInfo] = []
    client = XHook(x_conn_id=conn, on_rate=seen.append).get_conn()
    client.follow("7777", "50001")
    client.send_dm("50001", "hi")
    list(client.dm_events())
    list(client.followers("7777"))
    with pytest.raises(PermanentError):
        client.follow("7777", "40400001")  # an error response carries the headers too
    assert [r.endpoint for r in seen] == ["follow", "dm", "dm_events", "followers", "follow"]
    assert all(isinstance(r.limit, int) and isinstance(r.remaining, int) for r in seen)
    assert all(r.reset_at == WINDOW_RESET for r in seen)
    follow, dm, events, followers, failed = seen
    assert (follow.limit, follow.remaining) == (50, 49)
    assert (dm.limit, dm.remaining) == (200, 199)
    assert (events.limit, events.remaining) == (300, 299)
    assert (followers.limit, followers.remaining) == (15, 14)
    assert (failed.limit, failed.remaining) == (50, 48)
    assert client.last_rate["follow"] == failed


def test_429_raises_rate_limited_with_the_reset_time(sandbox, conn):
    client = XHook(x_conn_id=conn).get_conn()
    for _ in range(15):  # followers: 15 requests per 15 minutes
        list(client.followers("7777"))
    with pytest.raises(RateLimited) as err:
        list(client.followers("7777"))
    assert err.value.reset_at == WINDOW_RESET
    assert err.value.status == 429 and err.value.reason == "rate_limited"
    assert err.value.maybe_landed is False
    assert client.last_rate["followers"].remaining == 0


# -- failures ---------------------------------------------------------------------------------------------------
def test_5xx_on_a_post_may_have_landed(sandbox, conn):
    client = XHook(x_conn_id=conn).get_conn()
    sandbox.faults(mode="500", error_rate=1.0, paths=["dm", "read"])
    with pytest.raises(RetryableError) as err:
        client.send_dm("50001", "hi")
    assert err.value.maybe_landed is True and err.value.reason == "server_error" and err.value.status == 503
    with pytest.raises(RetryableError) as err:
        list(client.dm_events())
    assert err.value.maybe_landed is False  # a failed read changed nothing


def test_a_5xx_after_the_effect_is_why_maybe_landed_matters(sandbox, conn):
    client = XHook(x_conn_id=conn).get_conn()
    sandbox.faults(mode="accept_then_500", error_rate=1.0, paths=["dm"])
    with pytest.raises(RetryableError) as err:
        client.send_dm("50001", "hi")
    assert err.value.maybe_landed is True
    assert sandbox.summary()["dms"] == 1  # it did land


def test_a_read_timeout_on_a_post_may_have_landed(sandbox, conn):
    client = XHook(x_conn_id=conn, timeout=0.3).get_conn()
    sandbox.faults(mode="timeout", error_rate=1.0, paths=["follow"], timeout_seconds=2)
    with pytest.raises(RetryableError) as err:
        client.follow("7777", "50001")
    assert err.value.reason == "timeout" and err.value.maybe_landed is True


def test_connection_refused_never_landed(monkeypatch):
    port = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_X_DOWN", json.dumps({"conn_type": "x", "host": f"http://127.0.0.1:{port}",
                                                          "password": TOKEN}))
    client = XHook(x_conn_id="x_down").get_conn()
    for call in (lambda: client.follow("7777", "50001"), lambda: client.send_dm("50001", "hi"),
                 lambda: list(client.dm_events())):
        with pytest.raises(RetryableError) as err:
            call()
        assert err.value.reason == "connection_error"
        assert err.value.maybe_landed is False


@pytest.mark.parametrize("target,endpoint,reason", [
    ("40400001", "follow", "user_not_found"), ("40300001", "follow", "protected_account"),
    ("40400001", "dm", "user_not_found"), ("40300001", "dm", "dms_closed"),
])
def test_permanent_errors_are_classified(sandbox, conn, target, endpoint, reason):
    client = XHook(x_conn_id=conn).get_conn()
    with pytest.raises(PermanentError) as err:
        client.follow("7777", target) if endpoint == "follow" else client.send_dm(target, "hi")
    assert err.value.reason == reason


# -- pagination -------------------------------------------------------------------------------------------------
def test_dm_events_pagination_yields_each_event_once(sandbox, conn):
    client = XHook(x_conn_id=conn).get_conn()
    for i in range(25):
        client.send_dm(str(51000 + i), f"message {i}")
    before = len(api_calls(sandbox, "/2/dm_events"))
    events = list(client.dm_events(max_results=10))
    assert len(api_calls(sandbox, "/2/dm_events")) - before == 3  # 10 + 10 + 5
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)) == 25
    assert ids == sorted(ids, key=int, reverse=True)  # newest first
    assert {e["text"] for e in events} == {f"message {i}" for i in range(25)}


def test_followers_pagination_yields_each_follower_once(sandbox, conn):
    client = XHook(x_conn_id=conn).get_conn()
    targets = [str(52000 + i) for i in range(40)]
    for t in targets:
        client.follow("7777", t)
    sandbox.clock("2026-01-05T14:00:00Z")  # every follow-back (10 min .. 4 h) is visible
    expected = {t for t in targets if sandbox.state.predict(t)["follows_back"]}
    assert len(expected) > 10
    before = len(api_calls(sandbox, "/followers"))
    followers = [u["id"] for u in client.followers("7777", max_results=5)]
    assert len(api_calls(sandbox, "/followers")) - before == -(-len(expected) // 5)
    assert len(followers) == len(set(followers))
    assert set(followers) == expected


# -- secrets -----------------------------------------------------------------------------------------------------
def test_the_token_never_appears_in_logs_or_errors(sandbox, conn, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    hook = XHook(x_conn_id=conn)
    client = hook.get_conn()
    errors: list[BaseException] = []

    def attempt(fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - collecting every failure mode
            errors.append(e)

    attempt(lambda: client.follow("7777", "50001"))
    attempt(lambda: client.follow("7777", "40400001"))
    attempt(lambda: client.send_dm("40300001", "hi"))
    sandbox.faults(mode="500", error_rate=1.0, paths=["dm"])
    attempt(lambda: client.send_dm("50001", "hi"))
    sandbox.faults()
    for _ in range(16):
        attempt(lambda: list(client.followers("7777")))
    down = XClient(f"http://127.0.0.1:{free_port()}", TOKEN, conn_id="x_down")
    attempt(lambda: down.follow("7777", "50001"))
    monkeypatch.setenv("AIRFLOW_CONN_X_NOPW", json.dumps({"conn_type": "x", "host": sandbox.url}))
    attempt(lambda: XHook(x_conn_id="x_nopw").get_conn())
    hook.log.info("hook %r client %r", hook, client)

    assert {type(e).__name__ for e in errors} >= {"PermanentError", "RetryableError", "RateLimited", "ValueError"}
    for e in errors:
        text = " ".join([str(e), repr(e), repr(e.args), str(getattr(e, "detail", "")), str(e.__cause__ or "")])
        assert TOKEN not in text, type(e).__name__
    assert caplog.records  # the client and its transport did log
    assert TOKEN not in caplog.text

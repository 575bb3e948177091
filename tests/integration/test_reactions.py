"""The event-driven fast path: the trigger wakes on NOTIFY (and on its fallback poll), a burst coalesces, a
signal seen by webhook and by poll is recorded once, and one real `airflow dags test outreach_reactions` run
advances exactly the leads whose replies arrived through the sandbox's signed webhooks."""
from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from datetime import datetime, timezone

import pytest
import requests
import sqlalchemy as sa

from outreach.engine.signals import insert_signals
from outreach.inbound import signing, store
from outreach.providers.base import Signal
from outreach.triggers.inbound import InboundSignalTrigger
from outreach.web import webhooks

from tests.helpers import REPLY_THEN_THANKS, setup, x_activity

SECRET = "x-consumer-secret"


def _signal(i: int) -> Signal:
    return Signal("REPLIED", str(50000 + i), f"dm:{9000 + i}", datetime.now(timezone.utc), None, "hi")


async def _events(trigger: InboundSignalTrigger, action, seconds: float) -> list[tuple[float, dict]]:
    """Run the trigger for ``seconds``; ``action`` (sync) runs in a thread after 0.5 s. Returns (at, payload)."""
    out: list[tuple[float, dict]] = []
    t0 = time.monotonic()

    async def consume():
        async for ev in trigger.run():
            out.append((time.monotonic() - t0, ev.payload))

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.5)
    acted = time.monotonic() - t0
    await asyncio.to_thread(action)
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - t0)))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return [(at - acted, p) for at, p in out]


def test_the_trigger_fires_on_notify_within_a_second(engine):
    setup(engine, REPLY_THEN_THANKS, n=1)
    trigger = InboundSignalTrigger(poll_interval=60, debounce=0.2)
    events = asyncio.run(_events(trigger, lambda: store.store(engine, "x", "1001", [_signal(0)], b"{}", None), 4))
    assert len(events) == 1, events
    after, payload = events[0]
    assert payload["source"] == "notify" and payload["pending"] == 1
    assert after < 1.5  # not the 60 s poll


def test_a_burst_of_deliveries_coalesces_into_one_event(engine):
    setup(engine, REPLY_THEN_THANKS, n=1)

    def burst():
        for i in range(30):
            store.store(engine, "x", "1001", [_signal(i)], b"{}", None)

    events = asyncio.run(_events(InboundSignalTrigger(poll_interval=60, debounce=1.0), burst, 4))
    assert [p["pending"] for _, p in events] == [30], events


def test_the_fallback_poll_finds_signals_without_a_notify_and_does_not_refire(engine):
    setup(engine, REPLY_THEN_THANKS, n=1)

    def insert_silently():  # as a poll does: no NOTIFY
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO inbound_signals (provider, account_id, kind, external_id, provider_ref, "
                              "occurred_at) VALUES ('x', 1, 'REPLIED', '50000', 'dm:1', now())"))

    events = asyncio.run(_events(InboundSignalTrigger(poll_interval=0.5, debounce=0.1), insert_silently, 3))
    assert [p["source"] for _, p in events] == ["poll"], events  # announced once, not every poll


def test_the_trigger_keeps_listening_after_its_connection_is_killed(engine):
    setup(engine, REPLY_THEN_THANKS, n=1)

    def kill_then_deliver():
        with engine.begin() as c:
            killed = c.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE query = 'LISTEN outreach_inbound'")).scalar()
        assert killed == 1
        time.sleep(3)  # it reconnects after a 1 s backoff
        store.store(engine, "x", "1001", [_signal(0)], b"{}", None)

    events = asyncio.run(_events(InboundSignalTrigger(poll_interval=60, debounce=0.2), kill_then_deliver, 6))
    assert [p["source"] for _, p in events] == ["notify"], events  # woken by the NOTIFY, not a 60 s poll


def test_a_signal_committed_after_a_newer_one_was_announced_still_fires(engine):
    """Ids are taken at insert and transactions commit in any order: the NOTIFY of the older id is still news."""
    setup(engine, REPLY_THEN_THANKS, n=1)

    def out_of_order():
        slow = engine.connect()
        tx = slow.begin()
        insert_signals(slow, "x", 1, [Signal("REPLIED", "50000", "dm:1", None, None, "hi")], "webhook",
                       datetime.now(timezone.utc))
        slow.execute(sa.text("SELECT pg_notify('outreach_inbound', 'slow')"))
        store.store(engine, "x", "1001", [_signal(1)], b"{}", None)  # id 2, committed first
        time.sleep(1.0)
        with engine.begin() as c:  # a reaction run ingests id 2
            c.execute(sa.text("UPDATE inbound_signals SET processed_at = now() WHERE provider_ref = 'dm:9001'"))
        tx.commit()  # id 1 lands, with its NOTIFY
        slow.close()

    events = asyncio.run(_events(InboundSignalTrigger(poll_interval=60, debounce=0.2), out_of_order, 4))
    assert [(p["source"], p["pending"]) for _, p in events] == [("notify", 1), ("notify", 1)], events


def test_the_trigger_is_a_serializable_value_object():
    t = InboundSignalTrigger(poll_interval=5, debounce=0.5)
    path, kwargs = t.serialize()
    assert path == "outreach.triggers.inbound.InboundSignalTrigger"
    assert InboundSignalTrigger(**kwargs).serialize() == (path, kwargs)
    assert set(kwargs) == {"channel", "poll_interval", "debounce", "refire_after"}  # no URL, no credentials
    with pytest.raises(ValueError):
        InboundSignalTrigger(channel="x; DROP TABLE events")


# ----------------------------------------------------------------------------------------- over real HTTP

@pytest.fixture
def receiver(engine, monkeypatch):
    """The web app (webhook receiver) served by uvicorn on a free loopback port."""
    import uvicorn

    from outreach.web.app import create_app

    monkeypatch.setenv("AIRFLOW_CONN_OUTREACH_WEBHOOK_X", json.dumps({"conn_type": "generic", "password": SECRET}))
    webhooks.clear_secret_cache()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)
    webhooks.clear_secret_cache()


@pytest.fixture
def live(engine, sandbox, receiver):
    """Three leads DMed at real time; the sandbox pushes replies to the receiver."""
    from outreach.clock import parse_now
    from outreach.engine.tick import advance

    requests.post(f"{sandbox.url}/_sandbox/clock", json={"now": None}, timeout=5).raise_for_status()
    requests.post(f"{sandbox.url}/_sandbox/webhooks", json={"x": {"url": f"{receiver}/webhooks/x", "secret": SECRET}},
                  timeout=5).raise_for_status()
    setup(engine, REPLY_THEN_THANKS, n=3, now=datetime.now(timezone.utc).isoformat())
    counts = advance(engine, [1], parse_now(None))
    assert counts["sent"] == 3
    yield sandbox
    requests.post(f"{sandbox.url}/_sandbox/webhooks", json={}, timeout=5)


def _reply(sandbox, lead: int) -> str:
    r = requests.post(f"{sandbox.url}/_sandbox/reply", json={"from": str(50000 + lead), "to": "1001",
                                                             "text": "Sure, tell me more"}, timeout=5)
    r.raise_for_status()
    return r.json()["provider_ref"]


def _wait_delivered(sandbox, n: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ds = requests.get(f"{sandbox.url}/_sandbox/deliveries", timeout=5).json()["deliveries"]
        if len(ds) >= n and all(d.get("status") for d in ds):
            return ds
        time.sleep(0.05)
    raise AssertionError(f"webhook deliveries did not complete: {ds}")


def test_a_reply_seen_by_webhook_and_by_poll_is_recorded_once(engine, live):
    from outreach.clock import parse_now
    from outreach.engine.tick import ingest, poll

    ref0 = _reply(live, 0)
    assert [d["status"] for d in _wait_delivered(live, 1)] == [200]
    now = parse_now(None)
    polled = poll(engine, [1], "inbox", now)  # the backbone's poll reads the same reply
    assert (polled.get("new_signals", 0), polled["duplicate_signals"]) == (0, 1)

    # the other order: the poll stores it first, then X delivers the webhook
    requests.post(f"{live.url}/_sandbox/webhooks", json={}, timeout=5).raise_for_status()
    ref1 = _reply(live, 1)
    assert poll(engine, [1], "inbox", now)["new_signals"] == 1
    body = x_activity("50001", ref1.split(":")[1], text="Sure, tell me more")
    with engine.connect() as c:
        before = c.execute(sa.text("SELECT count(*) FROM inbound_signals")).scalar()
    from fastapi.testclient import TestClient

    from outreach.web.app import create_app

    r = TestClient(create_app(engine)).post("/webhooks/x", content=body,
                                            headers={signing.X_SIGNATURE_HEADER: signing.x_signature(SECRET, body)})
    assert r.status_code == 200 and r.json()["new"] == 0 and r.json()["duplicates"] == 1

    ingest(engine, parse_now(None))
    with engine.connect() as c:
        after = c.execute(sa.text("SELECT count(*) FROM inbound_signals")).scalar()
        replied = c.execute(sa.text("SELECT provider_ref, count(*) FROM events WHERE kind = 'REPLIED' "
                                    "GROUP BY 1 ORDER BY 1")).all()
    assert after == before == 2
    assert sorted(replied) == sorted([(ref0, 1), (ref1, 1)])


@pytest.mark.slow
def test_one_reaction_run_advances_exactly_the_leads_that_replied(engine, live, database_url, tmp_path):
    from outreach.localenv import airflow_bin, airflow_env, ensure_airflow_db

    refs = [_reply(live, 0), _reply(live, 1)]
    assert [d["status"] for d in _wait_delivered(live, 2)] == [200, 200]
    env = airflow_env(database_url, home=tmp_path / "airflow", extra={
        "AIRFLOW_CONN_X_MAIN": json.dumps({"conn_type": "x", "host": live.url, "password": "sandbox-1001"}),
    })
    ensure_airflow_db(env)

    def run() -> None:
        out = subprocess.run([airflow_bin(), "dags", "test", "outreach_reactions"], env=env, capture_output=True,
                             text=True, timeout=180)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    run()
    thanks = [c for c in live.calls() if c["method"] == "POST" and (c.get("text") or "").startswith("Thanks")]
    assert sorted(c["target_id"] for c in thanks) == ["50000", "50001"]
    assert all(c["status"] == 201 for c in thanks)
    run()  # nothing new: nothing sent again
    assert len([c for c in live.calls() if (c.get("text") or "").startswith("Thanks")]) == 2
    assert live.summary()["duplicate_dms"] == 0
    with engine.connect() as c:
        states = dict(c.execute(sa.text("SELECT p.name, e.current_step FROM enrollments e "
                                        "JOIN people p ON p.id = e.person_id")).all())
        replied = c.execute(sa.text("SELECT provider_ref FROM events WHERE kind = 'REPLIED' ORDER BY 1")).scalars().all()
    assert sorted(replied) == sorted(refs)
    assert sorted(states.values()) == ["dm", "thanks", "thanks"]


def test_a_reaction_and_an_overlapping_backbone_advance_send_each_thanks_once(engine, live):
    """The reactions path claims with the backbone's claim (lease, SKIP LOCKED, fence): run both at once."""
    from outreach.clock import parse_now
    from outreach.engine.advance import AdvanceConfig
    from outreach.engine.reactions import ingest_and_plan
    from outreach.engine.tick import advance

    for lead in range(3):
        _reply(live, lead)
    _wait_delivered(live, 3)
    plan = ingest_and_plan(engine, parse_now(None))
    (part,) = plan["plan"]["x"]
    assert len(part["enrollment_ids"]) == 3 and plan["counts"]["due_now"] == 3
    requests.post(f"{live.url}/_sandbox/latency", json={"ms": 50}, timeout=5).raise_for_status()
    try:
        results: list[dict] = []
        now = parse_now(None)
        threads = [threading.Thread(target=lambda cfg=cfg: results.append(advance(engine, part["account_ids"], now,
                                                                                  cfg)))
                   for cfg in (AdvanceConfig(enrollment_ids=part["enrollment_ids"], batch_size=1),
                               AdvanceConfig(batch_size=1))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        requests.post(f"{live.url}/_sandbox/latency", json={"ms": 0}, timeout=5)
    assert sum(r.get("sent", 0) for r in results) == 3
    thanks = [c for c in live.calls() if (c.get("text") or "").startswith("Thanks")]
    assert sorted(c["target_id"] for c in thanks) == ["50000", "50001", "50002"]
    assert live.summary()["duplicate_dms"] == 0


def test_two_signals_for_one_enrollment_are_both_ingested_in_one_call(engine):
    from outreach.clock import parse_now
    from outreach.engine.signals import ingest

    setup(engine, REPLY_THEN_THANKS, n=1)
    store.store(engine, "x", "1001", [_signal(0), Signal("REPLIED", "50000", "dm:second", datetime.now(timezone.utc),
                                                         None, "and another thing")], b"{}", None)
    counts = ingest(engine, parse_now(None))
    assert counts["ingested"] == 2 and counts["deferred"] == 1  # the second waited for the first, same call
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM inbound_signals WHERE processed_at IS NULL")).scalar() == 0

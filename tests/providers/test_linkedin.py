"""LinkedIn through the gateway: hook, perform, reconcile by key, incremental polling, every signal type,
CONNECTION_NOT_ACCEPTED, withdrawal of stale invitations. Real PostgreSQL, real HTTP to the sandbox."""
from __future__ import annotations

import sqlalchemy as sa

from outreach.clock import parse_now
from outreach.providers import registry
from outreach.providers.base import PermanentError
from outreach.providers.linkedin import LinkedInHook, LinkedInProvider
from tests.helpers import setup
from tests.providers.conftest import cycle as run_at

ACCOUNTS = """
accounts:
  - {name: li-main, provider: linkedin, conn_id: li_main, user_id: "li-acc-1"}
"""
SEQ = """
name: li-seq
accounts: [li-main]
start: invite
actions:
  invite: {type: SEND_CONNECTION_REQUEST, note: "Hi {{ first_name }}, saw your talk on {{ topic }}."}
  dm: {type: SEND_LINKEDIN_DM, message: "Thanks for connecting, {{ first_name }}! Quick question about {{ topic }}."}
triggers:
  - {from: invite, trigger: CONNECTION_ACCEPTED, to: dm}
  - {from: invite, trigger: REPLIED_TO_NOTE, to: dm}
  - {from: invite, trigger: CONNECTION_NOT_ACCEPTED, after: 3d, to: END}
  - {from: dm, trigger: REPLIED, to: END}
  - {from: dm, trigger: NOT_REPLIED, after: 3d, to: END}
"""


def members(gw, n, **want):
    out, i = [], 0
    while len(out) < n:
        m = f"m{i}"
        p = gw.state.gateways.predict_linkedin(m)
        if all(p[k] == v for k, v in want.items()):
            out.append(m)
        i += 1
    return out


def leads(ids):
    return [{"name": f"Lead{i} Person", "linkedin_id": m, "topic": "agents"} for i, m in enumerate(ids)]


def test_hook_builds_provider_from_connection(gateways):
    hook = LinkedInHook(linkedin_conn_id="li_main")
    assert hook.conn_type == "linkedin_gateway" and LinkedInHook.default_conn_name == "linkedin_default"
    p = hook.get_provider()
    assert isinstance(p, LinkedInProvider) and p.withdraw_after.days == 14
    assert p.client.base_url.endswith("/linkedin") and "li-key" not in repr(p.client.__dict__.get("conn_id"))


def test_perform_note_limit_idempotency_and_reconcile(gateways):
    p = registry.build("linkedin", "li_main")
    with __import__("pytest").raises(PermanentError) as e:
        p.perform("SEND_CONNECTION_REQUEST", "acc", {"linkedin": "m1"}, "x" * 301, "1:invite")
    assert e.value.reason == "note_too_long"
    when = parse_now("2026-01-05T09:00:00Z")
    assert p.reconcile("SEND_CONNECTION_REQUEST", "acc", {"linkedin": "m1"}, "hi", when, idempotency_key="1:invite") \
        == ("absent", None)
    r1 = p.perform("SEND_CONNECTION_REQUEST", "acc", {"linkedin": "m1"}, "hi", "1:invite")
    r2 = p.perform("SEND_CONNECTION_REQUEST", "acc", {"linkedin": "m1"}, "hi", "1:invite")  # replay by key
    assert r1.provider_ref == r2.provider_ref and gateways.summary()["linkedin"]["invitations"] == 1
    assert p.reconcile("SEND_CONNECTION_REQUEST", "acc", {"linkedin": "m1"}, "hi", when,
                       idempotency_key="1:invite") == ("landed", r1.provider_ref)
    with __import__("pytest").raises(PermanentError) as e:  # DMs need a connection
        p.perform("SEND_LINKEDIN_DM", "acc", {"linkedin": "m1"}, "hello", "1:dm")
    assert e.value.reason == "not_connected"
    with __import__("pytest").raises(PermanentError) as e:
        p.perform("SEND_CONNECTION_REQUEST", "acc", {"linkedin": "404x"}, "", "2:invite")
    assert e.value.reason == "recipient_not_found"


NOTE_FIRST = """
name: li-note
accounts: [li-main]
start: invite
actions:
  invite: {type: SEND_CONNECTION_REQUEST, note: "Hi {{ first_name }}"}
  dm: {type: SEND_LINKEDIN_DM, message: "Thanks for the reply to my note!"}
triggers:
  - {from: invite, trigger: REPLIED_TO_NOTE, to: dm}
  - {from: invite, trigger: CONNECTION_NOT_ACCEPTED, after: 3d, to: END}
"""


def test_replied_to_note_fires_its_trigger(engine, gateways):
    setup(engine, NOTE_FIRST, leads(members(gateways, 1, accepts=True, replies_to_note=True)), accounts_yaml=ACCOUNTS)
    run_at(engine, gateways, "2026-01-05T09:00:00Z", ["linkedin"])
    run_at(engine, gateways, "2026-01-07T10:00:00Z", ["linkedin"])
    run_at(engine, gateways, "2026-01-07T10:10:00Z", ["linkedin"])  # one signal per enrolment per ingest
    with engine.connect() as c:
        fired = c.execute(sa.text("SELECT count(*) FROM events WHERE kind = 'REPLIED_TO_NOTE' "
                                  "AND data->>'fired' = 'REPLIED_TO_NOTE'")).scalar()
        sent = c.execute(sa.text("SELECT count(*) FROM events WHERE kind = 'SENT' AND step = 'dm'")).scalar()
    assert fired == 1 and sent == 1


def test_sequence_end_to_end_every_signal(engine, gateways):
    acc_ids = members(gateways, 2, accepts=True, replies_to_note=False, replies=True)
    note_ids = members(gateways, 1, accepts=True, replies_to_note=True)
    never = members(gateways, 1, accepts=False)
    setup(engine, SEQ, leads(acc_ids + note_ids + never), accounts_yaml=ACCOUNTS)
    s = run_at(engine, gateways, "2026-01-05T09:00:00Z", ["linkedin"])
    assert s["advance_linkedin"]["sent"] == 4
    calls = [c for c in gateways.calls() if c["path"] == "/linkedin/v1/invitations" and c["method"] == "POST"]
    assert calls[0]["text"].startswith("Hi Lead0, saw your talk on agents")
    run_at(engine, gateways, "2026-01-07T10:00:00Z", ["linkedin"])  # everyone who accepts has (<= 48h)
    run_at(engine, gateways, "2026-01-07T16:00:00Z", ["linkedin"])  # replies to the DM (<= 3h)
    run_at(engine, gateways, "2026-01-09T10:00:00Z", ["linkedin"])  # past 3d: not accepted
    with engine.connect() as c:
        kinds = dict(c.execute(sa.text("SELECT kind, count(*) FROM events GROUP BY kind")).all())
        status = dict(c.execute(sa.text("SELECT ended_reason, count(*) FROM enrollments GROUP BY 1")).all())
    assert kinds["CONNECTION_ACCEPTED"] == 3 and kinds["REPLIED_TO_NOTE"] == 1
    assert kinds["REPLIED"] >= 2  # the two DM repliers
    assert status.get("connection_not_accepted") == 1
    sb = gateways.summary()["linkedin"]
    assert sb["messages"] == 3 and gateways.summary()["duplicate_gateway_sends"] == 0


def test_poll_with_no_news_is_one_request_and_repolling_inserts_nothing(engine, gateways):
    setup(engine, SEQ, leads(members(gateways, 3, accepts=True)), accounts_yaml=ACCOUNTS)
    run_at(engine, gateways, "2026-01-05T09:00:00Z", ["linkedin"])
    run_at(engine, gateways, "2026-01-07T10:00:00Z", ["linkedin"])
    with engine.connect() as c:
        n_signals = c.execute(sa.text("SELECT count(*) FROM inbound_signals")).scalar()
        cursor = c.execute(sa.text("SELECT cursor FROM provider_cursors WHERE stream = 'events'")).scalar()
    assert n_signals >= 3 and cursor
    from outreach.engine.tick import poll

    before = gateways.calls()[-1]["seq"]
    counts = poll(engine, [1], "inbox", parse_now("2026-01-07T10:05:00Z"))
    new = [c for c in gateways.calls() if c["seq"] > before]
    assert len(new) == 1 and new[0]["path"] == "/linkedin/v1/events"
    assert counts.get("new_signals", 0) == 0
    with engine.begin() as c:  # forget the cursor: the whole history is read again, and nothing is inserted twice
        c.execute(sa.text("UPDATE provider_cursors SET cursor = NULL"))
    counts = poll(engine, [1], "inbox", parse_now("2026-01-07T10:06:00Z"))
    assert counts["polled"] >= 3 and counts.get("new_signals", 0) == 0 and counts["duplicate_signals"] == counts["polled"]


def test_pending_invitations_withdrawn_after_configured_age(engine, gateways):
    never = members(gateways, 2, accepts=False)
    seq = SEQ.replace("after: 3d, to: END}", "after: 30d, to: END}", 1)
    setup(engine, seq, leads(never), accounts_yaml=ACCOUNTS)
    run_at(engine, gateways, "2026-01-05T09:00:00Z", ["linkedin"])
    from outreach.engine.tick import advance

    gateways.clock("2026-01-10T09:00:00Z")
    assert "invitations_withdrawn" not in advance(engine, [1], parse_now("2026-01-10T09:00:00Z"))
    gateways.clock("2026-01-20T09:00:00Z")  # 15 days > 14 (the connection's withdraw_pending_after_days)
    out = advance(engine, [1], parse_now("2026-01-20T09:00:00Z"))
    assert out["invitations_withdrawn"] == 2
    assert gateways.summary()["linkedin"]["withdrawn"] == 2
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT enrollment_id FROM events WHERE kind = 'INVITATION_WITHDRAWN'")).all()
    assert len(rows) == 2 and all(r.enrollment_id for r in rows)
    assert "invitations_withdrawn" not in advance(engine, [1], parse_now("2026-01-21T09:00:00Z"))


def test_gateway_event_paging(gateways):
    import requests

    url = gateways.url + "/linkedin/v1"
    h = {"Authorization": "Bearer k"}
    assert requests.get(f"{url}/events", params={"account_id": "a"}, timeout=5).status_code == 401
    assert requests.get(f"{url}/events", params={"account_id": "a", "cursor": "x.y"}, headers=h,
                        timeout=5).status_code == 400
    for i in range(3):
        m = members(gateways, 3, accepts=True)[i]
        requests.post(f"{url}/invitations", json={"account_id": "a", "recipient_id": m, "idempotency_key": str(i)},
                      headers=h, timeout=5).raise_for_status()
    gateways.clock("2026-01-08T09:00:00Z")
    p1 = requests.get(f"{url}/events", params={"account_id": "a", "limit": 2}, headers=h, timeout=5).json()
    assert len(p1["events"]) == 2 and p1["has_more"]
    p2 = requests.get(f"{url}/events", params={"account_id": "a", "limit": 2, "cursor": p1["next_cursor"]},
                      headers=h, timeout=5).json()
    assert len(p2["events"]) == 1 and not p2["has_more"]
    p3 = requests.get(f"{url}/events", params={"account_id": "a", "cursor": p2["next_cursor"]}, headers=h,
                      timeout=5).json()
    assert p3["events"] == [] and p3["next_cursor"] == p2["next_cursor"]

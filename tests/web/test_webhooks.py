"""The webhook receiver: X CRC and signatures, gateway and email HMAC with timestamps, refusals recorded, valid
deliveries stored once (also against the poll path) with a NOTIFY."""
from __future__ import annotations

import base64
import json
import os
import select
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from outreach.inbound import signing
from outreach.web import webhooks
from outreach.web.app import create_app

from tests.helpers import REPLY_THEN_THANKS, setup, x_activity

SECRETS = {"x": "x-consumer-secret", "linkedin": "li-secret", "xmtp": "xm-secret", "email": "mail-secret"}
ACCOUNTS = """
accounts:
  - {name: x-main, provider: x, conn_id: x_main, user_id: "1001"}
  - {name: li-main, provider: linkedin, conn_id: li_main, user_id: "li-acc-1"}
  - {name: xm-main, provider: xmtp, conn_id: xm_main, user_id: "0x1111111111111111111111111111111111111111"}
  - {name: mail-main, provider: email, conn_id: mail_main, user_id: "sales@example.com"}
"""


@pytest.fixture
def configured(monkeypatch):
    for p, s in SECRETS.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_OUTREACH_WEBHOOK_{p.upper()}", json.dumps({"conn_type": "generic",
                                                                                    "password": s}))
    webhooks.clear_secret_cache()
    yield
    webhooks.clear_secret_cache()


@pytest.fixture
def client(engine, configured):
    setup(engine, REPLY_THEN_THANKS, n=2, accounts_yaml=ACCOUNTS)
    return TestClient(create_app(engine))


def post_x(client, body: bytes, secret: str | None = SECRETS["x"], header: str | None = None):
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers[signing.X_SIGNATURE_HEADER] = header
    elif secret is not None:
        headers[signing.X_SIGNATURE_HEADER] = signing.x_signature(secret, body)
    return client.post("/webhooks/x", content=body, headers=headers)


def post_gw(client, provider: str, payload: dict, secret: str | None = None, ts: int | None = None,
            headers: dict | None = None):
    body = json.dumps(payload).encode()
    h = {"Content-Type": "application/json"}
    if headers is None:
        h.update(signing.gateway_headers(secret or SECRETS[provider], body, int(time.time()) if ts is None else ts))
    else:
        h.update(headers)
    return client.post(f"/webhooks/{provider}", content=body, headers=h)


def deliveries(engine) -> list:
    with engine.connect() as c:
        return c.execute(sa.text("SELECT provider, status, outcome, reason, signals, new_signals "
                                 "FROM webhook_deliveries ORDER BY id")).all()


def signals(engine) -> list:
    with engine.connect() as c:
        return c.execute(sa.text("SELECT provider, kind, external_id, provider_ref, source, account_id "
                                 "FROM inbound_signals ORDER BY id")).all()


def test_x_crc_challenge_answers_with_the_hmac_of_the_token(client):
    r = client.get("/webhooks/x", params={"crc_token": "challenge-123"})
    assert r.status_code == 200
    assert r.json() == {"response_token": signing.x_crc_response(SECRETS["x"], "challenge-123")}
    assert r.json()["response_token"].startswith("sha256=")
    assert client.get("/webhooks/x").status_code == 400


def test_a_good_x_signature_is_stored_once_and_notified(client, engine):
    import psycopg2

    dsn = sa.engine.make_url(os.environ["OUTREACH_DATABASE_URL"]).set(drivername="postgresql")
    listener = psycopg2.connect(dsn.render_as_string(hide_password=False))
    listener.autocommit = True
    listener.cursor().execute("LISTEN outreach_inbound")
    body = x_activity()
    r = post_x(client, body)
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True, "signals": 1, "new": 1, "duplicates": 0}
    select.select([listener], [], [], 2.0)  # sent on commit, before the answer; wait for it to arrive
    listener.poll()
    assert [json.loads(n.payload)["n"] for n in listener.notifies] == [1]
    listener.notifies.clear()
    r = post_x(client, body)  # X redelivers: stored once, no second NOTIFY
    assert r.json()["new"] == 0 and r.json()["duplicates"] == 1
    select.select([listener], [], [], 0.5)  # give a (wrong) notification time to arrive
    listener.poll()
    assert listener.notifies == []
    listener.close()
    assert [tuple(s)[:5] for s in signals(engine)] == [("x", "REPLIED", "50000", "dm:1900000000000000001", "webhook")]
    assert [d.outcome for d in deliveries(engine)] == ["accepted", "accepted"]


@pytest.mark.parametrize("case, status, reason", [
    ("missing", 401, "missing_signature"),
    ("bad", 403, "bad_signature"),
    ("wrong_secret", 403, "bad_signature"),
    ("tampered", 403, "bad_signature"),
    ("replayed", 403, "replayed"),
    ("malformed", 400, "malformed"),
    ("not_json", 400, "malformed"),
    ("unknown_account", 404, "unknown_account"),
])
def test_bad_x_deliveries_are_refused_recorded_and_store_nothing(client, engine, case, status, reason, caplog):
    caplog.set_level("DEBUG")
    body = x_activity()
    if case == "missing":
        r = post_x(client, body, secret=None)
    elif case == "bad":
        r = post_x(client, body, header="sha256=AAAA")
    elif case == "wrong_secret":
        r = post_x(client, body, secret="not-the-secret")
    elif case == "tampered":
        r = post_x(client, body.replace(b"Sounds great", b"Sounds bad!!"), header=signing.x_signature(SECRETS["x"], body))
    elif case == "replayed":
        r = post_x(client, x_activity(at_ms=int((time.time() - 2 * 3600) * 1000)))
    elif case == "malformed":
        r = post_x(client, json.dumps({"direct_message_events": []}).encode())
    elif case == "not_json":
        r = post_x(client, b"{not json")
    else:
        r = post_x(client, x_activity(me="999999"))
    assert r.status_code == status, r.text
    assert r.json()["error"] == reason
    assert SECRETS["x"] not in r.text and SECRETS["x"] not in caplog.text
    assert signals(engine) == []
    assert [(d.status, d.outcome, d.reason) for d in deliveries(engine)] == [(status, "refused", reason)]


@pytest.mark.parametrize("provider, payload", [
    ("linkedin", {"account_id": "li-acc-1", "events": [
        {"id": "e1", "type": "message_received", "recipient_id": "m-77", "text": "Yes!", "conversation_id": "c1",
         "at": "2026-12-04T10:00:00Z"}]}),
    ("xmtp", {"inbox": "0x1111111111111111111111111111111111111111", "events": [
        {"id": "e9", "type": "message", "peer": "0x2222222222222222222222222222222222222222",
         "sender": "0x2222222222222222222222222222222222222222", "text": "gm", "conversation_id": "c2",
         "at": "2026-12-04T10:00:00Z"}]}),
])
def test_gateway_signatures_good_bad_missing_replayed(client, engine, provider, payload):
    now = int(time.time())
    assert post_gw(client, provider, payload, headers={}).status_code == 401
    assert post_gw(client, provider, payload, secret="wrong").status_code == 403
    assert post_gw(client, provider, payload, headers={"X-Outreach-Timestamp": str(now),
                                                       "X-Outreach-Signature": "v1=00"}).status_code == 403
    assert post_gw(client, provider, payload, ts=now - 3600).json()["error"] == "replayed"
    assert post_gw(client, provider, payload, ts=now + 3600).json()["error"] == "replayed"
    assert post_gw(client, provider, {"events": "nope"}).status_code == 400
    assert signals(engine) == []
    r = post_gw(client, provider, payload)
    assert r.status_code == 200 and r.json()["new"] == 1
    assert [s.provider_ref for s in signals(engine)] == [f"ev:{payload['events'][0]['id']}"]
    assert [d.reason for d in deliveries(engine)] == [
        "missing_signature", "bad_signature", "bad_signature", "replayed", "replayed", "malformed", None]


def test_inbound_email_notification_reads_the_raw_message_like_imap(client, engine):
    raw = (b"From: Ada <ada@example.org>\r\nTo: sales@example.com\r\nSubject: Re: hi\r\n"
           b"Message-ID: <reply-1@example.org>\r\nIn-Reply-To: <outreach.7.abc@example.com>\r\n"
           b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nHappy to talk.\r\n")
    payload = {"mailbox": "Sales@Example.com", "raw": base64.b64encode(raw).decode()}
    r = post_gw(client, "email", payload)
    assert r.status_code == 200, r.text
    (s,) = signals(engine)
    assert (s.kind, s.external_id, s.provider_ref) == ("REPLIED", "ada@example.org", "imap:<reply-1@example.org>")
    assert post_gw(client, "email", {"mailbox": "sales@example.com", "raw": "%%%"}).status_code == 400


def test_an_unconfigured_webhook_answers_503(engine, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_OUTREACH_WEBHOOK_X", raising=False)
    webhooks.clear_secret_cache()
    client = TestClient(create_app(engine))
    assert post_x(client, x_activity()).status_code == 503
    assert client.get("/webhooks/x", params={"crc_token": "t"}).status_code == 503
    webhooks.clear_secret_cache()


def test_an_oversized_body_is_refused(client, engine):
    r = post_x(client, b"x" * (webhooks.MAX_BODY + 1))
    assert r.status_code == 413
    assert deliveries(engine)[0].reason == "too_large"


def test_the_inbound_page_shows_deliveries_refusals_and_the_backlog(client, engine):
    post_x(client, x_activity())
    post_x(client, x_activity(), secret=None)
    post_x(client, x_activity(eid="1900000000000000002"), header="sha256=AAAA")
    page = client.get("/inbound")
    assert page.status_code == 200
    assert 'id="pending">1<' in page.text and 'id="accepted">1<' in page.text and 'id="refused">2<' in page.text
    assert "missing_signature" in page.text and "bad_signature" in page.text
    data = client.get("/api/inbound").json()
    assert data["pending"]["n"] == 1 and data["refused"] == 2 and data["new_signals"] == 1
    assert {(r["reason"], r["status"]) for r in data["refusals"]} == {("missing_signature", 401), ("bad_signature", 403)}


def test_the_crc_endpoint_cannot_be_used_to_sign_a_forged_delivery(client, engine):
    forged = x_activity(sender="50001", eid="424242")
    r = client.get("/webhooks/x", params={"crc_token": forged.decode()})
    assert r.status_code == 400 and "response_token" not in r.json()  # the endpoint signs no JSON body
    # (X's scheme makes a CRC answer and a body signature the same HMAC: a token shaped like a body must not pass)
    assert client.get("/webhooks/x", params={"crc_token": "a" * 257}).status_code == 400
    assert client.get("/webhooks/x", params={"crc_token": "Zm9vYmFy_-+/="}).status_code == 200
    assert signals(engine) == []


def test_a_chunked_oversized_body_is_refused_without_reading_it_all(client, engine):
    def chunks():
        for _ in range(3):
            yield b"x" * (webhooks.MAX_BODY // 2 + 1)

    r = client.post("/webhooks/x", content=chunks(), headers={signing.X_SIGNATURE_HEADER: "sha256=AAAA"})
    assert r.status_code == 413
    assert deliveries(engine)[0].reason == "too_large"


def test_a_nul_character_in_a_reply_is_dropped_not_a_500(client, engine):
    r = post_x(client, x_activity(eid="77", text="ok\u0000then"))
    assert r.status_code == 200, r.text
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT text FROM inbound_signals")).scalar() == "okthen"


@pytest.mark.parametrize("payload", [
    {"for_user_id": "1001", "follow_events": [{"type": "follow", "source": "x", "target": {"id": "1001"}}]},
    {"for_user_id": "1001", "direct_message_events": 5},
])
def test_a_signed_payload_of_the_wrong_shape_is_a_recorded_400(client, engine, payload):
    r = post_x(client, json.dumps(payload).encode())
    assert r.status_code == 400 and r.json()["error"] == "malformed"
    assert [(d.status, d.reason) for d in deliveries(engine)] == [(400, "malformed")]


def test_a_gateway_timestamp_must_be_plain_digits(client, engine):
    payload = {"account_id": "li-acc-1", "events": []}
    body = json.dumps(payload).encode()
    ts = int(time.time())
    h = signing.gateway_headers(SECRETS["linkedin"], body, ts)
    h["X-Outreach-Timestamp"] = f" +{ts} "
    assert post_gw(client, "linkedin", payload, headers=h).json()["error"] == "bad_timestamp"


def test_a_bounce_without_message_id_is_malformed(client, engine):
    raw = (b"From: MAILER-DAEMON@example.org\r\nTo: sales@example.com\r\nSubject: failure\r\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
           b"Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n")
    r = post_gw(client, "email", {"mailbox": "sales@example.com", "raw": base64.b64encode(raw).decode()})
    assert r.status_code == 400, r.text
    assert signals(engine) == []

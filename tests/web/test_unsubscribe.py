"""RFC 8058 one-click unsubscribe: idempotent, effective before the next send, and silent about bad tokens."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from outreach.providers.email import unsubscribe_token
from outreach.web import secrets
from outreach.web import unsubscribe as unsub

from tests.helpers import run_at, setup

SECRET = "s3cret-for-tests"
SEQ = """
name: two-dms
accounts: [x-main]
start: dm
actions:
  dm: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}"}
  again: {type: SEND_TWITTER_DM, message: "Again {{ first_name }}"}
triggers:
  - {from: dm, trigger: NOT_REPLIED, after: 1d, to: again}
"""


@pytest.fixture
def client(engine, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_OUTREACH_UNSUBSCRIBE",
                       json.dumps({"conn_type": "http", "host": "https://example.test", "password": SECRET}))
    secrets.clear()
    app = FastAPI()
    app.include_router(unsub.router(lambda: engine))
    yield TestClient(app)
    secrets.clear()


def count(engine, sql):
    with engine.connect() as c:
        return c.execute(sa.text(sql)).scalar()


def test_one_click_is_idempotent_and_stops_the_next_send(engine, sandbox, client):
    setup(engine, SEQ, leads=[{"name": "Ada Lovelace", "twitter_id": "77001", "email": "Ada@Example.com"}])
    run_at(engine, sandbox, "2026-01-05T09:00:00Z")  # first DM
    token = unsubscribe_token(1, SECRET)
    assert client.get(f"/unsubscribe?token={token}").status_code == 200  # a confirmation page, nothing changed
    assert count(engine, "SELECT count(*) FROM suppressions") == 0
    body = {"List-Unsubscribe": "One-Click"}
    r1 = client.post(f"/unsubscribe?token={token}", data=body)
    r2 = client.post(f"/unsubscribe?token={token}", data=body)
    assert r1.status_code == r2.status_code == 200 and "unsubscribed" in r1.text
    assert count(engine, "SELECT count(*) FROM suppressions") == 2  # the person and the email address
    assert count(engine, "SELECT count(*) FROM events WHERE kind = 'UNSUBSCRIBED'") == 1
    run_at(engine, sandbox, "2026-01-06T10:00:00Z")  # `again` is due: the gate stops it, on every channel
    sent = [c for c in sandbox.calls() if c["path"].endswith("/messages") and c["effect"]]
    assert len(sent) == 1
    assert count(engine, "SELECT count(*) FROM events WHERE kind = 'SKIPPED' AND reason LIKE 'suppressed:%'") == 1


@pytest.mark.parametrize("token", [None, "", "garbage", "1.deadbeef", "999999.0123456789abcdef0123456789abcdef",
                                   unsubscribe_token(1, "another-secret")])
def test_bad_tokens_are_refused_alike(engine, client, token):
    setup(engine, SEQ, leads=[{"name": "Ada Lovelace", "twitter_id": "77001", "email": "ada@example.com"}])
    url = "/unsubscribe" if token is None else f"/unsubscribe?token={token}"
    r = client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 400 and r.text.count(unsub.REFUSED) == 1
    assert "ada" not in r.text.lower() and "exist" not in r.text.lower()
    assert count(engine, "SELECT count(*) FROM suppressions") == 0


def test_without_a_configured_secret_everything_is_refused(engine, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_OUTREACH_UNSUBSCRIBE", raising=False)
    secrets.clear()
    app = FastAPI()
    app.include_router(unsub.router(lambda: engine))
    r = TestClient(app).post(f"/unsubscribe?token={unsubscribe_token(1, SECRET)}")
    assert r.status_code == 400
    secrets.clear()


def test_the_dashboard_app_serves_the_unsubscribe_endpoint(engine, monkeypatch):
    from outreach.web.app import create_app

    monkeypatch.setenv("AIRFLOW_CONN_OUTREACH_UNSUBSCRIBE",
                       json.dumps({"conn_type": "http", "host": "https://example.test", "password": SECRET}))
    secrets.clear()
    setup(engine, SEQ, leads=[{"name": "Ada Lovelace", "twitter_id": "77001", "email": "ada@example.com"}])
    client = TestClient(create_app(engine))
    assert client.post(f"/unsubscribe?token={unsubscribe_token(1, SECRET)}").status_code == 200
    assert client.post("/unsubscribe?token=bad").status_code == 400
    secrets.clear()

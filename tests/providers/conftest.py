"""Connections for the gateway providers, pointed at the session sandbox (real HTTP)."""
from __future__ import annotations

import json
import os

import pytest


@pytest.fixture
def gateways(sandbox):
    os.environ["AIRFLOW_CONN_LI_MAIN"] = json.dumps({"conn_type": "linkedin_gateway", "host": sandbox.url + "/linkedin",
                                                    "password": "li-key", "extra": {"withdraw_pending_after_days": 14}})
    os.environ["AIRFLOW_CONN_XMTP_MAIN"] = json.dumps({"conn_type": "xmtp_gateway", "host": sandbox.url + "/xmtp",
                                                      "password": "xm-key"})
    return sandbox


def cycle(engine, sandbox, now: str, providers: list[str]) -> dict:
    """Poll, ingest and advance (what ``run_tick`` does, without the metrics rollup) at ``now``."""
    from outreach.clock import parse_now
    from outreach.engine import tick

    sandbox.clock(now)
    t = parse_now(now)
    out: dict = {}
    for p in providers:
        for batch in tick.poll_batches(engine, p):
            for kind in ("inbox", "relationships"):
                tick._merge(out, f"poll_{kind}", tick.poll(engine, batch, kind, t))
    out["ingest"] = tick.ingest(engine, t)
    for p in providers:
        for batch in tick.due_batches(engine, p, t):
            tick._merge(out, f"advance_{p}", tick.advance(engine, batch, t))
    return out


@pytest.fixture(scope="session")
def dovecot():
    from outreach.sandbox.mail import Dovecot, MailServerUnavailable

    try:
        d = Dovecot(install=True).start()
    except MailServerUnavailable as e:
        pytest.skip(f"no IMAP server for the email tests: {e}")  # its own world-traversable temp dir (pytest's are 0700)
    yield d
    d.stop()


@pytest.fixture
def smtp_sink():
    from outreach.sandbox.mail import SmtpSink

    s = SmtpSink().start()
    yield s
    s.stop()


@pytest.fixture
def mail_conns(smtp_sink, dovecot, monkeypatch):
    from outreach.sandbox.mail import IMAP_PASSWORD, IMAP_USER

    dovecot.clear()  # the server lives for the session; each test starts from an empty mailbox

    monkeypatch.setenv("AIRFLOW_CONN_MAIL_MAIN", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": smtp_sink.port,
        "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 10,
                  "from_email": "sales@example.com", "imap_conn_id": "mail_main_imap"}}))
    monkeypatch.setenv("AIRFLOW_CONN_MAIL_MAIN_IMAP", json.dumps({
        "conn_type": "imap", "host": "127.0.0.1", "port": dovecot.port, "login": IMAP_USER,
        "password": IMAP_PASSWORD, "extra": {"use_ssl": False}}))
    monkeypatch.setenv("AIRFLOW_CONN_OUTREACH_UNSUBSCRIBE", json.dumps({
        "conn_type": "generic", "host": "https://go.example.com", "password": "unsub-secret"}))
    return smtp_sink, dovecot

"""XMTP through the gateway: address validation, replies by incremental polling, consent states (denied ->
suppressed), and "unknown is not no" for conversations the gateway cannot read. Real PostgreSQL, real HTTP."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from outreach.clock import parse_now
from outreach.providers import registry
from outreach.providers.base import PermanentError
from outreach.providers.xmtp import XmtpHook, valid_address
from tests.helpers import setup
from tests.providers.conftest import cycle

ACCOUNTS = """
accounts:
  - {name: xm-main, provider: xmtp, conn_id: xmtp_main, user_id: "0x1111111111111111111111111111111111111111"}
"""
SEQ = """
name: xm-seq
accounts: [xm-main]
start: hello
actions:
  hello: {type: SEND_XMTP_DM, message: "gm {{ first_name }}, building anything with {{ topic }}?"}
  nudge: {type: SEND_XMTP_DM, message: "Following up, {{ first_name }}."}
triggers:
  - {from: hello, trigger: REPLIED, to: END}
  - {from: hello, trigger: NOT_REPLIED, after: 2d, to: nudge}
  - {from: nudge, trigger: REPLIED, to: END}
  - {from: nudge, trigger: NOT_REPLIED, after: 2d, to: END}
"""


def addresses(gw, n, **want):
    out, i = [], 0
    while len(out) < n:
        a = "0x" + f"{i:040x}"
        p = gw.state.gateways.predict_xmtp(a)
        if all(p[k] == v for k, v in want.items()):
            out.append(a)
        i += 1
    return out


def leads(addrs):
    return [{"name": f"Lead{i} Person", "xmtp_address": a, "topic": "agents"} for i, a in enumerate(addrs)]


@pytest.mark.parametrize("value,ok", [
    ("0x" + "ab" * 20, True), ("0x" + "AB" * 20, True), ("vitalik.eth", True), ("sub.name.eth", True),
    ("0x123", False), ("0x" + "g" * 40, False), ("name.com", False), ("", False), (None, False),
])
def test_address_validation(value, ok):
    assert (valid_address(value) is not None) == ok


def test_invalid_address_fails_without_a_call(gateways):
    p = XmtpHook(xmtp_conn_id="xmtp_main").get_provider()
    before = len(gateways.calls())
    with pytest.raises(PermanentError) as e:
        p.perform("SEND_XMTP_DM", "0x" + "1" * 40, {"xmtp": "0x12"}, "hi", "1:hello")
    assert e.value.reason == "invalid_xmtp_address" and len(gateways.calls()) == before
    with pytest.raises(PermanentError) as e:
        p.perform("SEND_XMTP_DM", "0x" + "1" * 40, {"xmtp": "0xdead" + "0" * 36}, "hi", "1:hello")
    assert e.value.reason == "not_on_network"
    ok = p.perform("SEND_XMTP_DM", "0x" + "1" * 40, {"xmtp": "alice.eth"}, "hi", "2:hello")
    assert ok.provider_ref.startswith("msg:")
    assert p.reconcile("SEND_XMTP_DM", "0x" + "1" * 40, {}, "hi", parse_now(None), idempotency_key="2:hello") \
        == ("landed", ok.provider_ref)
    assert p.reconcile("SEND_XMTP_DM", "0x" + "1" * 40, {}, "hi", parse_now(None), idempotency_key="3:hello")[0] \
        == "absent"


def test_replies_consent_and_unknown(engine, gateways):
    repliers = addresses(gateways, 2, replies=True, replies_visible=True)
    hidden = addresses(gateways, 1, replies=True, replies_visible=False)
    deniers = addresses(gateways, 1, denies=True)
    silent = addresses(gateways, 1, replies=False, denies=False, replies_visible=True)
    setup(engine, SEQ, leads(repliers + hidden + deniers + silent), accounts_yaml=ACCOUNTS)
    out = cycle(engine, gateways, "2026-01-05T09:00:00Z", ["xmtp"])
    assert out["advance_xmtp"]["sent"] == 5
    cycle(engine, gateways, "2026-01-05T13:00:00Z", ["xmtp"])  # replies (<= 3h) and the denial (10 min)
    with engine.connect() as c:
        kinds = dict(c.execute(sa.text("SELECT kind, count(*) FROM events GROUP BY kind")).all())
        supp = c.execute(sa.text("SELECT kind, value, reason FROM suppressions")).all()
    # a signal for an enrolment that another signal moved in the same ingest waits for the next ingest
    assert kinds["REPLIED"] == 2 and kinds["CONSENT_DENIED"] == 1 and kinds["CONSENT_ALLOWED"] >= 1
    assert [(s.kind, s.value, s.reason) for s in supp] == [("xmtp", deniers[0], "consent_denied")]
    out = cycle(engine, gateways, "2026-01-07T10:00:00Z", ["xmtp"])  # past the 2-day NOT_REPLIED
    # the hidden conversation is "unknown", not "no reply": no nudge, finished with reply_unknown
    assert out["ingest"]["fired:REPLY_UNKNOWN"] == 1 and out["ingest"]["fired:NOT_REPLIED"] == 2
    with engine.connect() as c:
        ended = dict(c.execute(sa.text("""SELECT i.value, coalesce(e.ended_reason, e.status) FROM enrollments e
                                          JOIN identities i ON i.person_id = e.person_id AND i.kind = 'xmtp'""")).all())
    assert ended[hidden[0]] == "reply_unknown"
    assert all(ended[a] == "replied" for a in repliers)
    assert ended[deniers[0]].startswith("suppressed:xmtp")  # its NOT_REPLIED nudge was skipped at the gate
    assert ended[silent[0]] == "ACTIVE"  # nudged, waiting
    # the silent lead got its nudge; the denier is suppressed, never messaged again
    xm = gateways.summary()["xmtp"]
    assert xm["messages"] == 6 and xm["denied_visible"] == 1 and gateways.summary()["duplicate_gateway_sends"] == 0


def test_no_news_poll_is_one_request(engine, gateways):
    setup(engine, SEQ, leads(addresses(gateways, 2, replies=True)), accounts_yaml=ACCOUNTS)
    cycle(engine, gateways, "2026-01-05T09:00:00Z", ["xmtp"])
    cycle(engine, gateways, "2026-01-05T13:00:00Z", ["xmtp"])
    from outreach.engine.tick import poll

    before = gateways.calls()[-1]["seq"]
    counts = poll(engine, [1], "inbox", parse_now("2026-01-05T13:05:00Z"))
    new = [c for c in gateways.calls() if c["seq"] > before]
    assert [c["path"] for c in new] == ["/xmtp/v1/events"] and counts.get("new_signals", 0) == 0


def test_registry_builds_every_provider(gateways):
    assert type(registry.build("xmtp", "xmtp_main")).__name__ == "XmtpProvider"
    assert type(registry.build("linkedin", "li_main")).__name__ == "LinkedInProvider"

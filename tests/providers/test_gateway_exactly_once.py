"""Exactly once on the gateways: an answer lost after the gateway accepted is reconciled by idempotency key, never
re-sent. Real PostgreSQL, real HTTP to the sandbox's LinkedIn and XMTP gateways."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from outreach.clock import parse_now
from outreach.engine import tick
from outreach.engine.advance import advance_account
from outreach.providers import registry
from outreach.providers.base import RetryableError
from tests.helpers import setup

CASES = {
    "linkedin": ("""
accounts:
  - {name: li-main, provider: linkedin, conn_id: li_main, user_id: "li-acc-1"}
""", """
name: s
accounts: [li-main]
start: a
actions:
  a: {type: SEND_CONNECTION_REQUEST, note: "Hi {{ first_name }}"}
triggers:
  - {from: a, trigger: CONNECTION_NOT_ACCEPTED, after: 3d, to: END}
""", {"linkedin_id": "m7"}, "linkedin", "invitations"),
    "xmtp": ("""
accounts:
  - {name: xm-main, provider: xmtp, conn_id: xmtp_main, user_id: "0x1111111111111111111111111111111111111111"}
""", """
name: s
accounts: [xm-main]
start: a
actions:
  a: {type: SEND_XMTP_DM, message: "gm {{ first_name }}"}
triggers:
  - {from: a, trigger: NOT_REPLIED, after: 3d, to: END}
""", {"xmtp_address": "0x" + "7" * 40}, "xmtp", "messages"),
}


class LosesTheAnswer:
    """The real provider, whose first answer is lost after the gateway accepted (a timeout on the way back)."""

    def __init__(self, inner):
        self.inner, self.client, self.reconcile_by_key = inner, inner.client, True
        self.fail, self.performed = True, 0

    def perform(self, *a, **kw):
        self.performed += 1
        result = self.inner.perform(*a, **kw)
        if self.fail:
            raise RetryableError("timeout", "answer lost", maybe_landed=True)
        return result

    def reconcile(self, *a, **kw):
        return self.inner.reconcile(*a, **kw)


@pytest.mark.parametrize("case", sorted(CASES))
def test_lost_answer_is_reconciled_by_key(engine, gateways, case):
    accounts, seq, ident, provider, key = CASES[case]
    setup(engine, seq, [{"name": "Pat Doe", **ident}], accounts_yaml=accounts)
    (acc,) = tick.accounts(engine)
    p = LosesTheAnswer(registry.build(provider, acc.conn_id))
    gateways.clock("2026-01-05T09:00:00Z")
    c1 = advance_account(engine, acc, p, now=parse_now("2026-01-05T09:00:00Z"))
    assert c1["retried"] == 1 and gateways.summary()[provider][key] == 1
    p.fail = False
    gateways.clock("2026-01-05T15:00:00Z")
    c2 = advance_account(engine, acc, p, now=parse_now("2026-01-05T15:00:00Z"))
    assert c2["reconciled"] == 1 and c2["sent"] == 1 and p.performed == 1  # never performed twice
    assert gateways.summary()[provider][key] == 1 and gateways.summary()["duplicate_gateway_sends"] == 0
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT reason FROM events WHERE kind = 'SENT'")).scalar() == "reconciled"

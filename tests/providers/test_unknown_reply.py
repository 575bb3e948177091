""""Unknown is not no": REPLY_UNKNOWN in the sequence file (validation), the machine, X inbox poll gaps past the
30 days X keeps, and BOUNCED ending a lead FAILED."""
from __future__ import annotations

import textwrap
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from outreach.clock import parse_now
from outreach.domain import machine
from outreach.domain.model import ValidationError
from outreach.domain.sequence import parse_sequence
from tests.helpers import setup
from tests.providers.conftest import cycle

SEQ = """
name: x-unknown
accounts: [x-main]
start: dm
actions:
  dm: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}"}
  again: {type: SEND_TWITTER_DM, message: "Following up"}
  check: {type: CHECK_FOR_REPLY}
triggers:
  - {from: dm, trigger: REPLIED, to: END}
  - {from: dm, trigger: NOT_REPLIED, after: 40d, to: again}
  - {from: dm, trigger: REPLY_UNKNOWN, to: check}
  - {from: check, trigger: REPLIED, to: END}
  - {from: check, trigger: NOT_REPLIED, after: 1d, to: END}
"""


def parse(text):
    return parse_sequence(textwrap.dedent(text), "seq.yaml", {"x-main": "x"})


def test_reply_unknown_validation():
    seq = parse(SEQ)
    assert machine.on_reply_unknown(seq, "dm", datetime(2026, 1, 1, tzinfo=timezone.utc)).step == "check"
    bad = SEQ.replace("  - {from: dm, trigger: NOT_REPLIED, after: 40d, to: again}\n", "")
    with pytest.raises(ValidationError) as e:
        parse(bad)
    assert "REPLY_UNKNOWN from 'dm' needs a NOT_REPLIED" in str(e.value)
    with pytest.raises(ValidationError) as e:
        parse(SEQ.replace("trigger: REPLY_UNKNOWN, to: check", "trigger: REPLY_UNKNOWN, after: 1d, to: check"))
    assert "REPLY_UNKNOWN takes no 'after'" in str(e.value)


def test_without_reply_unknown_trigger_the_lead_finishes():
    seq = parse(SEQ.replace("{from: dm, trigger: REPLY_UNKNOWN, to: check}", "{from: again, trigger: NORMAL_EDGE, to: check}"))
    nxt = machine.on_reply_unknown(seq, "dm", datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert (nxt.status, nxt.reason) == ("COMPLETED", "reply_unknown")


def test_bounced_ends_failed():
    seq = parse(SEQ)
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    nxt = machine.on_signal(seq, "dm", "waiting", t, "BOUNCED", t, t)
    assert (nxt.status, nxt.reason) == ("FAILED", "bounced")


def test_x_poll_gap_longer_than_history_makes_not_replied_unknown(engine, sandbox):
    setup(engine, SEQ, [{"name": "Quiet Person", "twitter_id": "50001"}, {"name": "Calm Person", "twitter_id": "50002"}])
    cycle(engine, sandbox, "2026-01-05T09:00:00Z", ["x"])
    cycle(engine, sandbox, "2026-01-05T15:00:00Z", ["x"])
    # nobody polls for 35 days (> the 30 days of DM history X keeps): replies may have been lost
    out = cycle(engine, sandbox, "2026-02-14T10:00:00Z", ["x"])
    with engine.connect() as c:
        gaps = c.execute(sa.text("SELECT count(*) FROM events WHERE kind = 'POLL_GAP'")).scalar()
        fired = dict(c.execute(sa.text("SELECT reason, count(*) FROM events WHERE kind = 'TRIGGER_FIRED' "
                                       "GROUP BY 1")).all())
    assert gaps == 1
    replied = sum(1 for i in ("50001", "50002") if sandbox.state.predict(i)["replies"])
    assert fired.get("REPLY_UNKNOWN", 0) == 2 - replied and "NOT_REPLIED" not in fired
    assert out["ingest"].get("fired:REPLY_UNKNOWN", 0) == 2 - replied


def test_regular_polling_keeps_not_replied(engine, sandbox):
    setup(engine, SEQ.replace("after: 40d", "after: 2d"), [{"name": "Quiet Person", "twitter_id": "50001"}])
    for t in ("2026-01-05T09:00:00Z", "2026-01-06T09:00:00Z", "2026-01-07T09:00:00Z", "2026-01-07T12:00:00Z"):
        out = cycle(engine, sandbox, t, ["x"])
    with engine.connect() as c:
        fired = dict(c.execute(sa.text("SELECT reason, count(*) FROM events WHERE kind = 'TRIGGER_FIRED' "
                                       "GROUP BY 1")).all())
    assert "REPLY_UNKNOWN" not in fired and parse_now("2026-01-07T12:00:00Z") and out is not None

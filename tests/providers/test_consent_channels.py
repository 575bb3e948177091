"""One person, one conversation, across channels: suppression on X, LinkedIn, XMTP and email (checked against
each channel's own record), a person in an X sequence and an email sequence is contacted by one only, and a reply
by email stops the person's X steps."""
from __future__ import annotations

import email
import email.policy

import sqlalchemy as sa

from outreach.cli import main

from tests.helpers import setup
from tests.providers.conftest import cycle

ACCOUNTS = """
accounts:
  - {name: x-main, provider: x, conn_id: x_main, user_id: "1001"}
  - {name: li-main, provider: linkedin, conn_id: li_main, user_id: "li-acc-1"}
  - {name: xm-main, provider: xmtp, conn_id: xmtp_main, user_id: "0x1111111111111111111111111111111111111111"}
  - {name: mail-main, provider: email, conn_id: mail_main, user_id: "sales@example.com"}
"""


def one_step(name, account, action):
    return f"""
name: {name}
accounts: [{account}]
allow_parallel: true
start: s
actions:
  s: {action}
triggers:
  - {{from: s, trigger: END}}
"""


CHANNELS = {
    "x": ("x-main", '{type: SEND_TWITTER_DM, message: "Hi {{ first_name }}"}', "twitter_id", "twitter"),
    "linkedin": ("li-main", '{type: SEND_CONNECTION_REQUEST, note: "Hi {{ first_name }}"}', "linkedin_id", "linkedin"),
    "xmtp": ("xm-main", '{type: SEND_XMTP_DM, message: "gm {{ first_name }}"}', "xmtp_address", "xmtp"),
    "email": ("mail-main", '{type: SEND_EMAIL, subject: "Hi", message: "Hi {{ first_name }}"}', "email", "email"),
}
PEOPLE = {  # column -> (suppressed value, allowed value)
    "twitter_id": ("71001", "71002"),
    "linkedin_id": ("li-member-9001", "li-member-9002"),
    "xmtp_address": ("0x" + "a" * 40, "0x" + "b" * 40),
    "email": ("blocked@corp.example", "open@corp.example"),
}


def test_a_suppressed_identity_is_never_contacted_on_any_channel(engine, gateways, mail_conns):
    smtp, _imap = mail_conns
    for provider, (account, action, column, kind) in CHANNELS.items():
        bad, good = PEOPLE[column]
        setup(engine, one_step(f"seq-{provider}", account, action), accounts_yaml=ACCOUNTS,
              leads=[{"name": "Sup Pressed", column: bad}, {"name": "Al Lowed", column: good}])
        assert main(["suppress", "add", "--kind", kind, "--value", bad, "--reason", "do not contact"]) == 0
    cycle(engine, gateways, "2026-01-05T09:00:00Z", list(CHANNELS))
    x_targets = {c["target_id"] for c in gateways.calls() if c["effect"] and c["path"].startswith("/2/")}
    gateway_targets = {c["target_id"] for c in gateways.calls() if c["effect"] and not c["path"].startswith("/2/")}
    mail_to = {email.message_from_bytes(m["data"], policy=email.policy.default)["To"].strip()
               for m in smtp.messages}
    contacted = x_targets | gateway_targets | mail_to
    for bad, good in PEOPLE.values():
        assert bad not in contacted and good in contacted
    with engine.connect() as c:
        skipped = c.execute(sa.text("SELECT count(*) FROM events WHERE kind = 'SKIPPED' AND reason LIKE 'suppressed:%'")).scalar()
    assert skipped == 4


def test_x_and_email_sequences_contact_a_person_once_and_an_email_reply_stops_x(engine, gateways, mail_conns):
    smtp, imap = mail_conns
    lead = [{"name": "Pat Doe", "twitter_id": "71010", "email": "pat@corp.example"}]
    x_seq = """
name: by-x
accounts: [x-main]
start: follow
actions:
  follow: {type: FOLLOW_ON_TWITTER}
  dm: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}"}
triggers:
  - {from: follow, trigger: NORMAL_EDGE, after: 1d, to: dm}
  - {from: dm, trigger: END}
"""
    mail_seq = one_step("by-mail", "mail-main", CHANNELS["email"][1])
    setup(engine, mail_seq.replace("allow_parallel: true\n", ""), leads=lead, accounts_yaml=ACCOUNTS)
    setup(engine, x_seq, leads=lead, accounts_yaml=ACCOUNTS)
    cycle(engine, gateways, "2026-01-05T09:00:00Z", ["x", "email"])
    follows = [c for c in gateways.calls() if c["effect"] and c["path"].endswith("/following")]
    assert len(follows) + len(smtp.messages) == 1  # one conversation only

    # the other way round: the person is in conversation on X and on email (a sequence that allows it), and
    # answers the email: the X sequence stops before its DM
    with engine.begin() as c:
        c.exec_driver_sql("TRUNCATE events, inbound_signals, enrollments, sequence_triggers, sequence_actions, "
                          "sequence_versions, sequences RESTART IDENTITY CASCADE")
    smtp.messages.clear()
    setup(engine, mail_seq, leads=lead, accounts_yaml=ACCOUNTS)
    setup(engine, x_seq.replace("accounts: [x-main]", "accounts: [x-main]\nallow_parallel: true"), leads=lead,
          accounts_yaml=ACCOUNTS)
    cycle(engine, gateways, "2026-01-06T09:00:00Z", ["x", "email"])
    assert len(smtp.messages) == 1
    sent_id = email.message_from_bytes(smtp.messages[0]["data"], policy=email.policy.default)["Message-ID"]
    imap.append((f"From: pat@corp.example\r\nTo: sales@example.com\r\nSubject: Re: Hi\r\n"
                 f"Date: Tue, 06 Jan 2026 10:00:00 +0000\r\nMessage-ID: <pat-r1@corp.example>\r\n"
                 f"In-Reply-To: {sent_id}\r\nReferences: {sent_id}\r\n\r\nSure, tell me more.\r\n").encode())
    cycle(engine, gateways, "2026-01-07T12:00:00Z", ["x", "email"])
    dms = [c for c in gateways.calls() if c["effect"] and c["path"].endswith("/messages")]
    assert dms == []
    with engine.connect() as c:
        st = dict(c.execute(sa.text("""SELECT s.name, e.ended_reason FROM enrollments e
            JOIN sequences s ON s.id = e.sequence_id""")).all())
    assert st["by-x"] == "replied_elsewhere"


def test_a_block_on_x_or_linkedin_suppresses_that_identity(engine, gateways):
    x_seq = one_step("x-one", "x-main", CHANNELS["x"][1])
    li_seq = one_step("li-one", "li-main", CHANNELS["linkedin"][1])
    setup(engine, x_seq, accounts_yaml=ACCOUNTS, leads=[{"name": "Bea Blocker", "twitter_id": "40319777"}])
    setup(engine, li_seq, accounts_yaml=ACCOUNTS, leads=[{"name": "Lin Blocker", "linkedin_id": "blocked-42"}])
    cycle(engine, gateways, "2026-01-05T09:00:00Z", ["x", "linkedin"])
    with engine.connect() as c:
        sup = set(c.execute(sa.text("SELECT kind, value, reason FROM suppressions")).all())
        failed = set(c.execute(sa.text("SELECT ended_reason FROM enrollments")).scalars().all())
    assert ("twitter", "40319777", "blocked_us") in sup and ("linkedin", "blocked-42", "blocked_us") in sup
    assert failed == {"blocked"}

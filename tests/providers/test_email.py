"""Email: SEND_EMAIL through Airflow's SMTP hook to a real aiosmtpd server; replies, out-of-office and bounces
read through Airflow's IMAP hook from a real Dovecot (mail delivered by IMAP APPEND). Real PostgreSQL."""
from __future__ import annotations

import email
import email.policy

import sqlalchemy as sa

from outreach.clock import parse_now
from outreach.engine.tick import poll
from outreach.providers.email import (
    message_id,
    parse_dsn,
    signals_from_message,
    unsubscribe_token,
    verify_unsubscribe_token,
)
from tests.helpers import setup
from tests.providers.conftest import cycle

ACCOUNTS = """
accounts:
  - {name: mail-main, provider: email, conn_id: mail_main, user_id: "sales@example.com"}
"""
SEQ = """
name: email-seq
accounts: [mail-main]
start: first
actions:
  first:
    type: SEND_EMAIL
    subject: "Quick question about {{ topic }}"
    message: "Hi {{ first_name }},\\nwho looks after {{ topic }} at your company?"
  bump: {type: SEND_EMAIL, subject: "Re: Quick question", message: "Bumping this, {{ first_name }}."}
triggers:
  - {from: first, trigger: REPLIED, to: END}
  - {from: first, trigger: NOT_REPLIED, after: 3d, to: bump}
  - {from: bump, trigger: REPLIED, to: END}
  - {from: bump, trigger: NOT_REPLIED, after: 3d, to: END}
"""
LEADS = [{"name": f"{n.title()} Person", "email": f"{n}@corp.example", "topic": "data pipelines"}
         for n in ("alice", "bob", "carol", "dave")] + [{"name": "Rita Refused", "email": "refuse@corp.example",
                                                         "topic": "x"}]


def reply(frm: str, to_id: str, text: str, mid: str, date: str = "Mon, 05 Jan 2026 10:00:00 +0000") -> bytes:
    return (f"From: {frm}\r\nTo: sales@example.com\r\nSubject: Re: Quick question\r\nDate: {date}\r\n"
            f"Message-ID: {mid}\r\nIn-Reply-To: {to_id}\r\nReferences: {to_id}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\r\n"
            f"On Mon, Jan 5, 2026 at 9:00 AM Sales <sales@example.com> wrote:\r\n> Hi\r\n").encode()


def dsn(rcpt: str, original_id: str) -> bytes:
    b = "BOUNDARY42"
    return (f"From: MAILER-DAEMON@mx.corp.example\r\nTo: sales@example.com\r\nSubject: Undelivered Mail\r\n"
            f"Date: Mon, 05 Jan 2026 09:01:00 +0000\r\nMessage-ID: <dsn-1@mx.corp.example>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"{b}\"\r\n\r\n"
            f"--{b}\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
            f"--{b}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.corp.example\r\n\r\n"
            f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
            f"--{b}\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {original_id}\r\nTo: {rcpt}\r\n\r\n"
            f"--{b}--\r\n").encode()


def test_token_and_message_id():
    tok = unsubscribe_token(42, "s3cret")
    assert verify_unsubscribe_token(tok, "s3cret") == 42 and verify_unsubscribe_token(tok, "other") is None
    assert verify_unsubscribe_token("43." + tok.split(".")[1], "s3cret") is None
    assert message_id(42, "first", "sales@example.com") == message_id(42, "first", "x@example.com")
    assert message_id(42, "first", "a@b.io").endswith("@b.io>")


def test_dsn_and_reply_parsing():
    sig = signals_from_message(dsn("bob@corp.example", "<outreach.2.abc@example.com>"), "imap:1:1")
    assert [(s.kind, s.external_id, s.conversation_id) for s in sig] == [
        ("BOUNCED", "bob@corp.example", "<outreach.2.abc@example.com>")]
    assert "5.1.1" in sig[0].text
    msg = email.message_from_bytes(reply("x@y.z", "<outreach.1.ab@example.com>", "hi", "<r@y.z>"),
                                   policy=email.policy.default)
    assert parse_dsn(msg) == []
    (s,) = signals_from_message(reply("X <X@Y.z>", "<outreach.1.ab@example.com>", "Sounds good", "<r@y.z>"), "r")
    assert (s.kind, s.external_id, s.conversation_id, s.text) == ("REPLIED", "X@y.z", "<outreach.1.ab@example.com>",
                                                                 "Sounds good")


def test_email_end_to_end(engine, sandbox, mail_conns):
    smtp, imap = mail_conns
    setup(engine, SEQ, LEADS, accounts_yaml=ACCOUNTS)
    out = cycle(engine, sandbox, "2026-01-05T09:00:00Z", ["email"])
    assert out["advance_email"]["sent"] == 4 and out["advance_email"]["failed:recipient_refused"] == 1
    assert len(smtp.messages) == 4
    with engine.connect() as c:
        sent = dict(c.execute(sa.text("""SELECT i.value, e.provider_ref FROM events e JOIN enrollments n
            ON n.id = e.enrollment_id JOIN identities i ON i.person_id = n.person_id AND i.kind = 'email'
            WHERE e.kind = 'SENT'""")).all())
    m = email.message_from_bytes(smtp.messages[0]["data"], policy=email.policy.default)
    to = m["To"].strip()
    assert m["Message-ID"] == sent[to]  # the SENT event's provider_ref is our Message-ID
    assert m["Subject"] == "Quick question about data pipelines"
    assert m["List-Unsubscribe"].startswith("<https://go.example.com/unsubscribe?token=")
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = m["List-Unsubscribe"].split("token=")[1].rstrip(">")
    enr = int(sent[to].split(".")[1])
    assert verify_unsubscribe_token(token, "unsub-secret") == enr

    # the mailbox: a reply from another address of Alice's, a bounce for Bob, Carol's out-of-office, a newsletter
    imap.append(reply("Alice <alice.home@gmail.example>", sent["alice@corp.example"], "Sounds good, let's talk.",
                      "<r1@gmail.example>"))
    imap.append(dsn("bob@corp.example", sent["bob@corp.example"]))
    imap.append(reply("carol@corp.example", sent["carol@corp.example"],
                      "I'm out of the office until January 12 with no access to email.", "<r2@corp.example>"))
    imap.append(b"From: news@letters.example\r\nTo: sales@example.com\r\nSubject: Weekly\r\n"
                b"Message-ID: <n1@letters.example>\r\nDate: Mon, 05 Jan 2026 10:00:00 +0000\r\n\r\nNews\r\n")
    out = cycle(engine, sandbox, "2026-01-05T11:00:00Z", ["email"])
    assert out["poll_inbox"]["new_signals"] == 4
    with engine.connect() as c:
        st = {r.value: r for r in c.execute(sa.text("""SELECT i.value, n.status, n.ended_reason, n.next_run_at,
            n.current_step FROM enrollments n JOIN identities i ON i.person_id = n.person_id AND i.kind = 'email'"""))}
        kinds = dict(c.execute(sa.text("SELECT kind, count(*) FROM events GROUP BY kind")).all())
        cursor = c.execute(sa.text("SELECT cursor FROM provider_cursors WHERE stream = 'imap'")).scalar()
        supp = c.execute(sa.text("SELECT kind, value, reason FROM suppressions")).all()
    assert (st["alice@corp.example"].status, st["alice@corp.example"].ended_reason) == ("COMPLETED", "replied")
    assert (st["bob@corp.example"].status, st["bob@corp.example"].ended_reason) == ("FAILED", "bounced")
    assert st["carol@corp.example"].status == "ACTIVE"
    assert st["carol@corp.example"].next_run_at == parse_now("2026-01-13T00:00:00Z")  # the day after her return
    assert kinds["UNMATCHED_SIGNAL"] == 1 and kinds["OUT_OF_OFFICE"] == 1 and kinds["BOUNCED"] == 1
    assert ("email", "bob@corp.example", "bounced") in [tuple(s) for s in supp]
    validity, last = cursor.split(":")
    assert validity.isdigit() and int(last) >= 4

    # re-polling: nothing new, nothing inserted twice; the cursor stays
    again = poll(engine, [1], "inbox", parse_now("2026-01-05T11:05:00Z"))
    assert again.get("new_signals", 0) == 0 and again["polled"] == 0
    with engine.begin() as c:  # a lost cursor re-reads the mailbox: still nothing inserted twice
        c.execute(sa.text("UPDATE provider_cursors SET cursor = NULL"))
    again = poll(engine, [1], "inbox", parse_now("2026-01-05T11:06:00Z"))
    assert again["polled"] >= 4 and again.get("new_signals", 0) == 0

    out = cycle(engine, sandbox, "2026-01-08T10:00:00Z", ["email"])  # 3 days: Dave gets the bump, Carol waits
    assert out["advance_email"]["sent"] == 1 and smtp.messages[-1]["to"] == ["dave@corp.example"]
    out = cycle(engine, sandbox, "2026-01-13T01:00:00Z", ["email"])  # Carol is back: her bump goes out
    assert out["advance_email"]["sent"] == 1 and smtp.messages[-1]["to"] == ["carol@corp.example"]
    bump = email.message_from_bytes(smtp.messages[-1]["data"], policy=email.policy.default)
    assert bump["Subject"] == "Re: Quick question"


def test_no_news_imap_poll_is_one_search_and_no_fetch(engine, sandbox, mail_conns, monkeypatch):
    import imaplib

    setup(engine, SEQ, LEADS[:1], accounts_yaml=ACCOUNTS)
    poll(engine, [1], "inbox", parse_now("2026-01-05T09:00:00Z"))  # reads whatever the mailbox holds
    seen = []
    real = imaplib.IMAP4.uid
    monkeypatch.setattr(imaplib.IMAP4, "uid", lambda self, cmd, *a: seen.append(cmd) or real(self, cmd, *a))
    counts = poll(engine, [1], "inbox", parse_now("2026-01-05T09:10:00Z"))
    assert seen == ["SEARCH"] and counts.get("new_signals", 0) == 0 and counts["polled"] == 0


def test_mixed_case_sender_matches_the_identity():
    (s,) = signals_from_message(reply("Bob <Bob.Smith@Corp.Example>", "<outreach.1.ab@example.com>", "ok", "<q@x>"),
                                "r")
    assert s.external_id == "Bob.Smith@corp.example"  # as lead import stores it

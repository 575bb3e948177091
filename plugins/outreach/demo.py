"""``make demo``: the main job end to end on this machine.

Embedded PostgreSQL (a fresh ``outreach_demo`` database each run), the sandbox (X API, LinkedIn and XMTP gateways),
an SMTP server (aiosmtpd, in this process, with simulated recipients who reply or bounce) and, when Dovecot is
installed, a private IMAP server the replies land in. Two sequences: the DESIGN example with 200 X leads
(follow -> follow-back -> DM -> reply -> END) and ``four-channel`` with 30 leads moving X -> LinkedIn -> XMTP ->
email. Real ``airflow dags test outreach_sequences`` runs with the engine's clock (and the sandbox's) moved forward
between them. Prints the funnels and checks them against the sandbox's and the mail servers' own records.
"""
from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import requests
import sqlalchemy as sa

from outreach.localenv import airflow_bin, airflow_env, ensure_airflow_db
from outreach.store.db import PROJECT_ROOT, STATE_DIR, embedded_url, recreate_database

DEMO_DIR = STATE_DIR / "demo"
SEQUENCE = PROJECT_ROOT / "include" / "demo" / "founders-follow-dm.yaml"
FOUR = PROJECT_ROOT / "include" / "demo" / "four-channel.yaml"
ACCOUNTS = PROJECT_ROOT / "include" / "demo" / "accounts.yaml"
# The engine clock for each DAG run: four follow batches 20 minutes apart (50 follows per 15 minutes on X),
# then the 6-hour rhythm, then past the 2-day NOT_FOLLOWED_BACK and the 3-day NOT_REPLIED timeouts.
CLOCK = ["2026-01-05T09:00:00Z", "2026-01-05T09:20:00Z", "2026-01-05T09:40:00Z", "2026-01-05T10:00:00Z",
         "2026-01-05T10:20:00Z", "2026-01-05T15:00:00Z", "2026-01-05T21:00:00Z", "2026-01-07T12:00:00Z",
         "2026-01-07T18:00:00Z", "2026-01-10T18:00:00Z",
         # the four-channel sequence's last legs: LinkedIn -> XMTP -> email, and the email replies
         "2026-01-11T09:00:00Z", "2026-01-12T09:00:00Z"]
TOPICS = ["AI agents", "developer tools", "data pipelines", "growth loops", "open source"]


def say(msg: str) -> None:
    print(msg, flush=True)


def demo_database() -> str:
    url = os.environ.get("OUTREACH_DEMO_DATABASE_URL")
    if url:
        return url
    return recreate_database(embedded_url(), "outreach_demo")


def write_leads(path: Path, n: int = 200) -> None:
    rng = random.Random(7)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "twitter_id", "twitter_username", "timezone", "company_domain", "topic", "title"])
        for i in range(n):
            first = rng.choice(["Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Alan", "Radia"])
            topic = "" if i % 15 == 0 else rng.choice(TOPICS)  # a few leads lack {{ topic }}
            w.writerow([f"{first} Founder{i}", str(70000 + i), f"{first.lower()}{i}", "UTC", f"startup{i}.io",
                        topic, "Founder"])


def write_four_channel_leads(path: Path, n: int = 30) -> None:
    rng = random.Random(11)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "twitter_id", "linkedin_id", "xmtp_address", "email", "timezone", "company", "topic"])
        for i in range(n):
            first = rng.choice(["Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Alan", "Radia"])
            w.writerow([f"{first} Builder{i}", str(80000 + i), f"li-member-{i}", "0x" + f"{0xb0b0000 + i:040x}",
                        f"{first.lower()}{i}@company{i}.example", "UTC", f"Company{i}", rng.choice(TOPICS)])


class MailWorld:
    """The demo's SMTP server and, when Dovecot is installed, its IMAP mailbox. Simulated recipients: ~40% reply
    (In-Reply-To our Message-ID), ~10% bounce (a DSN), dated on the sandbox clock."""

    def __init__(self, base_url: str):
        from outreach.sandbox.mail import Dovecot, MailServerUnavailable, SmtpSink

        self.base_url = base_url
        self.imap = None
        self.why_no_imap = ""
        try:
            self.imap = Dovecot(install=False).start()
        except (MailServerUnavailable, RuntimeError) as e:
            self.why_no_imap = str(e)
        self.smtp = SmtpSink(on_message=self._recipient).start()
        self.replies = self.bounces = 0

    def _recipient(self, msg: dict) -> None:
        import email as emaillib
        import email.policy
        import hashlib

        if self.imap is None:
            return
        m = emaillib.message_from_bytes(msg["data"], policy=email.policy.default)
        rcpt, mid = msg["to"][0], m["Message-ID"]
        u = int(hashlib.sha256(f"demo:{rcpt}".encode()).hexdigest()[:8], 16) / 2**32
        now = requests.get(f"{self.base_url}/_sandbox/clock", timeout=5).json()["now"]
        from email.utils import format_datetime
        from datetime import datetime

        date = format_datetime(datetime.fromisoformat(now.replace("Z", "+00:00")))
        if u < 0.10:
            self.bounces += 1
            raw = (f"From: MAILER-DAEMON@mx.example\r\nTo: {msg['from']}\r\nSubject: Undelivered Mail\r\n"
                   f"Date: {date}\r\nMessage-ID: <dsn-{self.bounces}@mx.example>\r\nMIME-Version: 1.0\r\n"
                   "Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n"
                   "--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
                   "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
                   f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
                   f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {mid}\r\n\r\n--B--\r\n")
        elif u < 0.50:
            self.replies += 1
            raw = (f"From: {rcpt}\r\nTo: {msg['from']}\r\nSubject: Re: {m['Subject']}\r\nDate: {date}\r\n"
                   f"Message-ID: <reply-{self.replies}@demo.example>\r\nIn-Reply-To: {mid}\r\nReferences: {mid}\r\n"
                   "\r\nSounds good, let's talk next week.\r\n")
        else:
            return
        self.imap.append(raw.encode())

    def connections(self, env: dict) -> None:
        from outreach.sandbox.mail import IMAP_PASSWORD, IMAP_USER

        env["AIRFLOW_CONN_MAIL_MAIN"] = json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": self.smtp.port,
            "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 10,
                      "imap_conn_id": "mail_main_imap"}})
        if self.imap is not None:
            env["AIRFLOW_CONN_MAIL_MAIN_IMAP"] = json.dumps({
                "conn_type": "imap", "host": "127.0.0.1", "port": self.imap.port, "login": IMAP_USER,
                "password": IMAP_PASSWORD, "extra": {"use_ssl": False}})
        env["AIRFLOW_CONN_OUTREACH_UNSUBSCRIBE"] = json.dumps({
            "conn_type": "generic", "host": "https://outreach-demo.example", "password": "demo-unsubscribe-secret"})

    def stop(self) -> None:
        self.smtp.stop()
        if self.imap is not None:
            self.imap.stop()


def start_sandbox(env: dict) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "outreach.sandbox.server", "--port", "0", "--seed", "42"],
                            stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline().strip()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"sandbox did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[-1]


def run(cmd: list[str], env: dict, log: Path | None = None) -> str:
    out = subprocess.run(cmd, env=env, text=True, capture_output=True)
    if log:
        log.write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
        raise SystemExit(f"demo: `{' '.join(cmd[:4])} ...` failed (exit {out.returncode})"
                         + (f"; full log in {log}" if log else ""))
    return out.stdout


def main() -> int:
    t0 = time.monotonic()
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    (DEMO_DIR / "logs").mkdir(exist_ok=True)
    say("== outreach demo ==")
    url = demo_database()
    say(f"database: {sa.engine.make_url(url).render_as_string(hide_password=True)}")
    env = airflow_env(url)
    sandbox, base_url = start_sandbox(env)
    mail = None
    try:
        say(f"sandbox: {base_url} (X API, /linkedin and /xmtp gateways)")
        env["AIRFLOW_CONN_X_MAIN"] = json.dumps({"conn_type": "x", "host": base_url, "password": "sandbox-1001"})
        env["AIRFLOW_CONN_LI_MAIN"] = json.dumps({"conn_type": "linkedin_gateway", "host": f"{base_url}/linkedin",
                                                 "password": "demo-li-key"})
        env["AIRFLOW_CONN_XMTP_MAIN"] = json.dumps({"conn_type": "xmtp_gateway", "host": f"{base_url}/xmtp",
                                                   "password": "demo-xmtp-key"})
        mail = MailWorld(base_url)
        mail.connections(env)
        say(f"smtp: aiosmtpd on 127.0.0.1:{mail.smtp.port}; imap: " + (
            f"Dovecot on 127.0.0.1:{mail.imap.port}" if mail.imap else
            f"SKIPPED ({mail.why_no_imap}): email is sent, but no email replies or bounces are read"))
        outreach = str(Path(sys.executable).with_name("outreach"))
        leads = DEMO_DIR / "leads.csv"
        write_leads(leads)
        four_leads = DEMO_DIR / "four-channel-leads.csv"
        write_four_channel_leads(four_leads)
        for cmd in (["db", "upgrade"], ["accounts", "apply", str(ACCOUNTS)], ["sequences", "apply", str(SEQUENCE)],
                    ["leads", "import", "--sequence", "founders-follow-dm", "--now", CLOCK[0], str(leads)],
                    ["sequences", "apply", str(FOUR)],
                    ["leads", "import", "--sequence", "four-channel", "--now", CLOCK[0], str(four_leads)]):
            say(f"$ outreach {' '.join(cmd)}\n  " + run([outreach, *cmd], env).strip().replace("\n", "\n  "))
        say("preparing Airflow (metadata database under .outreach/airflow) ...")
        ensure_airflow_db(env)
        engine = sa.create_engine(url)
        last_id = 0
        for i, now in enumerate(CLOCK, 1):
            requests.post(f"{base_url}/_sandbox/clock", json={"now": now}, timeout=5).raise_for_status()
            started = time.monotonic()
            run([airflow_bin(), "dags", "test", "outreach_sequences", "-c", json.dumps({"now": now})], env,
                log=DEMO_DIR / "logs" / f"run-{i:02d}.log")
            line, last_id = _progress(engine, last_id)
            say(f"DAG run {i:2d}/{len(CLOCK)} at {now} ({time.monotonic() - started:4.1f}s): {line}")
        say("")
        say("$ outreach metrics")
        say(run([outreach, "metrics", "--sequence", "founders-follow-dm"], env))
        say("$ outreach metrics --sequence four-channel")
        say(run([outreach, "metrics", "--sequence", "four-channel"], env))
        ok = _check(engine, base_url, t0) == 0
        ok &= _check_channels(engine, base_url, mail)
        say(f"demo {'finished' if ok else 'FAILED'} in {time.monotonic() - t0:.0f}s")
        return 0 if ok else 1
    finally:
        if mail is not None:
            mail.stop()
        sandbox.terminate()
        sandbox.wait(timeout=10)


def _progress(engine: sa.Engine, after_id: int) -> tuple[str, int]:
    """What this run did (events after ``after_id``) and where the enrollments stand."""
    with engine.connect() as c:
        rows = c.execute(sa.text("""
            SELECT kind, step, count(*), max(id) FROM events WHERE id > :after
              AND kind IN ('SENT', 'FOLLOWED_BACK', 'REPLIED', 'TRIGGER_FIRED', 'SKIPPED', 'FAILED',
                           'CONNECTION_ACCEPTED', 'REPLIED_TO_NOTE', 'BOUNCED', 'CONSENT_DENIED')
            GROUP BY kind, step ORDER BY kind, step"""), {"after": after_id}).all()
        last = c.execute(sa.text("SELECT coalesce(max(id), 0) FROM events")).scalar()
        status = dict(c.execute(sa.text("SELECT status, count(*) FROM enrollments GROUP BY status")).all())
    done = ", ".join(f"{k.lower()} {s}={n}" for k, s, n, _ in rows) or "nothing new"
    return f"{done} | enrollments: " + ", ".join(f"{k.lower()}={v}" for k, v in sorted(status.items())), last


def _check(engine: sa.Engine, base_url: str, t0: float) -> int:
    sandbox = requests.get(f"{base_url}/_sandbox/summary", timeout=5).json()
    with engine.connect() as c:
        got = dict(c.execute(sa.text("""
            SELECT CASE WHEN e.kind IN ('SENT', 'REPLIED') THEN e.kind || ':' || a.type ELSE e.kind END, count(*)
            FROM events e LEFT JOIN sequence_actions a ON a.version_id = e.version_id AND a.key = e.step
            GROUP BY 1""")).all())
    pairs = [("follows", got.get("SENT:FOLLOW_ON_TWITTER", 0), sandbox["follows"]),
             ("DMs", got.get("SENT:SEND_TWITTER_DM", 0), sandbox["dms"]),
             ("follow-backs", got.get("FOLLOWED_BACK", 0), sandbox["follow_backs_visible"]),
             ("replies", got.get("REPLIED:SEND_TWITTER_DM", 0), sandbox["replies_visible"])]
    say("event log vs the sandbox's own record of calls:")
    ok = True
    for name, ours, theirs in pairs:
        good = ours == theirs and ours > 0
        ok &= good
        say(f"  {name:<13} engine={ours:<5} sandbox={theirs:<5} {'ok' if good else 'MISMATCH'}")
    say(f"  duplicate DMs: {sandbox['duplicate_dms']}")
    ok &= sandbox["duplicate_dms"] == 0
    return 0 if ok else 1


def _check_channels(engine: sa.Engine, base_url: str, mail: "MailWorld") -> bool:
    """The four-channel sequence: what the engine sent and read on LinkedIn, XMTP and email, against the gateways'
    and the SMTP server's own records; and how far its leads got."""
    sb = requests.get(f"{base_url}/_sandbox/summary", timeout=5).json()
    with engine.connect() as c:
        sent = dict(c.execute(sa.text("""
            SELECT a.type, count(*) FROM events e JOIN sequence_actions a ON a.version_id = e.version_id
             AND a.key = e.step WHERE e.kind = 'SENT' GROUP BY 1""")).all())
        read = dict(c.execute(sa.text("SELECT provider || ':' || kind, count(*) FROM inbound_signals GROUP BY 1")).all())
        steps = c.execute(sa.text("""
            SELECT e.current_step, e.status, coalesce(e.ended_reason, '') AS why, count(*) FROM enrollments e
            JOIN sequences s ON s.id = e.sequence_id WHERE s.name = 'four-channel' GROUP BY 1, 2, 3 ORDER BY 4 DESC""")).all()
    li, xm = sb["linkedin"], sb["xmtp"]
    pairs = [("LinkedIn invitations", sent.get("SEND_CONNECTION_REQUEST", 0), li["invitations"]),
             ("LinkedIn accepted", read.get("linkedin:CONNECTION_ACCEPTED", 0), li["accepted_visible"]),
             ("LinkedIn DMs", sent.get("SEND_LINKEDIN_DM", 0), li["messages"]),
             ("LinkedIn replies", read.get("linkedin:REPLIED", 0), li["replies_visible"]),
             ("XMTP DMs", sent.get("SEND_XMTP_DM", 0), xm["messages"]),
             ("XMTP replies", read.get("xmtp:REPLIED", 0), xm["replies_visible"]),
             ("emails", sent.get("SEND_EMAIL", 0), len(mail.smtp.messages))]
    if mail.imap is not None:
        pairs += [("email replies", read.get("email:REPLIED", 0), mail.replies),
                  ("email bounces", read.get("email:BOUNCED", 0), mail.bounces)]
    say("four-channel (X -> LinkedIn -> XMTP -> email): engine vs the gateways' and mail servers' records:")
    ok = True
    for name, ours, theirs in pairs:
        good = ours == theirs
        ok &= good
        say(f"  {name:<21} engine={ours:<5} record={theirs:<5} {'ok' if good else 'MISMATCH'}")
    for must in ("SEND_CONNECTION_REQUEST", "SEND_XMTP_DM", "SEND_EMAIL"):
        ok &= sent.get(must, 0) > 0
    if mail.imap is None:
        say("  email replies/bounces: not read (IMAP skipped: Dovecot is not installed)")
    say(f"  duplicate gateway sends: {sb['duplicate_gateway_sends']}")
    ok &= sb["duplicate_gateway_sends"] == 0
    say("  where the four-channel leads are: " + ", ".join(
        f"{r.current_step}/{r.status.lower()}{'(' + r.why + ')' if r.why else ''}={r.count}" for r in steps))
    return ok


if __name__ == "__main__":
    sys.exit(main())

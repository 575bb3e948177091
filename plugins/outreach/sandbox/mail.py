"""Real mail servers on loopback for the email tests and the demo: aiosmtpd (SMTP) and a private Dovecot (IMAP).

``ensure_dovecot(install=True)`` installs Dovecot with ``apt-get install -y dovecot-imapd`` when it is missing (as
root) and raises ``MailServerUnavailable`` when that is impossible (the tests skip on it, saying why). Each Dovecot
instance gets its own temp directory, a config file, a free loopback port and a passdb of one user.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

IMAP_USER, IMAP_PASSWORD = "sales@example.com", "imap-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MailServerUnavailable(RuntimeError):
    pass


def ensure_dovecot(install: bool = True) -> str:
    exe = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
    if exe:
        return exe
    if not install:
        raise MailServerUnavailable("Dovecot (IMAP) is not installed")
    if os.geteuid() != 0:
        raise MailServerUnavailable("Dovecot (IMAP) is not installed and the tests are not root: cannot `apt-get install "
                    "dovecot-imapd`; the IMAP tests need a real IMAP server")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    out = subprocess.run(["apt-get", "install", "-y", "dovecot-imapd"], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env)
        out = subprocess.run(["apt-get", "install", "-y", "dovecot-imapd"], capture_output=True, text=True, env=env)
    exe = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)
    if not exe:
        raise MailServerUnavailable(f"Dovecot could not be installed (apt-get exit {out.returncode}): {out.stderr[-300:]}")
    return exe


class Dovecot:
    def __init__(self, root: Path | None = None, install: bool = True):
        import tempfile

        self.exe = ensure_dovecot(install)
        # dovecot's auth and mail processes run as unprivileged users: the directory must be traversable
        self.root = Path(tempfile.mkdtemp(prefix="outreach-dovecot-", dir=root))
        os.chmod(self.root, 0o755)
        p = self.root.parent
        while root is not None and p != Path(p.anchor) and str(p).startswith(str(root)):
            os.chmod(p, 0o755)
            p = p.parent
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Dovecot":
        import pwd

        r = self.root
        for d in ("run", "state", "mail"):
            (r / d).mkdir(parents=True, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        os.chown(r / "mail", nobody.pw_uid, nobody.pw_gid)
        (r / "passwd").write_text(f"{IMAP_USER}:{{PLAIN}}{IMAP_PASSWORD}:{nobody.pw_uid}:{nobody.pw_gid}::"
                                  f"{r / 'mail' / 'sales'}\n")
        (r / "dovecot.conf").write_text(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {r / 'run'}
state_dir = {r / 'state'}
log_path = {r / 'dovecot.log'}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {r / 'passwd'}
}}
userdb {{
  driver = passwd-file
  args = {r / 'passwd'}
}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
""")
        self.proc = subprocess.Popen([self.exe, "-F", "-c", str(r / "dovecot.conf")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        log = (r / "dovecot.log").read_text() if (r / "dovecot.log").exists() else ""
        out = self.proc.stdout.read().decode() if self.proc.poll() is not None else ""
        self.stop()
        raise RuntimeError(f"dovecot did not start: {out[-500:]} {log[-1000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def clear(self, mailbox: str = "INBOX") -> None:
        """Delete every message (tests start from an empty mailbox; UIDs keep growing, as on a real server)."""
        import imaplib

        c = imaplib.IMAP4("127.0.0.1", self.port)
        c.login(IMAP_USER, IMAP_PASSWORD)
        c.select(mailbox)
        typ, data = c.uid("SEARCH", None, "ALL")
        if typ == "OK" and data and data[0]:
            c.uid("STORE", b",".join(data[0].split()).decode(), "+FLAGS", "(\\Deleted)")
            c.expunge()
        c.logout()

    def append(self, raw: bytes, mailbox: str = "INBOX") -> None:
        import imaplib

        c = imaplib.IMAP4("127.0.0.1", self.port)
        c.login(IMAP_USER, IMAP_PASSWORD)
        typ, data = c.append(mailbox, None, None, raw)
        assert typ == "OK", data
        c.logout()


class SmtpSink:
    """aiosmtpd on loopback keeping every message it receives."""

    def __init__(self, on_message=None):
        from aiosmtpd.controller import Controller

        self.messages: list[dict] = []
        self.on_message = on_message  # called with each received message (the demo's simulated recipients)
        sink = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                if address.lower().startswith("refuse"):
                    return "550 5.1.1 mailbox unavailable"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                msg = {"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                       "data": envelope.original_content or envelope.content}
                sink.messages.append(msg)
                if sink.on_message:
                    sink.on_message(msg)
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> "SmtpSink":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

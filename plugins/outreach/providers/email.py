"""Email: SEND_EMAIL through Airflow's SMTP hook, replies and bounces through Airflow's IMAP hook.

- Every message carries a Message-ID we generate, deterministic per (enrollment, step):
  ``<outreach.{enrollment}.{step hash}@{sender domain}>``; it is the SENT event's provider_ref.
- RFC 8058 one-click unsubscribe: ``List-Unsubscribe: <{base}/unsubscribe?token=...>`` and
  ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``; the token is ``{enrollment}.{HMAC-SHA256(secret,
  enrollment)}`` with base URL and secret from the Airflow connection ``outreach_unsubscribe``
  (host = public base URL, password = secret).
- Polling (stream ``imap``): cursor ``UIDVALIDITY:last UID``; a mailbox whose UIDVALIDITY changed is read from
  the start (re-reading inserts nothing twice: provider_ref is the inbound Message-ID). Replies are matched by
  In-Reply-To / References to our Message-IDs (signal conversation_id = our Message-ID, external_id = sender);
  delivery status notifications (``multipart/report; report-type=delivery-status``, Action: failed) become
  BOUNCED signals for the failed recipient.
- Connections: the account's ``conn_id`` is an ``smtp`` connection (extra ``from_email``; set ``retry_limit``
  to 0: the hook's own blind resend would double-send); its extra ``imap_conn_id`` names the ``imap``
  connection (default ``{conn_id}_imap``).
"""
from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import html
import logging
import re
import smtplib
import socket
from datetime import datetime, timezone
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

from outreach.domain import templates
from outreach.providers.base import AccountError, PermanentError, RetryableError, SendResult, Signal

log = logging.getLogger(__name__)

UNSUBSCRIBE_CONN = "outreach_unsubscribe"
OUR_ID_RE = re.compile(r"<outreach\.[0-9]+\.[0-9a-f]+@[^>]+>")


def message_id(enrollment_id: int | str, step: str, sender: str) -> str:
    domain = sender.rsplit("@", 1)[-1] if "@" in sender else "outreach.local"
    return f"<outreach.{enrollment_id}.{hashlib.sha256(step.encode()).hexdigest()[:10]}@{domain}>"


def unsubscribe_token(enrollment_id: int | str, secret: str) -> str:
    mac = hmac.new(secret.encode(), str(enrollment_id).encode(), hashlib.sha256).hexdigest()[:32]
    return f"{enrollment_id}.{mac}"


def verify_unsubscribe_token(token: str, secret: str) -> int | None:
    enr, _, _mac = token.partition(".")
    return int(enr) if enr.isdigit() and hmac.compare_digest(unsubscribe_token(enr, secret), token) else None


def norm_email(addr: str) -> str:
    """As lead import stores email identities: the local part as written, the domain lower-cased."""
    local, _, domain = addr.strip().rpartition("@")
    return f"{local}@{domain.lower()}" if local else addr.strip()


def _body_text(msg) -> str:
    part = msg.get_body(preferencelist=("plain", "html")) if msg.is_multipart() else msg
    if part is None:
        return ""
    try:
        text = part.get_content()
    except (LookupError, KeyError):
        text = part.get_payload(decode=True).decode("utf-8", "replace")
    if part.get_content_type() == "text/html":
        text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    lines = []
    for line in text.splitlines():
        if line.startswith(">") or re.match(r"^On .+wrote:\s*$", line.strip()):
            break
        lines.append(line)
    return "\n".join(lines).strip()


def parse_dsn(msg) -> list[tuple[str, str, str | None]]:
    """(failed recipient, status text, original Message-ID) per failed recipient of a DSN; [] if not a DSN."""
    if msg.get_content_type() != "multipart/report" or msg.get_param("report-type") != "delivery-status":
        return []
    original = None
    out = []
    for part in msg.walk():
        ct = part.get_content_type()
        if ct in ("message/rfc822", "text/rfc822-headers"):
            if ct == "message/rfc822":
                inner = part.get_payload()[0] if isinstance(part.get_payload(), list) else part.get_payload()
                original = inner.get("Message-ID")
            else:
                original = email.message_from_string(part.get_content()).get("Message-ID")
        elif ct == "message/delivery-status":
            for block in part.get_payload():  # per-message block, then one block per recipient
                action = (block.get("Action") or "").lower()
                rcpt = block.get("Final-Recipient") or block.get("Original-Recipient")
                if rcpt and action == "failed":
                    addr = norm_email(rcpt.split(";", 1)[-1].strip().strip("<>"))
                    status = f"{block.get('Status', '')} {block.get('Diagnostic-Code', '')}".strip()
                    out.append((addr, status))
    return [(a, s, original.strip() if original else None) for a, s in out]


def signals_from_message(raw: bytes, ref: str) -> list[Signal]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    when = None
    try:
        when = parsedate_to_datetime(msg["Date"]) if msg["Date"] else None
    except (TypeError, ValueError):
        pass
    when = when if when and when.tzinfo else None
    inbound_id = (msg.get("Message-ID") or "").strip()
    pref = f"imap:{inbound_id}" if inbound_id else ref
    bounces = parse_dsn(msg)
    if bounces:
        return [Signal("BOUNCED", addr, f"{pref}:{addr}", when, original, status) for addr, status, original in bounces]
    refs = " ".join(str(msg.get(h) or "") for h in ("In-Reply-To", "References"))
    ours = OUR_ID_RE.findall(refs)
    sender = norm_email(parseaddr(str(msg.get("From") or ""))[1])
    if not sender:
        return []
    return [Signal("REPLIED", sender, pref, when, ours[-1] if ours else None, _body_text(msg))]


class EmailProvider:
    provider = "email"
    streams = ("imap",)
    wants_context = True

    def __init__(self, smtp_conn_id: str, imap_conn_id: str):
        self.smtp_conn_id = smtp_conn_id
        self.imap_conn_id = imap_conn_id
        self.client = self  # advance reads ``client.timeout`` and ``client.last_rate``
        self.timeout = 30.0
        self.last_rate: dict = {}
        self._unsub: tuple[str, str] | None = None

    def _unsubscribe(self) -> tuple[str, str]:
        if self._unsub is None:
            from airflow.sdk import BaseHook

            try:
                conn = BaseHook.get_connection(UNSUBSCRIBE_CONN)
            except Exception as e:  # noqa: BLE001 - missing connection: the account cannot send compliant mail
                raise AccountError("no_unsubscribe_secret", f"Airflow connection {UNSUBSCRIBE_CONN!r}: {e}") from e
            if not conn.password or not conn.host:
                raise AccountError("no_unsubscribe_secret",
                                   f"connection {UNSUBSCRIBE_CONN!r} needs host (base URL) and password (secret)")
            host = conn.host if "://" in conn.host else f"https://{conn.host}"
            self._unsub = (host.rstrip("/"), conn.password)
        return self._unsub

    def build(self, sender: str, to: str, subject: str, text: str, enrollment_id: str, step: str) -> dict:
        base, secret = self._unsubscribe()
        return {
            "to": to, "subject": subject, "from_email": sender,
            "html_content": "<p>" + html.escape(text).replace("\n", "<br>\n") + "</p>",
            "custom_headers": {
                "Message-ID": message_id(enrollment_id, step, sender),
                "List-Unsubscribe": f"<{base}/unsubscribe?token={unsubscribe_token(enrollment_id, secret)}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        }

    def perform(self, action_type: str, sender_user_id: str, recipient: dict, text: str, idempotency_key: str,
                context: dict | None = None) -> SendResult:
        if action_type != "SEND_EMAIL":
            raise PermanentError("unsupported_action", action_type)
        to = (recipient.get("email") or "").strip()
        if "@" not in to:
            raise PermanentError("no_email", "lead has no email address")
        ctx = context or {}
        enr, _, step = idempotency_key.partition(":")
        subject = ""
        if ctx.get("subject"):
            try:
                subject = templates.render(ctx["subject"], ctx.get("variables") or {}, seed=f"{enr}:{step}:subject")
            except Exception as e:  # noqa: BLE001 - a subject that cannot render is a permanent skip
                raise PermanentError("subject_template", str(e)[:200]) from e
        msg = self.build(sender_user_id, to, subject, text, enr, step)
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        try:
            with SmtpHook(smtp_conn_id=self.smtp_conn_id) as hook:
                hook.send_email_smtp(**msg)
        except smtplib.SMTPRecipientsRefused as e:
            raise PermanentError("recipient_refused", str(e)[:300], 550) from e
        except smtplib.SMTPAuthenticationError as e:
            raise AccountError("unauthorized", f"connection {self.smtp_conn_id!r}: {e.smtp_code}") from e
        except smtplib.SMTPResponseException as e:
            if 500 <= e.smtp_code < 600:
                raise PermanentError("smtp_rejected", f"{e.smtp_code} {e.smtp_error!r}"[:300], e.smtp_code) from e
            raise RetryableError("smtp_temporary", f"{e.smtp_code}", e.smtp_code, maybe_landed=False) from e
        except (smtplib.SMTPServerDisconnected, socket.timeout, ConnectionError, OSError) as e:
            raise RetryableError("smtp_connection", type(e).__name__, maybe_landed=True) from e
        except Exception as e:  # AirflowException "Unable to connect": nothing was sent
            if "connect" in str(e).lower():
                raise RetryableError("smtp_connect", str(e)[:200], maybe_landed=False) from e
            raise
        return SendResult(provider_ref=msg["custom_headers"]["Message-ID"], data={"to": to, "subject": subject})

    def reconcile(self, action_type: str, sender_user_id: str, recipient: dict, text: str,
                  attempted_at: datetime) -> tuple[str, str | None]:
        # SMTP cannot be asked whether a message was accepted: never guess, send to review.
        return "unknown", None

    def poll(self, sender_user_id: str, stream: str, cursor: str | None) -> tuple[list[Signal], str | None]:
        if stream != "imap":
            raise ValueError(f"unknown stream {stream!r}")
        import imaplib

        from airflow.providers.imap.hooks.imap import ImapHook

        try:
            return self._poll_imap(ImapHook, cursor)
        except (imaplib.IMAP4.error, OSError) as e:
            raise RetryableError("imap_error", f"connection {self.imap_conn_id!r}: {type(e).__name__}") from e
        except Exception as e:  # noqa: BLE001 - e.g. the IMAP connection is not defined: retried next tick
            if type(e).__name__ in ("AirflowNotFoundException", "AirflowException"):
                raise RetryableError("imap_unavailable", f"connection {self.imap_conn_id!r}: {e}"[:300]) from e
            raise

    def _poll_imap(self, ImapHook, cursor: str | None) -> tuple[list[Signal], str | None]:  # noqa: N803
        with ImapHook(imap_conn_id=self.imap_conn_id) as hook:
            client = hook.mail_client
            typ, _ = client.select("INBOX", readonly=True)
            if typ != "OK":
                raise RetryableError("imap_select", typ)
            validity = (client.response("UIDVALIDITY")[1] or [b"0"])[0].decode()
            old_validity, _, last = (cursor or "").partition(":")
            last_uid = int(last) if old_validity == validity and last.isdigit() else 0
            typ, data = client.uid("SEARCH", None, f"UID {last_uid + 1}:*")
            uids = sorted(int(u) for u in (data[0] or b"").split() if int(u) > last_uid)
            signals = []
            for uid in uids:
                typ, parts = client.uid("FETCH", str(uid), "(BODY.PEEK[])")
                raw = next((p[1] for p in parts if isinstance(p, tuple)), None)
                if raw is None:
                    continue
                # a message without a usable Date is stamped with the engine clock at insert
                signals += signals_from_message(raw, f"imap:{validity}:{uid}")
            new_last = uids[-1] if uids else last_uid
            return signals, f"{validity}:{new_last}"


class EmailHook:
    """Builds the email provider for a sender account from its SMTP connection (and the IMAP one it names)."""

    conn_name_attr = "smtp_conn_id"

    def __init__(self, smtp_conn_id: str):
        self.smtp_conn_id = smtp_conn_id

    def get_provider(self) -> EmailProvider:
        from airflow.sdk import BaseHook

        imap = f"{self.smtp_conn_id}_imap"
        try:
            imap = (BaseHook.get_connection(self.smtp_conn_id).extra_dejson or {}).get("imap_conn_id", imap)
        except Exception:  # noqa: BLE001 - the send will report the missing connection
            pass
        return EmailProvider(self.smtp_conn_id, imap)


def recipients_of(header: str) -> list[str]:
    return [a.lower() for _, a in getaddresses([header]) if a]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)

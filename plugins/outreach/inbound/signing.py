"""Webhook signatures, one module for the signer (sandbox, tests) and the verifier (the receiver).

* **X** (account activity API): ``x-twitter-webhooks-signature: sha256=<base64 HMAC-SHA256(consumer secret,
  raw body)>``; the CRC challenge ``GET ?crc_token=T`` is answered ``{"response_token": "sha256=<base64
  HMAC-SHA256(consumer secret, T)>"}``. X signs no timestamp, so a replayed X body is caught by its events'
  ``created_timestamp`` (older than the tolerance: refused) and, inside the tolerance, by the unique provider
  reference of each event (stored once).
* **LinkedIn / XMTP gateways and inbound email** (our own contract, Stripe-style):
  ``X-Outreach-Timestamp: <unix seconds>`` and ``X-Outreach-Signature: v1=<hex HMAC-SHA256(secret,
  "{timestamp}.{raw body}")>``. A timestamp further than the tolerance from now is a replay and refused.

Comparisons are constant-time. Secrets never appear in errors or logs.
"""
from __future__ import annotations

import base64
import hashlib
import hmac

X_SIGNATURE_HEADER = "x-twitter-webhooks-signature"
TIMESTAMP_HEADER = "x-outreach-timestamp"
SIGNATURE_HEADER = "x-outreach-signature"
TOLERANCE_SECONDS = 300


def _mac(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def x_crc_response(secret: str, crc_token: str) -> str:
    return "sha256=" + base64.b64encode(_mac(secret, crc_token.encode())).decode()


def x_signature(secret: str, body: bytes) -> str:
    return "sha256=" + base64.b64encode(_mac(secret, body)).decode()


def verify_x(secret: str, body: bytes, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(x_signature(secret, body).encode(), header.strip().encode())


def gateway_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    sig = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Outreach-Timestamp": str(timestamp), "X-Outreach-Signature": f"v1={sig}"}


def verify_gateway(secret: str, body: bytes, timestamp: str | None, signature: str | None, now: float,
                   tolerance: int = TOLERANCE_SECONDS) -> str | None:
    """None when valid, else the refusal reason: ``missing_signature``, ``bad_timestamp``, ``replayed``,
    ``bad_signature``. The signature is checked before the age, so an unsigned old request says bad signature."""
    if not timestamp or not signature:
        return "missing_signature"
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return "bad_timestamp"
    ts = int(timestamp)
    expected = gateway_headers(secret, body, ts)["X-Outreach-Signature"]
    if not any(hmac.compare_digest(expected.encode(), part.strip().encode())
               for part in signature.split(",") if part.strip()):
        return "bad_signature"
    if abs(now - ts) > tolerance:
        return "replayed"
    return None

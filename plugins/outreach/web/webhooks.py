"""Webhook receiver: ``/webhooks/{x,linkedin,xmtp,email}`` (the fast path of issue 7; docs/architecture.md).

Every delivery is checked, then recorded in ``webhook_deliveries`` whatever the outcome:

====================================================  ======  ===========================================
request                                               status  recorded reason
====================================================  ======  ===========================================
no secret configured for the provider                  503    ``not_configured``
body over 1 MiB                                        413    ``too_large``
signature header(s) missing                            401    ``missing_signature``
signature wrong (or timestamp header not a number)     403    ``bad_signature`` / ``bad_timestamp``
signed, but older than the tolerance (a replay)        403    ``replayed``
signed, but not the payload shape                      400    ``malformed``
signed, names a sender account we do not have          404    ``unknown_account``
valid                                                  200    stored in one transaction, then NOTIFY
====================================================  ======  ===========================================

Secrets come from Airflow connections only (password of ``outreach_webhook_x`` = the X app's consumer secret;
``outreach_webhook_linkedin``, ``outreach_webhook_xmtp``, ``outreach_webhook_email`` = the gateway / inbound
mail service's signing secret); they are never logged or echoed. ``GET /webhooks/x?crc_token=`` answers X's CRC
challenge. A delivery that repeats signals already stored (by a poll or an earlier delivery) answers 200 and
stores nothing twice.
"""
from __future__ import annotations

import json
import logging
import re
import time

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from outreach.inbound import parse, signing, store
from outreach.web import secrets

log = logging.getLogger(__name__)

PROVIDERS = ("x", "linkedin", "xmtp", "email")
CONN_PREFIX = "outreach_webhook_"
MAX_BODY = 1 << 20
X_REPLAY_SECONDS = 3600  # X signs no timestamp: a body whose newest event is older than this is a replay
# X's CRC tokens are short base64-ish strings. Anything else is refused: the CRC answer is an HMAC with the same
# secret as the POST signature, so echoing it for an arbitrary token (a JSON body) would sign forged deliveries.
CRC_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{1,256}")


def secret(provider: str) -> str | None:
    """The provider's webhook secret (Airflow connection ``outreach_webhook_<provider>``); None if not configured."""
    return secrets.connection_password(CONN_PREFIX + provider)


clear_secret_cache = secrets.clear


def _answer(status: int, reason: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": reason, "detail": detail}, status_code=status)


def router(get_engine, *, tolerance: int = signing.TOLERANCE_SECONDS,
           x_replay_seconds: int = X_REPLAY_SECONDS) -> APIRouter:
    r = APIRouter(prefix="/webhooks")

    async def _refuse(provider: str, status: int, reason: str, detail: str, body: bytes, remote) -> JSONResponse:
        await run_in_threadpool(store.refuse, get_engine(), provider, status, reason, body, remote)
        log.warning("webhook %s refused: %s %s", provider, status, reason)
        return _answer(status, reason, detail)

    @r.get("/x")
    async def x_crc(request: Request, crc_token: str | None = None) -> JSONResponse:
        remote = request.client.host if request.client else None
        key = await run_in_threadpool(secret, "x")
        if key is None:
            return await _refuse("x", 503, "not_configured", "the X webhook is not configured", b"", remote)
        if not crc_token or not CRC_TOKEN.fullmatch(crc_token):
            return await _refuse("x", 400, "malformed", "crc_token is required (base64 characters, at most 256)",
                                 b"", remote)
        await run_in_threadpool(store.record_crc, get_engine(), remote)
        return JSONResponse({"response_token": signing.x_crc_response(key, crc_token)})

    @r.post("/{provider}")
    async def receive(provider: str, request: Request) -> JSONResponse:
        if provider not in PROVIDERS:
            return _answer(404, "not_found", f"no webhook for {provider!r}")
        remote = request.client.host if request.client else None
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:  # refused before reading it
            return await _refuse(provider, 413, "too_large", f"body over {MAX_BODY} bytes", b"", remote)
        chunks, size = [], 0
        async for chunk in request.stream():  # a chunked body has no length: stop reading at the limit
            size += len(chunk)
            if size > MAX_BODY:
                return await _refuse(provider, 413, "too_large", f"body over {MAX_BODY} bytes", b"", remote)
            chunks.append(chunk)
        body = b"".join(chunks)
        key = await run_in_threadpool(secret, provider)
        if key is None:
            return await _refuse(provider, 503, "not_configured", f"the {provider} webhook is not configured",
                                 body, remote)
        h = request.headers
        now = time.time()
        if provider == "x":
            sig = h.get(signing.X_SIGNATURE_HEADER)
            reason = "missing_signature" if not sig else None if signing.verify_x(key, body, sig) else "bad_signature"
        else:
            reason = signing.verify_gateway(key, body, h.get(signing.TIMESTAMP_HEADER), h.get(signing.SIGNATURE_HEADER),
                                            now, tolerance)
        if reason is not None:
            status = 401 if reason == "missing_signature" else 403
            return await _refuse(provider, status, reason, "signature check failed" if status == 403 else
                                 "signature headers are required", body, remote)
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise parse.Malformed("the body must be a JSON object")
            if provider == "x":
                user_id, signals, times = parse.x_account_activity(payload)
                if times and max(times).timestamp() < now - x_replay_seconds:
                    return await _refuse(provider, 403, "replayed", "events older than the replay window",
                                         body, remote)
            else:
                user_id, signals = getattr(parse, provider)(payload)
        except (ValueError, TypeError, AttributeError, KeyError) as e:  # JSONDecodeError, Malformed: ValueError
            return await _refuse(provider, 400, "malformed", str(e) if isinstance(e, parse.Malformed)
                                 else "the body is not the expected JSON", body, remote)
        try:
            result = await run_in_threadpool(store.store, get_engine(), provider, user_id, signals, body, remote)
        except store.UnknownAccount as e:
            return await _refuse(provider, 404, "unknown_account", str(e), body, remote)
        except sa.exc.DataError:  # a value PostgreSQL will not store: refused, recorded, never retried into a 500
            return await _refuse(provider, 400, "malformed", "a field holds a value that cannot be stored", body,
                                 remote)
        log.info("webhook %s: %s signals, %s new", provider, result["signals"], result["new"])
        return JSONResponse({"ok": True, **result})

    return r

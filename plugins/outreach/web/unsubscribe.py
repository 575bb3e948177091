"""RFC 8058 one-click unsubscribe: ``POST /unsubscribe?token=...`` records the opt-out idempotently.

The token is ``{enrollment}.{HMAC}`` signed with the secret of the Airflow connection ``outreach_unsubscribe``
(see providers/email.py). A bad or missing token gets the same 400 whatever the reason, so the endpoint never
tells whether an address or an enrollment exists. GET shows a confirmation form and changes nothing (mail
clients and scanners prefetch links).
"""
from __future__ import annotations

import html
from datetime import datetime, timezone

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from outreach.providers.email import UNSUBSCRIBE_CONN, verify_unsubscribe_token
from outreach.web import secrets

REFUSED = "This unsubscribe link is not valid."
DONE = "You have been unsubscribed. You will not hear from us again."


def _secret() -> str | None:
    return secrets.connection_password(UNSUBSCRIBE_CONN)  # not configured: every token is refused


def _page(message: str, form_token: str | None = None, status: int = 200) -> HTMLResponse:
    form = ""
    if form_token:
        form = (f'<form method="post" action="?token={html.escape(form_token)}">'
                '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
                '<button type="submit">Unsubscribe</button></form>')
    return HTMLResponse(f"<!doctype html><title>Unsubscribe</title><p>{html.escape(message)}</p>{form}",
                        status_code=status)


def unsubscribe(engine: sa.Engine, enrollment_id: int, now: datetime) -> bool:
    """Suppress the person behind ``enrollment_id`` and their email addresses, once. One transaction."""
    with engine.begin() as conn:
        row = conn.execute(sa.text("""
            WITH e AS (SELECT id, person_id, sequence_id, version_id, current_step, account_id
                       FROM enrollments WHERE id = :id),
            sup AS (
                INSERT INTO suppressions (kind, value, reason, source, created_at)
                SELECT 'person', e.person_id::text, 'unsubscribed', 'email:one-click', :now FROM e
                UNION ALL
                SELECT 'email', i.value, 'unsubscribed', 'email:one-click', :now
                FROM e JOIN identities i ON i.person_id = e.person_id AND i.kind = 'email'
                ON CONFLICT (kind, value) DO NOTHING RETURNING 1)
            INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step,
                                account_id, reason, dedupe_key)
            SELECT :now, 'UNSUBSCRIBED', id, person_id, sequence_id, version_id, current_step, account_id,
                   'one_click', 'unsub:' || id FROM e
            ON CONFLICT (dedupe_key) DO NOTHING RETURNING enrollment_id"""), {"id": enrollment_id, "now": now}).first()
    return row is not None


def router(get_engine) -> APIRouter:
    r = APIRouter()

    def _enrollment(token: str | None) -> int | None:
        secret = _secret()
        return verify_unsubscribe_token(token, secret) if token and secret else None

    @r.get("/unsubscribe", response_class=HTMLResponse)
    def confirm(token: str | None = None) -> HTMLResponse:
        if _enrollment(token) is None:
            return _page(REFUSED, status=400)
        return _page("Unsubscribe from these messages?", form_token=token)

    @r.post("/unsubscribe", response_class=HTMLResponse)
    async def one_click(request: Request, token: str | None = None) -> HTMLResponse:
        enrollment_id = await run_in_threadpool(_enrollment, token)  # the secret lookup may query a backend
        if enrollment_id is None:
            return _page(REFUSED, status=400)
        await run_in_threadpool(unsubscribe, get_engine(), enrollment_id, datetime.now(timezone.utc))
        return _page(DONE)

    return r

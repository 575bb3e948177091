"""Write a verified delivery's signals to ``inbound_signals`` and ``NOTIFY`` in one transaction; record refusals.

The NOTIFY is delivered on commit only, so a listener never wakes for signals it cannot see yet.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import sqlalchemy as sa

from outreach.engine.signals import insert_signals
from outreach.inbound import CHANNEL
from outreach.providers.base import Signal


class UnknownAccount(LookupError):
    """The payload names a sender account we do not have (HTTP 404)."""


def account_for(conn: sa.Connection, provider: str, user_id: str) -> int | None:
    return conn.execute(sa.text(
        "SELECT id FROM sender_accounts WHERE provider = :p AND lower(user_id) = lower(:u) ORDER BY id LIMIT 1"),
        {"p": provider, "u": user_id}).scalar()


def store(engine: sa.Engine, provider: str, user_id: str, signals: list[Signal], body: bytes,
          remote: str | None) -> dict:
    """Insert the signals (duplicates of either path skipped), record the delivery, NOTIFY when something is new.
    One transaction. Raises :class:`UnknownAccount` (and writes nothing but the refusal) for an unknown account."""
    with engine.begin() as conn:
        account_id = account_for(conn, provider, user_id)
        if account_id is None:
            raise UnknownAccount(f"no {provider} sender account with user id {user_id!r}")
        ids = insert_signals(conn, provider, account_id, signals, "webhook", datetime.now(timezone.utc))
        _delivery(conn, provider, 200, "accepted", None, body, remote, account_id, len(signals), len(ids))
        if ids:
            conn.execute(sa.text("SELECT pg_notify(:c, :m)"),
                         {"c": CHANNEL, "m": json.dumps({"provider": provider, "max_id": max(ids), "n": len(ids)})})
    return {"signals": len(signals), "new": len(ids), "duplicates": len(signals) - len(ids)}


def refuse(engine: sa.Engine, provider: str, status: int, reason: str, body: bytes, remote: str | None) -> None:
    with engine.begin() as conn:
        _delivery(conn, provider, status, "refused", reason, body, remote, None, 0, 0)


def record_crc(engine: sa.Engine, remote: str | None) -> None:
    with engine.begin() as conn:
        _delivery(conn, "x", 200, "crc", None, b"", remote, None, 0, 0)


def _delivery(conn, provider, status, outcome, reason, body, remote, account_id, n, new) -> None:
    conn.execute(sa.text("""
        INSERT INTO webhook_deliveries (provider, status, outcome, reason, account_id, signals, new_signals,
                                        body_sha256, body_bytes, remote)
        VALUES (:p, :s, :o, :r, :a, :n, :new, :h, :b, :remote)"""),
        {"p": provider, "s": status, "o": outcome, "r": reason, "a": account_id, "n": n, "new": new,
         "h": hashlib.sha256(body).hexdigest() if body else None, "b": len(body), "remote": remote})

"""Rate budgets in PostgreSQL: one GCRA row per (account, action type), locked for the claim that spends it."""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta

import sqlalchemy as sa

from outreach.domain import pacing


class Budget:
    def __init__(self, conn: sa.Connection, account_id: int, action_type: str, limits_override: dict | None,
                 now: datetime, headroom: float = pacing.DEFAULT_HEADROOM):
        self.conn, self.account_id, self.action_type, self.now = conn, account_id, action_type, now
        self.limits = pacing.effective_limits(action_type, limits_override, headroom)
        conn.execute(sa.text("""
            INSERT INTO rate_budgets (account_id, action_type) VALUES (:a, :t) ON CONFLICT DO NOTHING"""),
            {"a": account_id, "t": action_type})
        row = conn.execute(sa.text("""
            SELECT tat, blocked_until FROM rate_budgets WHERE account_id = :a AND action_type = :t FOR UPDATE"""),
            {"a": account_id, "t": action_type}).one()
        self.tats: dict[str, float] = dict(row.tat or {})
        self.blocked_until: datetime | None = row.blocked_until

    @property
    def blocked(self) -> bool:
        return self.blocked_until is not None and self.blocked_until > self.now

    def available(self) -> int:
        if self.blocked:
            return 0
        if not self.limits:
            return 10**9
        return pacing.available(self.tats, self.limits, self.now.timestamp())

    def spend(self, n: int) -> None:
        if n and self.limits:
            self.tats = pacing.reserve(self.tats, self.limits, self.now.timestamp(), n)
            self._save()

    def _save(self) -> None:
        self.conn.execute(sa.text("""
            UPDATE rate_budgets SET tat = CAST(:tat AS jsonb), updated_at = now()
            WHERE account_id = :a AND action_type = :t"""),
            {"tat": json.dumps(self.tats), "a": self.account_id, "t": self.action_type})


def refund(conn: sa.Connection, account_id: int, action_type: str, limits_override: dict | None, now: datetime,
           count: int) -> None:
    """Give back reserved sends that never reached the provider (released leads)."""
    if count:
        b = Budget(conn, account_id, action_type, limits_override, now)
        if b.limits:
            b.tats = pacing.refund(b.tats, b.limits, now.timestamp(), count)
            b._save()


def account_limits(account, action_type: str, now: datetime) -> dict:
    """The account's limit overrides with its warm-up ramp applied."""
    first = getattr(account, "first_send_at", None)
    days = (now - first).total_seconds() / 86400 if first else 0
    return pacing.warmed_up(account.limits, action_type, getattr(account, "warmup", None), days)


def feedback(conn: sa.Connection, account_id: int, action_type: str, limits_override: dict | None, now: datetime,
             remaining: int | None, limit: int | None, reset_at: datetime | None, blocked: bool,
             rng: random.Random | None = None) -> datetime | None:
    """Record what the provider said. Shrinks the bucket to ``remaining``; blocks until reset (+0-10% jitter)
    on a 429 or when nothing remains. Returns blocked_until if it was set."""
    rng = rng or random
    limits = pacing.effective_limits(action_type, limits_override)
    row = conn.execute(sa.text("""
        SELECT tat FROM rate_budgets WHERE account_id = :a AND action_type = :t FOR UPDATE"""),
        {"a": account_id, "t": action_type}).first()
    tats = dict(row.tat) if row and row.tat else {}
    if remaining is not None:
        tats = pacing.shrink_to(tats, limits, now.timestamp(), remaining)
    until = None
    if (blocked or remaining == 0) and reset_at is not None:
        window = max((reset_at - now).total_seconds(), 0)
        until = max(reset_at, now) + timedelta(seconds=rng.uniform(0, 0.1 * max(window, 60)))
    elif blocked:
        until = now + timedelta(minutes=15)
    conn.execute(sa.text("""
        INSERT INTO rate_budgets (account_id, action_type, tat, blocked_until, last_limit, last_remaining, last_reset_at)
        VALUES (:a, :t, CAST(:tat AS jsonb), :until, :lim, :rem, :reset)
        ON CONFLICT (account_id, action_type) DO UPDATE SET tat = EXCLUDED.tat,
            blocked_until = coalesce(EXCLUDED.blocked_until, rate_budgets.blocked_until),
            last_limit = EXCLUDED.last_limit, last_remaining = EXCLUDED.last_remaining,
            last_reset_at = EXCLUDED.last_reset_at, updated_at = now()"""),
        {"a": account_id, "t": action_type, "tat": json.dumps(tats), "until": until, "lim": limit,
         "rem": remaining, "reset": reset_at})
    return until

"""Capacity planner: from the accounts' limits and the enrolled volume, when will each step finish?

Model: every active lead at or before a step may still need that step (the worst-case path); sends of one action
type share the daily capacity of the sequence's accounts of that provider (the tightest of the per-window limits
at headroom, spread to a day), minus what other sequences have waiting on the same accounts. Waiting delays along
the path (``after:``) are added to the finish time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from outreach.domain import pacing
from outreach.domain.model import SequenceDef
from outreach.engine.compose import graph_order
from outreach.store import catalog


@dataclass
class StepPlan:
    step: str
    action: str
    leads_at_step: int
    sends_needed: int
    daily_capacity: int
    finish: datetime | None
    days: float | None


def daily_capacity(action_type: str, limits_override: dict | None) -> int:
    limits = pacing.effective_limits(action_type, limits_override)
    if not limits:
        return 10**9
    return min(math.floor(n * 86400 / pacing.WINDOWS[w]) for w, n in limits.items())


def plan(engine: sa.Engine, name: str, now: datetime, horizon_days: float = 7.0) -> tuple[list[StepPlan], list[str]]:
    with engine.connect() as conn:
        row = catalog.latest_version(conn, name)
        seq = SequenceDef.from_canonical(name, tuple(row.accounts), row.definition)
        at = dict(conn.execute(sa.text("""
            SELECT current_step, count(*) FROM enrollments
            WHERE sequence_id = :s AND status IN ('ACTIVE', 'PAUSED') GROUP BY current_step"""),
            {"s": row.sequence_id}).all())
        accounts = conn.execute(sa.text("SELECT id, name, provider, limits FROM sender_accounts WHERE name = ANY(:n)"),
                                {"n": list(seq.accounts)}).all()
        other = dict(conn.execute(sa.text("""
            SELECT a.type, count(*) FROM enrollments e
            JOIN sequence_actions a ON a.version_id = e.version_id AND a.key = e.current_step
            WHERE e.sequence_id <> :s AND e.status = 'ACTIVE' AND e.phase = 'pending'
              AND e.account_id = ANY(:acc) GROUP BY a.type"""),
            {"s": row.sequence_id, "acc": [a.id for a in accounts]}).all())
    order = graph_order(seq)
    warnings, out = [], []
    delay = {seq.start: 0.0}  # shortest wait before a step can run, along the graph
    for key in order:
        for t in seq.triggers_from(key):
            if t.to:
                d = delay[key] + (t.after_seconds or 0)
                delay[t.to] = min(delay.get(t.to, d), d)
    reach = {k: _reachable(seq, k) for k in order}
    for key in order:
        action = seq.actions[key]
        upstream = sum(at.get(k, 0) for k in order if key in reach[k])  # leads that may still pass through key
        provider = action.provider
        cap = sum(daily_capacity(action.type, a.limits) for a in accounts if a.provider == provider) if provider else 10**9
        cap = max(cap - other.get(action.type, 0), 0) if provider else cap
        if provider is None:
            out.append(StepPlan(key, action.type, at.get(key, 0), 0, cap, now, 0.0))
            continue
        days = upstream / cap if cap else math.inf
        finish = None if math.isinf(days) else now + timedelta(seconds=delay[key]) + timedelta(days=days)
        out.append(StepPlan(key, action.type, at.get(key, 0), upstream, cap, finish, days))
        if not cap:
            warnings.append(f"{key}: no {provider} capacity left on accounts {', '.join(seq.accounts)}")
        elif days > horizon_days:
            warnings.append(f"{key}: needs up to {upstream} {action.type} sends but the accounts give {cap}/day: "
                            f"{days:.1f} days (> {horizon_days:g}); add accounts of provider {provider} or slow "
                            f"enrolment")
    return out, warnings


def _reachable(seq: SequenceDef, start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        k = stack.pop()
        if k not in seen:
            seen.add(k)
            stack += [t.to for t in seq.triggers_from(k) if t.to]
    return seen

"""Pacing math: GCRA token buckets over rolling windows, and full-jitter backoff. Pure functions."""
from __future__ import annotations

import math
import random

WINDOWS = {"per_5min": 300, "per_15min": 900, "per_hour": 3600, "per_day": 86400, "per_week": 604800}

# Documented provider limits (DESIGN section 6); accounts may override per action type.
DEFAULT_LIMITS: dict[str, dict[str, int]] = {
    "FOLLOW_ON_TWITTER": {"per_15min": 50, "per_day": 400},
    "UNFOLLOW_ON_TWITTER": {"per_15min": 50, "per_day": 400},
    "SEND_TWITTER_DM": {"per_15min": 200, "per_day": 1000},
    "SEND_CONNECTION_REQUEST": {"per_week": 100},
    "SEND_LINKEDIN_DM": {"per_day": 100},
    "SEND_XMTP_DM": {"per_5min": 3000},
    "SEND_EMAIL": {"per_day": 200},
}
DEFAULT_HEADROOM = 0.9


def effective_limits(action_type: str, overrides: dict | None, headroom: float = DEFAULT_HEADROOM) -> dict[str, int]:
    limits = dict(DEFAULT_LIMITS.get(action_type, {}))
    limits.update((overrides or {}).get(action_type, {}))
    return {w: max(1, math.floor(n * headroom)) for w, n in limits.items() if w in WINDOWS}


# The state of one (account, action type): a GCRA theoretical arrival time per window (the token bucket: a
# burst of up to L, refilled at L per W) plus "log", the sends of the longest window as [time, count] pairs
# (one pair per batch, so a few hundred at most). GCRA alone lets a rolling window hold up to 2L (a full burst
# on top of the refill); the log caps every rolling window at L exactly, which also keeps every fixed provider
# window (X resets every 15 minutes) under its limit.
LOG = "log"


def _recent(state: dict, window: str, now: float) -> int:
    since = now - WINDOWS[window]
    return sum(n for t, n in state.get(LOG, ()) if t > since)


def available(tats: dict, limits: dict[str, int], now: float) -> int:
    """How many sends every window allows at ``now`` (epoch seconds)."""
    n = 10**9
    for window, limit in limits.items():
        period = WINDOWS[window] / limit
        tat = max(tats.get(window, 0.0), now)
        n = min(n, max(0, math.floor((now + WINDOWS[window] - tat) / period + 1e-9)), limit - _recent(tats, window, now))
    return max(n, 0)


def reserve(tats: dict, limits: dict[str, int], now: float, count: int) -> dict:
    """The state after ``count`` sends at ``now``: new arrival times, the sends logged, the old ones dropped."""
    out = dict(tats)
    for window, limit in limits.items():
        period = WINDOWS[window] / limit
        out[window] = max(tats.get(window, 0.0), now) + count * period
    if count and limits:
        horizon = now - max(WINDOWS[w] for w in limits)
        out[LOG] = [[t, n] for t, n in tats.get(LOG, ()) if t > horizon] + [[now, count]]
    return out


def refund(tats: dict, limits: dict[str, int], now: float, count: int) -> dict:
    """Give back ``count`` reserved sends that never reached the provider."""
    if not count or not limits:
        return tats
    out = dict(tats)
    for window, limit in limits.items():
        out[window] = max(tats.get(window, 0.0) - count * WINDOWS[window] / limit, 0.0)
    out[LOG] = list(tats.get(LOG, ())) + [[now, -count]]
    return out


def warmed_up(overrides: dict | None, action_type: str, warmup: dict | None, days_sending: float | None) -> dict:
    """Limits overrides with the warm-up ramp applied: the daily cap is start + increase x whole days since the
    account's first send (never above the configured or documented daily cap)."""
    if not warmup:
        return overrides or {}
    out = {k: dict(v) for k, v in (overrides or {}).items()}
    ramp = warmup["start_per_day"] + warmup["increase_per_day"] * int(max(days_sending or 0, 0))
    base = {**DEFAULT_LIMITS.get(action_type, {}), **out.get(action_type, {})}
    out[action_type] = {**out.get(action_type, {}), "per_day": min(ramp, base.get("per_day", ramp))}
    return out


def shrink_to(tats: dict[str, float], limits: dict[str, int], now: float, remaining: int,
              window: str = "per_15min") -> dict[str, float]:
    """The provider says only ``remaining`` are left in ``window``: make our bucket agree (never grow it)."""
    if window not in limits:
        return tats
    period = WINDOWS[window] / limits[window]
    floor_tat = now + WINDOWS[window] - remaining * period
    out = dict(tats)
    out[window] = max(tats.get(window, 0.0), floor_tat)
    return out


def backoff_seconds(attempt: int, base: float = 60.0, cap: float = 6 * 3600.0, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**(attempt-1)))."""
    rng = rng or random
    return rng.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))

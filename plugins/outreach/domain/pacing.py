"""Pacing math: GCRA token buckets over rolling windows, and full-jitter backoff. Pure functions."""
from __future__ import annotations

import math
import random

WINDOWS = {"per_15min": 900, "per_hour": 3600, "per_day": 86400, "per_week": 604800}

# Documented provider limits (DESIGN section 6); accounts may override per action type.
DEFAULT_LIMITS: dict[str, dict[str, int]] = {
    "FOLLOW_ON_TWITTER": {"per_15min": 50, "per_day": 400},
    "UNFOLLOW_ON_TWITTER": {"per_15min": 50, "per_day": 400},
    "SEND_TWITTER_DM": {"per_15min": 200, "per_day": 1000},
    "SEND_CONNECTION_REQUEST": {"per_week": 100},
    "SEND_LINKEDIN_DM": {"per_day": 100},
    "SEND_XMTP_DM": {"per_15min": 3000},
    "SEND_EMAIL": {"per_day": 200},
}
DEFAULT_HEADROOM = 0.9


def effective_limits(action_type: str, overrides: dict | None, headroom: float = DEFAULT_HEADROOM) -> dict[str, int]:
    limits = dict(DEFAULT_LIMITS.get(action_type, {}))
    limits.update((overrides or {}).get(action_type, {}))
    return {w: max(1, math.floor(n * headroom)) for w, n in limits.items() if w in WINDOWS}


def available(tats: dict[str, float], limits: dict[str, int], now: float) -> int:
    """How many sends every bucket allows at ``now`` (epoch seconds). A bucket of L per W holds up to L."""
    n = 10**9
    for window, limit in limits.items():
        period = WINDOWS[window] / limit
        tat = max(tats.get(window, 0.0), now)
        n = min(n, max(0, math.floor((now + WINDOWS[window] - tat) / period + 1e-9)))
    return n


def reserve(tats: dict[str, float], limits: dict[str, int], now: float, count: int) -> dict[str, float]:
    """New theoretical arrival times after ``count`` sends at ``now``."""
    out = dict(tats)
    for window, limit in limits.items():
        period = WINDOWS[window] / limit
        out[window] = max(tats.get(window, 0.0), now) + count * period
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

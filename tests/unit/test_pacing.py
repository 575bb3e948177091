"""GCRA budgets and backoff (outreach.domain.pacing): pure math, no I/O."""
from __future__ import annotations

import random

import pytest

from outreach.domain import pacing

NOW = 1_767_603_600.0  # 2026-01-05T09:00:00Z
FOLLOW = {"per_15min": 45, "per_day": 360}  # X follow limits at 90% headroom


# -- effective limits -------------------------------------------------------------------------------
def test_effective_limits_apply_headroom_to_documented_limits():
    assert pacing.effective_limits("FOLLOW_ON_TWITTER", None) == FOLLOW
    assert pacing.effective_limits("SEND_TWITTER_DM", None) == {"per_15min": 180, "per_day": 900}


def test_effective_limits_overrides_and_floor():
    got = pacing.effective_limits("FOLLOW_ON_TWITTER", {"FOLLOW_ON_TWITTER": {"per_15min": 10, "per_hour": 1}})
    assert got == {"per_15min": 9, "per_day": 360, "per_hour": 1}  # never rounded down to zero
    assert pacing.effective_limits("CHECK_FOR_REPLY", None) == {}
    assert pacing.effective_limits("FOLLOW_ON_TWITTER", None, headroom=1.0) == {"per_15min": 50, "per_day": 400}


# -- available ---------------------------------------------------------------------------------------
def test_an_empty_bucket_allows_the_smallest_limit():
    assert pacing.available({}, FOLLOW, NOW) == 45
    assert pacing.available({}, {"per_15min": 45, "per_day": 10}, NOW) == 10


def test_available_never_exceeds_the_limit_after_a_long_idle():
    tats = pacing.reserve({}, FOLLOW, NOW, 45)
    assert pacing.available(tats, FOLLOW, NOW + 7 * 86400) == 45


def test_reserve_spends_and_refills_one_per_period():
    tats = pacing.reserve({}, FOLLOW, NOW, 45)
    assert tats["per_15min"] == pytest.approx(NOW + 900)
    assert tats["per_day"] == pytest.approx(NOW + 45 * 240)
    assert pacing.available(tats, FOLLOW, NOW) == 0
    # a full burst is spent for the whole rolling window (the log), then comes back whole
    assert pacing.available(tats, FOLLOW, NOW + 899) == 0
    assert pacing.available(tats, FOLLOW, NOW + 900) == 45


def test_partial_spend_leaves_the_rest():
    tats = pacing.reserve({}, FOLLOW, NOW, 30)
    assert pacing.available(tats, FOLLOW, NOW) == 15
    tats = pacing.reserve(tats, FOLLOW, NOW, 15)
    assert pacing.available(tats, FOLLOW, NOW) == 0


def test_the_daily_bucket_binds_when_the_short_one_refills():
    tats, t, sent = {}, NOW, 0
    for _ in range(20):  # 20 windows of 15 minutes, spending everything each time
        n = pacing.available(tats, FOLLOW, t)
        tats = pacing.reserve(tats, FOLLOW, t, n)
        sent += n
        t += 900
    # the daily bucket's burst (360) plus its refill (one per 240 s) bounds the total ...
    assert sent <= 360 + (t - 900 - NOW) // 240 + 1
    # ... and once the daily burst is spent, the short window no longer gives its full 45
    assert pacing.available(tats, FOLLOW, t) < 45


def _greedy_sends(limits: dict, start: float, step: float, duration: float) -> list[float]:
    """Send whenever the bucket allows, polling every ``step`` seconds; return the send times."""
    tats, times, t = {}, [], start
    while t < start + duration:
        n = pacing.available(tats, limits, t)
        if n:
            tats = pacing.reserve(tats, limits, t, n)
            times += [t] * n
        t += step
    return times


def test_no_rolling_window_ever_holds_more_than_its_limit():
    limits = pacing.effective_limits("SEND_CONNECTION_REQUEST", None)  # {"per_week": 90}
    week = pacing.WINDOWS["per_week"]
    times = _greedy_sends(limits, NOW, 3600, 2 * week)
    worst = max(sum(1 for x in times if s <= x < s + week) for s in times)
    assert worst <= limits["per_week"]


def test_reserve_from_a_past_tat_starts_from_now():
    old = {"per_15min": NOW - 10_000, "per_day": NOW - 100_000}
    tats = pacing.reserve(old, FOLLOW, NOW, 1)
    assert tats["per_15min"] == pytest.approx(NOW + 20)
    assert tats["per_day"] == pytest.approx(NOW + 240)


def test_reserve_does_not_mutate_its_input():
    tats = {"per_15min": NOW}
    pacing.reserve(tats, FOLLOW, NOW, 3)
    assert tats == {"per_15min": NOW}


# -- shrink_to ---------------------------------------------------------------------------------------
def test_shrink_to_makes_the_bucket_agree_with_the_provider():
    tats = pacing.shrink_to({}, FOLLOW, NOW, remaining=5)
    assert pacing.available(tats, FOLLOW, NOW) == 5
    assert pacing.available(pacing.shrink_to({}, FOLLOW, NOW, remaining=0), FOLLOW, NOW) == 0


def test_shrink_to_never_grows_the_bucket():
    spent = pacing.reserve({}, FOLLOW, NOW, 44)  # 1 left
    assert pacing.shrink_to(spent, FOLLOW, NOW, remaining=30) == spent
    assert pacing.available(pacing.shrink_to(spent, FOLLOW, NOW, remaining=30), FOLLOW, NOW) == 1


def test_shrink_to_ignores_a_window_the_limits_do_not_have():
    tats = {"per_15min": NOW}
    assert pacing.shrink_to(tats, {"per_day": 100}, NOW, remaining=0) == tats
    assert pacing.shrink_to(tats, FOLLOW, NOW, remaining=0, window="per_week") == tats


# -- backoff -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("attempt,ceiling", [(0, 60), (1, 60), (2, 120), (3, 240), (6, 1920), (9, 15360), (10, 6 * 3600),
                                             (50, 6 * 3600)])
def test_backoff_stays_within_full_jitter_bounds(attempt, ceiling):
    rng = random.Random(attempt)
    samples = [pacing.backoff_seconds(attempt, rng=rng) for _ in range(500)]
    assert all(0 <= s <= ceiling for s in samples)
    assert max(samples) > ceiling * 0.9  # the jitter covers the whole range
    assert min(samples) < ceiling * 0.1


def test_backoff_respects_base_and_cap_and_is_deterministic_with_a_seeded_rng():
    a = [pacing.backoff_seconds(4, base=10, cap=50, rng=random.Random(7)) for _ in range(3)]
    b = [pacing.backoff_seconds(4, base=10, cap=50, rng=random.Random(7)) for _ in range(3)]
    assert a == b
    assert all(0 <= x <= 50 for x in a)
    assert all(0 <= pacing.backoff_seconds(2, base=10, cap=1e9, rng=random.Random(i)) <= 20 for i in range(100))

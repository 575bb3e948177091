import random

import pytest

from outreach.domain.experiments import decide, z_test_p
from outreach.domain.intent import classify
from outreach.domain.model import Action, Variant
from outreach.domain.templates import choose_variant, render, spin


def test_variant_split_is_stable_and_within_two_percent_of_weights():
    action = Action(key="dm", type="SEND_TWITTER_DM", message="base",
                    variants=(Variant("a", 30, "A"), Variant("b", 20, "B")))
    picks = [choose_variant(action, i) for i in range(10_000)]
    assert picks == [choose_variant(action, i) for i in range(10_000)]  # stable across runs
    share = {arm: picks.count(arm) / len(picks) for arm in ("control", "a", "b")}
    assert abs(share["control"] - 0.50) < 0.02
    assert abs(share["a"] - 0.30) < 0.02
    assert abs(share["b"] - 0.20) < 0.02


def test_winner_overrides_split_for_unassigned_leads():
    action = Action(key="dm", type="SEND_TWITTER_DM", message="base", variants=(Variant("a", 50, "A"),))
    assert {choose_variant(action, i, winner="a") for i in range(100)} == {"a"}


def test_winner_never_declared_below_min_sample():
    rng = random.Random(1)
    for _ in range(500):
        n_a, n_b = rng.randint(0, 99), rng.randint(0, 500)
        arms = {"control": (n_a, n_a), "a": (n_b, 0)}  # an overwhelming difference, but too few sends
        assert decide(arms, min_sample=100) is None


def test_winner_declared_when_significant_and_not_when_noise():
    assert decide({"control": (400, 40), "a": (400, 80)}, min_sample=100).winner == "a"
    assert decide({"control": (400, 40), "a": (400, 44)}, min_sample=100) is None
    # three arms: the best must beat both others after Bonferroni
    assert decide({"control": (500, 50), "a": (500, 100), "b": (500, 95)}, min_sample=100) is None


def test_z_test_p_values():
    assert z_test_p(80, 400, 40, 400) < 0.001
    assert z_test_p(40, 400, 80, 400) > 0.99
    assert z_test_p(0, 0, 1, 1) == 1.0


def test_spintax_is_deterministic_per_lead_and_leaves_jinja_alone():
    src = "{Hi|Hey|Hello} {{ first_name|title }}, {great|nice} post"
    outs = {spin(src, f"{i}:dm") for i in range(50)}
    assert len(outs) > 1  # leads differ
    assert spin(src, "7:dm") == spin(src, "7:dm")  # one lead always the same
    assert all("{{ first_name|title }}" in o for o in outs)
    assert render(src, {"first_name": "ada"}, seed="7:dm").split()[1] == "Ada,"


@pytest.mark.parametrize("text,intent", [
    ("stop", "unsubscribe"), ("Please unsubscribe me", "unsubscribe"), ("remove me from your list", "unsubscribe"),
    ("Not interested, thanks", "objection"), ("Not right now, but thanks.", "objection"),
    ("Sounds interesting, tell me more.", "positive"), ("Sure, happy to chat.", "positive"),
    ("Who is this?", "neutral"), ("", "neutral"),
])
def test_reply_intent(text, intent):
    assert classify(text) == intent

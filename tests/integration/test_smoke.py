from outreach.clock import parse_now
from outreach.engine.tick import run_tick

from tests.helpers import setup


def test_follow_then_followback_then_dm(engine, sandbox):
    setup(engine, n=5)
    s = run_tick(engine, parse_now("2026-01-05T09:00:00Z"))
    assert s["advance_x"]["sent"] == 5
    assert sandbox.summary()["follows"] == 5

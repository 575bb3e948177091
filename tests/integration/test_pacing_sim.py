"""Pacing against the sandbox, which enforces X's limits with fixed 15-minute and daily windows."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from outreach.domain import pacing
from outreach.engine import tick

from tests.helpers import setup

START = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)  # the leads are due from 09:00
ONE_DM = """
name: pace-dm
accounts: [x-main]
start: dm
actions:
  dm: {type: SEND_TWITTER_DM, message: "hi {{ first_name }}"}
triggers:
  - {from: dm, trigger: END}
"""


def leads(n, offset=100000):
    return [{"name": f"Lead {i}", "twitter_id": str(offset + i)} for i in range(n)]


def run_ticks(engine, sandbox, ticks, minutes=15):
    acc = tick.accounts(engine)[0]
    for i in range(ticks):
        now = START + timedelta(minutes=i * minutes)
        sandbox.clock(now.isoformat())
        tick.advance(engine, [acc.id], now)


def dm_windows(sandbox):
    w = Counter()
    for c in sandbox.calls():
        if c["path"].endswith("/messages") and c["effect"]:
            at = datetime.fromisoformat(c["at"].replace("Z", "+00:00")).timestamp()
            w[("15min", int(at // 900))] += 1
            w[("day", int(at // 86400))] += 1
    return w


def test_a_simulated_day_never_exceeds_a_window_and_uses_the_budget(engine, sandbox):
    setup(engine, ONE_DM, leads=leads(1500))
    run_ticks(engine, sandbox, ticks=30, minutes=10)  # ticks more often than the provider window
    calls = sandbox.calls()
    assert not [c for c in calls if c["status"] == 429]
    w = dm_windows(sandbox)
    assert max(n for (k, _), n in w.items() if k == "15min") <= 200
    assert max(n for (k, _), n in w.items() if k == "day") <= 1000
    eff = pacing.effective_limits("SEND_TWITTER_DM", None)  # 180 per 15 min, 900 per day
    sent = sum(1 for c in calls if c["path"].endswith("/messages") and c["effect"])
    assert sent >= 0.9 * eff["per_day"]  # 5 hours of ticks: the daily budget is the binding one


def test_a_429_storm_and_20_percent_5xx_end_every_lead_sent_or_failed_with_a_reason(engine, sandbox):
    # first a storm of 429s from a limit we cannot see, then 20% 503s: blocks and retries, never a loss or a double
    setup(engine, ONE_DM, leads=leads(600))
    acc = tick.accounts(engine)[0]
    for i in range(60):
        if i == 0:
            sandbox.faults(error_rate=0.5, mode="429", seed=3, paths=["dm"])
        if i == 8:
            sandbox.faults(error_rate=0.2, mode="500", seed=3, paths=["dm"])
        now = START + timedelta(minutes=15 * i)
        sandbox.clock(now.isoformat())
        tick.advance(engine, [acc.id], now)
    calls = sandbox.calls()
    assert any(c["status"] == 429 for c in calls)
    with engine.connect() as c:
        status = dict(c.execute(sa.text("SELECT status, count(*) FROM enrollments GROUP BY status")).all())
        reasons = c.execute(sa.text("SELECT ended_reason FROM enrollments WHERE status = 'FAILED'")).scalars().all()
        blocked = c.execute(sa.text("SELECT count(*) FROM events WHERE kind = 'RETRY_SCHEDULED'")).scalar()
    assert set(status) <= {"COMPLETED", "FAILED", "NEEDS_REVIEW"}, status
    assert sum(status.values()) == 600
    assert all(reasons)  # every failure says why
    assert blocked > 0
    dms = [c for c in calls if c["path"].endswith("/messages") and c["effect"]]
    assert len(dms) == len({c["target_id"] for c in dms})  # never twice


def test_send_window_in_the_leads_timezone_defers_and_keeps_the_place(engine, sandbox):
    accounts = """
    accounts:
      - {name: x-main, provider: x, conn_id: x_main, user_id: "1001", timezone: Europe/Berlin,
         send_window: {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}}
    """
    people = [{"name": "Tokyo Lead", "twitter_id": "100001", "timezone": "Asia/Tokyo"},
              {"name": "Berlin Lead", "twitter_id": "100002"},  # no timezone: the account's
              {"name": "NY Lead", "twitter_id": "100003", "timezone": "America/New_York"}]
    setup(engine, ONE_DM, leads=people, accounts_yaml=accounts, now="2026-01-05T07:00:00Z")
    acc = tick.accounts(engine)[0]

    def at(iso):
        sandbox.clock(iso)
        return tick.advance(engine, [acc.id], datetime.fromisoformat(iso))

    at("2026-01-05T07:00:00+00:00")  # 16:00 Tokyo (open), 08:00 Berlin (closed), 02:00 New York (closed)
    assert [c["target_id"] for c in sandbox.calls() if c["effect"]] == ["100001"]
    with engine.connect() as c:
        due = dict(c.execute(sa.text("""SELECT i.value, e.next_run_at FROM enrollments e
            JOIN identities i ON i.person_id = e.person_id AND i.kind = 'twitter' WHERE e.status = 'ACTIVE'""")).all())
        deferred = c.execute(sa.text("SELECT count(*) FROM events WHERE kind = 'DEFERRED' AND reason = 'send_window'")).scalar()
    assert due["100002"] == datetime(2026, 1, 5, 8, tzinfo=timezone.utc)  # 09:00 Berlin
    assert due["100003"] == datetime(2026, 1, 5, 14, tzinfo=timezone.utc)  # 09:00 New York
    assert deferred == 2
    at("2026-01-05T08:00:00+00:00")
    at("2026-01-05T14:00:00+00:00")
    assert sorted(c["target_id"] for c in sandbox.calls() if c["effect"]) == ["100001", "100002", "100003"]


def test_warm_up_ramp_caps_a_new_account(engine, sandbox):
    accounts = """
    accounts:
      - {name: x-main, provider: x, conn_id: x_main, user_id: "1001",
         warmup: {start_per_day: 10, increase_per_day: 5}}
    """
    setup(engine, ONE_DM, leads=leads(100), accounts_yaml=accounts)
    acc_id = tick.accounts(engine)[0].id
    sent = []
    for day in range(3):
        for hour in (0, 6, 12, 18):
            now = START + timedelta(days=day, hours=hour)
            sandbox.clock(now.isoformat())
            tick.advance(engine, [acc_id], now)
        sent.append(sum(1 for c in sandbox.calls() if c["effect"]))
    # day 1: 10*0.9 -> 9; day 2: 15*0.9 -> 13; day 3: 20*0.9 -> 18 (rolling 24h windows)
    assert sent == [9, 9 + 13, 9 + 13 + 18]


def test_random_gap_spaces_consecutive_sends(engine, sandbox):
    accounts = """
    accounts:
      - {name: x-main, provider: x, conn_id: x_main, user_id: "1001", spacing: {min_seconds: 0, max_seconds: 0}}
    """
    setup(engine, ONE_DM, leads=leads(3), accounts_yaml=accounts)
    with engine.begin() as c:  # 0.2-0.3 s, so the test stays fast; the YAML takes whole seconds
        c.execute(sa.text("""UPDATE sender_accounts SET spacing = '{"min_seconds": 0.2, "max_seconds": 0.3}'"""))
    import time as _time

    started = _time.monotonic()
    sandbox.clock(START.isoformat())
    tick.advance(engine, [tick.accounts(engine)[0].id], START)
    assert sum(1 for c in sandbox.calls() if c["effect"]) == 3
    assert _time.monotonic() - started >= 0.4  # two gaps between three sends


def test_a_simulated_week_stays_under_every_window_and_never_idles_with_budget(engine, sandbox):
    from outreach.engine.budget import Budget

    setup(engine, ONE_DM, leads=leads(7000))
    acc = tick.accounts(engine)[0]
    idle = 0
    for i in range(7 * 24):  # hourly ticks for a week
        now = START + timedelta(hours=i)
        sandbox.clock(now.isoformat())
        tick.advance(engine, [acc.id], now)
        with engine.begin() as c:
            due = c.execute(sa.text("SELECT count(*) FROM enrollments WHERE status = 'ACTIVE' "
                                    "AND next_run_at <= :now"), {"now": now}).scalar()
            if due and Budget(c, acc.id, "SEND_TWITTER_DM", acc.limits, now).available() > 0:
                idle += 1
            c.rollback()
    w = dm_windows(sandbox)
    assert not [c for c in sandbox.calls() if c["status"] == 429]
    assert max(n for (k, _), n in w.items() if k == "15min") <= 200
    assert max(n for (k, _), n in w.items() if k == "day") <= 1000
    sent = sum(n for (k, _), n in w.items() if k == "day")
    allowed = 7 * pacing.effective_limits("SEND_TWITTER_DM", None)["per_day"]  # 6300: the daily cap binds
    assert sent >= 0.9 * allowed and idle == 0

"""Pacing benchmark: a simulated week of 15-minute ticks against the sandbox, which enforces X's limits.

    .venv/bin/python bench/pacing/run.py               # 7 days, 672 ticks (about a minute)
    .venv/bin/python bench/pacing/run.py --days 2

Work always waits (more leads than a week of budget), so every tick should send what the budget allows.
Reports, per action type: sends, the allowed number (the effective limits at headroom over the period),
the achieved share, limit violations as counted by the sandbox (429s and windows over the provider limit), and
idle ticks with budget left and work waiting. Exits 1 on any violation or a share under 90%.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
venv_python = ROOT / ".venv" / "bin" / "python"
if venv_python.exists() and Path(sys.prefix).resolve() != venv_python.parents[1].resolve():
    os.execv(str(venv_python), [str(venv_python), *sys.argv])
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))

import json  # noqa: E402

import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from outreach.domain import pacing  # noqa: E402
from outreach.engine import tick  # noqa: E402
from outreach.engine.budget import Budget  # noqa: E402
from outreach.sandbox.server import start_in_thread  # noqa: E402

PROVIDER_LIMITS = {"FOLLOW_ON_TWITTER": {"per_15min": 50, "per_day": 400},
                   "SEND_TWITTER_DM": {"per_15min": 200, "per_day": 1000}}
SEQUENCES = {
    "pace-follow": ("FOLLOW_ON_TWITTER", 3000, "follow: {type: FOLLOW_ON_TWITTER}"),
    "pace-dm": ("SEND_TWITTER_DM", 8000, 'step: {type: SEND_TWITTER_DM, message: "hi {{ first_name }}"}'),
}


def fresh_database(name: str) -> str:
    from outreach.store.db import STATE_DIR, embedded_url
    from outreach.store.db import fresh_database as fresh

    return fresh(os.environ.get("OUTREACH_BENCH_DATABASE_URL") or embedded_url(STATE_DIR / "bench-pg"), name)


def setup(engine, start: datetime) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from tests.helpers import setup as helper_setup

    offset = 100000
    for name, (_type, n, action_yaml) in SEQUENCES.items():
        key = action_yaml.split(":")[0]
        seq = f"""
name: {name}
accounts: [x-main]
start: {key}
actions:
  {action_yaml}
triggers:
  - {{from: {key}, trigger: END}}
"""
        leads = [{"name": f"Lead {i}", "twitter_id": str(offset + i)} for i in range(n)]
        offset += n
        helper_setup(engine, seq, leads=leads, now=start.isoformat())


def main() -> int:
    import logging

    logging.getLogger("outreach").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--tick-minutes", type=int, default=15)
    args = ap.parse_args()
    server, base_url = start_in_thread(seed=42)
    os.environ["AIRFLOW_CONN_X_MAIN"] = json.dumps({"conn_type": "x", "host": base_url, "password": "sandbox-1001"})
    engine = sa.create_engine(fresh_database("outreach_bench_pacing"))
    start = datetime(2026, 1, 5, 0, 0, tzinfo=timezone.utc)
    setup(engine, start)
    acc = tick.accounts(engine)[0]
    ticks = int(args.days * 24 * 60 / args.tick_minutes)
    sent: Counter = Counter()
    idle: Counter = Counter()
    t0 = time.monotonic()
    for i in range(ticks):
        now = start + timedelta(minutes=i * args.tick_minutes)
        requests.post(f"{base_url}/_sandbox/clock", json={"now": now.isoformat()}, timeout=5)
        counts = tick.advance(engine, [acc.id], now)
        # idle with budget left: work due, budget available after the tick, and nothing more was sent
        with engine.begin() as conn:
            due = dict(conn.execute(sa.text("""
                SELECT a.type, count(*) FROM enrollments e JOIN sequence_actions a
                  ON a.version_id = e.version_id AND a.key = e.current_step
                WHERE e.status = 'ACTIVE' AND e.phase = 'pending' AND e.next_run_at <= :now GROUP BY a.type"""),
                {"now": now}).all())
            for action_type in PROVIDER_LIMITS:
                left = Budget(conn, acc.id, action_type, acc.limits, now).available()
                if due.get(action_type) and left > 0:
                    idle[action_type] += 1
            conn.rollback()
        if i % 96 == 0:
            print(f"  day {i // 96 + 1}: {counts.get('sent', 0)} sent this tick", flush=True)
    wall = time.monotonic() - t0
    calls = requests.get(f"{base_url}/_sandbox/calls", timeout=30).json()["calls"]
    server.shutdown()
    endpoint = {"follow": "FOLLOW_ON_TWITTER", "dm": "SEND_TWITTER_DM"}
    windows: dict = defaultdict(Counter)
    too_many = Counter()
    for c in calls:
        kind = "dm" if c["path"].endswith("/messages") else "follow" if c["path"].endswith("/following") else None
        if kind is None or c["method"] != "POST":
            continue
        action_type = endpoint[kind]
        if c["status"] == 429:
            too_many[action_type] += 1
        if c["effect"]:
            sent[action_type] += 1
            at = datetime.fromisoformat(c["at"].replace("Z", "+00:00")).timestamp()
            windows[action_type][("15min", int(at // 900))] += 1
            windows[action_type][("day", int(at // 86400))] += 1
    print(f"\n{ticks} ticks of {args.tick_minutes} min ({args.days:g} days) in {wall:.0f}s wall\n")
    head = (f"{'action':<20} {'sent':>7} {'allowed':>8} {'share':>7} {'429s':>5} {'windows over limit':>19} "
            f"{'idle ticks w/ budget':>21}")
    print(head + "\n" + "-" * len(head))
    ok = True
    for action_type, limits in PROVIDER_LIMITS.items():
        eff = pacing.effective_limits(action_type, None)
        per_tick = eff["per_15min"] * args.tick_minutes / 15
        allowed = int(min(per_tick * ticks, eff["per_day"] * args.days))
        over = sum(1 for (w, _), n in windows[action_type].items()
                   if n > limits["per_15min" if w == "15min" else "per_day"])
        share = sent[action_type] / allowed if allowed else 0
        ok &= over == 0 and too_many[action_type] == 0 and share >= 0.9
        print(f"{action_type:<20} {sent[action_type]:>7} {allowed:>8} {share:>7.1%} {too_many[action_type]:>5} "
              f"{over:>19} {idle[action_type]:>21}")
    print("\nallowed = the effective limits (90% headroom) over the period; sandbox windows are fixed 15-minute "
          "and daily windows, as X's")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

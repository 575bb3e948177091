"""A/B throughput of the advance cycle between two commits, measured side by side in one invocation.

    .venv/bin/python bench/ab/advance_ab.py BEFORE_REV [AFTER_REV=HEAD] [--leads 20000] [--rounds 3]

Each revision is checked out into a temporary git worktree; every round runs one subprocess per revision,
alternating, each on a fresh database (that revision's migrations), advancing the same number of due leads of a
one-step DM sequence on one account through the real engine (claim, gate, intent, record) with an in-process
no-op provider. Reports leads/s per round and the ratio of medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = str(ROOT / ".venv" / "bin" / "python")

CHILD = r'''
import json, sys, time, types
from datetime import datetime, timezone
sys.path[:0] = [sys.argv[1] + "/plugins", sys.argv[1]]
import sqlalchemy as sa
from outreach.engine.advance import AdvanceConfig, advance_account
from outreach.engine import tick
from outreach.providers.base import SendResult
from tests.helpers import setup

url, n = sys.argv[2], int(sys.argv[3])
engine = sa.create_engine(url)
seq = """
name: ab
accounts: [x-main]
allow_parallel: true
start: dm
actions:
  dm: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}"}
triggers:
  - {from: dm, trigger: END}
"""
accounts = """
accounts:
  - {name: x-main, provider: x, conn_id: x_main, user_id: "1001",
     limits: {SEND_TWITTER_DM: {per_15min: 10000000, per_day: 10000000}}}
"""
try:
    setup(engine, seq, leads=[{"name": f"Lead {i}", "twitter_id": str(100000 + i)} for i in range(n)],
          accounts_yaml=accounts)
except Exception:  # an older revision may not know allow_parallel
    setup(engine, seq.replace("allow_parallel: true\n", ""),
          leads=[{"name": f"Lead {i}", "twitter_id": str(100000 + i)} for i in range(n)], accounts_yaml=accounts)

class Noop:
    provider = "x"
    def __init__(self):
        self.client = types.SimpleNamespace(last_rate={}, timeout=1.0)
    def perform(self, action_type, sender, recipient, text, idempotency_key, **kw):
        return SendResult(provider_ref=f"noop:{idempotency_key}")
    def reconcile(self, *a, **kw):
        return "absent", None

acc = tick.accounts(engine)[0]
now = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
t = time.perf_counter()
c = advance_account(engine, acc, Noop(), now=now, config=AdvanceConfig(batch_size=500))
dt = time.perf_counter() - t
print(json.dumps({"sent": c["sent"], "seconds": dt}))
'''


def worktree(rev: str, tmp: Path) -> Path:
    path = tmp / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), rev], check=True,
                   capture_output=True)
    return path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after", nargs="?", default="HEAD")
    ap.add_argument("--leads", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "plugins"))
    from outreach.store.db import STATE_DIR, embedded_url, recreate_database

    base = os.environ.get("OUTREACH_BENCH_DATABASE_URL") or embedded_url(STATE_DIR / "bench-pg")
    tmp = Path(tempfile.mkdtemp(prefix="ab-"))
    trees = {name: worktree(rev, tmp) for name, rev in (("before", args.before), ("after", args.after))}
    rates: dict[str, list[float]] = {"before": [], "after": []}
    try:
        for r in range(args.rounds):
            for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
                url = recreate_database(base, f"outreach_ab_{name}")
                mig = subprocess.run([PY, "-c", "import sys; sys.path[:0]=[sys.argv[1]+'/plugins'];"
                                      "import sqlalchemy as sa; from outreach.store import migrate;"
                                      "migrate.upgrade(sa.create_engine(sys.argv[2]))", str(trees[name]), url],
                                     capture_output=True, text=True)
                if mig.returncode:
                    raise SystemExit(mig.stderr)
                out = subprocess.run([PY, "-c", CHILD, str(trees[name]), url, str(args.leads)],
                                     capture_output=True, text=True, cwd=str(trees[name]))
                if out.returncode:
                    raise SystemExit(out.stderr[-3000:])
                res = json.loads(out.stdout.strip().splitlines()[-1])
                assert res["sent"] == args.leads, res
                rates[name].append(args.leads / res["seconds"])
                print(f"round {r + 1} {name:<6} {rates[name][-1]:8.0f} leads/s", flush=True)
    finally:
        for p in trees.values():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(p)], capture_output=True)
    b, a = statistics.median(rates["before"]), statistics.median(rates["after"])
    print(f"\nbefore {args.before}: {b:.0f} leads/s   after {args.after}: {a:.0f} leads/s   "
          f"after/before = {a / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

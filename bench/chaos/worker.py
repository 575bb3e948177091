"""One chaos worker: loops the engine's advance for sender accounts on the real clock until nothing is left.

    python bench/chaos/worker.py --account x-main --lease-seconds 3 --batch-size 50 --client-timeout 0.5

Exactly the production code path (``outreach.engine.advance.advance_account`` with the X client built from the
account's Airflow connection); only the knobs differ: a short lease, a short HTTP timeout (a provider call must
end well inside the lease) and a short retry backoff, so that a SIGKILLed worker's leads are taken over, and
reconciled, within seconds. Exits 0 once no enrollment of its accounts is ACTIVE and pending; on the way it
prints one JSON line of counts per advance pass that did something (a SIGKILL loses nothing but these lines).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins"))

import sqlalchemy as sa  # noqa: E402

from outreach.clock import parse_now  # noqa: E402
from outreach.engine.advance import AdvanceConfig, advance_account  # noqa: E402
from outreach.engine.tick import accounts  # noqa: E402
from outreach.providers import registry  # noqa: E402
from outreach.store.db import get_engine  # noqa: E402

PENDING_SQL = sa.text("""
SELECT count(*) FROM enrollments e JOIN sender_accounts a ON a.id = e.account_id
WHERE a.name = ANY(:names) AND e.status = 'ACTIVE' AND e.phase = 'pending'
""")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--account", action="append", required=True, help="sender account name (repeatable)")
    p.add_argument("--lease-seconds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--client-timeout", type=float, default=0.5, help="HTTP timeout of each provider call (s)")
    p.add_argument("--backoff-base", type=float, default=0.2, help="retry backoff base (s)")
    p.add_argument("--max-seconds", type=float, default=300, help="give up after this long")
    args = p.parse_args(argv)

    engine = get_engine(os.environ["OUTREACH_DATABASE_URL"])
    rng = random.Random(os.getpid())
    cfg = AdvanceConfig(batch_size=args.batch_size, lease_seconds=args.lease_seconds,
                        backoff_base=args.backoff_base, backoff_cap=2.0)
    clients: dict[int, object] = {}
    totals: Counter = Counter()
    print(json.dumps({"pid": os.getpid(), "started": True}), flush=True)
    give_up = time.monotonic() + args.max_seconds
    while time.monotonic() < give_up:
        claimed = 0
        for acc in accounts(engine):
            if acc.name not in args.account:
                continue
            client = clients.get(acc.id)
            if client is None:
                client = clients[acc.id] = registry.build(acc.provider, acc.conn_id)
                client.client.timeout = args.client_timeout
            counts = advance_account(engine, acc, client, now=parse_now(None), config=cfg, rng=rng)
            claimed += counts.get("claimed", 0)
            if counts:
                totals.update(counts)
                print(json.dumps(dict(counts)), flush=True)
        if claimed:
            continue
        with engine.connect() as conn:
            if conn.execute(PENDING_SQL, {"names": args.account}).scalar() == 0:
                print(json.dumps({"done": dict(totals)}), flush=True)
                return 0
        time.sleep(rng.uniform(0.05, 0.15))  # leases of dead workers expire, retries come due
    print(json.dumps({"gave_up": dict(totals)}), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())

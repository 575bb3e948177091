"""One advance worker of the HTTP benchmark: what one mapped ``advance_x`` task of the DAG does, in a process.

    python bench/http/worker.py --account-ids 1,2,3 [--batch-size 200] [--lease-seconds 300]

Started by ``bench/http/run.py`` with ``OUTREACH_DATABASE_URL`` and one ``AIRFLOW_CONN_X_H###`` per sender
account in its environment. It imports and connects first, prints ``ready``, waits for ``go`` on stdin (so
that process start-up and imports stay out of the measurement), then runs exactly the operator's call:
``outreach.engine.tick.advance(engine, account_ids, now, AdvanceConfig(batch_size, lease_seconds))`` on the real
clock, which builds each account's X client from its Airflow connection and talks HTTP to the sandbox.

The only addition is measurement: ``XClient._request`` is wrapped to time every provider call (the real call
runs unchanged), and at the end the urllib3 pools of the clients it saw are read for how many TCP connections
they opened. One JSON line of results goes to stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(os.environ.get("OUTREACH_BENCH_SRC") or ROOT) / "plugins"))  # run.py --src

import sqlalchemy as sa  # noqa: E402

from outreach.clock import parse_now  # noqa: E402
from outreach.engine import tick  # noqa: E402
from outreach.engine.advance import AdvanceConfig  # noqa: E402
from outreach.providers import x as xmod  # noqa: E402
from outreach.store.db import get_engine  # noqa: E402

HTTP = {"seconds": 0.0, "calls": 0}
CLIENTS: dict[int, object] = {}
_request = xmod.XClient._request


def _timed_request(self, *args, **kwargs):
    CLIENTS[id(self)] = self
    t = time.perf_counter()
    try:
        return _request(self, *args, **kwargs)
    finally:
        HTTP["seconds"] += time.perf_counter() - t
        HTTP["calls"] += 1


xmod.XClient._request = _timed_request


def pool_stats() -> dict:
    """Connections opened and requests sent, summed over the urllib3 pools of every X client used."""
    opened = requests = pools = 0
    for client in CLIENTS.values():
        for adapter in client.session.adapters.values():
            manager = adapter.poolmanager
            for key in list(manager.pools.keys()):
                pool = manager.pools[key]
                pools += 1
                opened += pool.num_connections
                requests += pool.num_requests
    return {"clients": len(CLIENTS), "pools": pools, "connections": opened, "requests": requests}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--account-ids", required=True, help="comma-separated sender_accounts ids (this task's batch)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--lease-seconds", type=int, default=300)
    args = p.parse_args(argv)
    ids = [int(a) for a in args.account_ids.split(",") if a]

    engine = get_engine(os.environ["OUTREACH_DATABASE_URL"])
    with engine.connect() as conn:  # warm: a pooled connection, the accounts query
        conn.execute(sa.text("SELECT 1"))
    accs = tick.accounts(engine, ids=ids)
    xmod.XHook.get_connection(accs[0].conn_id)  # warm Airflow's connection lookup (imports), builds no client
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2
    t0 = time.monotonic()
    now = parse_now(None)
    counts = tick.advance(engine, ids, now, AdvanceConfig(batch_size=args.batch_size,
                                                          lease_seconds=args.lease_seconds))
    seconds = time.monotonic() - t0
    print("result " + json.dumps({"pid": os.getpid(), "accounts": len(ids), "seconds": round(seconds, 3),
                      "http_seconds": round(HTTP["seconds"], 3), "http_calls": HTTP["calls"],
                      "pool": pool_stats(), "counts": counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Chaos benchmark: exactly-once under kill -9, measured beside the same run without kills.

    .venv/bin/python bench/chaos/run.py                 # 20,000 leads, 4 workers, 20 SIGKILLs (about 3 minutes)
    .venv/bin/python bench/chaos/run.py --leads 2000 --kills 10

Two runs in one invocation, each on a fresh database with its own sandbox: ``no kills`` and ``kill -9``; both
with the same 1% provider faults (accept-then-500, then timeouts). Prints one table; exits 1 if either run
duplicated a DM or lost a lead. See bench/chaos/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
try:
    import sqlalchemy as sa
except ImportError:  # run with a bare `python`: use the project's virtualenv
    venv_python = ROOT / ".venv" / "bin" / "python"
    if venv_python.exists() and Path(sys.prefix).resolve() != venv_python.parents[1].resolve():
        os.execv(str(venv_python), [str(venv_python), *sys.argv])
    raise

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))

from bench.chaos.harness import ChaosConfig, ChaosResult, run_chaos  # noqa: E402


def fresh_database(base_url: str, name: str) -> str:
    from outreach.store.db import fresh_database as fresh

    return fresh(base_url, name)


def table(results: list[ChaosResult]) -> str:
    cols = [("run", 10), ("leads", 7), ("workers", 8), ("kills", 6), ("duplicates", 11), ("lost", 5),
            ("reconciles", 11), ("reconciled", 11), ("retries", 8), ("review", 7), ("wall s", 7),
            ("leads/s", 8)]
    head = " ".join(f"{n:>{w}}" if i else f"{n:<{w}}" for i, (n, w) in enumerate(cols))
    out = [head, "-" * len(head)]
    for r in results:
        s = r.stats
        lost = s["lost_active"] + s["completed_without_sent"] + s["landed_not_recorded"] + s["sent_not_landed"]
        retries = sum(v for k, v in s["events"].items() if k.startswith("RETRY_SCHEDULED"))
        workers = f"{r.config.workers}+{len(r.kills)}" if r.kills else str(r.config.workers)
        row = [r.config.label, r.config.leads, workers, len(r.kills), s["duplicate_dms"],
               lost, s["reconcile_checks"], s["sent_reconciled"], retries, s["status"].get("NEEDS_REVIEW", 0),
               f"{r.wall_seconds:.1f}", f"{r.throughput:.0f}"]
        out.append(" ".join(f"{v:>{w}}" if i else f"{v:<{w}}" for i, ((_, w), v) in enumerate(zip(cols, row))))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="exactly-once under kill -9, beside a run without kills")
    p.add_argument("--leads", type=int, default=20_000)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--lease-seconds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--client-timeout", type=float, default=0.5)
    p.add_argument("--fault-rate", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--database-url", default=os.environ.get("OUTREACH_BENCH_DATABASE_URL"),
                   help="a PostgreSQL server URL to create the bench databases on (default: the embedded server)")
    args = p.parse_args(argv)

    from outreach.store.db import STATE_DIR, embedded_url

    base = args.database_url or embedded_url()
    logs = STATE_DIR / "bench-chaos"
    results = []
    for label, kills in (("no kills", 0), ("kill -9", args.kills)):
        cfg = ChaosConfig(leads=args.leads, workers=args.workers, kills=kills, lease_seconds=args.lease_seconds,
                          batch_size=args.batch_size, client_timeout=args.client_timeout,
                          fault_rate=args.fault_rate, seed=args.seed, deadline_seconds=900, label=label)
        url = fresh_database(base, "outreach_bench_chaos_" + ("kills" if kills else "baseline"))
        print(f"{label}: preparing {args.leads} leads ...", flush=True)
        results.append(run_chaos(url, cfg, logs / label.replace(" ", "-").replace("--", "-")))
    print()
    print(table(results))
    print()
    print("workers: at the start + replacements; duplicates: DMs the sandbox stored twice (its own record); lost: "
          "leads left\nACTIVE, completed without a SENT event, landed but unrecorded, or SENT but never landed; "
          "reconciles: in-flight\nattempts checked against the provider before any re-send; reconciled: of those, "
          "found delivered (recorded SENT,\nnot re-sent); retries: 5xx/timeouts rescheduled; review: leads left in "
          "NEEDS_REVIEW; leads/s: leads over the time\nfrom the first intent to the last outcome.")
    bad = [(r.config.label, r.problems) for r in results if r.problems]
    for label, problems in bad:
        print(f"{label}: " + "; ".join(problems), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

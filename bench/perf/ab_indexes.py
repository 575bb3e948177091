"""What the partial SENT indexes of 006_perf.sql cost the advance: the engine and the raw-SQL floor on a kept main
database (``run.py --keep``), in rounds alternating with and without the indexes (dropped, then rebuilt).

    .venv/bin/python bench/perf/ab_indexes.py [--rounds 4] [--index events_person_sent,events_sent_step]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import NOW, use_venv

use_venv()

import common
import run
import workload


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--index", default="events_person_sent,events_sent_step")
    args = ap.parse_args()
    url = common.database_url(common.server_url(), "outreach_bench_perf")
    names = args.index.split(",")
    with run.eng(url).connect() as c:
        defs = {n: c.exec_driver_sql(f"SELECT indexdef FROM pg_indexes WHERE indexname = '{n}'").scalar()
                for n in names}
    accs = run.account_ids(url)
    engine_w, ref_w = run.Worker(url, "engine", tag="-ab"), run.Worker(url, "reference", tag="-ab")
    tot = {}
    try:
        for k in range(args.rounds):
            with_idx = k % 2 == 0
            with run.eng(url).connect() as c:
                for n, d in defs.items():
                    c.exec_driver_sql(d.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS") if with_idx
                                      else f"DROP INDEX IF EXISTS {n}")
                c.commit()
            part = [i for i in sorted(accs) if (i // 10) % args.rounds == k]
            eng_accs = [accs[i] for i in part if i % 10 < 5]
            flo_accs = [accs[i] for i in part if 5 <= i % 10 < 9]
            run.release(url, accounts=eng_accs + flo_accs)
            workload.vacuum(url, "enrollments")
            for who, w, op, a in (("engine", engine_w, "advance", eng_accs), ("floor", ref_w, "floor", flo_accs)):
                out = w.call(op=op, accounts=a, now=NOW.isoformat())
                t = tot.setdefault((with_idx, who), [0, 0.0])
                t[0] += out["advanced"]
                t[1] += out["elapsed"]
            run.park_due(url, NOW)
            print(f"round {k + 1}: {'with' if with_idx else 'without'} " + ", ".join(
                f"{who} {tot[(with_idx, who)][0] / tot[(with_idx, who)][1]:,.0f}/s" for who in ("engine", "floor")),
                flush=True)
    finally:
        engine_w.close()
        ref_w.close()
        with run.eng(url).connect() as c:
            for d in defs.values():
                c.exec_driver_sql(d.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))
            c.commit()
    for with_idx in (True, False):
        e, f = tot[(with_idx, "engine")], tot[(with_idx, "floor")]
        print(f"{'with' if with_idx else 'without'} the indexes: engine {e[0] / e[1]:,.0f}/s, floor {f[0] / f[1]:,.0f}/s,"
              f" {e[0] / e[1] / (f[0] / f[1]):.0%} of the floor")


if __name__ == "__main__":
    main()

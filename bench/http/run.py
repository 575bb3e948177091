"""HTTP benchmark: leads through one advance step over real HTTP to the sandbox (50 ms per call), 1/2/4 workers.

    .venv/bin/python bench/http/run.py                       # 10,000 leads x {1, 2, 4} workers
    .venv/bin/python bench/http/run.py --leads 2000 --workers 1,4

For each worker count, on a fresh database and a fresh in-process sandbox (X's own rate limits, every API call
answered ``--latency-ms`` later, outside its lock): ``--accounts`` X sender accounts, a one-step DM sequence and
``--leads`` leads due now, spread evenly over the accounts. N worker processes (``worker.py``), each given a
disjoint, contiguous batch of account ids as the DAG's mapped ``advance_x`` tasks are, run the operator's call
(``tick.advance``) on the real clock. Timed: from "go" (all workers imported and connected) to the last worker's
result. Then, from the events table and the sandbox's call log and summary:

- duplicates: DMs the sandbox stored more than once (``duplicate_dms``) + enrollments with two SENT events;
- every lead advanced exactly once: COMPLETED with exactly one ATTEMPTED and one SENT event, and one DM landed;
- pacing: SENT events per account in every rolling window against the account's effective limits, the
  sandbox's landed DMs per user in X's fixed 15-minute and daily windows against X's limits, and 429s;
- connection reuse: TCP connections the sandbox accepted (counted by a handler subclass in this process; the
  sandbox itself is unchanged) per worker, against its API calls; and the urllib3 pools' own count.

Each worker count's setup and measurement holds ``/tmp/outreach-bench.lock`` (``--lock``; the same lock
``flock(1)`` takes) so benchmarks do not overlap. Exits 1 when the target (``--target``x from 1 to 4 workers)
is missed, or on any duplicate, lost lead or pacing violation.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
venv_python = ROOT / ".venv" / "bin" / "python"
if venv_python.exists() and Path(sys.prefix).resolve() != venv_python.parents[1].resolve():
    os.execv(str(venv_python), [str(venv_python), *sys.argv])
# --src DIR (or OUTREACH_BENCH_SRC): measure the engine of another source tree (e.g. `git archive HEAD plugins
# include | tar -x -C DIR`, a committed snapshot while the working tree is being edited); state stays in ours
SRC = Path(os.environ.get("OUTREACH_BENCH_SRC") or ROOT).resolve()
for i, a in enumerate(sys.argv):
    if a == "--src" and i + 1 < len(sys.argv) or a.startswith("--src="):
        SRC = Path(a.split("=", 1)[1] if "=" in a else sys.argv[i + 1]).resolve()
os.environ["OUTREACH_BENCH_SRC"] = str(SRC)
os.environ.setdefault("OUTREACH_HOME", str(ROOT / ".outreach"))
for p in (ROOT, SRC / "plugins"):
    if str(p) in sys.path:
        sys.path.remove(str(p))
    sys.path.insert(0, str(p))

import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from outreach.domain import pacing  # noqa: E402
from outreach.sandbox import server as sbx  # noqa: E402

ACTION = "SEND_TWITTER_DM"
# configured per account; the engine spends at 90% headroom (135 / 15 min, 270 / h, 900 / day), above the
# 125 leads an account gets by default, so pacing binds nowhere and is still checked against every window
ACCOUNT_LIMITS = {"per_15min": 150, "per_hour": 300, "per_day": 1000}
X_LIMITS = {"15min": (900, sbx.RATE_LIMITS["dm_send"][0]), "day": (86400, sbx.RATE_LIMITS["dm_send"][1])}
FIRST_USER_ID = 7001
LOG_DIR = ROOT / ".outreach" / "bench-http"


# --------------------------------------------------------------------------- sandbox with a connection count


class CountingHandler(sbx._Handler):
    """The sandbox's own handler; one instance serves one TCP connection, so it counts connections and which
    user's API calls each carried. Everything else (latency, state, answers) is the sandbox's."""

    def setup(self) -> None:
        super().setup()
        self.conn_info = {"requests": 0, "users": Counter()}
        with self.server.conn_lock:
            self.server.conn_log.append(self.conn_info)

    def _counted(self) -> None:
        self.conn_info["requests"] += 1
        if self.path.startswith("/2/"):
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            self.conn_info["users"][sbx.user_for_token(token.strip())] += 1
        self._dispatch()

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _counted


def start_sandbox(latency_ms: float):
    server, url = sbx.start_in_thread(seed=42)
    server.conn_lock = threading.Lock()
    server.conn_log = []
    server.RequestHandlerClass = CountingHandler  # before any request: every connection is counted
    requests.post(f"{url}/_sandbox/latency", json={"ms": latency_ms}, timeout=5).raise_for_status()
    return server, url


# --------------------------------------------------------------------------- setup


def fresh_database(name: str, base: str | None) -> str:
    from outreach.store.db import STATE_DIR, embedded_url
    from outreach.store.db import fresh_database as fresh

    return fresh(base or os.environ.get("OUTREACH_BENCH_DATABASE_URL") or embedded_url(STATE_DIR / "bench-pg"), name)


def account_names(n: int) -> list[str]:
    return [f"x-h{i:03d}" for i in range(1, n + 1)]


def conn_env(n: int, url: str) -> dict[str, str]:
    """One Airflow connection per sender account (its own token, so the sandbox sees its own user)."""
    return {f"AIRFLOW_CONN_X_H{i:03d}": json.dumps({"conn_type": "x", "host": url,
                                                    "password": f"sandbox-{FIRST_USER_ID + i - 1}"})
            for i in range(1, n + 1)}


def prepare(engine: sa.Engine, n_leads: int, n_accounts: int) -> None:
    from tests.helpers import setup

    limits = json.dumps({ACTION: ACCOUNT_LIMITS}).replace('"', "")
    accounts_yaml = "accounts:\n" + "".join(
        f'  - {{name: {name}, provider: x, conn_id: x_h{i:03d}, user_id: "{FIRST_USER_ID + i - 1}", '
        f"limits: {limits}}}\n" for i, name in enumerate(account_names(n_accounts), 1))
    sequence_yaml = textwrap.dedent(f"""
        name: http-dm
        accounts: [{", ".join(account_names(n_accounts))}]
        start: dm
        actions:
          dm: {{type: {ACTION}, message: "Hi {{{{ first_name }}}}, quick question about {{{{ topic }}}}"}}
        triggers:
          - {{from: dm, trigger: NORMAL_EDGE, to: END}}
        """)
    topics = ["agents", "pipelines", "growth", "databases"]
    leads = [{"name": f"Lead{i} Person", "twitter_id": str(2_000_000 + i), "topic": topics[i % 4]}
             for i in range(n_leads)]
    due = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    setup(engine, sequence_yaml, leads=leads, now=due, accounts_yaml=accounts_yaml)


def partition(ids: list[int], n: int) -> list[list[int]]:
    """``n`` disjoint contiguous batches of account ids (as the DAG's mapped advance tasks get them)."""
    size = math.ceil(len(ids) / n)
    return [ids[i:i + size] for i in range(0, len(ids), size)]


@contextmanager
def bench_lock(path: str | None):
    if not path:
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # flock(2), the same lock as `flock /tmp/outreach-bench.lock ...`
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- one measurement


def run_once(n_workers: int, args, label: str) -> dict:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    db_url = fresh_database(f"outreach_bench_http_{n_workers}w", args.database_url)
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    server, url = start_sandbox(args.latency_ms)
    procs: list[subprocess.Popen] = []
    try:
        prepare(engine, args.leads, args.accounts)
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT id, user_id FROM sender_accounts ORDER BY id")).all()
        batches = partition([r.id for r in rows], n_workers)
        user_of = {r.id: r.user_id for r in rows}
        env = {**os.environ, **conn_env(args.accounts, url), "OUTREACH_DATABASE_URL": db_url,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC / "plugins"), os.environ.get("PYTHONPATH")]))}
        for i, batch in enumerate(batches):
            log = open(LOG_DIR / f"{label}-worker{i}.log", "w")
            procs.append(subprocess.Popen(
                [sys.executable, str(HERE / "worker.py"), "--account-ids", ",".join(map(str, batch)),
                 "--batch-size", str(args.batch_size), "--lease-seconds", str(args.lease_seconds)],
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True))
            log.close()
        for p in procs:
            if not _line(p, "ready"):
                raise RuntimeError(f"worker {p.pid} did not start; see {LOG_DIR}")
        t0 = time.monotonic()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            line = _line(p, "result ")
            results.append(json.loads(line[len("result "):]) if line else {"error": "no result", "pid": p.pid})
        seconds = time.monotonic() - t0
        for p in procs:
            p.wait(timeout=60)
        out = verify(engine, url, args.leads)
        out.update(workers=n_workers, leads=args.leads, seconds=seconds, results=results,
                   rc=[p.returncode for p in procs])
        out["per_worker"] = connections(server, batches, user_of, results)
        out["connections"] = sum(w["server_conns"] for w in out["per_worker"])
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        server.shutdown()
        server.server_close()
        engine.dispose()


def _line(p: subprocess.Popen, prefix: str) -> str | None:
    """The worker's next stdout line starting with ``prefix``; of its other output (the engine's log lines,
    through Airflow's logging) only warnings and errors are passed on."""
    for line in p.stdout:
        if line.startswith(prefix):
            return line.strip()
        if "[info" not in line and "[debug" not in line:
            sys.stderr.write(f"[worker {p.pid}] {line}")
    return None


def connections(server, batches: list[list[int]], user_of: dict, results: list[dict]) -> list[dict]:
    """Per worker: TCP connections the sandbox accepted that carried its accounts' API calls, and those calls."""
    with server.conn_lock:
        log = list(server.conn_log)
    out = []
    for batch, res in zip(batches, results):
        users = {user_of[a] for a in batch}
        mine = [c for c in log if set(c["users"]) & users]
        out.append({"accounts": len(batch), "server_conns": len(mine),
                    "api_calls": sum(n for c in mine for n in c["users"].values()),
                    "mixed": sum(1 for c in mine if set(c["users"]) - users),
                    "client_conns": res.get("pool", {}).get("connections"),
                    "client_requests": res.get("pool", {}).get("requests"),
                    "seconds": res.get("seconds") or 0.0, "http_seconds": res.get("http_seconds") or 0.0,
                    "http_calls": res.get("http_calls") or 0, "counts": res.get("counts") or {}})
    return out


# --------------------------------------------------------------------------- the verdict


def max_in_window(times: list[float], width: float) -> int:
    """The most events in any rolling window (t - width, t]."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def verify(engine: sa.Engine, url: str, n_leads: int) -> dict:
    s = requests.Session()
    summary = s.get(f"{url}/_sandbox/summary", timeout=30).json()
    calls = s.get(f"{url}/_sandbox/calls", timeout=120).json()["calls"]
    s.close()
    with engine.connect() as c:
        status = dict(c.execute(sa.text("SELECT status, count(*) FROM enrollments GROUP BY status")).all())
        per_lead = c.execute(sa.text("""
            SELECT e.id, e.status, i.value AS recipient,
                   count(ev.id) FILTER (WHERE ev.kind = 'SENT') AS sent,
                   count(ev.id) FILTER (WHERE ev.kind = 'ATTEMPTED') AS attempted
            FROM enrollments e JOIN identities i ON i.person_id = e.person_id AND i.kind = 'twitter'
            LEFT JOIN events ev ON ev.enrollment_id = e.id GROUP BY e.id, i.value""")).all()
        sent = c.execute(sa.text("""
            SELECT a.name, a.limits, extract(epoch FROM ev.recorded_at) AS at_s FROM events ev
            JOIN sender_accounts a ON a.id = ev.account_id WHERE ev.kind = 'SENT'""")).all()
        other = dict(c.execute(sa.text("""
            SELECT kind || coalesce(':' || reason, ''), count(*) FROM events
            WHERE kind NOT IN ('ENROLLED', 'ATTEMPTED', 'SENT') GROUP BY 1""")).all())
    landed = Counter()
    too_many = 0
    fixed: dict = defaultdict(Counter)
    for call in calls:
        if call["method"] != "POST" or not call["path"].endswith("/messages"):
            continue
        too_many += call["status"] == 429
        if call["effect"]:
            landed[call["target_id"]] += 1
            at = datetime.fromisoformat(call["at"].replace("Z", "+00:00")).timestamp()
            for w, (width, _) in X_LIMITS.items():
                fixed[call["user_id"]][(w, int(at // width))] += 1
    provider_over = sum(1 for windows in fixed.values() for (w, _), n in windows.items() if n > X_LIMITS[w][1])
    # engine side: SENT events per account in every rolling window vs the account's effective limits
    by_account: dict = defaultdict(list)
    limits_of = {}
    for r in sent:
        by_account[r.name].append(float(r.at_s))
        limits_of[r.name] = pacing.effective_limits(ACTION, r.limits)
    engine_over, worst = 0, Counter()
    for name, times in by_account.items():
        for w, limit in limits_of[name].items():
            n = max_in_window(times, pacing.WINDOWS[w])
            worst[w] = max(worst[w], n)
            engine_over += n > limit
    dup_events = sum(1 for r in per_lead if r.sent > 1)
    not_once = sum(1 for r in per_lead if not (r.status == "COMPLETED" and r.sent == 1 and r.attempted == 1
                                               and landed[r.recipient] == 1))
    return {
        "status": status, "other_events": other,
        "duplicates": summary["duplicate_dms"] + dup_events,
        "sandbox_dms": summary["dms"], "duplicate_dms": summary["duplicate_dms"], "sent_twice": dup_events,
        "not_exactly_once": not_once + max(0, n_leads - len(per_lead)),
        "pacing_violations": engine_over + provider_over + too_many,
        "engine_window_over": engine_over, "provider_window_over": provider_over, "http_429": too_many,
        "max_per_account": dict(worst),
        "limits": next(iter(limits_of.values()), {}),
        "max_per_user_15min_fixed": max((n for ws in fixed.values() for (w, _), n in ws.items() if w == "15min"),
                                        default=0),
    }


# --------------------------------------------------------------------------- report


def print_report(runs: list[dict], args) -> bool:
    base = {}
    for r in runs:
        if r["workers"] == 1:
            base[r["round"]] = r["leads"] / r["seconds"]
    head = (f"{'round':>5} {'workers':>7} {'leads':>6} {'seconds':>8} {'leads/s':>8} {'speed-up':>8} "
            f"{'duplicates':>10} {'not once':>8} {'pacing violations':>17} {'connections opened':>18} "
            f"{'API calls':>9}")
    print("\n" + head + "\n" + "-" * len(head))
    for r in sorted(runs, key=lambda r: (r["round"], r["workers"])):
        rate = r["leads"] / r["seconds"]
        r["rate"] = rate
        r["speedup"] = rate / base[r["round"]] if r["round"] in base else float("nan")
        calls = sum(w["api_calls"] for w in r["per_worker"])
        print(f"{r['round']:>5} {r['workers']:>7} {r['leads']:>6} {r['seconds']:>8.1f} {rate:>8.1f} "
              f"{r['speedup']:>7.2f}x {r['duplicates']:>10} {r['not_exactly_once']:>8} "
              f"{r['pacing_violations']:>17} {r['connections']:>18} {calls:>9}")
    print("\nper worker (connections: accepted by the sandbox / opened by the client's urllib3 pools; "
          "time: in provider calls / the rest, DB and engine)")
    head = (f"{'round':>5} {'workers':>7} {'#':>2} {'accounts':>8} {'API calls':>9} {'srv conns':>9} "
            f"{'cli conns':>9} {'calls/conn':>10} {'seconds':>8} {'http s':>7} {'other s':>7} "
            f"{'ms/lead http':>12} {'ms/lead other':>13}")
    print(head + "\n" + "-" * len(head))
    for r in sorted(runs, key=lambda r: (r["round"], r["workers"])):
        for i, w in enumerate(r["per_worker"]):
            n = (w["counts"] or {}).get("sent", 0) or 1
            rest = (w["seconds"] or 0) - (w["http_seconds"] or 0)
            print(f"{r['round']:>5} {r['workers']:>7} {i:>2} {w['accounts']:>8} {w['api_calls']:>9} "
                  f"{w['server_conns']:>9} {w['client_conns']!s:>9} {w['api_calls'] / max(w['server_conns'], 1):>10.0f} "
                  f"{w['seconds']:>8.1f} {w['http_seconds']:>7.1f} {rest:>7.1f} "
                  f"{1000 * w['http_seconds'] / n:>12.1f} {1000 * rest / n:>13.2f}")
    ok = True
    for r in runs:
        problems = []
        if r["duplicates"]:
            problems.append(f"{r['duplicates']} duplicates")
        if r["not_exactly_once"]:
            problems.append(f"{r['not_exactly_once']} leads not advanced exactly once {r['status']}")
        if r["pacing_violations"]:
            problems.append(f"pacing: {r['engine_window_over']} engine windows over, {r['provider_window_over']} "
                            f"provider windows over, {r['http_429']} 429s")
        if r["other_events"]:
            problems.append(f"other events {r['other_events']}")
        if any(rc != 0 for rc in r["rc"]):
            problems.append(f"worker exit codes {r['rc']} (logs in {LOG_DIR})")
        if problems:
            ok = False
            print(f"round {r['round']}, {r['workers']} workers: " + "; ".join(problems))
    r0 = runs[0]
    print(f"\npacing: most SENT per account in any rolling window {r0['max_per_account']} vs effective limits "
          f"{r0['limits']} (configured {ACCOUNT_LIMITS}); most DMs per user in one fixed X 15-min window "
          f"{max(r['max_per_user_15min_fixed'] for r in runs)} (X allows {X_LIMITS['15min'][1]})")
    for rnd in sorted(base):
        hi = [r for r in runs if r["round"] == rnd and r["workers"] == max(args.workers)]
        if hi and min(args.workers) == 1:
            s = hi[0]["speedup"]
            met = s >= args.target
            ok &= met
            print(f"target (round {rnd}): {max(args.workers)} workers = {s:.2f}x of 1 worker "
                  f"(>= {args.target:g}x): {'MET' if met else 'MISSED'}")
    return ok


def main() -> int:
    import logging

    logging.getLogger("outreach").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leads", type=int, default=10_000)
    ap.add_argument("--accounts", type=int, default=80)
    ap.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--batch-size", type=int, default=200, help="the advance operator's default")
    ap.add_argument("--lease-seconds", type=int, default=300, help="the advance operator's default")
    ap.add_argument("--rounds", type=int, default=1, help="repeat, alternating the order of worker counts")
    ap.add_argument("--target", type=float, default=3.0)
    ap.add_argument("--lock", default="/tmp/outreach-bench.lock", help="held per measurement; '' for none")
    ap.add_argument("--database-url", default=None, help="a PostgreSQL server to create the bench databases on")
    ap.add_argument("--src", default=None, help="source tree whose engine and sandbox are measured (default: this "
                    "checkout); e.g. a `git archive HEAD plugins include` snapshot")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args()
    import outreach

    print(f"engine: {Path(outreach.__file__).parents[1]}")
    print(f"{args.leads} leads, {args.accounts} X accounts, one-step {ACTION} sequence, sandbox latency "
          f"{args.latency_ms:g} ms per call; workers {args.workers}, {args.rounds} round(s)", flush=True)
    runs = []
    t_all = time.monotonic()
    for rnd in range(args.rounds):
        order = args.workers if rnd % 2 == 0 else list(reversed(args.workers))
        for n in order:
            with bench_lock(args.lock):
                r = run_once(n, args, f"r{rnd}-{n}w")
            r["round"] = rnd
            runs.append(r)
            print(f"  round {rnd}, {n} workers: {r['seconds']:.1f}s, {r['leads'] / r['seconds']:.1f} leads/s, "
                  f"duplicates {r['duplicates']}, pacing violations {r['pacing_violations']}, "
                  f"connections {r['connections']}", flush=True)
    ok = print_report(runs, args)
    print(f"\ntotal {time.monotonic() - t_all:.0f}s wall")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Performance bench: the engine against the database's floor and the v1 design, at a million enrolments.

    make bench                                   # = .venv/bin/python bench/perf/run.py (full scale)
    .venv/bin/python bench/perf/run.py --scale 0.1   # quick look: every size / 10

Builds the synthetic workload (bench/perf/workload.py) twice, in two fresh databases on one PostgreSQL server:
"main" (1,000,000 enrolments x scale) and "small" (a tenth of it), then measures, each figure beside its
reference measured in the same run (alternating where both are repeated):

  advance     engine (outreach.engine.tick.advance -> advance_account over many accounts; no-op provider) vs the
              raw-SQL floor (same writes: COPY the events, one UPDATE ... FROM unnest per batch) vs the v1 baseline
              (SELECT ... FOR UPDATE one lead at a time, a commit per lead); rounds alternate the three
  tick        outreach.engine.tick.run_tick (poll with a no-op provider, ingest, timeouts, advance, metrics,
              experiments) with 1,000 due and with none due, at 1M vs at 100k enrolments
  claim       outreach.store.steps.claim of 100 leads (then rolled back), p95, at 1M vs at 100k enrolments
  ingest      100,000 signals, 10% re-polled duplicates: outreach.engine.signals.poll_account + ingest vs the
              same writes in set-based raw SQL
  enrolment   1,000,000 leads from CSV: outreach.store.leads.parse_leads_csv + import_leads vs COPY + INSERTs
  metrics     one day's rollup (outreach.engine.metrics.aggregate) over 10,000,000 events of that day vs one
              GROUP BY over the same rows
  dags        DagBag parse time of each file in dags/ vs a one-task DAG, in fresh processes
  memory      peak RSS of the advance worker process at 1M vs at 100k enrolments

Prints one table (absolute figure, reference, ratio, target, met?). Options: --scale, --rounds, --keep (keep the
databases), --database-url (a server to create the databases on; default the embedded server under
.outreach/bench-pg, also OUTREACH_BENCH_DATABASE_URL), --profile DIR (cProfile + per-statement SQL time of the
engine's advance worker, written to DIR).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import METRICS_DAY, NOW, ROOT, NoopProvider, use_venv

use_venv()

import common
import sqlalchemy as sa
import workload

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------------------ sizes
class Sizes:
    def __init__(self, scale: float):
        self.scale = scale
        self.n = max(2000, int(1_000_000 * scale))          # enrolments, main database
        self.n_small = max(200, self.n // 10)               # enrolments, small database
        self.m = int(10_000_000 * scale)                     # events on the metrics day, main database
        self.m_small = self.m // 10
        self.signals = max(1000, int(100_000 * scale))      # delivered signals (10% duplicates)
        self.csv = max(1000, int(1_000_000 * scale))        # leads in the enrolment CSV
        self.tick_due = 1000                                 # "1,000 due" (5 per account)
        self.claim_limit = 100


# -------------------------------------------------------------------------------------------------- db helpers
def eng(url: str) -> sa.Engine:
    from outreach.store.db import get_engine

    return get_engine(url)


def execute(url: str, sql: str, params: dict | None = None, autocommit: bool = False) -> int:
    e = sa.create_engine(url, isolation_level="AUTOCOMMIT") if autocommit else eng(url)
    with (e.connect() if autocommit else e.begin()) as c:
        n = c.execute(sa.text(sql), params or {}).rowcount
    if autocommit:
        e.dispose()
    return n


def scalar(url: str, sql: str, params: dict | None = None):
    with eng(url).connect() as c:
        return c.execute(sa.text(sql), params or {}).scalar()


PARKED = f"next_run_at > CAST(:now AS timestamptz) + interval '{workload.PARK_DAYS - 100} days'"


def release(url: str, per_account: int | None = None, accounts: list[int] | None = None) -> int:
    """Make parked leads due (their due time moved back from the future): all, or ``per_account`` per account."""
    return execute(url, f"""
        UPDATE enrollments e SET next_run_at = e.next_run_at - interval '{workload.PARK_DAYS} days'
        FROM (SELECT id, row_number() OVER (PARTITION BY account_id ORDER BY id) AS rn FROM enrollments
              WHERE status = 'ACTIVE' AND phase = 'pending' AND {PARKED}
                AND (CAST(:accs AS bigint[]) IS NULL OR account_id = ANY(CAST(:accs AS bigint[])))) p
        WHERE e.id = p.id AND (CAST(:k AS int) IS NULL OR p.rn <= CAST(:k AS int))""",
                   {"now": NOW, "k": per_account, "accs": accounts})


def make_due(url: str, per_account: int, now: datetime) -> int:
    """``per_account`` leads of every account that were pending later (not parked) become due at ``now``."""
    return execute(url, f"""
        UPDATE enrollments e SET next_run_at = CAST(:now AS timestamptz) - make_interval(secs => 1 + e.id % 600)
        FROM (SELECT id, row_number() OVER (PARTITION BY account_id ORDER BY id) AS rn FROM enrollments
              WHERE status = 'ACTIVE' AND phase = 'pending' AND next_run_at > :now AND NOT ({PARKED})) p
        WHERE e.id = p.id AND p.rn <= :k""", {"now": now, "k": per_account})


def park_due(url: str, now: datetime) -> int:
    """Whatever is still due goes back to the parking (the next measurement starts with nothing due)."""
    return execute(url, f"""
        UPDATE enrollments SET next_run_at = next_run_at + interval '{workload.PARK_DAYS} days'
        WHERE status = 'ACTIVE' AND phase = 'pending' AND next_run_at <= :now""", {"now": now})


def due_count(url: str, now: datetime) -> int:
    return scalar(url, """SELECT count(*) FROM enrollments WHERE status = 'ACTIVE' AND phase = 'pending'
                          AND next_run_at <= :now""", {"now": now})


def account_ids(url: str) -> dict[int, int]:
    """bench account index (0..199) -> sender_accounts.id"""
    with eng(url).connect() as c:
        return dict(c.execute(sa.text("SELECT idx, account_id FROM bench.accs")).all())


# ------------------------------------------------------------------------------------------------------- workers
class Worker:
    def __init__(self, url: str, role: str, profile: str | None = None, tag: str = ""):
        cmd = [PY, str(HERE / "worker.py"), "--url", url, "--role", role]
        if profile:
            cmd += ["--profile", profile]
        logdir = common.ROOT / ".outreach" / "bench-perf"
        logdir.mkdir(parents=True, exist_ok=True)
        self.stderr = open(logdir / f"worker-{role}{tag}.log", "w")
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                  bufsize=1)

    def call(self, **job) -> dict:
        self.p.stdin.write(json.dumps(job, default=str) + "\n")
        self.p.stdin.flush()
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"worker died (see {self.stderr.name})")
            if line.startswith("@@"):
                out = json.loads(line[2:])
                if "error" in out:
                    raise RuntimeError(out["error"])
                return out

    def close(self) -> dict:
        out = self.call(op="quit")
        self.p.wait(timeout=60)
        self.stderr.close()
        return out


# ------------------------------------------------------------------------------------------------------- advance
def advance_phase(url: str, label: str, rounds: int, v1_cap: int, profile: str | None) -> dict:
    """Engine, floor and v1 on disjoint accounts of the same database, in alternating rounds.
    Accounts by index: i % 10 in 0..4 -> engine, 5..8 -> floor, 9 -> v1; round k takes (i // 10) % rounds == k."""
    accs = account_ids(url)
    released = release(url)
    workload.vacuum(url, "enrollments")
    log(f"  {label}: {released:,} leads due; engine / floor / v1 in {rounds} alternating rounds")
    engine_w = Worker(url, "engine", profile, tag=f"-{label}")
    ref_w = Worker(url, "reference", tag=f"-{label}")
    tot = {k: {"n": 0, "s": 0.0} for k in ("engine", "floor", "v1")}
    counts: dict = {}
    # warm-up, not counted: one account each for the engine (index 0) and the floor (index 5), so that neither
    # pays alone for the cold caches of the first round
    warm = {0, 5}
    engine_w.call(op="advance", accounts=[accs[0]], now=NOW.isoformat())
    ref_w.call(op="floor", accounts=[accs[5]], now=NOW.isoformat())
    for k in range(rounds):
        part = {name: [accs[i] for i in sorted(accs) if i % 10 in r and (i // 10) % rounds == k and i not in warm]
                for name, r in (("engine", range(5)), ("floor", range(5, 9)), ("v1", range(9, 10)))}
        order = ["engine", "floor", "v1"] if k % 2 == 0 else ["v1", "floor", "engine"]
        for name in order:
            if name == "engine":
                out = engine_w.call(op="advance", accounts=part[name], now=NOW.isoformat())
                for c, v in out["counts"].items():
                    counts[c] = counts.get(c, 0) + v
            elif name == "floor":
                out = ref_w.call(op="floor", accounts=part[name], now=NOW.isoformat())
            else:
                out = ref_w.call(op="v1", accounts=part[name], now=NOW.isoformat(), cap=v1_cap)
            tot[name]["n"] += out["advanced"]
            tot[name]["s"] += out["elapsed"]
        log(f"    round {k + 1}/{rounds}: " + ", ".join(
            f"{n} {tot[n]['n'] / tot[n]['s']:,.0f}/s" for n in ("engine", "floor", "v1") if tot[n]["s"]))
    rss = engine_w.call(op="rss")
    engine_w.close()
    ref_w.close()
    parked = park_due(url, NOW)
    res = {name: {"leads": t["n"], "seconds": t["s"], "rate": t["n"] / t["s"] if t["s"] else 0.0}
           for name, t in tot.items()}
    res["rss"] = rss
    res["counts"] = counts
    res["left_parked"] = parked
    return res


# ---------------------------------------------------------------------------------------------------------- tick
class PhaseTimer:
    """Wall time per engine.tick function called by run_tick (patched in this process only)."""

    NAMES = ("poll_batches", "poll", "ingest", "due_batches", "advance", "aggregate", "decide_winners")

    def __init__(self):
        from outreach.engine import tick

        self.times: dict[str, float] = {}
        for name in self.NAMES:
            fn = getattr(tick, name, None)
            if fn is not None:
                setattr(tick, name, self._wrap(name, fn))

    def _wrap(self, name, fn):
        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t
        return timed


def tick_phase(urls: dict[str, str], sizes: Sizes, reps: int) -> dict:
    from outreach.engine import tick
    from outreach.providers import registry

    registry.build = lambda provider, conn_id, on_rate=None: NoopProvider()
    timer = PhaseTimer()
    per_account = max(1, sizes.tick_due // workload.N_ACCOUNTS)
    for url in urls.values():
        workload.vacuum(url, "enrollments")
    res = {label: {"none": [], "due": [], "due_n": [], "phases_none": [], "phases_due": []} for label in urls}
    for rep in range(reps):
        for label, url in urls.items():
            now = NOW + timedelta(minutes=rep + 1)
            for kind in ("none", "due"):
                if kind == "due":
                    res[label]["due_n"].append(make_due(url, per_account, now))
                timer.times = {}
                t = time.perf_counter()
                summary = tick.run_tick(eng(url), now, providers=["x"])
                res[label][kind].append(time.perf_counter() - t)
                res[label][f"phases_{kind}"].append(dict(timer.times))
                if kind == "due":
                    adv = summary.get("advance_x", {})
                    res[label].setdefault("advanced", []).append(adv.get("sent", 0) + sum(
                        v for k, v in adv.items() if k.startswith(("skipped:", "failed:"))))
        log(f"  tick rep {rep + 1}/{reps}: " + "; ".join(
            f"{lab} none {r['none'][-1] * 1000:,.0f} ms, {r['due_n'][-1]} due {r['due'][-1] * 1000:,.0f} ms"
            for lab, r in res.items()))
    # what a cost that followed the enrolled count would look like: one pass over the enrolments
    for label, url in urls.items():
        with eng(url).connect() as c:
            t = time.perf_counter()
            c.exec_driver_sql("SELECT count(*) FROM enrollments WHERE status = 'ACTIVE'").scalar()
            res[label]["scan"] = time.perf_counter() - t
    return res


# ---------------------------------------------------------------------------------------------------------- claim
def claim_phase(urls: dict[str, str], sizes: Sizes, n_accounts: int = 20, reps: int = 10) -> dict:
    """steps.claim(limit=100) on accounts with 200 due leads each (then rolled back), alternating databases."""
    from outreach.store import steps

    res = {}
    for label, url in urls.items():
        accs = account_ids(url)
        chosen = [accs[i] for i in range(0, workload.N_ACCOUNTS, workload.N_ACCOUNTS // n_accounts)][:n_accounts]
        execute(url, "DROP TABLE IF EXISTS bench.claim_saved")
        execute(url, """
            CREATE TABLE bench.claim_saved AS SELECT id, next_run_at FROM (
                SELECT id, next_run_at, row_number() OVER (PARTITION BY account_id ORDER BY next_run_at DESC) AS rn
                FROM enrollments WHERE account_id = ANY(:a) AND status = 'ACTIVE' AND phase = 'pending') x
            WHERE rn <= 200""", {"a": chosen})
        execute(url, """UPDATE enrollments e SET next_run_at = CAST(:now AS timestamptz) - make_interval(secs => e.id % 3600)
                        FROM bench.claim_saved s WHERE e.id = s.id""", {"now": NOW})
        workload.vacuum(url, "enrollments")
        res[label] = {"accounts": chosen, "samples": [], "rows": []}
    for rep in range(reps):
        for i in range(n_accounts):
            for label, url in urls.items():
                with eng(url).connect() as conn:
                    with conn.begin() as tx:
                        t = time.perf_counter()
                        rows = steps.claim(conn, account_id=res[label]["accounts"][i], action_type="SEND_TWITTER_DM",
                                           now=NOW, owner="bench-claim", limit=sizes.claim_limit, lease_seconds=300)
                        res[label]["samples"].append(time.perf_counter() - t)
                        res[label]["rows"].append(len(rows))
                        tx.rollback()
    for label, url in urls.items():
        execute(url, "UPDATE enrollments e SET next_run_at = s.next_run_at FROM bench.claim_saved s WHERE e.id = s.id")
        s = sorted(res[label]["samples"])
        res[label]["p50"] = s[len(s) // 2]
        res[label]["p95"] = s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]
        res[label]["mean_rows"] = statistics.mean(res[label]["rows"])
    return res


# ---------------------------------------------------------------------------------------------------------- ingest
REPLIES = [
    "Thanks for reaching out! Happy to chat next week, what times work for you?",
    "Interesting, can you send more details about pricing?",
    "Not interested, thanks.",
    "Sure, let's talk. I'm free Thursday afternoon.",
    "We already use something similar, but I'd be curious to compare.",
    "Please remove me from your list.",
    "Who is this?",
    "Sounds good, looping in my colleague who owns this.",
    "Maybe next quarter, we're heads down on a launch right now.",
    "Yes! We've been looking for exactly this.",
]


def build_signals(url: str, total: int, rounds: int, probe: int) -> None:
    """bench.signals: ``total`` delivered signals (90% unique, 10% re-polled duplicates) in ``rounds`` rounds, plus
    ``probe`` unique signals in round -1 (a first, small engine round that sizes the others).
    Unique ones: 85% answer a waiting enrolment on its account (FOLLOWED_BACK after a follow, REPLIED after a
    DM), 10% are replies from people whose enrolment ended, 5% come from people we do not know."""
    unique = int(total * 0.9) + probe
    execute(url, "DROP TABLE IF EXISTS bench.signals")
    execute(url, f"""
        CREATE TABLE bench.signals AS
        WITH waiting AS (
            SELECT e.id, e.person_id, e.account_id, e.current_step, row_number() OVER (ORDER BY hashint8(e.id)) AS rn
            FROM enrollments e WHERE e.status = 'ACTIVE' AND e.phase = 'waiting'
        ), ended AS (
            SELECT e.id, e.person_id, e.account_id, row_number() OVER (ORDER BY hashint8(e.id)) AS rn
            FROM enrollments e WHERE e.status <> 'ACTIVE'
        ), picked AS (
            SELECT CASE WHEN w.current_step = 'follow' THEN 'FOLLOWED_BACK' ELSE 'REPLIED' END AS kind,
                   w.person_id, w.account_id FROM waiting w WHERE w.rn <= :u * 85 / 100
            UNION ALL SELECT 'REPLIED', d.person_id, d.account_id FROM ended d WHERE d.rn <= :u * 10 / 100
            UNION ALL SELECT 'REPLIED', NULL, (SELECT account_id FROM bench.accs WHERE idx = g % 200)
                      FROM generate_series(1, :u - (:u * 85 / 100) - (:u * 10 / 100)) g
        ), numbered AS (SELECT p.*, row_number() OVER (ORDER BY hashint8(coalesce(p.person_id, -p.account_id))) AS k
                        FROM picked p)
        SELECT n.k, CASE WHEN n.k <= :probe THEN -1 ELSE n.k % :rounds END AS round, n.kind, n.account_id, a.user_id,
               coalesce(({workload.X_ID_BASE} + n.person_id)::text, ({workload.X_ID_BASE} + 500000000 + n.k)::text)
                   AS external_id,
               CASE n.kind WHEN 'REPLIED' THEN 'dm:' ELSE 'fb:' END || (1900000000000000000 + n.k) AS provider_ref,
               CASE WHEN n.kind = 'REPLIED' THEN (CAST(:replies AS text[]))[1 + n.k % :nr] END AS text,
               CAST(:t AS timestamptz) + make_interval(secs => n.k % 60) AS occurred_at,
               n.k % 9 = 0 AND n.k > :probe AS duplicate
        FROM numbered n JOIN sender_accounts a ON a.id = n.account_id""",
            {"u": unique, "rounds": rounds, "probe": probe, "replies": REPLIES, "nr": len(REPLIES), "t": NOW + timedelta(minutes=1)})


def _round_signals(url: str, rnd: int, limit: int | None = None) -> list:
    with eng(url).connect() as c:
        return c.execute(sa.text("SELECT * FROM bench.signals WHERE round = :r ORDER BY k LIMIT :n"),
                         {"r": rnd, "n": limit}).all()


def ingest_engine(url: str, rnd: int, now: datetime, limit: int | None = None) -> dict:
    from outreach.engine import signals as sig
    from outreach.engine import tick
    from outreach.providers.base import Signal

    rows = _round_signals(url, rnd, limit)
    pages: dict = {}
    for r in rows:  # first poll: every new signal; second poll: the overlap re-read (the duplicates)
        s = Signal(kind=r.kind, external_id=r.external_id, provider_ref=r.provider_ref, occurred_at=r.occurred_at,
                   conversation_id=None, text=r.text)
        p = pages.setdefault((r.user_id, "inbox"), [([], f"c{rnd}a"), ([], f"c{rnd}b")])
        p[0][0].append(s)
        if r.duplicate:
            p[1][0].append(s)
    delivered = sum(len(p[0][0]) + len(p[1][0]) for p in pages.values())
    provider = NoopProvider(feed=pages)
    accounts = [a for a in tick.accounts(eng(url)) if (a.user_id, "inbox") in pages]
    engine = eng(url)
    t = time.perf_counter()
    polled: dict = {}
    for acc in accounts:
        for _ in range(2):
            for k, v in sig.poll_account(engine, acc, provider, "inbox", now).items():
                polled[k] = polled.get(k, 0) + v
    t_poll = time.perf_counter() - t
    counts = sig.ingest(engine, now)
    elapsed = time.perf_counter() - t
    return {"delivered": delivered, "seconds": elapsed, "poll_s": t_poll, "polled": polled, "counts": dict(counts)}


FLOOR_INGEST = """
INSERT INTO inbound_signals (provider, account_id, kind, external_id, provider_ref, text, occurred_at, source)
SELECT 'x', account_id, kind, external_id, provider_ref, text, occurred_at, 'poll' FROM sig_stage
ON CONFLICT (provider, provider_ref) DO NOTHING;
CREATE TEMP TABLE m ON COMMIT DROP AS
SELECT s.id AS sid, s.kind, s.provider_ref, s.occurred_at, s.account_id, s.external_id, s.text, e.id AS eid,
       e.person_id, e.sequence_id, e.version_id, e.current_step, e.phase, e.status, e.last_action
FROM inbound_signals s
LEFT JOIN identities i ON i.kind = 'twitter' AND i.value = s.external_id
LEFT JOIN enrollments e ON e.person_id = i.person_id AND e.accounts ->> 'x' = s.account_id::text
WHERE s.processed_at IS NULL;
INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step, account_id, provider,
                    provider_ref, dedupe_key, data)
SELECT occurred_at, CASE WHEN eid IS NULL THEN 'UNMATCHED_SIGNAL' ELSE kind END, eid, person_id, sequence_id,
       version_id, last_action, account_id, 'x', provider_ref,
       'sig:x:' || provider_ref || coalesce(':' || eid, ''),
       jsonb_build_object('external_id', external_id, 'text', left(text, 500), 'signal', kind)
FROM m ON CONFLICT (dedupe_key) DO NOTHING;
UPDATE enrollments e SET
    status = CASE WHEN m.kind = 'REPLIED' THEN 'COMPLETED' ELSE e.status END,
    current_step = CASE WHEN m.kind = 'FOLLOWED_BACK' AND e.current_step = 'follow' THEN 'dm_warm' ELSE e.current_step END,
    phase = CASE WHEN m.kind = 'FOLLOWED_BACK' THEN 'pending' ELSE e.phase END,
    next_run_at = CASE WHEN m.kind = 'FOLLOWED_BACK' THEN m.occurred_at ELSE NULL END,
    ended_reason = CASE WHEN m.kind = 'REPLIED' THEN 'replied' END, attempts = 0, updated_at = now()
FROM m WHERE e.id = m.eid AND e.status = 'ACTIVE' AND e.phase = 'waiting';
UPDATE inbound_signals SET processed_at = %(now)s WHERE id IN (SELECT sid FROM m)
"""


def ingest_floor(url: str, rnd: int, now: datetime, limit: int | None = None) -> dict:
    """The same writes in raw SQL: COPY the delivered signals, insert them skipping duplicates, match them in one
    join, one INSERT of the events, one UPDATE of the enrolments, one UPDATE of the signals; one commit."""
    import io

    rows = _round_signals(url, rnd, limit)
    buf = io.StringIO()
    delivered = 0
    for r in rows:
        line = "\t".join(["\\N" if v is None else str(v) for v in (r.account_id, r.kind, r.external_id,
                                                                     r.provider_ref, r.text, r.occurred_at)]) + "\n"
        buf.write(line * (2 if r.duplicate else 1))
        delivered += 2 if r.duplicate else 1
    buf.seek(0)
    raw = common.plain_engine(url).raw_connection()  # server defaults
    t = time.perf_counter()
    cur = raw.cursor()
    cur.execute("CREATE TEMP TABLE sig_stage (account_id bigint, kind text, external_id text, provider_ref text, "
                "text text, occurred_at timestamptz) ON COMMIT DROP")
    cur.copy_expert("COPY sig_stage FROM STDIN", buf)
    for stmt in FLOOR_INGEST.split(";"):
        cur.execute(stmt, {"now": now})
    raw.commit()
    elapsed = time.perf_counter() - t
    cur.close()
    raw.close()
    return {"delivered": delivered, "seconds": elapsed}


def ingest_phase(url: str, sizes: Sizes, budget_s: float = 90.0) -> dict:
    """Four rounds (engine, floor, floor, engine) of a quarter of the signals each, after a small engine probe
    round. When the probe says an engine round would take longer than ``budget_s``, every round (engine and
    floor alike) is cut to what fits in it, and the table says so."""
    rounds, probe = 4, 500
    build_signals(url, sizes.signals, rounds, probe)
    workload.vacuum(url, "enrollments")
    per_round = scalar(url, "SELECT count(*) + count(*) FILTER (WHERE duplicate) FROM bench.signals WHERE round = 0")
    p = ingest_engine(url, -1, NOW + timedelta(minutes=9))
    probe_rate = p["delivered"] / p["seconds"]
    limit = None
    if per_round / probe_rate > budget_s:
        limit = max(100, int(probe_rate * budget_s / 1.1))  # rows of a round (each dup-flagged row is sent twice)
    log(f"  ingest probe: {p['delivered']} signals in {p['seconds']:.2f}s ({probe_rate:,.0f}/s); "
        + (f"a full round ({per_round:,}) would take ~{per_round / probe_rate:,.0f}s: rounds cut to {limit:,} signals"
           if limit else f"rounds of {per_round:,} signals"))
    res = {"engine": {"delivered": 0, "seconds": 0.0, "counts": {}, "poll_s": 0.0},
           "floor": {"delivered": 0, "seconds": 0.0}, "probe": p, "cut_to": limit, "full_round": per_round}
    for rnd, who in enumerate(("engine", "floor", "floor", "engine")):
        now = NOW + timedelta(minutes=10 + rnd)
        out = (ingest_engine if who == "engine" else ingest_floor)(url, rnd, now, limit)
        res[who]["delivered"] += out["delivered"]
        res[who]["seconds"] += out["seconds"]
        if who == "engine":
            res[who]["poll_s"] += out["poll_s"]
            for k, v in {**out["counts"], **{f"poll:{k}": v for k, v in out["polled"].items()}}.items():
                res[who]["counts"][k] = res[who]["counts"].get(k, 0) + v
        log(f"  ingest round {rnd + 1}/4 ({who}): {out['delivered']:,} signals in {out['seconds']:.2f}s")
    for who in ("engine", "floor"):
        res[who]["rate"] = res[who]["delivered"] / res[who]["seconds"]
    return res


# ---------------------------------------------------------------------------------------------------------- metrics
FLOOR_METRICS = """
CREATE TEMP TABLE rollup_floor ON COMMIT DROP AS
SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, sequence_id, version_id, coalesce(step, '') AS step,
       coalesce(variant, '') AS variant, coalesce(account_id, 0) AS account_id, kind AS metric, count(*) AS value
FROM events WHERE occurred_at >= CAST(:a AS date) AND occurred_at < CAST(:b AS date) AND sequence_id IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7
"""


def metrics_phase(url: str, reps: int) -> dict:
    from outreach.engine import metrics

    d0 = METRICS_DAY.date()
    d1 = d0 + timedelta(days=1)
    events = scalar(url, "SELECT count(*) FROM events WHERE occurred_at >= CAST(:a AS date) AND occurred_at < CAST(:b AS date)",
                    {"a": d0, "b": d1})
    res = {"events": events, "engine": [], "floor": [], "summary": None}
    for rep in range(reps):
        for who in (("engine", "floor") if rep % 2 == 0 else ("floor", "engine")):
            t = time.perf_counter()
            if who == "engine":
                res["summary"] = metrics.aggregate(eng(url), d0, d1)
            else:
                with common.plain_engine(url).begin() as c:
                    c.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
                    c.execute(sa.text(FLOOR_METRICS), {"a": d0, "b": d1})
            res[who].append(time.perf_counter() - t)
        log(f"  metrics rep {rep + 1}/{reps}: engine {res['engine'][-1]:.1f}s, floor {res['floor'][-1]:.1f}s")
        if res["engine"][-1] > 60:
            break  # one slow repetition says enough
    return res


# -------------------------------------------------------------------------------------------------------- enrolment
ENROL_SEQUENCE = """\
name: {name}
accounts: [{accounts}]
exclude_already_contacted: true
start: follow
actions:
  follow: {{type: FOLLOW_ON_TWITTER}}
  dm_cold: {{type: SEND_TWITTER_DM, message: "Hi {{{{ first_name }}}}, quick question about {{{{ topic }}}}"}}
triggers:
  - {{from: follow, trigger: NOT_FOLLOWED_BACK, after: 2d, to: dm_cold}}
  - {{from: dm_cold, trigger: REPLIED, to: END}}
"""

def _sql_array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]::text[]"


def csv_sql(offset: int, n: int) -> str:
    """COPY ... TO STDOUT of ``n`` leads (ids from ``offset``) in the CSV format of `outreach leads import`."""
    arrays = (f"(SELECT {_sql_array(workload.FIRST)} f, {_sql_array(workload.LAST)} l, "
              f"{_sql_array(workload.COMPANIES)} c, {_sql_array(workload.TOPICS)} t, {_sql_array(workload.TITLES)} ti, "
              f"{_sql_array(workload.ZONES)} z) a")
    fn, ln = workload.FN, workload.LN
    return f"""
    COPY (
        SELECT {fn} || ' ' || {ln} AS name, ({workload.X_ID_BASE} + gg)::text AS twitter_id,
               lower({fn}) || '_' || lower(replace({ln}, ' ', '')) || gg AS twitter_username,
               lower({fn}) || '.' || lower(replace({ln}, ' ', '')) || gg || '@'
                   || CASE WHEN {workload.HAS_DOMAIN} THEN {workload.DOMAIN} ELSE 'gmail.com' END AS email,
               CASE WHEN g % 10 < 6 THEN a.z[1 + ((g / 5) % array_length(a.z, 1))] END AS timezone,
               CASE WHEN {workload.HAS_DOMAIN} THEN {workload.DOMAIN} END AS company_domain,
               a.t[1 + ((g / 13) % array_length(a.t, 1))] AS topic, {workload.CO} AS company,
               a.ti[1 + ((g / 11) % array_length(a.ti, 1))] AS title
        FROM generate_series(1, {int(n)}) g CROSS JOIN LATERAL (SELECT {int(offset)} + g AS gg) o CROSS JOIN {arrays}
    ) TO STDOUT WITH (FORMAT csv, HEADER true)"""


def enrol_phase(url: str, sizes: Sizes, workdir: Path) -> dict:
    from outreach.domain.sequence import parse_sequence
    from outreach.store import catalog

    names = ", ".join(workload.account_name(i) for i in range(workload.N_ACCOUNTS))
    res = {}
    for who, off in (("engine", 100_000_000), ("floor", 200_000_000)):
        name = f"enrol-bench-{who}"
        seq_file = workdir / f"{name}.yaml"
        seq_file.write_text(ENROL_SEQUENCE.format(name=name, accounts=names))
        with eng(url).begin() as c:
            seq = parse_sequence(seq_file.read_text(), str(seq_file), catalog.account_providers(c))
            catalog.apply_sequence(c, seq)
        csv_path = workdir / f"leads-{who}.csv"
        # the CSV itself, generated by the database (COPY ... TO STDOUT over generate_series)
        raw = eng(url).raw_connection()
        with open(csv_path, "w") as f:
            cur = raw.cursor()
            cur.copy_expert(csv_sql(off, sizes.csv), f)
            cur.close()
        raw.close()
        res[who] = {"csv_mb": csv_path.stat().st_size / 2**20}
    workload.checkpoint(url)
    for who in ("engine", "floor"):
        name = f"enrol-bench-{who}"
        cmd = [PY, str(HERE / "worker.py"), "--url", url, "--role", "enrol", "--mode", who,
               "--csv", str(workdir / f"leads-{who}.csv"), "--sequence", name,
               "--sequence-file", str(workdir / f"{name}.yaml"), "--now", NOW.isoformat()]
        p = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("@@")), None)
        if p.returncode or line is None:
            raise RuntimeError(f"enrolment worker ({who}) failed:\n{p.stderr[-3000:]}")
        res[who].update(json.loads(line[2:]))
        res[who]["rate"] = res[who]["rows"] / res[who]["elapsed"]
        log(f"  enrolment ({who}): {res[who]['rows']:,} leads in {res[who]['elapsed']:.1f}s")
    for who in ("engine", "floor"):
        (workdir / f"leads-{who}.csv").unlink(missing_ok=True)
    return res


# -------------------------------------------------------------------------------------------------------------- dags
TRIVIAL_DAG = '''
"""A one-task DAG: the reference for parse time."""
from datetime import datetime, timezone

from airflow.sdk import DAG, task

with DAG(dag_id="bench_trivial", schedule="0 */6 * * *", start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
         catchup=False, tags=["bench"], doc_md=__doc__, default_args={"retries": 1}) as dag:

    @task
    def noop() -> int:
        return 1

    noop()
'''

PARSE_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
t2 = time.perf_counter()
print("@@" + json.dumps({"airflow_import_s": t1 - t0, "parse_s": t2 - t1, "dags": len(bag.dags),
                         "errors": {k: str(v)[:300] for k, v in bag.import_errors.items()}}))
"""


def dags_phase(url: str, workdir: Path, reps: int) -> dict:
    from outreach.localenv import airflow_env

    ref = workdir / "dags_ref" / "bench_trivial_dag.py"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(TRIVIAL_DAG)
    env = airflow_env(url, home=workdir / "airflow")
    files = sorted(p for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
    res = {p.name: [] for p in files}
    res["_reference"] = []
    errors = {}
    for _ in range(reps):
        for target, key in [(ref, "_reference")] + [(p, p.name) for p in files]:
            p = subprocess.run([PY, "-c", PARSE_SNIPPET, str(target)], capture_output=True, text=True, env=env)
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("@@")), None)
            if line is None:
                raise RuntimeError(f"DAG parse of {target} failed:\n{p.stderr[-2000:]}")
            out = json.loads(line[2:])
            if out["errors"] or not out["dags"]:
                errors[key] = out["errors"] or "no DAG found"
            res[key].append(out["parse_s"])
    return {"times": res, "errors": errors}


# ----------------------------------------------------------------------------------------------------------- table
def fmt_rate(x: float, unit: str) -> str:
    return f"{x:,.0f} {unit}"


def fmt_s(x: float) -> str:
    return f"{x * 1000:,.0f} ms" if x < 10 else f"{x:,.1f} s"


def engine_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "plugins", "include", "dags"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return f"{head}{' + uncommitted changes in plugins/include/dags' if dirty else ''}"
    except OSError:
        return "?"


def print_table(rows: list[tuple], notes: list[str]) -> None:
    head = ("measure", "engine", "reference (same run)", "ratio", "target", "met")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print("\n" + line + "\n" + "  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print()
    for n in notes:
        print(textwrap.fill(n, 118, subsequent_indent="  "))


def div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def yes(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "NO")


def main() -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="every size x scale (default 1: 1M enrolments)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating advance rounds (engine/floor/v1)")
    ap.add_argument("--tick-reps", type=int, default=3)
    ap.add_argument("--metrics-reps", type=int, default=3)
    ap.add_argument("--dag-reps", type=int, default=5)
    ap.add_argument("--v1-cap", type=int, default=250, help="v1 leads per account and round (it is slow)")
    ap.add_argument("--database-url", help="PostgreSQL server to create the bench databases on")
    ap.add_argument("--keep", action="store_true", help="keep the bench databases")
    ap.add_argument("--profile", help="write cProfile + SQL timings of the engine's advance worker here")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: tick,claim,advance,ingest,metrics,"
                                              "enrol,dags")
    args = ap.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    sizes = Sizes(args.scale)
    workdir = ROOT / ".outreach" / "bench-perf"
    workdir.mkdir(parents=True, exist_ok=True)
    server = common.server_url(args.database_url)
    state = engine_state()
    log(f"engine at {state}; scale {args.scale:g}: {sizes.n:,} enrolments (small: {sizes.n_small:,}), "
        f"{sizes.m:,} metrics-day events, {sizes.signals:,} signals, {sizes.csv:,} CSV leads")
    names = {"small": "outreach_bench_perf_small", "main": "outreach_bench_perf"}
    urls = {}
    builds = {}
    for label, n, m in (("small", sizes.n_small, sizes.m_small), ("main", sizes.n, sizes.m)):
        log(f"building {label} database {names[label]}: {n:,} enrolments, {m:,} metrics-day events")
        urls[label] = common.fresh_database(server, names[label])
        builds[label] = workload.build(urls[label], n, m, log=lambda s: log(s))
    R: dict = {}
    try:
        if "tick" not in skip:
            log("tick: run_tick with none due and with 1,000 due, at 100k and at 1M enrolments")
            R["tick"] = tick_phase(urls, sizes, args.tick_reps)
        if "claim" not in skip:
            log("claim: steps.claim of 100 leads, rolled back, 200 samples per database")
            R["claim"] = claim_phase(urls, sizes)
        if "advance" not in skip:
            log("advance: engine vs raw-SQL floor vs v1 baseline")
            R["advance"] = {}
            for label in ("small", "main"):
                R["advance"][label] = advance_phase(urls[label], label, args.rounds, args.v1_cap,
                                                    args.profile if label == "main" else None)
        if "ingest" not in skip:
            log(f"ingest: {sizes.signals:,} signals (10% duplicates), engine vs floor")
            R["ingest"] = ingest_phase(urls["main"], sizes)
        if "metrics" not in skip:
            log(f"metrics: one day's rollup over {sizes.m:,} events of that day")
            R["metrics"] = metrics_phase(urls["main"], args.metrics_reps)
        if "enrol" not in skip:
            log(f"enrolment: {sizes.csv:,} leads from CSV, engine vs floor")
            R["enrol"] = enrol_phase(urls["main"], sizes, workdir)
        if "dags" not in skip:
            log("dags: DagBag parse time per file vs a one-task DAG")
            R["dags"] = dags_phase(urls["main"], workdir, args.dag_reps)
    finally:
        (workdir / "results.json").write_text(json.dumps({"scale": args.scale, "engine": state, "builds": builds,
                                                          "results": R}, indent=1, default=str))
        if not args.keep:
            for name in names.values():
                common.drop_database(server, name)
    rows, notes = report(R, sizes, builds)
    log(f"done; engine at {state}")
    print_table(rows, notes)
    return 0


def report(R: dict, sizes: Sizes, builds: dict) -> tuple[list, list]:
    rows: list[tuple] = []
    notes: list[str] = []
    k = lambda n: f"{n / 1000:,.0f}k" if n < 1_000_000 else f"{n / 1_000_000:,.1f}M"
    big, small = k(sizes.n), k(sizes.n_small)
    if "advance" in R:
        a = R["advance"]["main"]
        e, f, v = a["engine"]["rate"], a["floor"]["rate"], a["v1"]["rate"]
        rows.append((f"advance, lead-advances/s ({big} enrolments)",
                     f"{e:,.0f}/s ({a['engine']['leads']:,} leads)", f"raw-SQL floor {f:,.0f}/s ({a['floor']['leads']:,})",
                     f"{div(e, f):.0%} of floor", ">= 50% of floor", yes(div(e, f) >= 0.5)))
        rows.append(("advance, absolute", f"{e:,.0f}/s", "", "", ">= 10,000/s", yes(e >= 10_000)))
        rows.append(("advance vs v1 baseline", f"{e:,.0f}/s", f"v1 row-by-row {v:,.0f}/s ({a['v1']['leads']:,})",
                     f"{div(e, v):.1f}x", ">= 20x", yes(div(e, v) >= 20)))
        s = R["advance"]["small"]
        rows.append((f"advance at {small} enrolments (info)", f"{s['engine']['rate']:,.0f}/s",
                     f"floor {s['floor']['rate']:,.0f}/s, v1 {s['v1']['rate']:,.0f}/s",
                     f"{div(s['engine']['rate'], s['floor']['rate']):.0%} of floor", "", ""))
        notes.append(f"advance outcome counts (main): {json.dumps(a['counts'], sort_keys=True)}")
    if "tick" in R:
        t = R["tick"]
        med = statistics.median
        for kind, label in (("none", "none due"), ("due", f"{sizes.tick_due:,} due")):
            m, s = med(t["main"][kind]), med(t["small"][kind])
            rows.append((f"tick, {label} ({big} enrolments)", fmt_s(m), f"same tick at {small}: {fmt_s(s)}",
                         f"{div(m, s):.2f}x", "follows due count: <= 1.5x", yes(div(m, s) <= 1.5)))
        rows.append(("  one pass over the enrolments (scale)", fmt_s(t["main"]["scan"]),
                     f"at {small}: {fmt_s(t['small']['scan'])}", f"{div(t['main']['scan'], t['small']['scan']):.1f}x",
                     "", ""))
        for label in ("main", "small"):
            for kind in ("none", "due"):
                ph = t[label][f"phases_{kind}"]
                keys = sorted({x for p in ph for x in p})
                notes.append(f"tick phases ({label}, {'none' if kind == 'none' else f'{sizes.tick_due:,}'} due), "
                             "median ms: " + ", ".join(
                    f"{x} {med([p.get(x, 0) for p in ph]) * 1000:,.0f}" for x in keys))
        notes.append(f"tick leads advanced per due tick (main): {t['main'].get('advanced')}")
    if "claim" in R:
        c = R["claim"]
        rows.append((f"claim p95, 100 leads ({big} enrolments)", fmt_s(c["main"]["p95"]),
                     f"at {small}: {fmt_s(c['small']['p95'])}", f"{div(c['main']['p95'], c['small']['p95']):.2f}x",
                     "flat: <= 1.5x", yes(div(c["main"]["p95"], c["small"]["p95"]) <= 1.5)))
        notes.append(f"claim p50 main {fmt_s(c['main']['p50'])}, small {fmt_s(c['small']['p50'])}; mean rows "
                     f"claimed main {c['main']['mean_rows']:.0f}, small {c['small']['mean_rows']:.0f}")
    if "ingest" in R:
        g = R["ingest"]
        if g.get("cut_to"):
            notes.append(f"ingest: CUT SHORT. A probe of {g['probe']['delivered']} signals ran at "
                         f"{g['probe']['delivered'] / g['probe']['seconds']:,.1f}/s, so a full round of "
                         f"{g['full_round']:,} signals would have taken "
                         f"~{g['full_round'] * g['probe']['seconds'] / g['probe']['delivered']:,.0f}s; every round "
                         f"(engine and floor) was cut to {g['cut_to']:,} signals.")
        rows.append((f"ingest, signals/s ({g['engine']['delivered']:,} delivered, 10% dup"
                     f"{', CUT' if g.get('cut_to') else ''})",
                     f"{g['engine']['rate']:,.0f}/s", f"set-based raw SQL {g['floor']['rate']:,.0f}/s",
                     f"{div(g['engine']['rate'], g['floor']['rate']):.0%} of floor", "", ""))
        notes.append(f"ingest engine: poll (insert) {g['engine']['poll_s']:.1f}s of {g['engine']['seconds']:.1f}s; "
                     f"counts {json.dumps(g['engine']['counts'], sort_keys=True)}")
    if "enrol" in R:
        n = R["enrol"]
        rows.append((f"enrolment from CSV, leads/s ({n['engine']['rows']:,})", f"{n['engine']['rate']:,.0f}/s",
                     f"COPY + INSERT ... SELECT {n['floor']['rate']:,.0f}/s",
                     f"{div(n['engine']['rate'], n['floor']['rate']):.0%} of floor", "", ""))
        notes.append(f"enrolment engine: parse {n['engine']['parse_s']:.1f}s of {n['engine']['elapsed']:.1f}s, "
                     f"peak RSS {n['engine']['maxrss_mb']:,.0f} MB (floor process {n['floor']['maxrss_mb']:,.0f} MB); "
                     f"CSV {n['engine']['csv_mb']:,.0f} MB")
    if "metrics" in R:
        m = R["metrics"]
        e, f = min(m["engine"]), min(m["floor"])
        rows.append((f"metrics, one day's rollup ({m['events']:,} events that day)", fmt_s(e),
                     f"one GROUP BY of the day {fmt_s(f)}", f"{div(e, f):.1f}x the floor's time", "", ""))
        notes.append(f"metrics: best of {len(m['engine'])}; all engine {[round(x, 1) for x in m['engine']]} s, floor "
                     f"{[round(x, 1) for x in m['floor']]} s; summary {m['summary']}")
    if "dags" in R:
        d = R["dags"]
        ref = statistics.median(d["times"]["_reference"])
        for name, ts in d["times"].items():
            if name == "_reference":
                continue
            med_t = statistics.median(ts)
            rows.append((f"DAG parse dags/{name}", fmt_s(med_t), f"one-task DAG {fmt_s(ref)}",
                         f"{div(med_t, ref):.1f}x", "", "" if name not in d["errors"] else "ERRORS"))
        if d["errors"]:
            notes.append(f"DAG import errors: {d['errors']}")
    if "advance" in R:
        rm, rs = R["advance"]["main"]["rss"], R["advance"]["small"]["rss"]
        rows.append((f"memory, advance worker peak RSS ({big})", f"{rm['maxrss_mb']:,.0f} MB",
                     f"at {small}: {rs['maxrss_mb']:,.0f} MB", f"{div(rm['maxrss_mb'], rs['maxrss_mb']):.2f}x",
                     "flat: <= 1.10x", yes(div(rm["maxrss_mb"], rs["maxrss_mb"]) <= 1.10)))
        notes.append(f"advance worker RSS after imports: main {rm['base_rss_mb']:,.0f} MB, small "
                     f"{rs['base_rss_mb']:,.0f} MB; leads advanced by it: main "
                     f"{R['advance']['main']['engine']['leads']:,}, small {R['advance']['small']['engine']['leads']:,}")
    notes.append("build: " + "; ".join(f"{lab} {b['total']:.0f}s, {b['size_mb']:,.0f} MB" for lab, b in builds.items()))
    return rows, notes


if __name__ == "__main__":
    sys.exit(main())

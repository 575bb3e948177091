"""Profiles and what-if experiments behind the bottlenecks reported in bench/perf/README.md.

They run against the main bench database left by ``run.py --keep`` (``outreach_bench_perf`` on the bench server)
and change nothing durable: every experiment runs in transactions that are rolled back, or creates an index and
drops it again. Engine code is imported, never modified; a "rewrite" below is a candidate statement, timed beside
the engine's own on the same rows.

    .venv/bin/python bench/perf/run.py --keep                 # build + measure, keep the databases
    .venv/bin/python bench/perf/experiments.py ingest-match   # MATCH_SQL vs an index-friendly rewrite
    .venv/bin/python bench/perf/experiments.py metrics        # rollup statements vs group-first / partial index
    .venv/bin/python bench/perf/experiments.py claim-intent   # claim UPDATE + intent UPDATE vs one row version
    .venv/bin/python bench/perf/experiments.py gate           # gate lookups: parallel plans, covering index
    .venv/bin/python bench/perf/experiments.py tick-advance   # a tick's advance: batches that claim nothing
    .venv/bin/python bench/perf/experiments.py profile-advance  # py-spy: where an advance worker's time goes
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import METRICS_DAY, NOW, ROOT, use_venv

use_venv()

import common
import sqlalchemy as sa


def _engine(args) -> sa.Engine:
    return sa.create_engine(args.url or common.database_url(common.server_url(), "outreach_bench_perf"))


def _make_due(conn, account_filter: str, per_account: int) -> int:
    """Leads pending later (not parked) of the chosen accounts become due at NOW (committed: the caller vacuums)."""
    return conn.execute(sa.text(f"""
        UPDATE enrollments e SET next_run_at = CAST(:now AS timestamptz) - make_interval(secs => 1 + e.id % 3000)
        FROM (SELECT e.id, row_number() OVER (PARTITION BY e.account_id ORDER BY e.id) AS rn
              FROM enrollments e JOIN bench.accs a ON a.account_id = e.account_id AND {account_filter}
              WHERE e.status = 'ACTIVE' AND e.phase = 'pending' AND e.next_run_at > :now
                AND e.next_run_at < CAST(:now AS timestamptz) + interval '900 days') p
        WHERE e.id = p.id AND p.rn <= :k"""), {"now": NOW, "k": per_account}).rowcount


def _vacuum(eng: sa.Engine, table: str) -> None:
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql(f"VACUUM (ANALYZE) {table}")
        c.exec_driver_sql("CHECKPOINT")


# ---------------------------------------------------------------------------------------------------- ingest-match
def match_rewrite(text: str) -> str:
    """MATCH_SQL with its ``person IN (identities) OR email Message-ID`` filter split into a UNION of two
    index-driven branches (identities_kind_value_key -> enrollments_person; enrollments_pkey)."""
    a = text.index("        FROM enrollments e\n")
    b = text.index("    ) c WHERE c.pick = 1")
    return text[:a] + """        FROM (SELECT e1.* FROM identities i JOIN enrollments e1 ON e1.person_id = i.person_id
              WHERE i.kind = CASE sig.provider WHEN 'x' THEN 'twitter' WHEN 'linkedin' THEN 'linkedin'
                                 WHEN 'email' THEN 'email' WHEN 'xmtp' THEN 'xmtp' END
                AND i.value = sig.external_id
              UNION
              SELECT e2.* FROM enrollments e2
              WHERE sig.provider = 'email'
                AND e2.id = CAST(substring(sig.conversation_id from '^<outreach\\\\.([0-9]+)\\\\.') AS bigint)
                AND EXISTS (SELECT 1 FROM events ev WHERE ev.enrollment_id = e2.id AND ev.kind = 'SENT'
                            AND ev.provider_ref = sig.conversation_id)) e
        WHERE e.accounts ->> sig.provider = sig.account_id::text
""" + text[b:]


def ingest_match(args) -> None:
    from outreach.engine import signals

    eng = _engine(args)
    rewrite = match_rewrite(signals.MATCH_SQL.text)
    with eng.connect() as c, c.begin() as tx:
        c.execute(sa.text("""
            INSERT INTO inbound_signals (provider, account_id, kind, external_id, provider_ref, text, occurred_at)
            SELECT 'x', e.account_id, 'REPLIED', i.value, 'exp-' || e.id, 'hello', :t
            FROM enrollments e JOIN identities i ON i.person_id = e.person_id AND i.kind = 'twitter'
            WHERE e.status = 'ACTIVE' AND e.phase = 'waiting' ORDER BY e.id LIMIT :n"""),
            {"t": NOW + timedelta(minutes=1), "n": args.signals})
        for label, sql in (("engine MATCH_SQL", signals.MATCH_SQL.text), ("UNION rewrite", rewrite)):
            t = time.perf_counter()
            rows = c.execute(sa.text(sql), {"limit": 5000, "now": NOW}).all()
            dt = time.perf_counter() - t
            print(f"{label:18s} {len(rows)} signals, {sum(1 for r in rows if r.enrollment_id)} matched: "
                  f"{dt * 1000:9.1f} ms = {dt / max(len(rows), 1) * 1000:8.3f} ms/signal")
        tx.rollback()


# --------------------------------------------------------------------------------------------------------- metrics
GROUP_FIRST_DAILY = """
INSERT INTO metrics_daily (day, sequence_id, version_id, step, variant, account_id, metric, value)
WITH g AS (
    SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, sequence_id, version_id, coalesce(step, '') AS step,
           coalesce(variant, '') AS variant, coalesce(account_id, 0) AS account_id, kind,
           CASE WHEN kind IN ('SKIPPED', 'FAILED', 'RETRY_SCHEDULED', 'NEEDS_REVIEW', 'DEFERRED', 'TRIGGER_FIRED')
                THEN split_part(reason, ':', 1) END AS why,
           (kind = 'SENT' AND reason = 'reconciled') AS reconciled,
           CASE WHEN kind = 'REPLIED' THEN data ->> 'intent' END AS intent,
           count(*) AS n
    FROM events
    WHERE occurred_at >= CAST(:start_day AS date) AND occurred_at < CAST(:end_day AS date) AND sequence_id IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
)
SELECT day, sequence_id, version_id, step, variant, account_id, m.metric, sum(n)
FROM g CROSS JOIN LATERAL (VALUES (kind), (kind || ':' || why), (CASE WHEN reconciled THEN 'RECONCILED' END),
                                  ('REPLIED:' || intent)) AS m(metric)
WHERE m.metric IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7
ON CONFLICT (day, sequence_id, version_id, step, variant, account_id, metric)
DO UPDATE SET value = EXCLUDED.value, computed_at = now()
"""


def metrics(args) -> None:
    from outreach.engine import metrics as m
    from outreach.store.migrate import SQL_DIR

    eng = _engine(args)
    d0 = METRICS_DAY.date()
    params = {"start_day": d0, "end_day": d0 + timedelta(days=1), "edges": list(m.LATENCY_EDGES)}
    stmts = [s.strip() for s in (SQL_DIR / "metrics_rollup.sql").read_text().split(";") if m._code(s)]
    daily = next(s for s in stmts if "INSERT INTO metrics_daily" in s)
    latency = next((s for s in stmts if "INSERT INTO metrics_latency" in s), None)

    def run(label: str, sql: str, work_mem: str | None = None) -> None:
        with eng.connect() as c, c.begin() as tx:
            c.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
            if work_mem:
                c.exec_driver_sql(f"SET LOCAL work_mem = '{work_mem}'")
            t = time.perf_counter()
            c.execute(sa.text(sql), params)
            dt = time.perf_counter() - t
            out = c.execute(sa.text("""SELECT (SELECT count(*) || '/' || coalesce(sum(value), 0) FROM metrics_daily
                                               WHERE day = :d),
                                              (SELECT count(*) || '/' || coalesce(sum(count), 0) FROM metrics_latency
                                               WHERE day = :d)"""), {"d": d0}).one()
            print(f"{dt:7.1f}s  {label:58s} daily rows/sum {out[0]:>16}  latency rows/sum {out[1]:>14}", flush=True)
            tx.rollback()

    run("daily rollup: engine statement", daily)
    run("daily rollup: group first, expand the groups", GROUP_FIRST_DAILY)
    run("daily rollup: group first, expand, work_mem 256MB", GROUP_FIRST_DAILY, "256MB")
    if latency:
        run("latency rollup: engine statement", latency)
        with eng.connect() as c:
            t = time.perf_counter()
            c.exec_driver_sql("SET maintenance_work_mem = '1GB'")
            c.exec_driver_sql("CREATE INDEX bench_events_sent ON events (enrollment_id, step, occurred_at DESC) "
                              "WHERE kind = 'SENT'")
            c.commit()
            print(f"{time.perf_counter() - t:7.1f}s  create index events (enrollment_id, step, occurred_at DESC) "
                  "WHERE kind = 'SENT'")
        try:
            run("latency rollup: engine statement, with that index", latency)
        finally:
            with eng.connect() as c:
                c.exec_driver_sql("DROP INDEX bench_events_sent")
                c.commit()


# ---------------------------------------------------------------------------------------------------- claim-intent
def claim_intent(args) -> None:
    """Commit 1 today writes each claimed row twice (the claim's UPDATE sets the lease, then APPLY_SQL writes the
    intent). Alternative: the claim only locks (SELECT ... FOR UPDATE SKIP LOCKED) and the intent write sets the
    lease too: one row version per lead instead of two. Timed per 200-lead batch, alternating, rolled back."""
    from outreach.store import steps

    eng = _engine(args)
    with eng.connect() as c:
        accs = [r[0] for r in c.execute(sa.text("SELECT account_id FROM bench.accs WHERE idx % 10 = 7 ORDER BY idx"))]
        n = _make_due(c, "a.idx % 10 = 7", 400)
        c.commit()
    _vacuum(eng, "enrollments")
    print(f"{n} leads due on {len(accs)} accounts")
    select_claim = sa.text(steps.CLAIM_SQL.text.split("UPDATE enrollments e")[0]
                           .replace("WITH due AS (", "", 1).rstrip().rstrip(")"))

    def intents(rows, tag):
        return [steps.Transition(
            id=r.id, expect_step=r.current_step, expect_phase="pending", status="ACTIVE", step=r.current_step,
            phase="pending", next_run_at=NOW + timedelta(seconds=300), event_kind="ATTEMPTED", occurred_at=NOW,
            in_flight=True, keep_lease=True, dedupe_key=f"att:{r.id}:{r.current_step}:exp{tag}",
            data={"action": "SEND_TWITTER_DM", "reconcile": False}) for r in rows]

    res = {"claim UPDATE + intent APPLY (engine)": [], "lock-only claim + one intent APPLY": []}
    with eng.connect() as c:
        for rnd in range(3):
            for a in accs:
                for variant in (list(res) if rnd % 2 == 0 else list(res)[::-1]):
                    with c.begin() as tx:
                        p = {"account_id": a, "action_type": "SEND_TWITTER_DM", "now": NOW, "owner": "exp",
                             "limit": 200, "lease": 300, "sequences": None, "lease_from": NOW, "ids": None,
                             "mark_in_flight": False}
                        t = time.perf_counter()
                        if variant.endswith("(engine)"):
                            rows = c.execute(steps.CLAIM_SQL, p).all()
                            steps.apply(c, intents(rows, rnd), owner="exp", account_id=a, provider="x")
                        else:
                            ids = c.execute(select_claim, p).scalars().all()
                            rows = c.execute(sa.text("SELECT id, current_step FROM enrollments WHERE id = ANY(:i)"),
                                             {"i": ids}).all()
                            steps.apply(c, intents(rows, rnd), owner=None, account_id=a, provider="x", now=NOW)
                        res[variant].append(time.perf_counter() - t)
                        tx.rollback()
    with eng.connect() as c:  # leave nothing due behind (every claim above was rolled back)
        c.execute(sa.text("""UPDATE enrollments SET next_run_at = next_run_at + interval '1000 days'
                             WHERE status = 'ACTIVE' AND phase = 'pending' AND next_run_at <= :now"""), {"now": NOW})
        c.commit()
    for k, v in res.items():
        print(f"{k:40s} median {statistics.median(v) * 1000:6.1f} ms per 200-lead batch ({len(v)} batches)")


# ------------------------------------------------------------------------------------------------------------ gate
def gate_lookups(args) -> None:
    from outreach.engine import gate

    eng = _engine(args)
    with eng.connect() as c:
        pids = c.execute(sa.text("SELECT person_id FROM enrollments WHERE status = 'ACTIVE' "
                                 "ORDER BY hashint8(id) LIMIT 12000")).scalars().all()
        c.commit()
    batches = [sorted(pids[i:i + 200]) for i in range(0, len(pids), 200)]
    queries = [(name, getattr(gate, name)) for name in ("LOOKUP_SQL", "LOOKUP_HISTORY_SQL")]

    def bench(label, q, setup=None):
        with eng.connect() as c, c.begin() as tx:
            if setup:
                c.exec_driver_sql(setup)
            ts = []
            for b in batches:
                t = time.perf_counter()
                c.execute(q, {"ids": b}).all()
                ts.append(time.perf_counter() - t)
            tx.rollback()
        return statistics.median(ts) * 1000

    no_par = "SET LOCAL max_parallel_workers_per_gather = 0"
    for _ in range(2):  # the first pass warms the caches; the second is reported
        out = {(n, p): bench(n, q, p) for n, q in queries for p in (None, no_par)}
    print("median ms per 200-person batch")
    for n, _q in queries:
        print(f"  gate.{n:16s} as is {out[(n, None)]:6.2f}   max_parallel_workers_per_gather=0 "
              f"{out[(n, no_par)]:6.2f}")
    if True:  # the history part with and without the SENT index of 006_perf (dropped here if it exists)
        with eng.connect() as c:
            c.exec_driver_sql("CREATE INDEX bench_events_person_sent ON events (person_id) "
                              "INCLUDE (enrollment_id, occurred_at) WHERE kind = 'SENT'")
            c.commit()
        _vacuum(eng, "events")
        try:
            bench("warm", gate.LOOKUP_HISTORY_SQL, no_par)
            print(f"  gate.LOOKUP_HISTORY_SQL with index events (person_id) INCLUDE (enrollment_id, occurred_at) "
                  f"WHERE kind = 'SENT', no parallel: {bench('h', gate.LOOKUP_HISTORY_SQL, no_par):6.2f}")
        finally:
            with eng.connect() as c:
                c.exec_driver_sql("DROP INDEX bench_events_person_sent")
                c.commit()


# ---------------------------------------------------------------------------------------------------- tick-advance
def tick_advance(args) -> None:
    """The advance part of a tick with 5 due leads on each of the 200 accounts (the table's "1,000 due"): how much
    of it goes to batches that claim nothing (action types with no due work, and the empty batch that ends each
    action type's loop)."""
    from common import NoopProvider
    from outreach.engine import advance, tick
    from outreach.providers import registry
    from outreach.store.db import get_engine

    registry.build = lambda provider, conn_id, on_rate=None: NoopProvider()
    eng = _engine(args)
    with eng.connect() as c:
        n = _make_due(c, "true", 5)
        ids = [r[0] for r in c.execute(sa.text("SELECT account_id FROM bench.accs ORDER BY idx"))]
        c.commit()
    _vacuum(eng, "enrollments")
    stats = {"claimed nothing": [0, 0.0], "claimed leads": [0, 0.0]}
    orig = advance._batch

    def timed(*a, **kw):
        t = time.perf_counter()
        k = orig(*a, **kw)
        s = stats["claimed nothing" if k == 0 else "claimed leads"]
        s[0] += 1
        s[1] += time.perf_counter() - t
        return k

    advance._batch = timed
    t = time.perf_counter()
    counts = tick.advance(get_engine(str(eng.url.render_as_string(False))), ids, NOW + timedelta(minutes=1))
    total = time.perf_counter() - t
    advance._batch = orig
    print(f"{n} leads due on {len(ids)} accounts; tick.advance advanced {counts.get('sent', 0)} in {total:.2f}s "
          f"({total / len(ids) * 1000:.1f} ms per account)")
    for k, (calls, secs) in stats.items():
        print(f"  batches that {k:16s} {calls:5d}  {secs:6.2f}s  {secs / total:6.1%} of the time  "
              f"({secs / max(calls, 1) * 1000:.1f} ms each)")


# ------------------------------------------------------------------------------------------------- profile-advance
CATEGORIES = [
    ("commit", r"do_commit \("),
    ("pool checkout / pre-ping", r"_checkout \(|_do_ping|do_ping"),
    ("steps.apply (APPLY_SQL: intents, outcomes)", r"apply \(.*steps\.py"),
    ("steps.claim (CLAIM_SQL)", r"claim \(.*steps\.py"),
    ("gate.suppressed", r"suppressed \(.*gate\.py"),
    ("gate.History", r"__init__ \(.*gate\.py"),
    ("gate.recipients", r"recipients \(.*gate\.py"),
    ("gate.winners", r"winners \(.*gate\.py"),
    ("catalog.load_versions", r"load_versions"),
    ("rate budget (budget.py)", r"budget\.py"),
    ("compose (templates)", r"compose \("),
    ("state machine, transitions", r"_sent \(|_to \(|after_action"),
    ("other SQL", r"_execute_context"),
]


def profile_advance(args) -> None:
    """One advance worker (the engine role of worker.py) over 500 due leads on each of 100 accounts, sampled by
    py-spy (--idle: time waiting for PostgreSQL counts). Prints the share of wall time per engine function,
    split into waiting for the database and Python."""
    eng = _engine(args)
    with eng.connect() as c:
        n = _make_due(c, "a.idx % 10 < 5", 500)
        ids = [r[0] for r in c.execute(sa.text("SELECT account_id FROM bench.accs WHERE idx % 10 < 5 ORDER BY idx"))]
        c.commit()
    _vacuum(eng, "enrollments")
    raw = ROOT / ".outreach" / "bench-perf" / "advance.pyspy.txt"
    jobs = json.dumps({"op": "advance", "accounts": ids, "now": NOW.isoformat()}) + "\n" + '{"op": "quit"}\n'
    spy = Path(sys.executable).with_name("py-spy")
    p = subprocess.run([str(spy), "record", "--idle", "--format", "raw", "-r", "200", "-o", str(raw), "--",
                        sys.executable, str(HERE / "worker.py"), "--url", str(eng.url.render_as_string(False)),
                        "--role", "engine"], input=jobs, capture_output=True, text=True)
    answer = next((json.loads(ln[2:]) for ln in p.stdout.splitlines() if ln.startswith("@@") and "elapsed" in ln),
                  None)
    if answer is None:
        sys.exit(f"py-spy run failed:\n{p.stderr[-2000:]}")
    print(f"{n} leads due; advanced {answer['advanced']:,} in {answer['elapsed']:.1f}s "
          f"({answer['advanced'] / answer['elapsed']:,.0f}/s, under py-spy)")
    split: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "advance_account" not in stack:
            continue
        k = int(count)
        total += k
        cat = next((name for name, pat in CATEGORIES if re.search(pat, stack)), "other Python")
        leaf = stack.split(";")[-1]
        split[(cat, "db" if re.search(r"do_execute \(|do_commit \(|_do_ping|do_ping", leaf) else "py")] += k
    by_cat: collections.Counter = collections.Counter()
    for (cat, _w), k in split.items():
        by_cat[cat] += k
    print(f"share of the advance worker's wall time ({total} samples)      total   waiting for PostgreSQL   Python")
    for cat, k in by_cat.most_common():
        print(f"  {cat:55s} {k / total:6.1%}   {split[(cat, 'db')] / total:6.1%}   {split[(cat, 'py')] / total:6.1%}")
    db = sum(k for (c, w), k in split.items() if w == "db")
    print(f"  {'all':55s} {1:6.1%}   {db / total:6.1%}   {1 - db / total:6.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("ingest-match", "metrics", "claim-intent", "gate", "tick-advance",
                                     "profile-advance"))
    ap.add_argument("--url", help="the bench database (default: outreach_bench_perf on the bench server)")
    ap.add_argument("--signals", type=int, default=50)
    args = ap.parse_args()
    {"ingest-match": ingest_match, "metrics": metrics, "claim-intent": claim_intent, "gate": gate_lookups,
     "tick-advance": tick_advance, "profile-advance": profile_advance}[args.what](args)


if __name__ == "__main__":
    main()

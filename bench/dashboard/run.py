"""Dashboard benchmark: every page of the dashboard on a database with 10 million events.

    .venv/bin/python bench/dashboard/run.py                  # 10M events (a few minutes to build)
    .venv/bin/python bench/dashboard/run.py --events 1000000 --requests 20
    .venv/bin/python bench/dashboard/run.py --reuse          # time the pages on the last database built

Builds a fresh database (``outreach_bench_dashboard`` on the embedded server under .outreach/bench-pg, or on
OUTREACH_BENCH_DATABASE_URL) with set-based SQL only (generate_series, INSERT ... SELECT): 8 X accounts,
12 sequences of 4 steps (follow -> warm DM with an A/B arm | cold DM -> nudge), people, enrollments spread over
120 days, and their event logs (enrolled, deferred, attempted, sent, failed, retried, follow-backs, replies with
intents and latencies, timeouts, NEEDS_REVIEW), rate budgets with send logs and a few ALERT events. The rollups
are then computed by the engine's own ``metrics.aggregate`` in 8-day intervals (as backfills would), and one
day is recomputed on its own (the steady-state cost of a DAG run). Then every page is requested through
FastAPI's TestClient, ``--requests`` times each after warm-up, and p50 / p95 / max are printed. Exit 1 if a
page's p95 is 300 ms or more.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
venv_python = ROOT / ".venv" / "bin" / "python"
if venv_python.exists() and Path(sys.prefix).resolve() != venv_python.parents[1].resolve():
    os.execv(str(venv_python), [str(venv_python), *sys.argv])
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))

import sqlalchemy as sa  # noqa: E402

from outreach.domain.accounts import parse_accounts  # noqa: E402
from outreach.domain.sequence import parse_sequence  # noqa: E402
from outreach.engine import metrics  # noqa: E402
from outreach.store import catalog, migrate  # noqa: E402

DB_NAME = "outreach_bench_dashboard"
DAY0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
DAYS = 120
N_SEQ = 12
N_ACC = 8
EVENTS_PER_ENROLLMENT = 7.42  # what the generator below produces on average (printed after the build)
BUDGET_MS = 300

ACCOUNTS = "accounts:\n" + "".join(
    f'  - {{name: x-{i}, provider: x, conn_id: x_{i}, user_id: "{1000 + i}"}}\n' for i in range(1, N_ACC + 1))
SEQUENCE = """
name: {name}
accounts: [{a}, {b}]
start: follow
actions:
  follow: {{type: FOLLOW_ON_TWITTER}}
  dm_warm:
    type: SEND_TWITTER_DM
    message: "Thanks for the follow, {{{{ first_name }}}}!"
    variants:
      - {{name: short, weight: 50, message: "Thanks {{{{ first_name }}}}!"}}
  dm_cold: {{type: SEND_TWITTER_DM, message: "Hi {{{{ first_name }}}}, quick question"}}
  nudge: {{type: SEND_TWITTER_DM, message: "Bumping this, {{{{ first_name }}}}"}}
triggers:
  - {{from: follow, trigger: FOLLOWED_BACK, to: dm_warm}}
  - {{from: follow, trigger: NOT_FOLLOWED_BACK, after: 2d, to: dm_cold}}
  - {{from: dm_warm, trigger: REPLIED, to: END}}
  - {{from: dm_cold, trigger: REPLIED, to: END}}
  - {{from: dm_cold, trigger: NOT_REPLIED, after: 3d, to: nudge}}
  - {{from: nudge, trigger: REPLIED, to: END}}
  - {{from: nudge, trigger: NOT_REPLIED, after: 3d, to: END}}
"""

# One enrollment's life, decided by hashes of its id (deterministic): follow (1.5% fail), follow-back (55%) ->
# warm DM (A/B arm by hash) -> reply (25%); else timeout after 2 days -> cold DM -> reply (12%) or timeout after 3 days
# -> nudge -> reply (5%). Every 331st lead ends in NEEDS_REVIEW at its DM, 10% are deferred by the send window,
# 2.5% get a retry. Replies carry an intent; their latency is spread over minutes to 3 days.
EVENTS_SQL = """
INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step, variant, account_id,
                    provider, attempt, reason, provider_ref, dedupe_key, data)
SELECT v.t, v.kind, b.id, b.person_id, b.sequence_id, b.version_id, v.step, v.variant, b.account_id, 'x', v.attempt,
       v.reason, v.ref, v.dkey, v.data
FROM (
    SELECT e.id, e.person_id, e.sequence_id, e.version_id, e.account_id, e.created_at AS t0,
           (e.id * 7919) % 1000 AS h1, (e.id * 104729) % 1000 AS h2, (e.id * 1299709) % 1000 AS h3,
           (e.id * 15485863) % 1000 AS h4, e.id % 331 = 0 AS review
    FROM enrollments e WHERE e.id BETWEEN :lo AND :hi
) b
CROSS JOIN LATERAL (SELECT b.h1 < 550 AS fb, b.h3 < 15 AS ffail, b.t0 + interval '1 hour' AS tf,
                           CASE WHEN b.h4 < 500 THEN 'short' ELSE 'control' END AS arm) f
CROSS JOIN LATERAL (SELECT f.tf + make_interval(mins => CAST((b.h4 * 3) % 2880 + 5 AS int)) AS tfb,
                           f.tf + interval '2 days' AS tnf,
                           make_interval(mins => CAST(((b.h4 * 7) % 1000) * ((b.h2 * 13) % 1000) % 4320 + 1 AS int)) AS lat,
                           jsonb_build_object('intent', CASE WHEN b.h3 < 300 THEN 'positive' WHEN b.h3 < 600
                               THEN 'neutral' WHEN b.h3 < 900 THEN 'negative' ELSE 'unsubscribe' END,
                               'text', 'a reply', 'signal', 'REPLIED') AS reply) g
CROSS JOIN LATERAL (VALUES
    (true, 'ENROLLED', 'follow', b.t0, NULL::text, NULL::text, NULL::int, NULL::text, NULL::text, NULL::jsonb),
    (b.h2 % 10 = 0, 'DEFERRED', 'follow', b.t0 + interval '30 min', NULL, 'send_window', NULL, NULL, NULL,
     '{"timezone": "Europe/Berlin"}'),
    (true, 'ATTEMPTED', 'follow', f.tf, NULL, NULL, 1, NULL, concat_ws(':', 'att', b.id, 'follow', 0),
     '{"action": "FOLLOW_ON_TWITTER"}'),
    (NOT f.ffail, 'SENT', 'follow', f.tf + interval '2 s', NULL, NULL, 1, 'follow:' || b.id, concat_ws(':', 'out', b.id, 'follow'),
     '{"next": "follow"}'),
    (f.ffail, 'FAILED', 'follow', f.tf + interval '2 s', NULL, 'user_not_found', 1, NULL, concat_ws(':', 'out', b.id, 'follow'),
     '{"detail": "not found"}'),
    (NOT f.ffail AND f.fb, 'FOLLOWED_BACK', 'follow', g.tfb, NULL, NULL, NULL, 'follower:' || b.id,
     'sig:x:follower:' || b.id || ':' || b.id, '{"signal": "FOLLOWED_BACK"}'),
    (NOT f.ffail AND f.fb AND b.h3 % 40 = 1, 'RETRY_SCHEDULED', 'dm_warm', g.tfb + interval '50 min', f.arm, 'timeout',
     1, NULL, NULL, '{"delay_s": 60}'),
    (NOT f.ffail AND f.fb, 'ATTEMPTED', 'dm_warm', g.tfb + interval '1 hour', f.arm, NULL, 1, NULL,
     concat_ws(':', 'att', b.id, 'dm_warm', 0), '{"action": "SEND_TWITTER_DM"}'),
    (NOT f.ffail AND f.fb AND NOT b.review, 'SENT', 'dm_warm', g.tfb + interval '1 hour 2 s', f.arm, NULL, 1,
     'dm:' || b.id, concat_ws(':', 'out', b.id, 'dm_warm'), '{"text_len": 42}'),
    (NOT f.ffail AND f.fb AND b.review, 'NEEDS_REVIEW', 'dm_warm', g.tfb + interval '1 hour 5 min', f.arm,
     'reconcile_unknown', 1, NULL, concat_ws(':', 'out', b.id, 'dm_warm'), NULL),
    (NOT f.ffail AND f.fb AND NOT b.review AND b.h2 < 250, 'REPLIED', 'dm_warm',
     g.tfb + interval '1 hour 2 s' + g.lat, f.arm, NULL, NULL, 'dm:r' || b.id, 'sig:x:dm:r' || b.id || ':' || b.id,
     g.reply),
    (NOT f.ffail AND NOT f.fb, 'TRIGGER_FIRED', 'follow', g.tnf, NULL, 'NOT_FOLLOWED_BACK', NULL, NULL,
     concat_ws(':', 'tmo', b.id, 'follow'), '{"fired": "NOT_FOLLOWED_BACK"}'),
    (NOT f.ffail AND NOT f.fb, 'ATTEMPTED', 'dm_cold', g.tnf + interval '1 min', NULL, NULL, 1, NULL,
     concat_ws(':', 'att', b.id, 'dm_cold', 0), '{"action": "SEND_TWITTER_DM"}'),
    (NOT f.ffail AND NOT f.fb AND NOT b.review, 'SENT', 'dm_cold', g.tnf + interval '1 min 2 s', NULL, NULL, 1,
     'dm:' || b.id, concat_ws(':', 'out', b.id, 'dm_cold'), '{"text_len": 40}'),
    (NOT f.ffail AND NOT f.fb AND b.review, 'NEEDS_REVIEW', 'dm_cold', g.tnf + interval '6 min', NULL,
     'reconcile_unknown', 1, NULL, concat_ws(':', 'out', b.id, 'dm_cold'), NULL),
    (NOT f.ffail AND NOT f.fb AND NOT b.review AND b.h2 < 120, 'REPLIED', 'dm_cold',
     g.tnf + interval '1 min 2 s' + g.lat, NULL, NULL, NULL, 'dm:r' || b.id, 'sig:x:dm:r' || b.id || ':' || b.id,
     g.reply),
    (NOT f.ffail AND NOT f.fb AND NOT b.review AND b.h2 >= 120, 'TRIGGER_FIRED', 'dm_cold',
     g.tnf + interval '3 days 1 min', NULL, 'NOT_REPLIED', NULL, NULL, concat_ws(':', 'tmo', b.id, 'dm_cold'),
     '{"fired": "NOT_REPLIED"}'),
    (NOT f.ffail AND NOT f.fb AND NOT b.review AND b.h2 >= 120, 'ATTEMPTED', 'nudge', g.tnf + interval '3 days 2 min',
     NULL, NULL, 1, NULL, concat_ws(':', 'att', b.id, 'nudge', 0), '{"action": "SEND_TWITTER_DM"}'),
    (NOT f.ffail AND NOT f.fb AND NOT b.review AND b.h2 >= 120, 'SENT', 'nudge',
     g.tnf + interval '3 days 2 min 2 s', NULL, NULL, 1, 'dmn:' || b.id, concat_ws(':', 'out', b.id, 'nudge'), '{"text_len": 20}'),
    (NOT f.ffail AND NOT f.fb AND NOT b.review AND b.h2 >= 120 AND b.h2 < 170, 'REPLIED', 'nudge',
     g.tnf + interval '3 days 2 min 2 s' + g.lat, NULL, NULL, NULL, 'dm:n' || b.id,
     'sig:x:dm:n' || b.id || ':' || b.id, g.reply)
) AS v(inc, kind, step, t, variant, reason, attempt, ref, dkey, data)
WHERE v.inc
"""


def fresh_database(name: str) -> str:
    base = os.environ.get("OUTREACH_BENCH_DATABASE_URL")
    if not base:
        from outreach.store.db import STATE_DIR, embedded_url

        base = embedded_url(STATE_DIR / "bench-pg")
    url = sa.engine.make_url(base)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    out = url.set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(sa.create_engine(out))
    return out


def existing_database(name: str) -> str:
    base = os.environ.get("OUTREACH_BENCH_DATABASE_URL")
    if not base:
        from outreach.store.db import STATE_DIR, embedded_url

        base = embedded_url(STATE_DIR / "bench-pg")
    return sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)


def step(msg: str, t0: float) -> float:
    now = time.monotonic()
    print(f"  {msg} ({now - t0:.1f}s)", flush=True)
    return now


def build(engine: sa.Engine, n_enrollments: int) -> dict:
    t = time.monotonic()
    with engine.begin() as conn:
        catalog.apply_accounts(conn, parse_accounts(ACCOUNTS, "accounts.yaml"))
        providers = catalog.account_providers(conn)
        for k in range(N_SEQ):
            yaml = SEQUENCE.format(name=f"seq-{k:02d}", a=f"x-{k % N_ACC + 1}", b=f"x-{(k + 3) % N_ACC + 1}")
            catalog.apply_sequence(conn, parse_sequence(yaml, "bench.yaml", providers))
        seqmap = [dict(r._mapping) for r in conn.execute(sa.text("""
            SELECT row_number() OVER (ORDER BY s.name) - 1 AS k, s.id AS sequence_id, v.id AS version_id,
                   a1.id AS acc_a, a2.id AS acc_b
            FROM sequences s JOIN sequence_versions v ON v.sequence_id = s.id
            JOIN sender_accounts a1 ON a1.name = s.accounts[1] JOIN sender_accounts a2 ON a2.name = s.accounts[2]"""))]
    t = step(f"catalogue: {N_ACC} accounts, {N_SEQ} sequences", t)
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        conn.execute(sa.text("""
            INSERT INTO people (id, name, timezone, created_at)
            SELECT i, 'Lead ' || i, CASE WHEN i % 3 = 0 THEN 'Europe/Berlin' END, :d0 FROM generate_series(1, CAST(:n AS bigint)) i"""),
                     {"n": n_enrollments, "d0": DAY0})
        conn.execute(sa.text("""
            INSERT INTO identities (person_id, kind, value) SELECT i, 'twitter', (5000000 + i)::text
            FROM generate_series(1, CAST(:n AS bigint)) i"""), {"n": n_enrollments})
        conn.execute(sa.text("""
            INSERT INTO enrollments (id, sequence_id, version_id, person_id, account_id, accounts, status, current_step,
                                     phase, next_run_at, attempts, variables, ended_reason, last_action, created_at,
                                     updated_at)
            SELECT i, m.sequence_id, m.version_id, i, a.account_id, jsonb_build_object('x', a.account_id),
                   CASE WHEN i % 331 = 0 THEN 'NEEDS_REVIEW' WHEN (i * 1299709) % 1000 < 15 THEN 'FAILED'
                        ELSE 'COMPLETED' END,
                   CASE WHEN i % 331 = 0 AND (i * 7919) % 1000 < 550 THEN 'dm_warm' WHEN i % 331 = 0 THEN 'dm_cold'
                        ELSE 'follow' END,
                   'pending', NULL, 1, jsonb_build_object('first_name', 'Lead'),
                   CASE WHEN i % 331 = 0 THEN 'reconcile_unknown' END, 'follow', t.t0, t.t0 + interval '3 days'
            FROM generate_series(1, CAST(:n AS bigint)) i
            JOIN jsonb_to_recordset(CAST(:seqmap AS jsonb))
                 AS m(k int, sequence_id bigint, version_id bigint, acc_a bigint, acc_b bigint) ON m.k = i % :nseq
            CROSS JOIN LATERAL (SELECT CASE WHEN (i / :nseq) % 2 = 0 THEN m.acc_a ELSE m.acc_b END AS account_id) a
            CROSS JOIN LATERAL (SELECT CAST(:d0 AS timestamptz)
                                       + make_interval(secs => floor(i::float8 * :days * 86400 / :n)) AS t0) t"""),
            {"n": n_enrollments, "seqmap": json.dumps(seqmap), "nseq": N_SEQ, "d0": DAY0, "days": DAYS})
        conn.exec_driver_sql("SELECT setval('people_id_seq', (SELECT max(id) FROM people))")
        conn.exec_driver_sql("SELECT setval('enrollments_id_seq', (SELECT max(id) FROM enrollments))")
    t = step(f"{n_enrollments:,} people, identities and enrollments", t)

    # the event log: secondary indexes are dropped for the load and rebuilt after (as for any bulk load)
    with engine.begin() as conn:
        uniques = conn.execute(sa.text("""
            SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = 'events'::regclass AND contype = 'u'""")).all()
        indexes = conn.execute(sa.text("""
            SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events'
              AND indexname <> 'events_pkey' AND indexname <> ALL(:u)"""), {"u": [u[0] for u in uniques]}).all()
        for name, _ in uniques:
            conn.exec_driver_sql(f"ALTER TABLE events DROP CONSTRAINT {name}")
        for name, _ in indexes:
            conn.exec_driver_sql(f"DROP INDEX {name}")
    chunk = 200_000
    for lo in range(1, n_enrollments + 1, chunk):
        with engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            conn.execute(sa.text(EVENTS_SQL), {"lo": lo, "hi": min(lo + chunk - 1, n_enrollments)})
    t = step("events inserted", t)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        for name, definition in uniques:
            conn.exec_driver_sql(f"ALTER TABLE events ADD CONSTRAINT {name} {definition}")
        for _, definition in indexes:
            conn.exec_driver_sql(definition)
    t = step(f"{len(uniques) + len(indexes)} event indexes rebuilt", t)

    with engine.begin() as conn:
        n_events, lo, hi = conn.execute(sa.text("SELECT count(*), min(occurred_at), max(occurred_at) FROM events")).one()
        # rate budgets with a week of send logs (one [time, count] pair per batch), and a few alerts
        rng = random.Random(1)
        now = hi
        rows = []
        for acc in range(1, N_ACC + 1):
            for action in ("FOLLOW_ON_TWITTER", "SEND_TWITTER_DM"):
                log = sorted([[now.timestamp() - rng.uniform(0, 7 * 86400), rng.randint(5, 40)] for _ in range(300)])
                rows.append({"a": acc, "t": action, "tat": json.dumps({"log": log, "per_day": now.timestamp()}),
                             "blocked": (now + timedelta(minutes=9)).isoformat() if acc == 3 and action ==
                             "SEND_TWITTER_DM" else None})
        conn.execute(sa.text("""
            INSERT INTO rate_budgets (account_id, action_type, tat, blocked_until, last_limit, last_remaining,
                                      last_reset_at)
            SELECT a, t, CAST(tat AS jsonb), CAST(blocked AS timestamptz), 200, 12, CAST(:now AS timestamptz)
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(a bigint, t text, tat text, blocked text)"""),
            {"rows": json.dumps(rows), "now": now + timedelta(minutes=9)})
        conn.execute(sa.text("""
            INSERT INTO events (occurred_at, kind, account_id, provider, reason, dedupe_key, data)
            SELECT CAST(:now AS timestamptz) - make_interval(days => d), 'ALERT', 5, 'x', 'failure_rate',
                   'alert:failure_rate:5:' || d, '{"failed": 12, "attempted": 50, "action": "paused"}'
            FROM generate_series(1, 3) d"""), {"now": now})
    t = step(f"{n_events:,} events from {lo:%Y-%m-%d} to {hi:%Y-%m-%d}; rate budgets, alerts", t)

    # the rollups, by the engine's own code, in 8-day intervals (as a backfill would)
    day = lo.date()
    agg_times = []
    while day <= hi.date():
        t1 = time.monotonic()
        metrics.aggregate(engine, day, day + timedelta(days=8))
        agg_times.append(time.monotonic() - t1)
        day += timedelta(days=8)
    t = step(f"rollups computed in {len(agg_times)} intervals of 8 days ({sum(agg_times):.0f}s)", t)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    t = step("VACUUM ANALYZE", t)
    one_day = lo.date() + timedelta(days=60)
    t1 = time.monotonic()
    summary = metrics.aggregate(engine, one_day, one_day + timedelta(days=1))
    one = time.monotonic() - t1
    step(f"one day recomputed (the steady-state DAG cost): {one * 1000:.0f} ms, {summary['rollup_rows']} rows", t)
    return {"events": n_events, "enrollments": n_enrollments, "now": now, "aggregate_one_day_s": one,
            "aggregate_total_s": sum(agg_times)}


def sizes(engine: sa.Engine) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("""
            SELECT 'events', (SELECT count(*) FROM events) UNION ALL
            SELECT 'metrics_daily', (SELECT count(*) FROM metrics_daily) UNION ALL
            SELECT 'metrics_latency', (SELECT count(*) FROM metrics_latency) UNION ALL
            SELECT 'enrollments', (SELECT count(*) FROM enrollments) UNION ALL
            SELECT 'needs_review', (SELECT count(*) FROM enrollments WHERE status = 'NEEDS_REVIEW') UNION ALL
            SELECT 'database_mb', pg_database_size(current_database()) / 1048576""")).all())


def time_pages(engine: sa.Engine, now: datetime, requests_per_page: int) -> list[tuple[str, list[float]]]:
    from fastapi.testclient import TestClient

    from outreach.web.app import create_app

    rng = random.Random(7)
    with engine.connect() as conn:
        seqs = [r[0] for r in conn.execute(sa.text("SELECT name FROM sequences ORDER BY name"))]
        max_id = conn.execute(sa.text("SELECT max(id) FROM enrollments")).scalar()
        review_ids = [r[0] for r in conn.execute(sa.text(
            "SELECT id FROM enrollments WHERE status = 'NEEDS_REVIEW' ORDER BY id LIMIT 50"))]
    from urllib.parse import quote

    at = quote(now.isoformat())
    pages = [
        ("/  (sequences)", lambda: "/"),
        ("/sequences/{name}", lambda: f"/sequences/{rng.choice(seqs)}"),
        ("/sequences/{name}?days=30", lambda: f"/sequences/{rng.choice(seqs)}?days=30&now={at}"),
        ("/api/sequences/{name}", lambda: f"/api/sequences/{rng.choice(seqs)}"),
        ("/accounts", lambda: f"/accounts?now={at}"),
        ("/api/accounts", lambda: f"/api/accounts?now={at}"),
        ("/review", lambda: "/review"),
        ("/review?sequence={name}", lambda: f"/review?sequence={rng.choice(seqs)}"),
        ("/review?offset=2000", lambda: "/review?offset=2000"),
        ("/leads/{id}", lambda: f"/leads/{rng.randint(1, max_id)}"),
        ("/leads/{id} (review)", lambda: f"/leads/{rng.choice(review_ids)}"),
    ]
    out = []
    with TestClient(create_app(engine)) as client:
        for name, url in pages:
            for _ in range(3):  # warm-up: connections, plans, caches
                assert client.get(url()).status_code == 200, name
            times = []
            for _ in range(requests_per_page):
                u = url()
                t0 = time.perf_counter()
                r = client.get(u)
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, (u, r.status_code, r.text[:300])
            out.append((name, times))
    return out


def screenshot(engine: sa.Engine, now: datetime, path: Path, page: str) -> None:
    """Serve the app with uvicorn on a free port and let headless Chromium take a picture of ``page``."""
    import socket
    import subprocess
    import tempfile
    import threading
    from urllib.parse import quote

    import uvicorn

    from outreach.web.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    sep = "&" if "?" in page else "?"
    url = f"http://127.0.0.1:{port}/{page}{sep}now={quote(now.isoformat())}"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1280,2000",
                        f"--screenshot={path}", url], check=True, capture_output=True, timeout=120)
    server.should_exit = True
    thread.join(timeout=10)
    print(f"screenshot of /{page} written to {path}")


def main() -> int:
    import logging

    logging.getLogger("outreach").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000, help="about this many events")
    ap.add_argument("--requests", type=int, default=30, help="timed requests per page")
    ap.add_argument("--reuse", action="store_true", help="time the pages on the database the last run built")
    ap.add_argument("--screenshot", type=Path, help="also save a PNG of a page (headless Chromium) here")
    ap.add_argument("--page", default="sequences/seq-00", help="the page for --screenshot")
    args = ap.parse_args()
    started = time.monotonic()
    if args.reuse:
        engine = sa.create_engine(existing_database(DB_NAME))
        with engine.connect() as conn:
            now = conn.execute(sa.text("SELECT max(occurred_at) FROM events WHERE kind <> 'ALERT'")).scalar()
        built = None
    else:
        n = int(args.events / EVENTS_PER_ENROLLMENT)
        print(f"building {DB_NAME}: {n:,} enrollments, about {args.events:,} events", flush=True)
        engine = sa.create_engine(fresh_database(DB_NAME))
        built = build(engine, n)
        now = built["now"]
    size = sizes(engine)
    print("\n" + ", ".join(f"{k} {v:,}" for k, v in size.items()))
    results = time_pages(engine, now, args.requests)
    head = f"{'page':<28} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
    print(f"\n{args.requests} requests per page (after 3 warm-up requests), FastAPI TestClient, one client\n")
    print(head + "\n" + "-" * len(head))
    ok = True
    for name, times in results:
        times.sort()
        p50 = statistics.median(times)
        p95 = times[max(0, int(round(0.95 * len(times))) - 1)]
        ok &= p95 < BUDGET_MS
        print(f"{name:<28} {p50:>8.1f} {p95:>8.1f} {max(times):>8.1f}")
    if built:
        print(f"\nrollups: all {built['events']:,} events in {built['aggregate_total_s']:.0f}s (8-day intervals); "
              f"one day recomputed in {built['aggregate_one_day_s'] * 1000:.0f} ms")
    print(f"\nevery page p95 < {BUDGET_MS} ms: {'yes' if ok else 'NO'}   ({time.monotonic() - started:.0f}s in all)")
    if args.screenshot:
        screenshot(engine, now, args.screenshot, args.page)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

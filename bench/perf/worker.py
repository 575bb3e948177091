"""A bench worker process: the engine's advance worker, or the raw-SQL floor and the v1 baseline.

Started by run.py; reads one JSON job per line on stdin and answers one line starting with ``@@`` on stdout.

    worker.py --url URL --role engine       # jobs: advance (outreach.engine.tick.advance -> advance_account)
    worker.py --url URL --role reference    # jobs: floor, v1
    worker.py --url URL --role enrol ...    # one-shot: CSV enrolment through outreach.store.leads, or its floor

Every worker answers {"op": "rss"} with its peak RSS (ru_maxrss) and {"op": "quit"} by exiting.
``--profile DIR`` (engine role) runs the advance jobs under cProfile and times every SQL statement by its text.
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NoopProvider, use_venv

use_venv()

import sqlalchemy as sa


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


ADVANCED = ("sent", "checked", "needs_review")


def advanced(counts: dict) -> int:
    """Leads whose step was completed: sent (or checked), skipped at the gate, failed, or parked for review."""
    return sum(v for k, v in counts.items() if k in ADVANCED or k.startswith(("skipped:", "failed:")))


# ---------------------------------------------------------------------------------------------------------- engine
class SqlTimer:
    """Client-side wall time per SQL statement text (profiling only)."""

    def __init__(self, engine: sa.Engine):
        self.total: dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        sa.event.listen(engine, "before_cursor_execute", self.before)
        sa.event.listen(engine, "after_cursor_execute", self.after)

    def before(self, conn, cursor, statement, parameters, context, executemany):
        conn.info["t0"] = time.perf_counter()

    def after(self, conn, cursor, statement, parameters, context, executemany):
        key = " ".join(statement.split())[:110]
        self.total[key] += time.perf_counter() - conn.info.pop("t0", time.perf_counter())
        self.calls[key] += 1


def engine_role(args) -> None:
    from outreach.engine import tick
    from outreach.engine.advance import AdvanceConfig
    from outreach.providers import registry
    from outreach.store.db import get_engine

    registry.build = lambda provider, conn_id, on_rate=None: NoopProvider()  # the provider call is a no-op
    engine = get_engine(args.url)  # the engine every task and command uses (pool, pre-ping)
    profiler = timer = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        timer = SqlTimer(engine)
    base_rss = current_rss_mb()
    for job in _jobs():
        if job["op"] == "advance":
            now = datetime.fromisoformat(job["now"])
            t0 = time.perf_counter()
            if profiler:
                profiler.enable()
            counts = tick.advance(engine, job["accounts"], now, AdvanceConfig(batch_size=job.get("batch", 200)))
            if profiler:
                profiler.disable()
            elapsed = time.perf_counter() - t0
            _answer({"elapsed": elapsed, "advanced": advanced(counts), "counts": counts})
        elif not _common(job, base_rss):
            _answer({"error": f"unknown op {job['op']}"})
        if job["op"] == "quit":
            break
    if profiler:
        out = Path(args.profile)
        out.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(str(out / "advance.pstats"))
        with open(out / "advance_sql.json", "w") as f:
            json.dump({k: {"seconds": v, "calls": timer.calls[k]} for k, v in
                       sorted(timer.total.items(), key=lambda kv: -kv[1])}, f, indent=1)


# ------------------------------------------------------------------------------------------------------- reference
FLOOR_PICK = """
SELECT id, person_id, sequence_id, version_id, current_step FROM enrollments
WHERE account_id = %s AND status = 'ACTIVE' AND phase = 'pending' AND next_run_at <= %s
ORDER BY next_run_at, id LIMIT %s
"""
FLOOR_UPDATE = """
UPDATE enrollments e SET status = u.status, current_step = u.step, phase = u.phase, next_run_at = u.next_run_at,
    last_action = u.done, last_action_at = %s, attempts = 0, in_flight = false, lease_owner = NULL,
    lease_expires_at = NULL, updated_at = now()
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::text[])
     AS u(id, status, step, phase, next_run_at, done)
WHERE e.id = u.id
"""
EVENT_COLUMNS = ("occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step, account_id, provider, "
                 "attempt, reason, provider_ref, dedupe_key, data")

V1_PICK = sa.text("""
SELECT e.id, e.person_id, e.sequence_id, e.version_id, e.current_step, e.variables FROM enrollments e
WHERE e.account_id = :a AND e.status = 'ACTIVE' AND e.phase = 'pending' AND e.next_run_at <= :now
ORDER BY e.next_run_at LIMIT 1
FOR UPDATE
""")
V1_RECIPIENT = sa.text("SELECT kind, value FROM identities WHERE person_id = :p")
V1_EVENT = sa.text(f"""
INSERT INTO events ({EVENT_COLUMNS})
VALUES (:t, 'SENT', :id, :p, :s, :v, :step, :a, 'x', 1, NULL, :ref, :key, CAST(:data AS jsonb))
""")
V1_UPDATE = sa.text("""
UPDATE enrollments SET status = :status, current_step = :next_step, phase = :phase, next_run_at = :nr,
    last_action = :step, last_action_at = :t, attempts = 0, updated_at = now()
WHERE id = :id
""")


class NextStates:
    """(version, step) -> the state after the step's action, from the domain state machine (computed once)."""

    def __init__(self, conn: sa.Connection):
        from outreach.store import catalog

        ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM sequence_versions"))]
        self.versions = catalog.load_versions(conn, ids)
        self.cache: dict = {}

    def after(self, version_id: int, step: str, now: datetime):
        from outreach.domain import machine

        key = (version_id, step)
        if key not in self.cache:
            self.cache[key] = machine.after_action(self.versions[version_id], step, now)
        return self.cache[key]


def _copy_value(v) -> str:
    if v is None:
        return "\\N"
    s = v if isinstance(v, str) else v.isoformat() if isinstance(v, datetime) else str(v)
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def floor_job(raw, states: NextStates, accounts: list[int], now: datetime, batch: int) -> int:
    """The engine's writes for one lead-advance, in raw SQL: per batch of ``batch`` leads of one account, read the
    due rows, COPY an ATTEMPTED and a SENT event per lead, one UPDATE ... FROM unnest, one commit."""
    done = 0
    cur = raw.cursor()
    for account in accounts:
        while True:
            cur.execute(FLOOR_PICK, (account, now, batch))
            rows = cur.fetchall()
            if not rows:
                raw.commit()
                break
            buf = io.StringIO()
            ids, status, step, phase, nra, dones = [], [], [], [], [], []
            for eid, pid, sid, vid, cur_step in rows:
                nxt = states.after(vid, cur_step, now)
                action_type = states.versions[vid].actions[cur_step].type
                common = [now, None, eid, pid, sid, vid, cur_step, account, "x"]
                attempted = common[:]
                attempted[1] = "ATTEMPTED"
                buf.write("\t".join(_copy_value(v) for v in attempted + [
                    1, None, None, f"att:{eid}:{cur_step}:1",
                    json.dumps({"action": action_type, "reconcile": False})]) + "\n")
                sent = common[:]
                sent[1] = "SENT"
                buf.write("\t".join(_copy_value(v) for v in sent + [
                    1, None, f"noop:{eid}:{cur_step}", f"out:{eid}:{cur_step}",
                    json.dumps({"next": nxt.step if nxt.status == "ACTIVE" else nxt.status, "fired": nxt.fired,
                                "text_len": 0})]) + "\n")
                ids.append(eid)
                status.append(nxt.status)
                step.append(nxt.step)
                phase.append(nxt.phase)
                nra.append(nxt.next_run_at)
                dones.append(cur_step)
            buf.seek(0)
            cur.copy_expert(f"COPY events ({EVENT_COLUMNS}) FROM STDIN", buf)
            cur.execute(FLOOR_UPDATE, (now, ids, status, step, phase, nra, dones))
            raw.commit()
            done += len(rows)
    cur.close()
    return done


def v1_job(engine: sa.Engine, states: NextStates, accounts: list[int], now: datetime, cap: int) -> int:
    """What the source system did: per lead, SELECT ... FOR UPDATE one row, read the recipient, render, call, insert
    the event, update the lead, commit. One transaction (and one fsync) per lead."""
    from outreach.engine.compose import compose, variables_for

    provider = NoopProvider()
    done = 0
    with engine.connect() as conn:
        for account in accounts:
            for _ in range(cap):
                with conn.begin():
                    r = conn.execute(V1_PICK, {"a": account, "now": now}).first()
                    if r is None:
                        break
                    recipient = {k: v for k, v in conn.execute(V1_RECIPIENT, {"p": r.person_id}).all()}
                    action = states.versions[r.version_id].actions[r.current_step]
                    text = ""
                    if action.message:
                        text, _variant, _skip = compose(action, r.id, variables_for(r.variables, recipient))
                    res = provider.perform(action.type, "1", recipient, text or "", idempotency_key=f"{r.id}")
                    nxt = states.after(r.version_id, r.current_step, now)
                    conn.execute(V1_EVENT, {"t": now, "id": r.id, "p": r.person_id, "s": r.sequence_id,
                                            "v": r.version_id, "step": r.current_step, "a": account,
                                            "ref": res.provider_ref, "key": f"out:{r.id}:{r.current_step}",
                                            "data": json.dumps({"text_len": len(text or "")})})
                    conn.execute(V1_UPDATE, {"status": nxt.status, "next_step": nxt.step, "phase": nxt.phase,
                                             "nr": nxt.next_run_at, "step": r.current_step, "t": now, "id": r.id})
                done += 1
    return done


def reference_role(args) -> None:
    import common

    engine = common.plain_engine(args.url)  # the server's own session settings, not the engine's
    with engine.connect() as conn:
        states = NextStates(conn)
    raw = engine.raw_connection()
    base_rss = current_rss_mb()
    for job in _jobs():
        now = datetime.fromisoformat(job["now"]) if "now" in job else None
        if job["op"] == "floor":
            t0 = time.perf_counter()
            n = floor_job(raw, states, job["accounts"], now, job.get("batch", 200))
            _answer({"elapsed": time.perf_counter() - t0, "advanced": n})
        elif job["op"] == "v1":
            t0 = time.perf_counter()
            n = v1_job(engine, states, job["accounts"], now, job["cap"])
            _answer({"elapsed": time.perf_counter() - t0, "advanced": n})
        elif not _common(job, base_rss):
            _answer({"error": f"unknown op {job['op']}"})
        if job["op"] == "quit":
            break
    raw.close()


# -------------------------------------------------------------------------------------------------------- enrolment
def enrol_role(args) -> None:
    """One-shot: enrol the CSV through the engine (parse_leads_csv + import_leads, one transaction), or its floor
    (COPY into a staging table, then one INSERT ... SELECT each for people, identities, enrollments, events)."""
    from outreach.store import catalog
    from outreach.store.db import get_engine

    import common

    # the floor runs with the server's own session settings, not the engine's
    engine = get_engine(args.url) if args.mode == "engine" else common.plain_engine(args.url)
    now = datetime.fromisoformat(args.now)
    t0 = time.perf_counter()
    if args.mode == "engine":
        from outreach.domain.sequence import parse_sequence
        from outreach.store.leads import import_leads, parse_leads_csv

        text = Path(args.csv).read_text()
        rows = parse_leads_csv(text, args.csv)
        t_parse = time.perf_counter() - t0
        with engine.begin() as conn:
            seq_row = catalog.latest_version(conn, args.sequence)
            seq = parse_sequence(Path(args.sequence_file).read_text(), args.sequence_file,
                                 catalog.account_providers(conn))
            report = import_leads(conn, seq_row, seq, rows, now)
        out = {"rows": report.rows, "enrolled": report.enrolled, "parse_s": t_parse}
    else:
        with engine.begin() as conn:
            seq_row = catalog.latest_version(conn, args.sequence)
            acc = [r[0] for r in conn.execute(sa.text(
                "SELECT id FROM sender_accounts WHERE name = ANY(:n) ORDER BY name"),
                {"n": list(seq_row.accounts)})]
            conn.exec_driver_sql("""
                CREATE TEMP TABLE stage (name text, twitter_id text, twitter_username text, email text, timezone text,
                    company_domain text, topic text, company text, title text) ON COMMIT DROP""")
            cur = conn.connection.dbapi_connection.cursor()
            with open(args.csv) as f:
                cur.copy_expert("COPY stage FROM STDIN WITH (FORMAT csv, HEADER true, NULL '')", f)
            cur.close()
            conn.exec_driver_sql("""
                CREATE TEMP TABLE staged ON COMMIT DROP AS
                SELECT nextval(pg_get_serial_sequence('people', 'id')) AS pid, * FROM stage""")
            conn.exec_driver_sql("""
                INSERT INTO people (id, name, timezone, company_domain)
                SELECT pid, name, timezone, company_domain FROM staged""")
            conn.exec_driver_sql("""
                INSERT INTO identities (person_id, kind, value)
                SELECT pid, k, v FROM staged CROSS JOIN LATERAL (VALUES ('twitter', twitter_id),
                    ('twitter_username', lower(twitter_username)), ('email', email)) AS x(k, v)""")
            enrolled = conn.execute(sa.text("""
                INSERT INTO enrollments (sequence_id, version_id, person_id, account_id, accounts, current_step,
                                         phase, next_run_at, variables)
                SELECT :sid, :vid, pid, (CAST(:acc AS bigint[]))[1 + pid % :na],
                       jsonb_build_object('x', (CAST(:acc AS bigint[]))[1 + pid % :na]), 'follow', 'pending', :now,
                       jsonb_strip_nulls(jsonb_build_object('name', name, 'first_name', split_part(name, ' ', 1),
                           'topic', topic, 'company', company, 'title', title, 'twitter_username', twitter_username,
                           'company_domain', company_domain))
                FROM staged"""), {"sid": seq_row.sequence_id, "vid": seq_row.version_id, "acc": acc, "na": len(acc),
                                  "now": now}).rowcount
            conn.execute(sa.text("""
                INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step,
                                    account_id)
                SELECT :now, 'ENROLLED', e.id, e.person_id, e.sequence_id, e.version_id, e.current_step, e.account_id
                FROM enrollments e WHERE e.sequence_id = :sid"""), {"now": now, "sid": seq_row.sequence_id})
        out = {"rows": enrolled, "enrolled": enrolled}
    out.update({"elapsed": time.perf_counter() - t0, "maxrss_mb": maxrss_mb()})
    _answer(out)


# ------------------------------------------------------------------------------------------------------------ plumbing
def _jobs():
    for line in sys.stdin:
        if line.strip():
            yield json.loads(line)


def _answer(obj: dict) -> None:
    sys.stdout.write("@@" + json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _common(job: dict, base_rss: float) -> bool:
    if job["op"] == "rss":
        _answer({"maxrss_mb": maxrss_mb(), "rss_mb": current_rss_mb(), "base_rss_mb": base_rss})
        return True
    if job["op"] == "quit":
        _answer({"bye": True, "maxrss_mb": maxrss_mb()})
        return True
    return False


def main() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--role", choices=("engine", "reference", "enrol"), required=True)
    ap.add_argument("--profile")
    ap.add_argument("--mode", choices=("engine", "floor"))
    ap.add_argument("--csv")
    ap.add_argument("--sequence")
    ap.add_argument("--sequence-file")
    ap.add_argument("--now")
    args = ap.parse_args()
    {"engine": engine_role, "reference": reference_role, "enrol": enrol_role}[args.role](args)


if __name__ == "__main__":
    main()

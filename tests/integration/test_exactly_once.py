"""Exactly once per (enrollment, step) under retries, overlapping runs, backfills and crashes.

Every verdict comes from the sandbox's own record of what it received (a DM stored twice is a duplicate,
whatever the engine believes) checked against the database. The whole file runs in about a minute:

a. kill -9: worker processes advance 2,000 leads while a killer SIGKILLs one at random ten times
b. the crash windows, in-process: after the provider accepted and before the outcome commit; after the intent
   commit and before the call; inside the outcome commit; and a crash between two retries
c. two ``outreach tick`` processes at once over the same due leads
d. two ``airflow dags test outreach_sequences`` processes at once
e. a backfill run never sends (operator, task callables, and a real Airflow run of type backfill) and
   aggregate_metrics recomputes exactly its data interval
f. Airflow retries / cleared tasks: the advance operator's execute run again for the same batch
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from outreach.clock import parse_now
from outreach.engine.advance import AdvanceConfig, advance_account
from outreach.engine.tick import accounts
from outreach.localenv import airflow_bin, airflow_env, ensure_airflow_db
from outreach.providers import registry
from outreach.store import steps

from tests.helpers import setup

ROOT = Path(__file__).resolve().parents[2]
T0 = "2026-01-05T09:00:00Z"
NOW = parse_now(T0)

DM_SEQUENCE = """
name: one-dm
accounts: [x-main]
start: dm
actions:
  dm: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}, quick question about {{ topic }}"}
triggers:
  - {from: dm, trigger: NORMAL_EDGE, to: END}
"""
# three sender accounts (three X users in the sandbox): leads are spread over them, and two overlapping runs
# walk the accounts in the same order, so they meet on the same leads
THREE_ACCOUNTS = """
accounts:
  - {name: x-main, provider: x, conn_id: x_main, user_id: "1001"}
  - {name: x-b, provider: x, conn_id: x_b, user_id: "1002"}
  - {name: x-c, provider: x, conn_id: x_c, user_id: "1003"}
"""
DM_SEQUENCE_3 = DM_SEQUENCE.replace("name: one-dm", "name: three-dm").replace("[x-main]", "[x-main, x-b, x-c]")


class ProcessDied(BaseException):
    """The worker process dies here (kill -9, OOM): nothing after this line runs, no except clause catches it."""


class Crashing:
    """The real X provider, with a death at a chosen point: ``before_call``, ``after_accept`` (the DM landed and the
    answer came back, then the process died before commit 2) or ``before_reconcile``; on the ``at``-th call."""

    def __init__(self, real, when: str, at: int = 1):
        self.real, self.when, self.at, self.n = real, when, at, 0
        self.client = real.client

    def perform(self, *args, **kw):
        self.n += 1
        if self.when == "before_call" and self.n == self.at:
            raise ProcessDied("after the intent commit, before the call")
        result = self.real.perform(*args, **kw)
        if self.when == "after_accept" and self.n == self.at:
            raise ProcessDied("the provider accepted; the outcome commit never happens")
        return result

    def reconcile(self, *args, **kw):
        if self.when == "before_reconcile":
            raise ProcessDied("after the intent commit, before the reconcile read")
        return self.real.reconcile(*args, **kw)


def _account(engine, name: str = "x-main"):
    return next(a for a in accounts(engine) if a.name == name)


def _provider():
    return registry.build("x", "x_main")


def _dm_calls(sandbox) -> list[dict]:
    return [c for c in sandbox.calls() if c["method"] == "POST" and c["path"].endswith("/messages")]


def _landed(sandbox) -> Counter:
    return Counter((c["user_id"], c["target_id"], c["text"]) for c in _dm_calls(sandbox) if c["effect"])


def _events(engine, kind: str | None = None) -> list:
    with engine.connect() as c:
        return c.execute(sa.text("""
            SELECT id, kind, enrollment_id, reason, data, dedupe_key FROM events
            WHERE kind <> 'ENROLLED' AND (CAST(:k AS text) IS NULL OR kind = :k) ORDER BY id"""), {"k": kind}).all()


def _enrollments(engine) -> list:
    with engine.connect() as c:
        return c.execute(sa.text("SELECT * FROM enrollments ORDER BY id")).all()


def _assert_each_sent_once(engine, sandbox, n: int) -> None:
    landed = _landed(sandbox)
    assert sandbox.summary()["duplicate_dms"] == 0
    assert max(landed.values(), default=0) == 1, "a DM was stored twice"
    assert sum(landed.values()) == n
    sent = _events(engine, "SENT")
    assert len(sent) == n, "the event log's SENT count equals the sandbox's DM count"
    assert len({e.enrollment_id for e in sent}) == n
    assert all(e.status == "COMPLETED" and not e.in_flight for e in _enrollments(engine))
    keys = [e.dedupe_key for e in _events(engine) if e.dedupe_key]
    assert len(keys) == len(set(keys))


# ------------------------------------------------------------------------------------------- a. kill -9


def test_chaos_kill9_workers_no_duplicate_no_lost_lead(engine, database_url, tmp_path):
    """4 worker processes (lease 3 s), 2,000 leads of a one-step DM sequence, 10 SIGKILLs at random moments,
    1% accept-then-500 then 1% timeout faults; survivors and replacements finish, in_flight rows reconciled."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.chaos.harness import ChaosConfig, run_chaos

    result = run_chaos(database_url, ChaosConfig(leads=2000, workers=4, kills=10, lease_seconds=3,
                                                 batch_size=50, client_timeout=0.5, fault_rate=0.01,
                                                 deadline_seconds=90), tmp_path / "logs")
    s = result.stats
    print(json.dumps(s, default=str), result.kills)
    assert len(result.kills) == 10
    assert result.problems == []
    # from the sandbox's own record: nothing stored twice
    assert s["duplicate_dms"] == 0 and s["sent_twice"] == 0
    # from the database: every lead progressed or waits for review; none lost
    assert s["lost_active"] == 0 and s["completed_without_sent"] == 0 and s["landed_not_recorded"] == 0
    assert s["status"].get("COMPLETED", 0) + s["status"].get("NEEDS_REVIEW", 0) == 2000
    assert s["sent_events"] == s["sandbox_dms"] - s["landed_needs_review"]
    # the crash windows were exercised: intents without outcome were reconciled, some of them had landed
    assert s["reconcile_checks"] > 0 and s["sent_reconciled"] > 0


# ------------------------------------------------------------------------------------------- b. crash windows


def test_crash_after_acceptance_before_outcome_commit_is_reconciled_not_resent(engine, sandbox):
    setup(engine, DM_SEQUENCE, n=1)
    acc, cfg = _account(engine), AdvanceConfig(lease_seconds=60)
    with pytest.raises(ProcessDied):
        advance_account(engine, acc, Crashing(_provider(), "after_accept"), now=NOW, config=cfg)
    assert sum(_landed(sandbox).values()) == 1  # the DM is out
    (e,) = _enrollments(engine)
    assert e.in_flight and e.status == "ACTIVE" and e.lease_owner  # intent durable, outcome lost
    assert [x.kind for x in _events(engine)] == ["ATTEMPTED"]

    # while the dead worker's lease holds, nobody touches the lead
    assert advance_account(engine, acc, _provider(), now=NOW + timedelta(seconds=30), config=cfg)["claimed"] == 0
    # after it: reconcile finds the DM, records it, and sends nothing
    later = NOW + timedelta(seconds=61)
    counts = advance_account(engine, acc, _provider(), now=later, config=cfg)
    assert counts["reconciled"] == 1 and counts["sent"] == 1
    assert sum(_landed(sandbox).values()) == 1 and sandbox.summary()["duplicate_dms"] == 0
    (sent,) = _events(engine, "SENT")
    assert sent.reason == "reconciled"
    (e,) = _enrollments(engine)
    assert e.status == "COMPLETED" and not e.in_flight and e.lease_owner is None
    assert [c["method"] for c in sandbox.calls() if c["path"].startswith("/2/dm_conversations")] == ["POST", "GET"]


def test_crash_after_intent_before_call_sends_exactly_once(engine, sandbox):
    setup(engine, DM_SEQUENCE, n=1)
    acc, cfg = _account(engine), AdvanceConfig(lease_seconds=60)
    with pytest.raises(ProcessDied):
        advance_account(engine, acc, Crashing(_provider(), "before_call"), now=NOW, config=cfg)
    assert _dm_calls(sandbox) == []
    assert _enrollments(engine)[0].in_flight
    counts = advance_account(engine, acc, _provider(), now=NOW + timedelta(seconds=61), config=cfg)
    assert counts["reconciled"] == 1 and counts["sent"] == 1  # reconcile found nothing -> sent, once
    assert sum(_landed(sandbox).values()) == 1
    (sent,) = _events(engine, "SENT")
    assert sent.reason is None
    attempts = _events(engine, "ATTEMPTED")
    assert [a.data["reconcile"] for a in attempts] == [False, True]
    _assert_each_sent_once(engine, sandbox, 1)


def test_crash_mid_batch_mixes_landed_and_never_called(engine, sandbox):
    """One batch of 5: DMs 1-3 land, the process dies right after the 3rd is accepted; 4-5 were never called."""
    setup(engine, DM_SEQUENCE, n=5)
    acc, cfg = _account(engine), AdvanceConfig(lease_seconds=60)
    with pytest.raises(ProcessDied):
        advance_account(engine, acc, Crashing(_provider(), "after_accept", at=3), now=NOW, config=cfg)
    assert sum(_landed(sandbox).values()) == 3
    counts = advance_account(engine, acc, _provider(), now=NOW + timedelta(seconds=61), config=cfg)
    assert counts["reconciled"] == 5 and counts["sent"] == 5
    assert Counter(e.reason for e in _events(engine, "SENT")) == {"reconciled": 3, None: 2}
    _assert_each_sent_once(engine, sandbox, 5)


def test_crash_inside_the_outcome_commit_is_reconciled(engine, sandbox, monkeypatch):
    """The outcome statement ran and then the process died before COMMIT: the transaction rolls back."""
    setup(engine, DM_SEQUENCE, n=3)
    acc, cfg = _account(engine), AdvanceConfig(lease_seconds=60)
    real_apply = steps.apply

    def dying_apply(conn, transitions, **kw):
        passed = real_apply(conn, transitions, **kw)
        if any(t.event_kind == "SENT" for t in transitions):
            raise ProcessDied("between the outcome statement and COMMIT")
        return passed

    monkeypatch.setattr(steps, "apply", dying_apply)
    with pytest.raises(ProcessDied):
        advance_account(engine, acc, _provider(), now=NOW, config=cfg)
    monkeypatch.setattr(steps, "apply", real_apply)
    assert sum(_landed(sandbox).values()) == 3 and _events(engine, "SENT") == []
    counts = advance_account(engine, acc, _provider(), now=NOW + timedelta(seconds=61), config=cfg)
    assert counts["sent"] == 3 and counts["reconciled"] == 3
    assert {e.reason for e in _events(engine, "SENT")} == {"reconciled"}
    _assert_each_sent_once(engine, sandbox, 3)


def test_retry_after_maybe_landed_and_a_crash_reconciles_back_to_the_first_attempt(engine, sandbox):
    """Attempt 1 lands but answers 500 (maybe landed); attempt 2, minutes later, dies before its reconcile read;
    attempt 3 must look back to attempt 1, not just to attempt 2, or it re-sends."""
    setup(engine, DM_SEQUENCE, n=1)
    acc, cfg = _account(engine), AdvanceConfig(lease_seconds=60)
    sandbox.faults(error_rate=1.0, mode="accept_then_500", paths=["dm"])
    counts = advance_account(engine, acc, _provider(), now=NOW, config=cfg)
    sandbox.faults()
    assert counts["retried"] == 1 and sum(_landed(sandbox).values()) == 1
    (e,) = _enrollments(engine)
    assert e.in_flight and e.next_run_at <= NOW + timedelta(seconds=60)
    with pytest.raises(ProcessDied):
        advance_account(engine, acc, Crashing(_provider(), "before_reconcile"), now=NOW + timedelta(minutes=2),
                        config=cfg)
    counts = advance_account(engine, acc, _provider(), now=NOW + timedelta(minutes=5), config=cfg)
    assert counts["reconciled"] == 1 and counts["sent"] == 1
    assert _events(engine, "SENT")[0].reason == "reconciled"
    _assert_each_sent_once(engine, sandbox, 1)


# ------------------------------------------------------------------------------------------- c. overlapping ticks


def _three_accounts(monkeypatch, sandbox) -> dict:
    conns = {f"AIRFLOW_CONN_X_{k.upper()}": json.dumps({"conn_type": "x", "host": sandbox.url,
                                                        "password": f"sandbox-{uid}"})
             for k, uid in (("main", 1001), ("b", 1002), ("c", 1003))}
    for k, v in conns.items():
        monkeypatch.setenv(k, v)
    return conns


def test_two_overlapping_ticks_send_each_lead_once(engine, sandbox, monkeypatch, database_url):
    n = 60
    conns = _three_accounts(monkeypatch, sandbox)
    setup(engine, DM_SEQUENCE_3, n=n, accounts_yaml=THREE_ACCOUNTS)
    # every DM is answered after 50 ms: the two ticks are sending at the same time
    sandbox.faults(error_rate=1.0, mode="timeout", timeout_seconds=0.05, paths=["dm"])
    env = {**os.environ, **conns, "OUTREACH_DATABASE_URL": database_url}
    cmd = [sys.executable, "-m", "outreach.cli", "tick", "--now", T0, "--provider", "x", "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    sent = [json.loads(o[0]).get("advance_x", {}).get("sent", 0) for o in outs]
    print("sent per tick:", sent)
    assert sum(sent) == n
    _assert_each_sent_once(engine, sandbox, n)
    assert len(_events(engine, "ATTEMPTED")) == n  # same --now: a lead leased by one tick is never claimed again


# ------------------------------------------------------------------------------------------- d. overlapping DAG runs


@pytest.fixture(scope="module")
def migrated_airflow_db(tmp_path_factory, database_url) -> Path:
    """One migrated Airflow metadata database (sqlite), copied into each AIRFLOW_HOME that needs one."""
    home = tmp_path_factory.mktemp("airflow-template")
    ensure_airflow_db(airflow_env(database_url, home=home))
    return home / "airflow.db"


def _airflow_home(template: Path, home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, home / "airflow.db")
    (home / ".migrated").touch()
    return home


@pytest.mark.slow
def test_two_overlapping_dag_runs_send_each_lead_once(engine, sandbox, monkeypatch, database_url, tmp_path,
                                                      migrated_airflow_db):
    n = 60
    conns = _three_accounts(monkeypatch, sandbox)
    setup(engine, DM_SEQUENCE_3, n=n, accounts_yaml=THREE_ACCOUNTS)
    sandbox.faults(error_rate=1.0, mode="timeout", timeout_seconds=0.05, paths=["dm"])
    procs = []
    for i in (1, 2):  # sqlite metadata: each run its own AIRFLOW_HOME, so they never lock each other
        env = airflow_env(database_url, extra=conns, home=_airflow_home(migrated_airflow_db, tmp_path / f"af{i}"))
        ensure_airflow_db(env)
        log = open(tmp_path / f"run{i}.log", "w")
        procs.append((subprocess.Popen([airflow_bin(), "dags", "test", "outreach_sequences", "-c",
                                        json.dumps({"now": T0})], env=env, stdout=log, stderr=subprocess.STDOUT),
                      tmp_path / f"run{i}.log"))
        log.close()
    for p, _ in procs:
        p.wait(timeout=180)
    logs = [path.read_text() for _, path in procs]
    assert [p.returncode for p, _ in procs] == [0, 0], [t[-3000:] for t in logs]
    lines = [line for t in logs for line in t.splitlines() if "advance x at" in line]
    sent = [int(m.group(1)) for line in lines for m in [re.search(r"\bsent=(\d+)", line)] if m]
    print("sent per DAG run:", sent)
    assert sum(sent) == n
    _assert_each_sent_once(engine, sandbox, n)
    assert len(_events(engine, "ATTEMPTED")) == n


# ------------------------------------------------------------------------------------------- e. backfills


def _load_dag():
    import importlib.util

    spec = importlib.util.spec_from_file_location("outreach_sequences_dag", ROOT / "dags" / "outreach_sequences.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.dag


def _seed_metrics(engine) -> tuple[datetime, datetime]:
    """Events on three days and stale rollup rows (value 999) on the same three days. Returns day 2's interval."""
    d1 = datetime(2026, 1, 4, tzinfo=timezone.utc)
    with engine.begin() as c:
        seq = c.execute(sa.text("SELECT sequence_id, version_id, account_id FROM enrollments LIMIT 1")).one()
        for day, n in ((0, 2), (1, 3), (2, 4)):
            for i in range(n):
                c.execute(sa.text("""
                    INSERT INTO events (occurred_at, kind, sequence_id, version_id, step, account_id, dedupe_key)
                    VALUES (:t, 'SENT', :s, :v, 'dm', :a, :k)"""),
                          {"t": d1 + timedelta(days=day, hours=7, minutes=i), "s": seq.sequence_id,
                           "v": seq.version_id, "a": seq.account_id, "k": f"seed:{day}:{i}"})
            c.execute(sa.text("""
                INSERT INTO metrics_daily (day, sequence_id, version_id, step, variant, account_id, metric, value)
                VALUES (:d, :s, :v, 'dm', '', :a, 'SENT', 999)"""),
                      {"d": (d1 + timedelta(days=day)).date(), "s": seq.sequence_id, "v": seq.version_id,
                       "a": seq.account_id})
    start = d1 + timedelta(days=1, hours=6)
    return start, start + timedelta(hours=6)


def _sent_rollup(engine) -> dict:
    with engine.connect() as c:
        return {r.day.isoformat(): r.value for r in c.execute(sa.text(
            "SELECT day, value FROM metrics_daily WHERE metric = 'SENT' ORDER BY day"))}


def test_backfill_never_sends_operator_and_tasks(engine, sandbox):
    from outreach.operators.advance import TwitterAdvanceOperator

    setup(engine, DM_SEQUENCE, n=5)
    before = _enrollments(engine)
    backfill = SimpleNamespace(run_type="backfill")
    op = TwitterAdvanceOperator(task_id="advance_x", account_ids=[_account(engine).id])  # real clock: all due
    assert op.execute({"dag_run": backfill}) == {"skipped": "backfill"}
    dag = _load_dag()
    params = {"providers": [], "sequences": [], "now": "", "dry_run": False, "max_actions": None}
    assert dag.get_task("plan_polls").python_callable(params=params, dag_run=backfill) == []
    assert dag.get_task("plan_advance_x").python_callable(params=params, dag_run=backfill) == []
    assert dag.get_task("ingest_trigger_responses").python_callable(params=params, dag_run=backfill) == {
        "skipped": "backfill"}
    assert sandbox.calls() == [] and _events(engine) == [] and _enrollments(engine) == before
    # the same leads are due for a manual run
    assert dag.get_task("plan_advance_x").python_callable(params=params, dag_run=SimpleNamespace(
        run_type="manual")) == [[_account(engine).id]]

    start, end = _seed_metrics(engine)
    result = dag.get_task("aggregate_metrics").python_callable(
        params=params, dag_run=backfill, data_interval_start=start, data_interval_end=end)
    assert result["start_day"] == "2026-01-05" and result["end_day"] == "2026-01-06"
    # exactly the interval's day was recomputed from the event log; the days around it are untouched
    assert _sent_rollup(engine) == {"2026-01-04": 999, "2026-01-05": 3, "2026-01-06": 999}
    assert sandbox.calls() == []


BACKFILL_RUN = r"""
import json, sys
from datetime import datetime
import airflow.models.dagrun as dagrun_mod
from airflow.utils.cli import get_bagged_dag
from airflow.utils.state import DagRunState
from airflow.utils.types import DagRunType

start, end = (datetime.fromisoformat(x) for x in sys.argv[1:3])


def backfill_run(*, dag, run_id, logical_date, data_interval, run_after, conf, triggered_by, triggering_user_name,
                 start_date, session):
    # what dag.test() creates, except that it is a backfill run over one 6-hour interval, as the scheduler
    # creates them for `airflow backfill create`
    return dag.create_dagrun(run_id=DagRunType.BACKFILL_JOB.generate_run_id(suffix=start.isoformat()),
                             logical_date=start, data_interval=(start, end), run_after=run_after, conf=conf,
                             run_type=DagRunType.BACKFILL_JOB, state=DagRunState.RUNNING, triggered_by=triggered_by,
                             triggering_user_name=triggering_user_name, start_date=start_date, session=session)


dagrun_mod.get_or_create_dagrun = backfill_run
dr = get_bagged_dag(None, "outreach_sequences").test(logical_date=start, run_conf={})
print("RESULT " + json.dumps({"run_type": str(dr.run_type), "state": str(dr.state)}))
"""


@pytest.mark.slow
def test_backfill_dag_run_never_sends_and_repairs_its_interval(engine, sandbox, database_url, tmp_path,
                                                               migrated_airflow_db):
    setup(engine, DM_SEQUENCE, n=5)
    start, end = _seed_metrics(engine)
    before = _enrollments(engine)
    events_before = _events(engine)
    env = airflow_env(database_url, home=_airflow_home(migrated_airflow_db, tmp_path / "af"),
                      extra={"AIRFLOW_CONN_X_MAIN": os.environ["AIRFLOW_CONN_X_MAIN"]})
    out = subprocess.run([sys.executable, "-c", BACKFILL_RUN, start.isoformat(), end.isoformat()], env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result == {"run_type": "backfill", "state": "success"}
    assert sandbox.calls() == []  # no send, not even a poll
    assert _enrollments(engine) == before and _events(engine) == events_before
    assert _sent_rollup(engine) == {"2026-01-04": 999, "2026-01-05": 3, "2026-01-06": 999}


# ------------------------------------------------------------------------------------------- f. retries, clears


def test_operator_retry_and_clear_send_nothing_twice(engine, sandbox, monkeypatch):
    from outreach.operators.advance import TwitterAdvanceOperator

    setup(engine, DM_SEQUENCE, n=6)
    manual = {"dag_run": SimpleNamespace(run_type="manual")}
    op = TwitterAdvanceOperator(task_id="advance_x", account_ids=[_account(engine).id], now=T0)
    # try 1: the task process dies right after the 2nd DM was accepted (leads 3-6 were claimed, never called)
    real_build = registry.build
    monkeypatch.setattr(registry, "build", lambda p, c, **kw: Crashing(real_build(p, c, **kw), "after_accept", 2))
    with pytest.raises(ProcessDied):
        op.execute(manual)
    monkeypatch.setattr(registry, "build", real_build)
    assert sum(_landed(sandbox).values()) == 2
    # try 2 (Airflow's retry, same params): the dead try's lease still holds -> nothing is sent
    assert op.execute(manual).get("sent", 0) == 0
    # a clear of the task re-runs it the same way
    assert op.execute(manual).get("sent", 0) == 0
    assert sum(_landed(sandbox).values()) == 2
    # the next run, once the lease is over: the two that landed are reconciled, the four others sent once
    later = TwitterAdvanceOperator(task_id="advance_x", account_ids=[_account(engine).id],
                                   now=(NOW + timedelta(seconds=301)).isoformat())
    counts = later.execute(manual)
    assert counts["sent"] == 6 and counts["reconciled"] == 6
    assert Counter(e.reason for e in _events(engine, "SENT")) == {"reconciled": 2, None: 4}
    # and a retry or clear of that run finds nothing left to do
    assert later.execute(manual).get("sent", 0) == 0
    _assert_each_sent_once(engine, sandbox, 6)

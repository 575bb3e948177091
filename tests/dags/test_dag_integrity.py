"""DAG integrity (every file in dags/ parses, with the project's conventions) and one real `airflow dags test` run."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from outreach.localenv import airflow_bin, airflow_env, ensure_airflow_db
from outreach.store.db import PROJECT_ROOT

from tests.helpers import setup

DAGS = PROJECT_ROOT / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
# an address that never answers: a connection attempt would hang until its timeout
UNREACHABLE_DB = "postgresql+psycopg2://outreach:secret@10.255.255.1:5432/outreach?connect_timeout=30"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_there_are_dag_files():
    assert DAG_FILES and (DAGS / "outreach_sequences.py") in DAG_FILES


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    loaded_from = {Path(dag.fileloc).resolve() for dag in dagbag.dags.values()}
    assert {p.resolve() for p in DAG_FILES} <= loaded_from  # every file defines at least one DAG


def test_every_dag_is_tagged_documented_and_retried(dagbag):
    assert dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md and dag.doc_md.strip(), dag_id
        assert (dag.default_args or {}).get("retries", 0) >= 1, dag_id
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id}"


def test_outreach_sequences_schedule_and_params(dagbag):
    dag = dagbag.dags["outreach_sequences"]
    assert getattr(dag.timetable, "expression", None) == "0 */6 * * *"
    assert dag.catchup is False
    assert {"sequences", "providers", "dry_run", "max_actions", "now"} <= set(dag.params.keys())
    assert dag.params["sequences"] == [] and dag.params["providers"] == []
    assert dag.params["dry_run"] is False and dag.params["max_actions"] is None and dag.params["now"] == ""
    assert dag.default_args.get("retry_exponential_backoff") is True
    assert dag.default_args.get("retry_delay") <= timedelta(minutes=5)
    # poll -> ingest -> advance -> metrics, with one advance task per provider
    ids = set(dag.task_ids)
    assert {"plan_polls", "poll_inboxes", "poll_relationships", "ingest_trigger_responses",
            "plan_advance_x", "advance_x", "aggregate_metrics"} <= ids
    assert "ingest_trigger_responses" in dag.get_task("plan_advance_x").upstream_task_ids
    assert "aggregate_metrics" in dag.get_task("advance_x").downstream_task_ids


def test_outreach_reactions_is_scheduled_on_the_watched_inbound_asset(dagbag):
    from outreach.triggers.inbound import InboundSignalTrigger

    dag = dagbag.dags["outreach_reactions"]
    (asset,) = dag.timetable.asset_condition.objects
    assert asset.name == "outreach_inbound_signals"
    (watcher,) = asset.watchers
    assert isinstance(watcher.trigger, InboundSignalTrigger)
    assert dag.max_active_runs == 1  # asset events during a run coalesce into the next one
    assert "ingest_signals" in dag.get_task("plan_x").upstream_task_ids
    assert "plan_x" in dag.get_task("advance_x").upstream_task_ids


def test_the_dag_file_top_level_touches_no_database_or_connection(tmp_path):
    """Parsing must be cheap: with every database and connection unreachable, the import still succeeds fast."""
    env = airflow_env(UNREACHABLE_DB, home=tmp_path / "airflow", extra={
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": UNREACHABLE_DB.replace("/outreach?", "/airflow?"),
        "AIRFLOW_CONN_OUTREACH_DB": UNREACHABLE_DB.replace("+psycopg2", ""),
        "AIRFLOW_CONN_X_MAIN": json.dumps({"conn_type": "x", "host": "http://10.255.255.1:9", "password": "t"}),
    })
    script = textwrap.dedent("""
        import importlib.util, json, sys, time
        t = time.monotonic()
        for path in sys.argv[1:]:
            spec = importlib.util.spec_from_file_location("dagfile_" + str(abs(hash(path))), path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        print(json.dumps({"seconds": time.monotonic() - t}))
    """)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script, *map(str, DAG_FILES)], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["seconds"] < 15
    assert time.monotonic() - started < 25


@pytest.mark.slow
def test_airflow_dags_test_runs_the_cycle_end_to_end(engine, sandbox, database_url, tmp_path):
    now = "2026-01-05T09:00:00Z"
    setup(engine, n=5, now=now)
    sandbox.clock(now)
    env = airflow_env(database_url, home=tmp_path / "airflow", extra={
        "AIRFLOW_CONN_X_MAIN": json.dumps({"conn_type": "x", "host": sandbox.url, "password": "sandbox-1001"}),
    })
    ensure_airflow_db(env)
    try:  # a failing task is retried with the DAG's backoff (minutes): do not wait for all of that
        out = subprocess.run([airflow_bin(), "dags", "test", "outreach_sequences", "-c", json.dumps({"now": now})],
                             env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"airflow dags test did not finish in {e.timeout}s (a task failing and retrying?):\n"
                    + str(e.stdout or "")[-3000:] + str(e.stderr or "")[-3000:])
    assert out.returncode == 0, (out.stdout[-3000:] + out.stderr[-3000:])

    with engine.connect() as c:
        sent = c.execute(sa.text("SELECT count(*) FROM events WHERE kind = 'SENT'")).scalar()
        waiting = c.execute(sa.text(
            "SELECT count(*) FROM enrollments WHERE status = 'ACTIVE' AND phase = 'waiting'")).scalar()
        rollup = c.execute(sa.text("SELECT coalesce(sum(value), 0) FROM metrics_daily WHERE metric = 'SENT'")).scalar()
    summary = sandbox.summary()
    assert sent == summary["follows"] == 5
    assert waiting == 5
    assert rollup == 5  # aggregate_metrics ran after the advance


def test_the_account_batch_size_comes_from_an_airflow_variable(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("outreach_sequences_dag", DAGS / "outreach_sequences.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.delenv("AIRFLOW_VAR_OUTREACH_ACCOUNT_BATCH_SIZE", raising=False)
    assert mod.account_batch_size() == 20
    monkeypatch.setenv("AIRFLOW_VAR_OUTREACH_ACCOUNT_BATCH_SIZE", "5")
    assert mod.account_batch_size() == 5
    monkeypatch.setenv("AIRFLOW_VAR_OUTREACH_ACCOUNT_BATCH_SIZE", "lots")
    assert mod.account_batch_size() == 20

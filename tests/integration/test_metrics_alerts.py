"""Account alerts (failure rate over the last N sends pauses the account, with an ALERT event) and the Airflow
notifier that delivers alerts and task failures, against a real local HTTP server."""
from __future__ import annotations

import importlib.util
import json
import logging
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from outreach.engine.alerts import AlertConfig, check_accounts, failure_rates
from outreach.notifiers import OutreachNotifier, notify_alerts
from outreach.store.db import PROJECT_ROOT

from tests.helpers import run_at, setup

T0 = datetime(2026, 2, 2, 9, 0, tzinfo=timezone.utc)
DM_SEQUENCE = """
name: one-dm
accounts: [x-main]
start: dm
actions:
  dm: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}"}
triggers:
  - {from: dm, trigger: NORMAL_EDGE, to: END}
"""


def account(engine):
    with engine.connect() as c:
        return c.execute(sa.text("SELECT id, name, status FROM sender_accounts WHERE name = 'x-main'")).one()


def add_events(engine, kind: str, minutes: list[float], start: datetime = T0) -> None:
    """``kind`` events of x-main at T0 + minutes (set-based, one statement)."""
    acc = account(engine)
    with engine.begin() as c:
        c.execute(sa.text("""
            INSERT INTO events (occurred_at, kind, account_id, provider, reason)
            SELECT CAST(:t AS timestamptz) + make_interval(secs => m * 60), :k, :a, 'x',
                   CASE WHEN :k = 'FAILED' THEN 'not_found' END
            FROM unnest(CAST(:m AS float8[])) AS m"""), {"t": start, "k": kind, "a": acc.id, "m": minutes})


def alerts_of(engine) -> list:
    with engine.connect() as c:
        return c.execute(sa.text("SELECT occurred_at, reason, account_id, data FROM events WHERE kind = 'ALERT' "
                                 "ORDER BY id")).all()


def set_status(engine, status: str) -> None:
    with engine.begin() as c:
        c.execute(sa.text("UPDATE sender_accounts SET status = :s WHERE name = 'x-main'"), {"s": status})


def test_an_account_failing_too_often_is_paused_once_and_judged_afresh_after_resume(engine):
    setup(engine, DM_SEQUENCE, n=1)
    cfg = AlertConfig(failure_rate=0.2, window=50)
    add_events(engine, "ATTEMPTED", list(range(60)))
    add_events(engine, "FAILED", [i + 0.5 for i in range(5)])  # before the window: not counted
    add_events(engine, "FAILED", [i + 0.5 for i in range(50, 60)])  # 10 of the last 50: exactly 20%, not above
    now = T0 + timedelta(hours=2)
    assert check_accounts(engine, now, cfg) == {"paused": 0}
    assert account(engine).status == "ACTIVE"

    add_events(engine, "BOUNCED", [59.9])  # a bounce counts as a failure: 11 of 50
    result = check_accounts(engine, now, cfg)
    assert result["paused"] == 1
    alert = result["alerts"][0]
    assert (alert["account"], alert["failed"], alert["attempted"]) == ("x-main", 11, 50)
    assert float(alert["rate"]) == 0.22 and float(alert["threshold"]) == 0.2 and alert["action"] == "paused"
    assert account(engine).status == "PAUSED"
    rows = alerts_of(engine)
    assert len(rows) == 1 and rows[0].reason == "failure_rate" and rows[0].occurred_at == now

    # paused: checked again, nothing new; resumed by an operator: the old attempts are not judged again
    assert check_accounts(engine, now + timedelta(minutes=5), cfg) == {"paused": 0}
    set_status(engine, "ACTIVE")
    assert check_accounts(engine, now + timedelta(minutes=10), cfg) == {"paused": 0}
    assert account(engine).status == "ACTIVE" and len(alerts_of(engine)) == 1

    # new sends after the resume: 5 of 50 failing is fine, then 15 of 50 is not
    later = now + timedelta(hours=1)
    add_events(engine, "ATTEMPTED", list(range(50)), start=later)
    add_events(engine, "FAILED", [i + 0.5 for i in range(5)], start=later)
    assert check_accounts(engine, later + timedelta(hours=1), cfg) == {"paused": 0}
    add_events(engine, "FAILED", [i + 0.5 for i in range(10, 20)], start=later)
    assert check_accounts(engine, later + timedelta(hours=1), cfg)["paused"] == 1
    assert account(engine).status == "PAUSED" and len(alerts_of(engine)) == 2


def test_too_few_attempts_are_not_judged_unless_configured(engine):
    setup(engine, DM_SEQUENCE, n=1)
    add_events(engine, "ATTEMPTED", list(range(10)))
    add_events(engine, "FAILED", [i + 0.5 for i in range(5)])
    now = T0 + timedelta(hours=1)
    assert check_accounts(engine, now, AlertConfig(window=50)) == {"paused": 0}
    assert check_accounts(engine, now, AlertConfig(window=50, min_attempts=10))["paused"] == 1
    with engine.connect() as c:
        rates = failure_rates(c, now, window=50)
    assert rates[0]["account"] == "x-main" and rates[0]["status"] == "PAUSED"
    assert rates[0]["attempted"] == 0  # judged afresh after the alert


def test_alert_config_from_arguments_environment_and_defaults():
    assert AlertConfig.resolve(env={}) == AlertConfig(0.2, 50, None)
    env = {"OUTREACH_ALERT_FAILURE_RATE": "25%", "OUTREACH_ALERT_WINDOW": "20", "OUTREACH_ALERT_MIN_ATTEMPTS": "10"}
    assert AlertConfig.resolve(env=env) == AlertConfig(0.25, 20, 10)
    assert AlertConfig.resolve("0.5", None, "", env=env) == AlertConfig(0.5, 20, 10)  # Airflow Variables: strings
    assert AlertConfig(window=20).minimum == 20 and AlertConfig(window=20, min_attempts=5).minimum == 5
    for bad in ({"failure_rate": 0}, {"failure_rate": 1.5}, {"window": 0}, {"window": 10, "min_attempts": 11}):
        with pytest.raises(ValueError):
            AlertConfig(**bad)


def test_a_tick_pauses_an_account_whose_sends_fail(engine, sandbox, monkeypatch):
    """Real sends through the sandbox: half the recipients do not exist (FAILED not_found). The tick's last step
    pauses the account; the next tick sends nothing from it."""
    monkeypatch.setenv("OUTREACH_ALERT_WINDOW", "10")
    monkeypatch.setenv("OUTREACH_ALERT_FAILURE_RATE", "0.3")
    leads = [{"name": f"L{i}", "twitter_id": (f"404{i:04d}" if i % 2 else str(70000 + i))} for i in range(10)]
    setup(engine, DM_SEQUENCE, leads=leads)
    summary = run_at(engine, sandbox, "2026-01-05T09:00:00Z")
    assert summary["advance_x"]["sent"] == 5 and summary["advance_x"]["failed:user_not_found"] == 5
    assert summary["alerts"]["paused"] == 1
    assert summary["alerts"]["alerts"][0]["failed"] == 5 and summary["alerts"]["alerts"][0]["attempted"] == 10
    assert account(engine).status == "PAUSED"
    setup(engine, DM_SEQUENCE, leads=[{"name": "New", "twitter_id": "71000"}], now="2026-01-05T10:00:00Z")
    again = run_at(engine, sandbox, "2026-01-05T10:00:00Z")
    assert "advance_x" not in again and again["alerts"] == {"paused": 0}


# -------------------------------------------------------------------------------------------- the notifier
class Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hook.received.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook_server():
    Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Hook.received
    server.shutdown()
    server.server_close()


def context():
    ti = SimpleNamespace(dag_id="outreach_sequences", task_id="advance_x", try_number=2, map_index=0)
    return {"ti": ti, "dag_run": SimpleNamespace(run_id="manual__1"), "exception": RuntimeError("provider down")}


def test_the_notifier_posts_task_failures_to_the_alerts_connection(hook_server, monkeypatch):
    url, received = hook_server
    monkeypatch.setenv("AIRFLOW_CONN_OUTREACH_ALERTS", json.dumps(
        {"conn_type": "http", "host": url, "password": "s3cret-token", "extra": {"endpoint": "/hooks/outreach"}}))
    OutreachNotifier(event="task_failed")(context())  # as Airflow calls an on_failure_callback
    assert len(received) == 1
    got = received[0]
    assert got["path"] == "/hooks/outreach"
    assert got["headers"]["Authorization"] == "Bearer s3cret-token"
    assert got["json"] == {"source": "outreach", "event": "task_failed",
                           "message": "outreach: task outreach_sequences.advance_x failed: RuntimeError: provider down",
                           "dag_id": "outreach_sequences", "task_id": "advance_x", "run_id": "manual__1",
                           "try_number": 2, "map_index": 0, "exception": "RuntimeError: provider down"}


def test_the_notifier_renders_its_message_and_sends_account_alerts(hook_server, monkeypatch):
    url, received = hook_server
    host, port = url.removeprefix("http://").split(":")
    monkeypatch.setenv("AIRFLOW_CONN_OUTREACH_ALERTS", json.dumps(
        {"conn_type": "http", "host": host, "port": int(port), "schema": "http", "login": "u", "password": "p"}))
    OutreachNotifier("{{ ti.task_id }} broke", event="task_failed")(context())
    assert received[0]["json"]["message"] == "advance_x broke" and received[0]["path"] == "/"
    assert received[0]["headers"]["Authorization"].startswith("Basic ")
    alert = {"account": "x-main", "failed": 11, "attempted": 50, "rate": 0.22, "threshold": 0.2, "window": 50,
             "action": "paused", "account_id": 1}
    assert notify_alerts([alert]) == 1
    body = received[1]["json"]
    assert body["event"] == "account_paused" and body["alert"] == alert
    assert body["message"] == "outreach: account x-main paused: 11 of its last 50 sends failed (22% > 20%)"


def test_without_a_connection_or_with_a_dead_endpoint_it_only_logs(monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_OUTREACH_ALERTS", raising=False)
    with caplog.at_level(logging.WARNING, logger="outreach.notifiers"):
        OutreachNotifier(event="task_failed")(context())
    assert "task outreach_sequences.advance_x failed" in caplog.text
    # nothing listens on this port: the failure is logged, never raised (an alert must not fail its task)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_OUTREACH_ALERTS", json.dumps(
        {"conn_type": "http", "host": f"http://127.0.0.1:{dead}", "password": "tok-secret-123"}))
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="outreach.notifiers"):
        OutreachNotifier(event="task_failed", timeout=2)(context())
    assert "failed: ConnectionError" in caplog.text and "tok-secret-123" not in caplog.text


def test_the_dag_has_failure_callbacks_and_pauses_failing_accounts(engine, hook_server, monkeypatch):
    """default_args' on_failure_callback and the DAG's are the notifier; aggregate_metrics (not a backfill)
    runs the account check with the Airflow Variables and notifies."""
    from airflow.sdk.bases.notifier import BaseNotifier

    spec = importlib.util.spec_from_file_location("outreach_sequences_dag_alerts",
                                                  PROJECT_ROOT / "dags" / "outreach_sequences.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dag = mod.dag
    assert isinstance(dag.default_args["on_failure_callback"], BaseNotifier)
    callbacks = dag.on_failure_callback if isinstance(dag.on_failure_callback, list) else [dag.on_failure_callback]
    assert any(isinstance(cb, BaseNotifier) for cb in callbacks)
    assert all(isinstance(t.on_failure_callback[0] if isinstance(t.on_failure_callback, list)
                          else t.on_failure_callback, BaseNotifier) for t in dag.tasks)

    url, received = hook_server
    monkeypatch.setenv("AIRFLOW_CONN_OUTREACH_ALERTS", json.dumps({"conn_type": "http", "host": url}))
    monkeypatch.setenv("AIRFLOW_VAR_OUTREACH_ALERT_WINDOW", "10")
    setup(engine, DM_SEQUENCE, n=1)
    add_events(engine, "ATTEMPTED", list(range(10)))
    add_events(engine, "FAILED", [i + 0.5 for i in range(3)])  # 30% > 20%
    params = {"providers": [], "sequences": [], "now": "2026-02-02T12:00:00Z", "dry_run": False, "max_actions": None}
    result = dag.get_task("aggregate_metrics").python_callable(
        params=params, dag_run=SimpleNamespace(run_type="manual", run_id="manual__2"))
    assert result["accounts_paused"] == ["x-main"]
    assert account(engine).status == "PAUSED"
    assert received and received[0]["json"]["event"] == "account_paused"
    assert received[0]["json"]["run_id"] == "manual__2"

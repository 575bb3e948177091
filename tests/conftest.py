"""Shared fixtures: a real PostgreSQL (OUTREACH_TEST_DATABASE_URL, else an embedded server under .outreach/),
a fresh database per test session with the schema applied, and the X sandbox over real HTTP."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("events", "inbound_signals", "webhook_deliveries", "rate_budgets", "provider_cursors", "metrics_daily", "metrics_latency",
          "variant_decisions", "enrollments",
          "sequence_triggers", "sequence_actions", "sequence_versions", "sequences", "suppressions", "identities",
          "people", "sender_accounts")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    """A fresh database for this session on the configured or embedded server."""
    base = os.environ.get("OUTREACH_TEST_DATABASE_URL")
    if not base:
        from outreach.store.db import STATE_DIR, embedded_url

        base = embedded_url(STATE_DIR / "test-pg")
    from outreach.store.db import fresh_database

    name = f"outreach_test_{os.getpid()}"
    url = fresh_database(base, name)
    admin = sa.create_engine(sa.engine.make_url(base), isolation_level="AUTOCOMMIT")
    os.environ["OUTREACH_DATABASE_URL"] = url
    yield url
    with admin.connect() as c:
        c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


@pytest.fixture
def engine(database_url):
    """The engine on a clean database (every table emptied, ids restarted)."""
    from outreach.store.db import get_engine

    eng = get_engine(database_url)
    with eng.begin() as c:
        c.exec_driver_sql(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    return eng


@pytest.fixture(scope="session")
def sandbox_server():
    from outreach.sandbox.server import start_in_thread

    server, base_url = start_in_thread(seed=42)
    os.environ["AIRFLOW_CONN_X_MAIN"] = json.dumps({"conn_type": "x", "host": base_url, "password": "sandbox-1001"})
    yield server, base_url
    server.shutdown()
    server.server_close()


class Sandbox:
    def __init__(self, server, base_url: str):
        self.server, self.url = server, base_url
        self.state = server.state

    def clock(self, now: str) -> None:
        requests.post(f"{self.url}/_sandbox/clock", json={"now": now}, timeout=5).raise_for_status()

    def summary(self) -> dict:
        return requests.get(f"{self.url}/_sandbox/summary", timeout=5).json()

    def calls(self) -> list[dict]:
        return requests.get(f"{self.url}/_sandbox/calls", timeout=5).json()["calls"]

    def faults(self, **kw) -> None:
        requests.post(f"{self.url}/_sandbox/faults", json=kw, timeout=5).raise_for_status()


@pytest.fixture
def sandbox(sandbox_server) -> Sandbox:
    server, base_url = sandbox_server
    requests.post(f"{base_url}/_sandbox/reset", timeout=5).raise_for_status()
    requests.post(f"{base_url}/_sandbox/faults", json={}, timeout=5).raise_for_status()
    sb = Sandbox(server, base_url)
    sb.clock("2026-01-05T09:00:00Z")
    return sb

"""Dashboard fixtures: a database seeded through the real engine (sandbox ticks), plus a few hand-made
NEEDS_REVIEW and FAILED leads, with the rollups computed. Module scoped: seeding costs a few ticks."""
from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from outreach.clock import parse_now
from outreach.engine import metrics

from tests.helpers import run_at, setup

DERIVED = ("metrics_latency", "variant_decisions")
T0 = "2026-01-05T09:00:00Z"
TICKS = (T0, "2026-01-05T13:30:00Z", "2026-01-05T17:00:00Z", "2026-01-06T10:00:00Z", "2026-01-07T12:00:00Z",
         "2026-01-08T09:00:00Z")
NOW = "2026-01-08T12:00:00Z"


def truncate_derived(engine) -> None:
    """Tables the shared ``engine`` fixture does not empty (no foreign key to what it truncates)."""
    with engine.begin() as c:
        c.exec_driver_sql(f"TRUNCATE {', '.join(DERIVED)}")


def seed(engine, sandbox, n: int = 24) -> dict:
    """The DESIGN sequence through real ticks against the sandbox, then two leads set to NEEDS_REVIEW (with the
    events the engine writes for that) and one FAILED send; the rollups recomputed over all days."""
    truncate_derived(engine)
    setup(engine, n=n)
    for now in TICKS:
        run_at(engine, sandbox, now)
    with engine.begin() as c:
        ids = [r[0] for r in c.execute(sa.text(
            "SELECT id FROM enrollments WHERE status = 'ACTIVE' ORDER BY id DESC LIMIT 3"))]
        review, failed = ids[:2], ids[2]
        c.execute(sa.text("""
            WITH u AS (UPDATE enrollments SET status = 'NEEDS_REVIEW', ended_reason = 'reconcile_unknown',
                              next_run_at = NULL, updated_at = :t
                       WHERE id = ANY(:ids) RETURNING id, person_id, sequence_id, version_id, current_step, account_id)
            INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step,
                                account_id, provider, reason, dedupe_key)
            SELECT :t, 'NEEDS_REVIEW', id, person_id, sequence_id, version_id, current_step, account_id, 'x',
                   'reconcile_unknown', 'out:' || id || ':' || current_step || '-review' FROM u"""),
            {"ids": review, "t": parse_now("2026-01-08T10:00:00Z")})
        c.execute(sa.text("""
            WITH u AS (UPDATE enrollments SET status = 'FAILED', ended_reason = 'not_found', next_run_at = NULL
                       WHERE id = :id RETURNING id, person_id, sequence_id, version_id, current_step, account_id)
            INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step,
                                account_id, provider, reason, dedupe_key)
            SELECT :t, 'FAILED', id, person_id, sequence_id, version_id, current_step, account_id, 'x',
                   'not_found', 'out:' || id || ':' || current_step || '-failed' FROM u"""),
            {"id": failed, "t": parse_now("2026-01-08T10:00:00Z")})
        lo, hi = c.execute(sa.text("SELECT min(occurred_at), max(occurred_at) FROM events")).one()
    metrics.aggregate(engine, lo, hi + timedelta(seconds=1))
    return {"review": review, "failed": failed, "now": NOW}


@pytest.fixture(scope="module")
def seeded(database_url, sandbox_server):
    """A database seeded once for the module (the tests here only read it): (engine, info)."""
    import requests

    from outreach.store.db import get_engine

    from tests.conftest import TABLES, Sandbox

    server, base_url = sandbox_server
    requests.post(f"{base_url}/_sandbox/reset", timeout=5).raise_for_status()
    requests.post(f"{base_url}/_sandbox/faults", json={}, timeout=5).raise_for_status()
    eng = get_engine(database_url)
    with eng.begin() as c:
        c.exec_driver_sql(f"TRUNCATE {', '.join(TABLES + DERIVED)} RESTART IDENTITY CASCADE")
    info = seed(eng, Sandbox(server, base_url))
    return eng, info

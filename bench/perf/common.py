"""Shared bits of the performance bench: paths, the bench clock, the in-process no-op provider, databases."""
from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def use_venv() -> None:
    """Re-execute with the project's virtualenv (as bench/pacing does) and put the engine on sys.path."""
    venv_python = ROOT / ".venv" / "bin" / "python"
    if venv_python.exists() and Path(sys.prefix).resolve() != venv_python.parents[1].resolve():
        os.execv(str(venv_python), [str(venv_python), *sys.argv])
    for p in (ROOT, ROOT / "plugins"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))


# The engine clock of every measurement: a Wednesday noon, UTC. The metrics day is a week earlier so the tick's
# own rollup (yesterday and today) does not include the 10M-event day.
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
METRICS_DAY = datetime(2026, 2, 25, tzinfo=UTC)


class _NoopClient:
    """What the engine reads from ``provider.client``: ``last_rate`` (no rate headers) and ``timeout``."""

    timeout = None

    def __init__(self) -> None:
        self.last_rate: dict = {}


class NoopProvider:
    """Same interface as ``outreach.providers.x.XProvider`` (perform / reconcile / poll / .client.last_rate);
    every call succeeds at once and does nothing."""

    provider = "x"

    def __init__(self, feed: dict | None = None) -> None:
        self.client = _NoopClient()
        self.calls = 0
        self.feed = feed or {}  # (sender_user_id, stream) -> list of (signals, new cursor) pages, for ingest

    def perform(self, action_type: str, sender_user_id: str, recipient: dict, text: str,
                idempotency_key: str | None = None, **_context):
        from outreach.providers.base import SendResult

        self.calls += 1
        return SendResult(provider_ref=f"noop:{idempotency_key}")

    def reconcile(self, action_type: str, sender_user_id: str, recipient: dict, text: str, attempted_at, **_key):
        self.calls += 1
        return "absent", None

    def poll(self, sender_user_id: str, stream: str, cursor: str | None):
        pages = self.feed.get((sender_user_id, stream))
        if not pages:
            return [], cursor
        return pages.pop(0)


def server_url(explicit: str | None = None) -> str:
    """The PostgreSQL server the bench creates its databases on (default: the embedded bench server)."""
    base = explicit or os.environ.get("OUTREACH_BENCH_DATABASE_URL")
    if base:
        return base
    from outreach.store.db import STATE_DIR, embedded_url

    return embedded_url(STATE_DIR / "bench-pg")


def database_url(server: str, name: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)


def fresh_database(server: str, name: str) -> str:
    """Drop and create ``name`` on the server, apply the project's migrations; returns its URL."""
    import sqlalchemy as sa
    from outreach.store import migrate

    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    url = database_url(server, name)
    eng = sa.create_engine(url)
    migrate.upgrade(eng)
    eng.dispose()
    return url


_PLAIN: dict = {}


def plain_engine(url: str):
    """An engine with the server's own session settings, for the references (floor, v1): the engine's
    connections set their own (``outreach.store.db.SESSION_OPTIONS``), which must not change what the
    references measure."""
    import sqlalchemy as sa

    if url not in _PLAIN:
        _PLAIN[url] = sa.create_engine(url)
    return _PLAIN[url]


def drop_database(server: str, name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()

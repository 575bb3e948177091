"""Versioned SQL migrations from ``include/sql/NNN_name.sql``, applied transactionally and idempotently."""
from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

from outreach.store.db import PROJECT_ROOT

SQL_DIR = PROJECT_ROOT / "include" / "sql"
_MIGRATION = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 727_001  # advisory lock: two concurrent upgrades never interleave


def migrations(sql_dir: Path = SQL_DIR) -> list[tuple[int, str, Path]]:
    out = []
    for p in sorted(sql_dir.iterdir()):
        m = _MIGRATION.match(p.name)
        if m:
            out.append((int(m.group(1)), m.group(2), p))
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers in {sql_dir}")
    return out


def upgrade(engine: sa.Engine) -> list[str]:
    """Apply every pending migration, each in its own transaction. Returns the names applied.

    A session-level advisory lock serialises concurrent upgrades; a failing migration rolls back whole.
    """
    applied_now = []
    with engine.connect() as conn:
        with conn.begin():
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            conn.execute(sa.text(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            ))
        try:
            with conn.begin():
                done = {r[0] for r in conn.execute(sa.text("SELECT version FROM schema_migrations"))}
            for version, name, path in migrations():
                if version in done:
                    continue
                with conn.begin():
                    conn.exec_driver_sql(path.read_text())
                    conn.execute(
                        sa.text("INSERT INTO schema_migrations (version, name) VALUES (:v, :n)"),
                        {"v": version, "n": name},
                    )
                applied_now.append(f"{version:03d}_{name}")
        finally:
            with conn.begin():
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
    return applied_now


def current_version(engine: sa.Engine) -> int | None:
    with engine.connect() as conn:
        exists = conn.execute(sa.text("SELECT to_regclass('schema_migrations')")).scalar()
        if not exists:
            return None
        return conn.execute(sa.text("SELECT max(version) FROM schema_migrations")).scalar()

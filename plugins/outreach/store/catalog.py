"""Accounts, sequences and their immutable versions."""
from __future__ import annotations

import json
from dataclasses import asdict

import sqlalchemy as sa

from outreach.domain.model import SequenceDef


class NotFound(LookupError):
    pass


def account_providers(conn: sa.Connection) -> dict[str, str]:
    return dict(conn.execute(sa.text("SELECT name, provider FROM sender_accounts")).all())


def apply_accounts(conn: sa.Connection, accounts: list) -> dict[str, str]:
    """Upsert accounts (AccountDef list) in one statement. Returns name -> 'created'|'updated'|'unchanged'."""
    if not accounts:
        return {}
    rows = [
        {
            "name": a.name, "provider": a.provider, "conn_id": a.conn_id, "user_id": a.user_id,
            "timezone": a.timezone, "send_window": json.dumps(a.send_window) if a.send_window else None,
            "limits": json.dumps(a.limits or {}),
            "spacing": json.dumps(a.spacing) if a.spacing else None,
            "warmup": json.dumps(a.warmup) if a.warmup else None,
        }
        for a in accounts
    ]
    before = {r[0]: r[1] for r in conn.execute(
        sa.text("SELECT name, md5(row(provider, conn_id, user_id, timezone, send_window, limits, spacing, warmup)::text) "
                "FROM sender_accounts WHERE name = ANY(:n)"), {"n": [r["name"] for r in rows]})}
    existing_providers = dict(conn.execute(
        sa.text("SELECT name, provider FROM sender_accounts WHERE name = ANY(:n)"), {"n": [r["name"] for r in rows]}).all())
    for r in rows:
        if r["name"] in existing_providers and existing_providers[r["name"]] != r["provider"]:
            raise ValueError(f"account {r['name']!r} exists with provider {existing_providers[r['name']]!r}; "
                             f"its provider cannot change to {r['provider']!r}")
    conn.execute(sa.text("""
        INSERT INTO sender_accounts (name, provider, conn_id, user_id, timezone, send_window, limits, spacing, warmup)
        SELECT name, provider, conn_id, user_id, timezone, send_window::jsonb, limits::jsonb, spacing::jsonb,
               warmup::jsonb
        FROM jsonb_to_recordset(CAST(:rows AS jsonb))
             AS x(name text, provider text, conn_id text, user_id text, timezone text, send_window text, limits text,
                  spacing text, warmup text)
        ON CONFLICT (name) DO UPDATE SET conn_id = EXCLUDED.conn_id, user_id = EXCLUDED.user_id,
            timezone = EXCLUDED.timezone, send_window = EXCLUDED.send_window, limits = EXCLUDED.limits,
            spacing = EXCLUDED.spacing, warmup = EXCLUDED.warmup, updated_at = now()
    """), {"rows": json.dumps(rows)})
    after = {r[0]: r[1] for r in conn.execute(
        sa.text("SELECT name, md5(row(provider, conn_id, user_id, timezone, send_window, limits, spacing, warmup)::text) "
                "FROM sender_accounts WHERE name = ANY(:n)"), {"n": [r["name"] for r in rows]})}
    return {n: ("created" if n not in before else "updated" if before[n] != after[n] else "unchanged") for n in after}


def apply_sequence(conn: sa.Connection, seq: SequenceDef, source_file: str | None = None) -> tuple[int, bool]:
    """Create the sequence if new and publish a version when the definition changed.

    Returns (version number, published?). Actions and triggers of a version are written with it, never edited.
    """
    sid = conn.execute(sa.text("""
        INSERT INTO sequences (name, accounts) VALUES (:n, :a)
        ON CONFLICT (name) DO UPDATE SET accounts = EXCLUDED.accounts, updated_at = now()
        RETURNING id"""), {"n": seq.name, "a": list(seq.accounts)}).scalar_one()
    conn.execute(sa.text("SELECT 1 FROM sequences WHERE id = :s FOR UPDATE"), {"s": sid})
    latest = conn.execute(sa.text(
        "SELECT version, digest FROM sequence_versions WHERE sequence_id = :s ORDER BY version DESC LIMIT 1"),
        {"s": sid}).first()
    digest = seq.digest()
    if latest and latest.digest == digest:
        return latest.version, False
    version = (latest.version if latest else 0) + 1
    vid = conn.execute(sa.text("""
        INSERT INTO sequence_versions (sequence_id, version, definition, digest, source_file)
        VALUES (:s, :v, CAST(:d AS jsonb), :g, :f) RETURNING id"""),
        {"s": sid, "v": version, "d": json.dumps(seq.canonical()), "g": digest, "f": source_file}).scalar_one()
    conn.execute(sa.text("""
        INSERT INTO sequence_actions (version_id, key, type, provider, definition)
        SELECT :vid, x.key, x.type, x.provider, x.definition
        FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(key text, type text, provider text, definition jsonb)
    """), {"vid": vid, "rows": json.dumps([
        {"key": a.key, "type": a.type, "provider": a.provider, "definition": asdict(a)} for a in seq.actions.values()
    ])})
    conn.execute(sa.text("""
        INSERT INTO sequence_triggers (version_id, from_action, kind, to_action, to_provider, after_seconds, within_seconds)
        SELECT :vid, x.from_action, x.kind, x.to_action, x.to_provider, x.after_seconds, x.within_seconds
        FROM jsonb_to_recordset(CAST(:rows AS jsonb))
             AS x(from_action text, kind text, to_action text, to_provider text, after_seconds int, within_seconds int)
    """), {"vid": vid, "rows": json.dumps([
        {"from_action": t.from_action, "kind": t.kind, "to_action": t.to,
         "to_provider": seq.actions[t.to].provider if t.to else None,
         "after_seconds": t.after_seconds, "within_seconds": t.within_seconds} for t in seq.triggers
    ])})
    return version, True


def set_sequence_status(conn: sa.Connection, name: str, status: str) -> str:
    row = conn.execute(sa.text(
        "UPDATE sequences SET status = :st, updated_at = now() WHERE name = :n RETURNING status"),
        {"n": name, "st": status}).first()
    if not row:
        raise NotFound(f"no sequence named {name!r}")
    return row.status


def load_versions(conn: sa.Connection, version_ids) -> dict[int, SequenceDef]:
    """Definitions of the given versions (small; cached per batch by the caller)."""
    rows = conn.execute(sa.text("""
        SELECT v.id, s.name, s.accounts, v.definition FROM sequence_versions v JOIN sequences s ON s.id = v.sequence_id
        WHERE v.id = ANY(:ids)"""), {"ids": list(version_ids)}).all()
    return {r.id: SequenceDef.from_canonical(r.name, tuple(r.accounts), r.definition) for r in rows}


def latest_version(conn: sa.Connection, name: str):
    row = conn.execute(sa.text("""
        SELECT s.id AS sequence_id, s.status, v.id AS version_id, v.version, v.definition, s.accounts
        FROM sequences s JOIN sequence_versions v ON v.sequence_id = s.id
        WHERE s.name = :n ORDER BY v.version DESC LIMIT 1"""), {"n": name}).first()
    if not row:
        raise NotFound(f"no sequence named {name!r}; apply it first with `outreach sequences apply FILE.yaml`")
    return row


NAMES_FILE = "sequence_names.json"


def write_sequence_names(conn: sa.Connection) -> None:
    """Cache the sequence names in the state directory for the DAG's trigger form (a multi-select), so that
    parsing the DAG never queries the database. Best effort: a read-only state directory just skips it."""
    from outreach.store.db import STATE_DIR

    names = [r[0] for r in conn.execute(sa.text("SELECT name FROM sequences WHERE status <> 'ARCHIVED' ORDER BY name"))]
    try:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / NAMES_FILE).write_text(json.dumps(names))
    except OSError:
        pass


def cached_sequence_names() -> list[str]:
    from outreach.store.db import STATE_DIR

    try:
        names = json.loads((STATE_DIR / NAMES_FILE).read_text())
        return [n for n in names if isinstance(n, str)]
    except (OSError, ValueError):
        return []

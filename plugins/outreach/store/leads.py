"""Lead import: CSV rows -> people + identities (merged into the identity graph) -> enrollments. Set-based."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from outreach.domain.model import SequenceDef, ValidationError, ValidationIssue

KNOWN_COLUMNS = ("name", "twitter_id", "twitter_username", "linkedin_id", "email", "xmtp_address",
                 "timezone", "company_domain")
IDENTITY_COLUMNS = {"twitter_id": "twitter", "twitter_username": "twitter_username", "linkedin_id": "linkedin",
                    "email": "email", "xmtp_address": "xmtp"}
COLUMN_OF = {kind: col for col, kind in IDENTITY_COLUMNS.items()}


def normalise(kind: str, value: str) -> str:
    v = value.strip()
    if kind == "twitter_username":
        return v.lstrip("@").lower()
    if kind == "email":
        local, _, domain = v.rpartition("@")
        return f"{local}@{domain.lower()}"
    if kind == "xmtp":
        return v.lower()
    return v


@dataclass
class ImportReport:
    rows: int = 0
    suppressed: int = 0
    already_contacted: int = 0
    people_created: int = 0
    people_merged: int = 0
    enrolled: int = 0
    already_enrolled: int = 0
    conflicts: list[str] = field(default_factory=list)


CHUNK_ROWS = 50_000  # leads per COPY chunk


class LeadRows:
    """Validated leads, held as the COPY lines that stage them (chunks of ``CHUNK_ROWS``), not as a dict per row:
    a million leads take ~0.3 GB instead of ~3 GB, and import_leads streams the chunks into the staging table.
    ``len()`` is the number of leads; iterating yields each lead as the dict parse_lead_rows used to return."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self._buf = io.StringIO()
        self._writer = csv.writer(self._buf)
        self._n = 0
        self._in_buf = 0

    def append(self, line: int, name: str | None, timezone: str | None, company_domain: str | None, ids: dict,
               variables: dict) -> None:
        self._writer.writerow([line, name or "", timezone or "", company_domain or "", json.dumps(ids),
                               json.dumps(variables)])
        self._n += 1
        self._in_buf += 1
        if self._in_buf >= CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._in_buf:
            self.chunks.append(self._buf.getvalue())
            self._buf = io.StringIO()
            self._writer = csv.writer(self._buf)
            self._in_buf = 0

    def done(self) -> "LeadRows":
        self._flush()
        return self

    def __len__(self) -> int:
        return self._n

    def __iter__(self):
        for chunk in self.chunks:
            for line, name, tz, domain, ids, variables in csv.reader(io.StringIO(chunk)):
                yield {"line": int(line), "name": name or None, "timezone": tz or None,
                       "company_domain": domain or None, "ids": json.loads(ids), "variables": json.loads(variables)}


def parse_leads_csv(text: str, filename: str) -> LeadRows:
    """Validate the whole file first; raise ValidationError naming file, line and column."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise ValidationError([ValidationIssue(filename, 1, "header", "empty file: a header row is required")])
    return parse_lead_rows(list(reader.fieldnames), enumerate(reader, start=2), filename)


def parse_leads_query(url: str, sql: str, filename: str) -> LeadRows:
    """An audience segment: run ``sql`` (one SELECT) against the audience database; rows are leads.
    Column names are those of the CSV format; "line" in errors is the result row number."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(sql))
            header = list(result.keys())
            records = [{k: "" if v is None else str(v) for k, v in zip(header, row)} for row in result]
    except sa.exc.SQLAlchemyError as e:
        raise ValidationError([ValidationIssue(filename, None, "query", f"the audience query failed: {e.orig or e}")])
    finally:
        engine.dispose()
    return parse_lead_rows(header, enumerate(records, start=1), filename)


def parse_lead_rows(fieldnames: list[str], records, filename: str) -> LeadRows:
    issues: list[ValidationIssue] = []
    header = [h.strip() for h in fieldnames]
    if len(set(header)) != len(header):
        issues.append(ValidationIssue(filename, 1, "header", "duplicate column names"))
    if not any(c in header for c in IDENTITY_COLUMNS):
        issues.append(ValidationIssue(filename, 1, "header",
                                      f"needs at least one identity column: {', '.join(IDENTITY_COLUMNS)}"))
    rows = LeadRows()
    seen: dict[str, int] = {}  # "kind<TAB>value" -> first line (a flat string key: ~3x smaller than a tuple)
    zones: set[str] = set()  # time zones already validated (ZoneInfo's own strong cache holds only 8)
    for lineno, raw in records:
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if None in raw:
            issues.append(ValidationIssue(filename, lineno, "row", "more fields than header columns"))
            continue
        ids = {}
        for col, kind in IDENTITY_COLUMNS.items():
            if row.get(col):
                ids[kind] = normalise(kind, row[col])
        if not ids:
            issues.append(ValidationIssue(filename, lineno, "row", "no identity (twitter_id, email, ...) given"))
            continue
        if "email" in ids and "@" not in ids["email"]:
            issues.append(ValidationIssue(filename, lineno, "email", f"not an email address: {row['email']!r}"))
        if "twitter" in ids and not ids["twitter"].isdigit():
            issues.append(ValidationIssue(filename, lineno, "twitter_id", f"X user ids are numeric: {row['twitter_id']!r}"))
        tz = row.get("timezone") or None
        if tz and tz not in zones:
            try:
                ZoneInfo(tz)
                zones.add(tz)
            except (ZoneInfoNotFoundError, ValueError):
                issues.append(ValidationIssue(filename, lineno, "timezone", f"unknown timezone {tz!r}"))
        for kind, value in ids.items():
            key = f"{kind}\t{value}"
            if key in seen:
                issues.append(ValidationIssue(filename, lineno, COLUMN_OF[kind],
                                              f"{value!r} already appears on line {seen[key]}"))
            seen[key] = lineno
        variables = {k: v for k, v in row.items() if k not in KNOWN_COLUMNS and v != ""}
        name = row.get("name") or ""
        variables.setdefault("name", name) if name else None
        if name and "first_name" not in variables:
            variables["first_name"] = name.split()[0]
        for col in ("twitter_username", "company_domain"):
            if row.get(col):
                variables.setdefault(col, row[col])
        if not issues:  # once the file is known to be refused, only its issues are collected
            rows.append(lineno, name or None, tz, (row.get("company_domain") or "").lower() or None, ids, variables)
    if issues:
        raise ValidationError(issues)
    return rows.done()


def _copy_stage(conn: sa.Connection, rows) -> None:
    """Stage the rows with COPY, one chunk of CHUNK_ROWS at a time (no per-row statements, no second copy of the
    whole file in memory). ``rows``: LeadRows, or an iterable of lead dicts."""
    if not isinstance(rows, LeadRows):
        staged = LeadRows()
        for r in rows:
            staged.append(r["line"], r["name"], r["timezone"], r["company_domain"], r["ids"], r["variables"])
        rows = staged.done()
    cur = conn.connection.dbapi_connection.cursor()
    try:
        for chunk in rows.chunks:
            cur.copy_expert("COPY lead_stage (line, name, timezone, company_domain, ids, variables) "
                            "FROM STDIN WITH (FORMAT csv, NULL '')", io.StringIO(chunk))
    finally:
        cur.close()


def import_leads(conn: sa.Connection, seq_row, seq: SequenceDef, rows, now: datetime) -> ImportReport:
    """Merge people and enrol them, in a handful of statements inside the caller's transaction."""
    report = ImportReport(rows=len(rows))
    if not rows:
        return report
    conn.execute(sa.text("""
        CREATE TEMP TABLE lead_stage (line int, name text, timezone text, company_domain text,
            ids jsonb, variables jsonb, person_id bigint, new_person boolean DEFAULT false) ON COMMIT DROP"""))
    _copy_stage(conn, rows)
    # which existing people do the row's identities point at?
    matches = conn.execute(sa.text("""
        SELECT s.line, array_agg(DISTINCT i.person_id ORDER BY i.person_id) AS people
        FROM lead_stage s
        CROSS JOIN LATERAL jsonb_each_text(s.ids) AS j(kind, value)
        JOIN identities i ON i.kind = j.kind AND i.value = j.value
        GROUP BY s.line""")).all()
    conflicts = {m.line: m.people for m in matches if len(m.people) > 1}
    for line, people in sorted(conflicts.items()):
        report.conflicts.append(f"line {line}: identities belong to different people {people}; not merged, not enrolled")
    single = [m for m in matches if len(m.people) == 1]
    conn.execute(sa.text("""
        UPDATE lead_stage s SET person_id = m.pid
        FROM unnest(CAST(:lines AS int[]), CAST(:pids AS bigint[])) AS m(line, pid) WHERE s.line = m.line"""),
        {"lines": [m.line for m in single], "pids": [m.people[0] for m in single]})
    if conflicts:
        conn.execute(sa.text("DELETE FROM lead_stage WHERE line = ANY(:l)"), {"l": list(conflicts)})
    report.people_merged = len(matches) - len(conflicts)
    report.people_created = conn.execute(sa.text("""
        UPDATE lead_stage SET person_id = nextval(pg_get_serial_sequence('people', 'id')), new_person = true
        WHERE person_id IS NULL""")).rowcount
    conn.execute(sa.text("""
        INSERT INTO people (id, name, timezone, company_domain)
        SELECT person_id, name, timezone, company_domain FROM lead_stage WHERE new_person"""))
    conn.execute(sa.text("""
        UPDATE people p SET name = coalesce(p.name, s.name), timezone = coalesce(s.timezone, p.timezone),
            company_domain = coalesce(s.company_domain, p.company_domain)
        FROM lead_stage s WHERE s.person_id = p.id AND NOT s.new_person"""))
    conn.execute(sa.text("""
        INSERT INTO identities (person_id, kind, value)
        SELECT s.person_id, j.kind, j.value FROM lead_stage s CROSS JOIN LATERAL jsonb_each_text(s.ids) AS j(kind, value)
        ON CONFLICT (kind, value) DO NOTHING"""))
    # suppressed people are not enrolled; already-contacted ones are skipped when the sequence asks for it
    report.suppressed = conn.execute(sa.text("""
        DELETE FROM lead_stage s WHERE EXISTS (
            SELECT 1 FROM suppressions x WHERE x.kind = 'global'
               OR (x.kind = 'person' AND x.value = s.person_id::text)
               OR (x.kind = 'domain' AND x.value = s.company_domain))
        OR EXISTS (
            SELECT 1 FROM identities i JOIN suppressions x
              ON (x.kind = i.kind AND x.value = i.value)
              OR (x.kind = 'domain' AND i.kind = 'email' AND x.value = split_part(i.value, '@', 2))
            WHERE i.person_id = s.person_id)""")).rowcount
    cooldown = seq.extras.get("contact_cooldown", 30 * 86400)
    contacted = conn.execute(sa.text("""
        SELECT s.line FROM lead_stage s WHERE EXISTS (
            SELECT 1 FROM events ev WHERE ev.person_id = s.person_id AND ev.kind = 'SENT'
              AND ev.occurred_at > CAST(:now AS timestamptz) - make_interval(secs => :cooldown))"""),
        {"now": now, "cooldown": cooldown}).scalars().all()
    report.already_contacted = len(contacted)
    if seq.exclude_already_contacted and contacted:
        conn.execute(sa.text("DELETE FROM lead_stage WHERE line = ANY(:l)"), {"l": list(contacted)})
    # accounts: each enrolment gets one sender account per provider, spread by person id
    acc = conn.execute(sa.text("""
        SELECT provider, array_agg(id ORDER BY name) AS ids FROM sender_accounts
        WHERE name = ANY(:names) GROUP BY provider"""), {"names": list(seq.accounts)}).all()
    start_provider = seq.actions[seq.start].provider
    report.enrolled = conn.execute(sa.text("""
        WITH acc AS (SELECT * FROM jsonb_to_recordset(CAST(:acc AS jsonb)) AS a(provider text, ids bigint[]))
        INSERT INTO enrollments (sequence_id, version_id, person_id, account_id, accounts, current_step, phase,
                                 next_run_at, variables)
        SELECT :sid, :vid, s.person_id,
               (SELECT a.ids[1 + (s.person_id % array_length(a.ids, 1))] FROM acc a WHERE a.provider = :sp),
               coalesce((SELECT jsonb_object_agg(a.provider, a.ids[1 + (s.person_id % array_length(a.ids, 1))])
                         FROM acc a), '{}'::jsonb),
               :start, 'pending', :now, s.variables
        FROM lead_stage s
        ON CONFLICT (sequence_id, person_id) DO NOTHING"""),
        {"acc": json.dumps([{"provider": a.provider, "ids": list(a.ids)} for a in acc]), "sid": seq_row.sequence_id,
         "vid": seq_row.version_id, "sp": start_provider, "start": seq.start, "now": now}).rowcount
    report.already_enrolled = (len(rows) - len(conflicts) - report.suppressed - report.enrolled
                               - (report.already_contacted if seq.exclude_already_contacted else 0))
    conn.execute(sa.text("""
        INSERT INTO events (occurred_at, kind, enrollment_id, person_id, sequence_id, version_id, step, account_id)
        SELECT :now, 'ENROLLED', e.id, e.person_id, e.sequence_id, e.version_id, e.current_step, e.account_id
        FROM enrollments e JOIN lead_stage s ON s.person_id = e.person_id
        WHERE e.sequence_id = :sid AND e.created_at = now()"""), {"now": now, "sid": seq_row.sequence_id})
    return report

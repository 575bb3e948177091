"""The ``outreach`` command, for growth ops and automation (DESIGN section 7).

Errors go to stderr with a non-zero exit code (2: bad input, 1: anything else) and say what and where;
a failing command writes nothing.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import sqlalchemy as sa

from outreach.domain.model import ValidationError

EXIT_BAD_INPUT = 2


class CliError(Exception):
    pass


def _engine():
    from outreach.store import db, migrate

    engine = db.get_engine()
    current, latest = migrate.current_version(engine), migrate.migrations()[-1][0]
    if current is None:
        raise CliError("the database has no schema yet: run `outreach db upgrade` first")
    if current < latest:
        raise CliError(f"the database schema is at version {current}, this code needs {latest}: "
                       "run `outreach db upgrade`")
    return engine


def _read(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise CliError(f"{path}: no such file")
    return p.read_text(encoding="utf-8")


# -- commands ---------------------------------------------------------------------------------------
def cmd_db_upgrade(args) -> int:
    from outreach.store import db, migrate

    url = db.resolve_url()
    engine = db.get_engine(url)
    applied = migrate.upgrade(engine)
    print(f"database {db.describe(url)}: " + (f"applied {', '.join(applied)}" if applied else "up to date")
          + f" (schema version {migrate.current_version(engine)})")
    return 0


def cmd_accounts_apply(args) -> int:
    from outreach.domain.accounts import parse_accounts
    from outreach.store import catalog

    accounts = parse_accounts(_read(args.file), args.file)
    engine = _engine()
    with engine.begin() as conn:
        try:
            result = catalog.apply_accounts(conn, accounts)
        except ValueError as e:
            raise CliError(f"{args.file}: {e}") from e
    for name, what in sorted(result.items()):
        print(f"account {name}: {what}")
    return 0


def _parse_seq(path: str, conn=None):
    from outreach.domain.sequence import parse_sequence
    from outreach.store import catalog

    providers = catalog.account_providers(conn) if conn is not None else None
    return parse_sequence(_read(path), path, providers)


def cmd_sequences_validate(args) -> int:
    engine = _engine()
    with engine.connect() as conn:
        seq = _parse_seq(args.file, conn)
    print(f"{args.file}: sequence {seq.name!r} is valid: {len(seq.actions)} actions, {len(seq.triggers)} triggers, "
          f"providers {', '.join(sorted(seq.providers())) or 'none'}")
    return 0


def cmd_sequences_apply(args) -> int:
    from outreach.store import catalog

    engine = _engine()
    with engine.begin() as conn:
        seq = _parse_seq(args.file, conn)
        version, published = catalog.apply_sequence(conn, seq, source_file=str(args.file))
        catalog.write_sequence_names(conn)
    print(f"sequence {seq.name}: " + (f"published version {version}" if published
                                      else f"unchanged (version {version})"))
    return 0


def cmd_sequences_status(args, status: str) -> int:
    from outreach.store import catalog

    with _engine().begin() as conn:
        catalog.set_sequence_status(conn, args.name, status)  # NotFound: exit 2 with its message
        catalog.write_sequence_names(conn)
    print(f"sequence {args.name}: {status}")
    return 0


def cmd_leads_import(args) -> int:
    from outreach.clock import parse_now
    from outreach.domain.model import SequenceDef
    from outreach.store import catalog
    from outreach.store.db import connection_url
    from outreach.store.leads import import_leads, parse_leads_csv, parse_leads_query

    if bool(args.file) == bool(args.query):
        raise CliError("give either a CSV FILE or --query FILE.sql (with --conn), not both")
    if args.query:
        if not args.conn:
            raise CliError("--query needs --conn: the Airflow connection id of the audience database")
        rows = parse_leads_query(connection_url(args.conn), _read(args.query), args.query)
        source = args.query
    else:
        rows = parse_leads_csv(_read(args.file), args.file)
        source = args.file
    engine = _engine()
    with engine.begin() as conn:
        try:
            seq_row = catalog.latest_version(conn, args.sequence)
        except catalog.NotFound as e:
            raise CliError(str(e)) from e
        if seq_row.status == "ARCHIVED":
            raise CliError(f"sequence {args.sequence!r} is archived; leads cannot be enrolled")
        seq = SequenceDef.from_canonical(args.sequence, tuple(seq_row.accounts), seq_row.definition)
        report = import_leads(conn, seq_row, seq, rows, parse_now(args.now))
    print(f"{source}: {report.rows} rows; {report.people_created} new people, {report.people_merged} merged "
          f"into existing people; {report.suppressed} suppressed, {report.already_contacted} already contacted"
          f"{' (skipped)' if seq.exclude_already_contacted else ''}; {report.enrolled} enrolled in {args.sequence} "
          f"(version {seq_row.version}), {report.already_enrolled} already enrolled")
    for c in report.conflicts:
        print(f"{source}: conflict: {c}", file=sys.stderr)
    return 0


SUPPRESSION_KINDS = ("twitter", "twitter_username", "linkedin", "email", "xmtp", "person", "domain", "global")


def _suppression_value(kind: str, value: str) -> str:
    from outreach.store.leads import normalise

    if kind not in SUPPRESSION_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(SUPPRESSION_KINDS)}")
    value = value.strip()
    if not value and kind != "global":
        raise ValueError("value is empty")
    if kind == "domain":
        return value.lower().lstrip("@")
    if kind == "person" and not value.isdigit():
        raise ValueError(f"a person is suppressed by its numeric id, got {value!r}")
    return normalise(kind, value) if kind not in ("person", "global") else (value or "*")


def cmd_suppress_add(args) -> int:
    try:
        value = _suppression_value(args.kind, args.value)
    except ValueError as e:
        raise CliError(f"--kind/--value: {e}") from e
    with _engine().begin() as conn:
        row = conn.execute(sa.text("""
            INSERT INTO suppressions (kind, value, reason, source) VALUES (:k, :v, :r, 'cli')
            ON CONFLICT (kind, value) DO NOTHING RETURNING id"""),
            {"k": args.kind, "v": value, "r": args.reason}).first()
    print(f"suppressed {args.kind}={value}" if row else f"{args.kind}={value} was already suppressed")
    return 0


def cmd_suppress_remove(args) -> int:
    try:
        value = _suppression_value(args.kind, args.value)
    except ValueError as e:
        raise CliError(f"--kind/--value: {e}") from e
    with _engine().begin() as conn:
        n = conn.execute(sa.text("DELETE FROM suppressions WHERE kind = :k AND value = :v"),
                         {"k": args.kind, "v": value}).rowcount
    if not n:
        raise CliError(f"{args.kind}={value} is not suppressed")
    print(f"removed suppression {args.kind}={value}")
    return 0


def cmd_suppress_list(args) -> int:
    with _engine().connect() as conn:
        rows = conn.execute(sa.text("""
            SELECT kind, value, reason, source, created_at FROM suppressions
            WHERE CAST(:k AS text) IS NULL OR kind = :k ORDER BY created_at, id"""), {"k": args.kind}).all()
    for r in rows:
        print(f"{r.kind:<16} {r.value:<40} {r.reason:<24} {r.source:<20} {r.created_at.isoformat()}")
    print(f"{len(rows)} suppressions", file=sys.stderr)
    return 0


def cmd_suppress_import(args) -> int:
    """CSV with columns kind, value, reason (source optional): validated whole, then one statement."""
    import csv
    import io

    from outreach.domain.model import ValidationError, ValidationIssue

    reader = csv.DictReader(io.StringIO(_read(args.file)))
    missing = {"kind", "value", "reason"} - set(reader.fieldnames or [])
    if missing:
        raise ValidationError([ValidationIssue(args.file, 1, "header", f"missing columns: {', '.join(sorted(missing))}")])
    rows, issues = [], []
    for line, raw in enumerate(reader, start=2):
        try:
            value = _suppression_value((raw.get("kind") or "").strip(), raw.get("value") or "")
        except ValueError as e:
            issues.append(ValidationIssue(args.file, line, "kind/value", str(e)))
            continue
        if not (raw.get("reason") or "").strip():
            issues.append(ValidationIssue(args.file, line, "reason", "a reason is required"))
            continue
        rows.append({"kind": raw["kind"].strip(), "value": value, "reason": raw["reason"].strip(),
                     "source": (raw.get("source") or "").strip() or f"import:{Path(args.file).name}"})
    if issues:
        raise ValidationError(issues)
    with _engine().begin() as conn:
        n = conn.execute(sa.text("""
            INSERT INTO suppressions (kind, value, reason, source)
            SELECT kind, value, reason, source FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                 AS x(kind text, value text, reason text, source text)
            ON CONFLICT (kind, value) DO NOTHING"""), {"rows": json.dumps(rows)}).rowcount
    print(f"{args.file}: {len(rows)} rows; {n} new suppressions, {len(rows) - n} already suppressed")
    return 0


def cmd_tick(args) -> int:
    from outreach.clock import parse_now
    from outreach.engine.tick import run_tick

    now = parse_now(args.now)
    summary = run_tick(_engine(), now, providers=[args.provider] if args.provider else None,
                       sequences=args.sequence or None, dry_run=args.dry_run, max_actions=args.max_actions)
    print(json.dumps(summary, indent=2, default=str) if args.json else _summary_lines(summary))
    return 0


def _summary_lines(summary: dict) -> str:
    lines = [f"tick at {summary['now']}"]
    for k, v in summary.items():
        if isinstance(v, dict):
            lines.append(f"  {k:<22} " + (", ".join(f"{a}={b}" for a, b in sorted(v.items())) or "nothing to do"))
    return "\n".join(lines)


def cmd_lead_show(args) -> int:
    engine = _engine()
    with engine.connect() as conn:
        e = conn.execute(sa.text("""
            SELECT e.*, s.name AS sequence, v.version, p.name AS person, a.name AS account
            FROM enrollments e JOIN sequences s ON s.id = e.sequence_id
            JOIN sequence_versions v ON v.id = e.version_id JOIN people p ON p.id = e.person_id
            LEFT JOIN sender_accounts a ON a.id = e.account_id WHERE e.id = :id"""), {"id": args.id}).first()
        if not e:
            raise CliError(f"no enrollment with id {args.id}")
        ids = conn.execute(sa.text("SELECT kind, value FROM identities WHERE person_id = :p ORDER BY kind"),
                           {"p": e.person_id}).all()
        events = conn.execute(sa.text("""
            SELECT occurred_at, kind, step, variant, attempt, reason, provider_ref, data FROM events
            WHERE enrollment_id = :id ORDER BY occurred_at, id"""), {"id": args.id}).all()
    print(f"enrollment {e.id}: {e.person or '(no name)'} in {e.sequence} v{e.version} via {e.account or '-'}")
    print("  identities: " + ", ".join(f"{i.kind}={i.value}" for i in ids))
    print(f"  status {e.status}" + (f" ({e.ended_reason})" if e.ended_reason else "")
          + f"; step {e.current_step} ({e.phase}); next run {e.next_run_at.isoformat() if e.next_run_at else '-'}"
          + ("; IN FLIGHT: awaiting reconcile" if e.in_flight else ""))
    print("  timeline:")
    for ev in events:
        extra = " ".join(x for x in (
            f"variant={ev.variant}" if ev.variant else "", f"attempt={ev.attempt}" if ev.attempt else "",
            f"reason={ev.reason}" if ev.reason else "", f"ref={ev.provider_ref}" if ev.provider_ref else "",
            f"-> {ev.data['next']}" if ev.data and ev.data.get("next") else "",
            f"text={ev.data['text'][:60]!r}" if ev.data and ev.data.get("text") else "") if x)
        print(f"    {ev.occurred_at.isoformat()}  {ev.kind:<16} {ev.step or '':<12} {extra}")
    return 0


FUNNEL_COLUMNS = [("ENROLLED", "enrolled"), ("ATTEMPTED", "attempted"), ("SENT", "sent"),
                  ("FOLLOWED_BACK", "follow-backs"), ("REPLIED", "replied"), ("SKIPPED", "skipped"),
                  ("FAILED", "failed"), ("NEEDS_REVIEW", "review"), ("RECONCILED", "reconciled")]


def cmd_metrics(args) -> int:
    from outreach.engine import metrics

    engine = _engine()
    if args.recompute:
        with engine.connect() as conn:
            lo, hi = conn.execute(sa.text("SELECT min(occurred_at), max(occurred_at) FROM events")).one()
        if lo:
            metrics.aggregate(engine, lo, hi)
    rows = metrics.funnel(engine, args.sequence)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no metrics yet (run a tick, or `outreach metrics --recompute`)")
        return 0
    print(format_funnel(rows))
    return 0


def format_funnel(rows: list[dict]) -> str:
    """The funnel table: the rollup's counts, then conversion (% of the preceding steps' actions, or of the
    enrolled for the start step) and the median time to reply (from the latency buckets)."""
    from outreach.engine.metrics import human_seconds

    head = (f"{'sequence':<22} {'step':<14} {'action':<20} " + " ".join(f"{h:>12}" for _, h in FUNNEL_COLUMNS)
            + f" {'conv%':>8} {'reply-p50':>10}")
    out = [head, "-" * len(head)]
    for r in rows:
        conv = r.get("conversion")
        out.append(f"{r['sequence'][:22]:<22} {r['step'][:14]:<14} {r['action'][:20]:<20} "
                   + " ".join(f"{r.get(k, 0):>12}" for k, _ in FUNNEL_COLUMNS)
                   + f" {'-' if conv is None else f'{conv:.1f}':>8} {human_seconds(r.get('reply_p50_s')):>10}")
    return "\n".join(out)


def cmd_sandbox_serve(args) -> int:
    from outreach.sandbox.server import serve

    serve(host=args.host, port=args.port, seed=args.seed, latency_ms=args.latency_ms)
    return 0


def cmd_sequences_history(args) -> int:
    from outreach.store import lifecycle

    with _engine().connect() as conn:
        rows = lifecycle.history(conn, args.name)
    print(f"{'version':>7}  {'published':<26} {'in flight':>9} {'enrolled':>9}  source")
    for r in rows:
        print(f"{r.version:>7}  {r.published_at.isoformat():<26} {r.in_flight:>9} {r.enrolled:>9}  {r.source_file or ''}")
    return 0


def cmd_sequences_diff(args) -> int:
    from outreach.store import lifecycle

    with _engine().connect() as conn:
        _, a = lifecycle.version(conn, args.name, args.v1)
        _, b = lifecycle.version(conn, args.name, args.v2)
    lines = lifecycle.diff(a, b)
    print("\n".join(lines) if lines else f"versions {args.v1} and {args.v2} are identical")
    return 0


def cmd_sequences_migrate(args) -> int:
    from outreach.clock import parse_now
    from outreach.store import lifecycle

    mapping = {}
    for m in args.map or []:
        old, sep, new = m.partition("=")
        if not sep or not old or not new:
            raise CliError(f"--map {m!r}: expected old_step=new_step")
        mapping[old.strip()] = new.strip()
    with _engine().begin() as conn:
        plan = lifecycle.migrate(conn, args.name, args.from_version, args.to_version, mapping,
                                 parse_now(args.now), dry_run=args.dry_run)
    verb = "would move" if args.dry_run else "moved"
    print(f"sequence {args.name}: {verb} {plan.total} leads from v{args.from_version} to v{args.to_version}")
    for (old, phase, new), n in sorted(plan.moves.items()):
        print(f"  {old} ({phase}) -> {new}: {n}")
    for (old, phase, why), n in sorted(plan.stranded.items()):
        print(f"  STRANDED {old} ({phase}): {n}: {why}")
    if plan.busy:
        print(f"  {plan.busy} leads are being advanced right now")
    return 0


def cmd_sequences_preview(args) -> int:
    from outreach.domain.model import SequenceDef
    from outreach.engine import compose, gate

    with _engine().connect() as conn:
        e = conn.execute(sa.text("""
            SELECT e.id, e.person_id, e.variables, e.variants, e.version_id, s.name, s.accounts, v.definition
            FROM enrollments e JOIN sequences s ON s.id = e.sequence_id
            JOIN sequence_versions v ON v.id = e.version_id WHERE e.id = :id"""), {"id": args.lead}).first()
        if not e or e.name != args.name:
            raise CliError(f"no enrollment {args.lead} in sequence {args.name!r}")
        winners = dict(conn.execute(sa.text(
            "SELECT step, winner FROM variant_decisions WHERE version_id = :v"), {"v": e.version_id}).all())
        recipient = gate.recipients(conn, [e.person_id])[e.person_id]
    seq = SequenceDef.from_canonical(e.name, tuple(e.accounts), e.definition)
    variables = compose.variables_for(e.variables, recipient)
    for key in compose.graph_order(seq):
        action = seq.actions[key]
        text, variant, skip = compose.compose(action, e.id, variables, (e.variants or {}).get(key), winners.get(key))
        head = f"[{key}] {action.type}" + (f" variant={variant}" if variant else "")
        print(head)
        if skip:
            print(f"  SKIPPED: {skip}")
        elif text:
            print("  " + text.replace("\n", "\n  "))
    return 0


def cmd_account_status(args, status: str) -> int:
    from outreach.store import lifecycle

    with _engine().begin() as conn:
        lifecycle.set_account_status(conn, args.name, status)  # NotFound: exit 2 with its message
    print(f"account {args.name}: {status}")
    return 0


def cmd_lead_status(args, status: str) -> int:
    from outreach.clock import parse_now
    from outreach.store import lifecycle

    with _engine().begin() as conn:
        lifecycle.set_enrollment_status(conn, args.id, status, parse_now(None))  # NotFound/ValueError: exit 2
    print(f"enrollment {args.id}: {status}")
    return 0


def cmd_plan(args) -> int:
    from outreach.clock import parse_now
    from outreach.engine import planner

    steps, warnings = planner.plan(_engine(), args.sequence, parse_now(args.now), args.horizon_days)
    print(f"{'step':<16} {'action':<24} {'at step':>8} {'sends needed':>13} {'capacity/day':>13}  finishes")
    for s in steps:
        cap = "unlimited" if s.daily_capacity >= 10**9 else str(s.daily_capacity)
        when = s.finish.strftime("%Y-%m-%d %H:%M UTC") if s.finish else "never (no capacity)"
        print(f"{s.step:<16} {s.action:<24} {s.leads_at_step:>8} {s.sends_needed:>13} {cap:>13}  {when}")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


# -- parser -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="outreach", description="Outreach sequences engine")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="sub", required=True, metavar="SUB")
    db.add_parser("upgrade", help="apply pending migrations").set_defaults(func=cmd_db_upgrade)

    acc = sub.add_parser("accounts", help="sender accounts").add_subparsers(dest="sub", required=True, metavar="SUB")
    a = acc.add_parser("apply", help="create or update accounts from a YAML file")
    a.add_argument("file")
    a.set_defaults(func=cmd_accounts_apply)
    for verb, status in (("pause", "PAUSED"), ("resume", "ACTIVE")):
        a = acc.add_parser(verb, help=f"{verb} a sender account")
        a.add_argument("name")
        a.set_defaults(func=lambda args, st=status: cmd_account_status(args, st))

    seqs = sub.add_parser("sequences", help="sequence definitions").add_subparsers(dest="sub", required=True,
                                                                                   metavar="SUB")
    s = seqs.add_parser("validate", help="check a sequence file; store nothing")
    s.add_argument("file")
    s.set_defaults(func=cmd_sequences_validate)
    s = seqs.add_parser("apply", help="create a sequence or publish a new version when its definition changed")
    s.add_argument("file")
    s.set_defaults(func=cmd_sequences_apply)
    for verb, status in (("pause", "PAUSED"), ("resume", "ACTIVE"), ("archive", "ARCHIVED")):
        s = seqs.add_parser(verb, help=f"{verb} a sequence (its leads keep their place)")
        s.add_argument("name")
        s.set_defaults(func=lambda args, st=status: cmd_sequences_status(args, st))
    s = seqs.add_parser("history", help="a sequence's versions and how many leads each holds")
    s.add_argument("name")
    s.set_defaults(func=cmd_sequences_history)
    s = seqs.add_parser("diff", help="what changed between two versions")
    s.add_argument("name")
    s.add_argument("v1", type=int)
    s.add_argument("v2", type=int)
    s.set_defaults(func=cmd_sequences_diff)
    s = seqs.add_parser("migrate", help="move in-flight leads from one version to another, explicitly")
    s.add_argument("name")
    s.add_argument("--from", dest="from_version", type=int, required=True)
    s.add_argument("--to", dest="to_version", type=int, required=True)
    s.add_argument("--map", action="append", metavar="OLD=NEW", help="map a step of --from to a step of --to")
    s.add_argument("--dry-run", action="store_true", help="print the moves and stranded leads; change nothing")
    s.add_argument("--now", help="engine clock (ISO 8601); default: real time")
    s.set_defaults(func=cmd_sequences_migrate)
    s = seqs.add_parser("preview", help="the exact text each step would send to one lead")
    s.add_argument("name")
    s.add_argument("--lead", type=int, required=True, help="enrollment id")
    s.set_defaults(func=cmd_sequences_preview)

    leads = sub.add_parser("leads", help="leads").add_subparsers(dest="sub", required=True, metavar="SUB")
    li = leads.add_parser("import", help="enrol leads from a CSV file into a sequence")
    li.add_argument("--sequence", required=True)
    li.add_argument("--now", help="engine clock (ISO 8601); default: real time")
    li.add_argument("file", nargs="?", help="CSV file (columns: name, twitter_id, twitter_username, linkedin_id, "
                                            "email, xmtp_address, timezone, company_domain, + template variables)")
    li.add_argument("--query", metavar="FILE.sql", help="an audience segment query, run as a static snapshot")
    li.add_argument("--conn", help="Airflow connection id of the audience database (with --query)")
    li.set_defaults(func=cmd_leads_import)

    sup = sub.add_parser("suppress", help="do-not-contact list").add_subparsers(dest="sub", required=True,
                                                                                 metavar="SUB")
    sa_ = sup.add_parser("add", help="suppress an identity, person, domain, or everyone (global)")
    sa_.add_argument("--kind", required=True, help="twitter, twitter_username, linkedin, email, xmtp, person, "
                                                   "domain or global")
    sa_.add_argument("--value", required=True)
    sa_.add_argument("--reason", required=True)
    sa_.set_defaults(func=cmd_suppress_add)
    sr = sup.add_parser("remove", help="lift a suppression")
    sr.add_argument("--kind", required=True)
    sr.add_argument("--value", required=True)
    sr.set_defaults(func=cmd_suppress_remove)
    sl = sup.add_parser("list", help="list suppressions (with reason, source and time)")
    sl.add_argument("--kind")
    sl.set_defaults(func=cmd_suppress_list)
    si = sup.add_parser("import", help="suppress every row of a CSV file (kind, value, reason[, source])")
    si.add_argument("file")
    si.set_defaults(func=cmd_suppress_import)

    pl = sub.add_parser("plan", help="estimate when each step of a sequence finishes, from the accounts' limits")
    pl.add_argument("sequence")
    pl.add_argument("--now", help="engine clock (ISO 8601); default: real time")
    pl.add_argument("--horizon-days", type=float, default=7.0, help="warn when a step needs longer (default 7)")
    pl.set_defaults(func=cmd_plan)

    t = sub.add_parser("tick", help="run one whole cycle: poll, ingest, advance, metrics")
    t.add_argument("--now", help="engine clock (ISO 8601); default: real time")
    t.add_argument("--provider", choices=["x", "linkedin", "xmtp", "email"])
    t.add_argument("--sequence", action="append", help="only these sequences (repeatable)")
    t.add_argument("--dry-run", action="store_true", help="decide and log, send nothing, change nothing")
    t.add_argument("--max-actions", type=int, help="stop after this many sends per advance batch of accounts")
    t.add_argument("--json", action="store_true", help="print the summary as JSON")
    t.set_defaults(func=cmd_tick)

    lead = sub.add_parser("lead", help="one enrollment").add_subparsers(dest="sub", required=True, metavar="SUB")
    ls = lead.add_parser("show", help="an enrollment's state and timeline")
    ls.add_argument("id", type=int)
    ls.set_defaults(func=cmd_lead_show)
    for verb, status in (("pause", "PAUSED"), ("resume", "ACTIVE")):
        lp = lead.add_parser(verb, help=f"{verb} one enrollment (it keeps its step)")
        lp.add_argument("id", type=int)
        lp.set_defaults(func=lambda args, st=status: cmd_lead_status(args, st))

    m = sub.add_parser("metrics", help="the funnel per sequence and step")
    m.add_argument("--sequence")
    m.add_argument("--recompute", action="store_true", help="recompute the rollup over all events first")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_metrics)

    sb = sub.add_parser("sandbox", help="the provider sandbox").add_subparsers(dest="sub", required=True,
                                                                                metavar="SUB")
    ss = sb.add_parser("serve", help="serve the X API sandbox over HTTP")
    ss.add_argument("--host", default="127.0.0.1")
    ss.add_argument("--port", type=int, default=8765)
    ss.add_argument("--seed", type=int, default=42)
    ss.add_argument("--latency-ms", type=float, default=0.0,
                    help="answer every provider API call this many milliseconds later (simulated latency)")
    ss.set_defaults(func=cmd_sandbox_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("outreach").setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except ValidationError as e:
        for issue in e.issues:
            print(f"error: {issue}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (CliError, LookupError) as e:
        print(f"error: {e.args[0] if isinstance(e, LookupError) and e.args else e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except sa.exc.OperationalError as e:
        print(f"error: database unavailable: {e.orig}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The synthetic workload, built set-based (generate_series, INSERT ... SELECT), never row by row in Python.

Shape at scale 1 (see run.py for the measurements): 100 sequences (half the DESIGN's follow -> DM graph, half a DM-first graph with a bump),
200 X sender accounts, 1,000,000 people with 3 identities each (X id, X username, email), 1,000,000
enrolments (one per person; 10% due now, 35% pending later, 30% waiting on a trigger, 25% finished),
~1% of people suppressed, template variables of realistic width (~200 bytes of JSON), 1,000,000 ENROLLED
events and 10,000,000 events on one day (the metrics day). Sizes scale with ``n`` (enrolments) and ``m``
(events of the metrics day); sequences and accounts stay 100 and 200.

Bulk load: secondary indexes, unique and foreign-key constraints of the loaded tables are dropped before the
load and recreated after it from their own definitions (``pg_get_constraintdef``/``pg_indexes``), then
VACUUM ANALYZE: the database is in the state a live one would be in, built in a fraction of the time.
"""
from __future__ import annotations

import textwrap
import time
from datetime import timedelta

import sqlalchemy as sa
from common import METRICS_DAY, NOW

N_SEQUENCES = 100
N_ACCOUNTS = 200
ACCOUNTS_PER_SEQUENCE = 20
DUE_PCT = 10
# The due set (10% of enrolments) is built "parked": due times shifted PARK_DAYS into the future, so nothing is due
# until a measurement releases what it needs (bench/perf/run.py: release()).
PARK_DAYS = 1000

FIRST = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "John", "Radia", "Tim",
         "Hedy", "Vint", "Sophie", "Guido", "Anita", "Bjarne", "Katherine", "Donald", "Annie", "Edsger", "Jean",
         "Niklaus", "Shafi", "Leslie", "Adele", "Yukihiro", "Mary", "Rasmus", "Priya", "Wei", "Olga", "Mateo",
         "Aisha", "Kenji", "Lucia", "Noah", "Chloe", "Arjun"]
LAST = ["Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen",
        "McCarthy", "Perlman", "Berners-Lee", "Lamarr", "Cerf", "Wilson", "van Rossum", "Borg", "Stroustrup",
        "Johnson", "Knuth", "Easley", "Dijkstra", "Bartik", "Wirth", "Goldwasser", "Lamport", "Goldberg",
        "Matsumoto", "Kernighan", "Lerdorf", "Sharma", "Zhang", "Ivanova", "Garcia", "Okafor", "Tanaka",
        "Fernandez", "Muller", "Dubois", "Patel", "Nakamura", "Kowalski", "Andersson"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark Industries", "Wayne Enterprises",
             "Wonka", "Tyrell", "Soylent", "Cyberdyne", "Aperture", "Black Mesa", "Massive Dynamic", "Prestige",
             "Monarch", "Oscorp", "Nakatomi", "Pied Piper", "Dunder Mifflin", "Bluth", "Sterling Cooper", "Krusty",
             "Gekko", "Duff", "Virtucon", "Genco", "Spacely", "Cogswell", "Zorg", "Weyland", "Rekall", "Octan",
             "Ollivanders", "Sirius Cybernetics", "Yoyodyne", "Planet Express", "Los Pollos", "Gringotts"]
TOPICS = ["agents", "vector search", "LLM evals", "Rust", "Postgres", "observability", "RAG", "fine-tuning",
          "edge inference", "data contracts", "dbt", "Airflow", "Kubernetes", "WebGPU", "zk proofs",
          "onchain identity", "growth loops", "product-led growth", "pricing", "developer relations"]
TITLES = ["Founder", "CTO", "Head of Growth", "Staff Engineer", "VP Engineering", "Product Manager",
          "Data Scientist", "ML Engineer", "Developer Advocate", "CEO", "Head of Data", "Solutions Architect"]
ZONES = ["America/New_York", "America/Los_Angeles", "Europe/London", "Europe/Berlin", "Europe/Paris", "Asia/Tokyo",
         "Asia/Singapore", "Australia/Sydney", "America/Sao_Paulo", "Asia/Kolkata", "America/Chicago", "Africa/Lagos"]

X_ID_BASE = 1_200_000_000_000_000_000  # 19-digit X user ids, like real ones

LIFTED = 100_000_000  # the sandbox is not in the loop: lift the engine's own rate limits so they never cap a batch


def account_name(i: int) -> str:
    return f"x-sender-{i:03d}"


def accounts_yaml() -> str:
    rows = []
    for i in range(N_ACCOUNTS):
        rows.append(
            f"  - {{name: {account_name(i)}, provider: x, conn_id: x_sender_{i:03d}, user_id: \"{1_500_000_000 + i}\", "
            f"timezone: {ZONES[i % len(ZONES)]}, limits: {{FOLLOW_ON_TWITTER: {{per_15min: {LIFTED}, per_day: {LIFTED}}}, "
            f"SEND_TWITTER_DM: {{per_15min: {LIFTED}, per_day: {LIFTED}}}}}}}")
    return "accounts:\n" + "\n".join(rows) + "\n"


def sequence_accounts(idx: int) -> list[int]:
    return [(2 * idx + k) % N_ACCOUNTS for k in range(ACCOUNTS_PER_SEQUENCE)]


def sequence_yaml(idx: int) -> tuple[str, str]:
    """(kind, yaml). Kind A: the DESIGN graph (follow, then a warm or a cold DM); kind B: DM first, then a bump."""
    accs = ", ".join(account_name(a) for a in sequence_accounts(idx))
    if idx % 2 == 0:
        return "A", textwrap.dedent(f"""\
            name: s{idx:03d}-founders-follow-dm
            accounts: [{accs}]
            exclude_already_contacted: true
            start: follow
            actions:
              follow: {{type: FOLLOW_ON_TWITTER}}
              dm_warm:
                type: SEND_TWITTER_DM
                message: "Hey {{{{ first_name }}}}, thanks for the follow! Loved your post on {{{{ topic }}}}. We are building tooling for teams like {{{{ company }}}} and I would value ten minutes of your time as {{{{ title }}}}."
                fallback_message: "Hey, thanks for the follow! Would love to hear what you are working on."
                variants:
                  - {{name: short, weight: 50, message: "{{Thanks|Thank you}} for the follow, {{{{ first_name }}}}! How is {{{{ company }}}} approaching {{{{ topic }}}}?"}}
              dm_cold: {{type: SEND_TWITTER_DM, message: "Hi {{{{ first_name }}}}, quick question about {{{{ topic }}}}: how does {{{{ company }}}} handle it today? We shipped something that might save your team a few weeks."}}
            triggers:
              - {{from: follow, trigger: FOLLOWED_BACK, to: dm_warm}}
              - {{from: follow, trigger: NOT_FOLLOWED_BACK, after: 2d, to: dm_cold}}
              - {{from: dm_warm, trigger: REPLIED, to: END}}
              - {{from: dm_cold, trigger: REPLIED, to: END}}
              - {{from: dm_cold, trigger: NOT_REPLIED, after: 3d, to: END}}
            """)
    return "B", textwrap.dedent(f"""\
        name: s{idx:03d}-dm-intro-bump
        accounts: [{accs}]
        start: dm_intro
        actions:
          dm_intro:
            type: SEND_TWITTER_DM
            message: "Hi {{{{ first_name }}}}, {{saw|read|loved}} your thread on {{{{ topic }}}}. We help {{{{ title | lower }}}}s at companies like {{{{ company }}}} ship faster; open to a quick chat this week?"
            fallback_message: "Hi {{{{ first_name }}}}, open to a quick chat about what we are building?"
          dm_bump: {{type: SEND_TWITTER_DM, message: "Hey {{{{ first_name }}}}, bumping this in case it got buried. Happy to send a two-minute demo instead."}}
        triggers:
          - {{from: dm_intro, trigger: REPLIED, to: END}}
          - {{from: dm_intro, trigger: NOT_REPLIED, after: 3d, to: dm_bump}}
          - {{from: dm_bump, trigger: REPLIED, to: END}}
          - {{from: dm_bump, trigger: NOT_REPLIED, after: 4d, to: END}}
        """)


# -- SQL expressions of one generated row, deterministic in g ------------------------------------------------------
A = "(SELECT CAST(:first AS text[]) f, CAST(:last AS text[]) l, CAST(:companies AS text[]) c, " \
    "CAST(:topics AS text[]) t, CAST(:titles AS text[]) ti, CAST(:zones AS text[]) z) a"
FN = "a.f[1 + (g % array_length(a.f, 1))]"
LN = "a.l[1 + ((g / 7) % array_length(a.l, 1))]"
CO = "a.c[1 + ((g / 3) % array_length(a.c, 1))]"
DOMAIN = f"(lower(replace({CO}, ' ', '')) || (g % 5003) || '.com')"
HAS_DOMAIN = "(g % 10 < 8)"
USERNAME = f"(lower({FN}) || '_' || lower(replace({LN}, ' ', '')) || g)"
EMAIL = f"(lower({FN}) || '.' || lower(replace({LN}, ' ', '')) || g || '@' || CASE WHEN {HAS_DOMAIN} THEN {DOMAIN} ELSE 'gmail.com' END)"


def _h(expr: str, seed: int) -> str:
    return f"abs(hashint8extended(({expr})::bigint, {seed}) % 100)"


# step of an enrolment, from its sequence kind and a hash
STEP = (f"CASE WHEN s.kind = 'A' THEN CASE WHEN {_h('g', 2)} < 60 THEN 'follow' WHEN {_h('g', 2)} < 80 THEN 'dm_cold' "
        f"ELSE 'dm_warm' END ELSE CASE WHEN {_h('g', 2)} < 70 THEN 'dm_intro' ELSE 'dm_bump' END END")
PREV = {"follow": None, "dm_cold": "follow", "dm_warm": "follow", "dm_intro": None, "dm_bump": "dm_intro"}
TIMEOUT_H = {"follow": 48, "dm_cold": 72, "dm_warm": None, "dm_intro": 72, "dm_bump": 96}


def _case(mapping: dict, col: str = "st.step", cast: str = "text") -> str:
    parts = " ".join(f"WHEN '{k}' THEN {('NULL' if v is None else repr(v) if isinstance(v, str) else v)}"
                     for k, v in mapping.items())
    return f"CAST(CASE {col} {parts} END AS {cast})"


ENROLLMENTS_SQL = f"""
INSERT INTO enrollments (id, sequence_id, version_id, person_id, account_id, accounts, status, current_step, phase,
                         next_run_at, attempts, in_flight, last_action, last_action_at, variables, variants,
                         ended_reason, created_at, updated_at)
SELECT g, s.sequence_id, s.version_id, g, ac.account_id, jsonb_build_object('x', ac.account_id),
       CASE WHEN x.r < 75 THEN 'ACTIVE' WHEN x.r < 93 THEN 'COMPLETED' WHEN x.r < 96 THEN 'FAILED'
            WHEN x.r < 98 THEN 'SKIPPED' ELSE 'NEEDS_REVIEW' END,
       st.step,
       CASE WHEN x.r >= 45 AND x.r < 75 THEN 'waiting' WHEN x.r >= 75 THEN 'waiting' ELSE 'pending' END,
       CASE WHEN x.r < :due THEN CAST(:now AS timestamptz) - make_interval(secs => 1 + g % 7200)
                                 + make_interval(days => {PARK_DAYS})
            WHEN x.r < 45 THEN CAST(:now AS timestamptz) + make_interval(hours => 1 + (g % 720))
            WHEN x.r < 75 THEN CAST(:now AS timestamptz) - make_interval(hours => 1 + g % 47)
                               + make_interval(hours => {_case(TIMEOUT_H, cast='int')})
            END,
       0, false,
       CASE WHEN x.r < 45 THEN {_case(PREV)} ELSE st.step END,
       CASE WHEN x.r < 45 AND {_case(PREV)} IS NULL THEN NULL
            WHEN x.r < 45 THEN CAST(:now AS timestamptz) - make_interval(hours => 49 + g % 100)
            ELSE CAST(:now AS timestamptz) - make_interval(hours => 1 + g % 47) END,
       jsonb_strip_nulls(jsonb_build_object(
           'name', {FN} || ' ' || {LN}, 'first_name', {FN}, 'company', {CO},
           'title', a.ti[1 + ((g / 11) % array_length(a.ti, 1))],
           'topic', CASE WHEN {_h('g', 3)} < 96 THEN a.t[1 + ((g / 13) % array_length(a.t, 1))] END,
           'twitter_username', {USERNAME},
           'company_domain', CASE WHEN {HAS_DOMAIN} THEN {DOMAIN} END)),
       CASE WHEN st.step = 'dm_warm' AND x.r >= 45 THEN jsonb_build_object('dm_warm',
            CASE WHEN g % 2 = 0 THEN 'short' ELSE 'control' END) ELSE '{{}}'::jsonb END,
       CASE WHEN x.r < 75 THEN NULL WHEN x.r < 86 THEN 'replied' WHEN x.r < 93 THEN 'not_replied'
            WHEN x.r < 96 THEN 'user_not_found' WHEN x.r < 98 THEN 'suppressed:twitter:opt_out_reply'
            ELSE 'reconcile_unknown' END,
       CAST(:now AS timestamptz) - make_interval(days => 10 + g % 20), CAST(:now AS timestamptz) - make_interval(hours => g % 200)
FROM generate_series(1, :n) g
CROSS JOIN {A}
JOIN bench.seqs s ON s.idx = g % {N_SEQUENCES}
JOIN bench.accs ac ON ac.idx = (2 * (g % {N_SEQUENCES}) + (g / {N_SEQUENCES}) % {ACCOUNTS_PER_SEQUENCE}) % {N_ACCOUNTS}
CROSS JOIN LATERAL (SELECT {_h('g', 1)} AS r) x
CROSS JOIN LATERAL (SELECT {STEP} AS step) st
"""

PEOPLE_SQL = f"""
INSERT INTO people (id, name, timezone, company_domain, created_at)
SELECT g, {FN} || ' ' || {LN}, CASE WHEN g % 10 < 6 THEN a.z[1 + ((g / 5) % array_length(a.z, 1))] END,
       CASE WHEN {HAS_DOMAIN} THEN {DOMAIN} END, CAST(:now AS timestamptz) - make_interval(days => 10 + g % 400)
FROM generate_series(1, :n) g CROSS JOIN {A}
"""

IDENTITIES_SQL = f"""
INSERT INTO identities (person_id, kind, value, created_at)
SELECT g, k.kind, CASE k.kind WHEN 'twitter' THEN ({X_ID_BASE} + g)::text WHEN 'twitter_username' THEN {USERNAME}
                              ELSE {EMAIL} END,
       CAST(:now AS timestamptz) - make_interval(days => 10 + g % 400)
FROM generate_series(1, :n) g CROSS JOIN {A}
CROSS JOIN (VALUES ('twitter'), ('twitter_username'), ('email')) k(kind)
"""

SUPPRESSIONS_SQL = f"""
INSERT INTO suppressions (kind, value, reason, source, created_at)
SELECT 'twitter', ({X_ID_BASE} + g)::text, 'opt_out_reply', 'reply:x:bench', CAST(:now AS timestamptz) - interval '30 days'
FROM generate_series(97, :n, 97) g
UNION ALL
SELECT 'domain', 'acme' || d || '.com', 'customer', 'manual', CAST(:now AS timestamptz) - interval '60 days'
FROM generate_series(1, 5003, 250) d
ON CONFLICT DO NOTHING
"""

ENROLLED_SQL = f"""
INSERT INTO events (occurred_at, recorded_at, kind, enrollment_id, person_id, sequence_id, version_id, step, account_id)
SELECT CAST(:now AS timestamptz) - make_interval(days => 10, secs => g % (20 * 86400)),
       CAST(:now AS timestamptz) - make_interval(days => 10, secs => g % (20 * 86400)),
       'ENROLLED', g, g, s.sequence_id, s.version_id, CASE s.kind WHEN 'A' THEN 'follow' ELSE 'dm_intro' END,
       ac.account_id
FROM generate_series(1, :n) g
JOIN bench.seqs s ON s.idx = g % {N_SEQUENCES}
JOIN bench.accs ac ON ac.idx = (2 * (g % {N_SEQUENCES}) + (g / {N_SEQUENCES}) % {ACCOUNTS_PER_SEQUENCE}) % {N_ACCOUNTS}
"""

# The metrics day: m events over one UTC day, spread over every enrolment, with the engine's kinds, reasons,
# idempotency keys and JSON payloads.
DAY_EVENTS_SQL = f"""
INSERT INTO events (occurred_at, recorded_at, kind, enrollment_id, person_id, sequence_id, version_id, step, variant,
                    account_id, provider, attempt, reason, provider_ref, dedupe_key, data)
SELECT ts, ts, k.kind, x.e, x.e, s.sequence_id, s.version_id, st.step,
       CASE WHEN st.step = 'dm_warm' THEN CASE WHEN g % 2 = 0 THEN 'short' ELSE 'control' END END,
       ac.account_id, 'x', CASE WHEN k.kind IN ('ATTEMPTED', 'RETRY_SCHEDULED') THEN 1 END, k.reason,
       CASE WHEN k.kind IN ('SENT', 'REPLIED') THEN (1890000000000000000 + g)::text END,
       CASE WHEN k.kind = 'ATTEMPTED' THEN 'att:' || x.e || ':' || st.step || '#h' || g
            WHEN k.kind IN ('SENT', 'FAILED') THEN 'out:' || x.e || ':' || st.step || '#h' || g
            WHEN k.kind IN ('REPLIED', 'FOLLOWED_BACK') THEN 'sig:x:' || (1890000000000000000 + g) || ':' || x.e END,
       k.data
FROM generate_series(1, CAST(:m AS bigint)) g
CROSS JOIN LATERAL (SELECT 1 + (g * 7919) % :n AS e, {_h('g', 5)} AS r,
                           CAST(:day AS timestamptz) + make_interval(secs => (g % 86400) + 0.25) AS ts) x
JOIN bench.seqs s ON s.idx = x.e % {N_SEQUENCES}
JOIN bench.accs ac ON ac.idx = (2 * (x.e % {N_SEQUENCES}) + (x.e / {N_SEQUENCES}) % {ACCOUNTS_PER_SEQUENCE}) % {N_ACCOUNTS}
CROSS JOIN LATERAL (SELECT CASE WHEN s.kind = 'A' THEN (ARRAY['follow', 'dm_cold', 'dm_warm'])[1 + g % 3]
                                ELSE (ARRAY['dm_intro', 'dm_bump'])[1 + g % 2] END AS step) st
CROSS JOIN LATERAL (SELECT
    CASE WHEN x.r < 30 THEN 'ATTEMPTED' WHEN x.r < 56 THEN 'SENT' WHEN x.r < 64 THEN 'FOLLOWED_BACK'
         WHEN x.r < 70 THEN 'REPLIED' WHEN x.r < 73 THEN 'SKIPPED' WHEN x.r < 75 THEN 'FAILED'
         WHEN x.r < 78 THEN 'RETRY_SCHEDULED' WHEN x.r < 88 THEN 'DEFERRED' ELSE 'TRIGGER_FIRED' END AS kind,
    CASE WHEN x.r >= 70 AND x.r < 73 THEN (ARRAY['suppressed:twitter:opt_out_reply', 'missing_variable:topic'])[1 + g % 2]
         WHEN x.r >= 73 AND x.r < 75 THEN (ARRAY['user_not_found', 'dms_closed'])[1 + g % 2]
         WHEN x.r >= 75 AND x.r < 78 THEN 'http_503' WHEN x.r >= 78 AND x.r < 88 THEN 'rate_limited'
         WHEN x.r >= 88 THEN 'NOT_FOLLOWED_BACK' END AS reason,
    CASE WHEN x.r < 30 THEN jsonb_build_object('action', 'SEND_TWITTER_DM', 'reconcile', false)
         WHEN x.r < 56 THEN jsonb_build_object('next', 'waiting', 'fired', NULL, 'text_len', 90 + g % 120)
         WHEN x.r < 64 THEN jsonb_build_object('next', 'dm_warm', 'fired', 'FOLLOWED_BACK', 'answers', 'follow')
         WHEN x.r < 70 THEN jsonb_build_object('next', 'COMPLETED', 'fired', 'REPLIED', 'answers', st.step,
                'text', 'Thanks for reaching out, happy to chat next week. What times work for you?',
                'intent', (ARRAY['positive', 'neutral', 'negative', 'unsubscribe'])[1 + g % 4])
         WHEN x.r < 78 THEN jsonb_build_object('detail', 'upstream answered 503 Service Unavailable')
         WHEN x.r < 88 THEN jsonb_build_object('until', '2026-02-25T12:15:00+00:00')
         ELSE jsonb_build_object('next', 'dm_cold', 'fired', 'NOT_FOLLOWED_BACK') END AS data) k
"""


def _register(conn: sa.Connection) -> None:
    """Accounts and sequences through the engine's own catalog code (200 + 100 objects, not data)."""
    from outreach.domain.accounts import parse_accounts
    from outreach.domain.sequence import parse_sequence
    from outreach.store import catalog

    catalog.apply_accounts(conn, parse_accounts(accounts_yaml(), "bench-accounts.yaml"))
    providers = catalog.account_providers(conn)
    conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS bench")
    conn.exec_driver_sql("CREATE TABLE bench.seqs (idx int PRIMARY KEY, sequence_id bigint, version_id bigint, kind text)")
    conn.exec_driver_sql("CREATE TABLE bench.accs (idx int PRIMARY KEY, account_id bigint)")
    for idx in range(N_SEQUENCES):
        kind, text = sequence_yaml(idx)
        seq = parse_sequence(text, f"bench-seq-{idx}.yaml", providers)
        catalog.apply_sequence(conn, seq)
        row = catalog.latest_version(conn, seq.name)
        conn.execute(sa.text("INSERT INTO bench.seqs VALUES (:i, :s, :v, :k)"),
                     {"i": idx, "s": row.sequence_id, "v": row.version_id, "k": kind})
    conn.execute(sa.text("""
        INSERT INTO bench.accs SELECT CAST(substr(name, 10) AS int), id FROM sender_accounts
        WHERE name LIKE 'x-sender-%'"""))


LOADED = ("people", "identities", "enrollments", "events")


def _drop_indexes(conn: sa.Connection) -> list[str]:
    """Drop FKs, unique/primary keys and indexes of the loaded tables; return the statements that restore them."""
    tables = ", ".join(f"'{t}'::regclass" for t in LOADED)
    cons = conn.execute(sa.text(f"""
        SELECT conrelid::regclass::text AS tbl, conname, contype, pg_get_constraintdef(oid) AS condef
        FROM pg_constraint WHERE contype IN ('p', 'u', 'f') AND (conrelid IN ({tables}) OR confrelid IN ({tables}))""")).all()
    con_names = {c.conname for c in cons}
    idx = conn.execute(sa.text(f"""
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename IN ({', '.join(f"'{t}'" for t in LOADED)})""")).all()
    idx = [i for i in idx if i.indexname not in con_names]
    restore = []
    for c in sorted(cons, key=lambda c: c.contype != "f"):  # foreign keys first
        conn.exec_driver_sql(f'ALTER TABLE {c.tbl} DROP CONSTRAINT "{c.conname}"')
    for i in idx:
        conn.exec_driver_sql(f'DROP INDEX "{i.indexname}"')
    for c in sorted(cons, key=lambda c: c.contype == "f"):  # keys first, then foreign keys
        restore.append(f'ALTER TABLE {c.tbl} ADD CONSTRAINT "{c.conname}" {c.condef}')
    restore += [i.indexdef for i in idx]
    return restore


def build(url: str, n: int, m: int, log=print) -> dict:
    """Load the workload into the (freshly migrated) database at ``url``. Returns timings."""
    eng = sa.create_engine(url)
    params = {"first": FIRST, "last": LAST, "companies": COMPANIES, "topics": TOPICS, "titles": TITLES,
              "zones": ZONES, "now": NOW, "n": n, "m": m, "due": DUE_PCT, "day": METRICS_DAY}
    timings = {}
    t_all = time.monotonic()
    with eng.begin() as conn:
        _register(conn)
    with eng.begin() as conn:
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '1GB'")
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")  # the build only; measurements use defaults
        restore = _drop_indexes(conn)
        for name, sql in (("people", PEOPLE_SQL), ("identities", IDENTITIES_SQL), ("enrollments", ENROLLMENTS_SQL),
                          ("suppressions", SUPPRESSIONS_SQL), ("enrolled events", ENROLLED_SQL),
                          ("metrics-day events", DAY_EVENTS_SQL)):
            t = time.monotonic()
            rows = conn.execute(sa.text(sql), params).rowcount
            timings[name] = time.monotonic() - t
            log(f"    {name:<20} {rows:>11,} rows  {timings[name]:6.1f}s")
        t = time.monotonic()
        for stmt in restore:
            conn.exec_driver_sql(stmt)
        timings["indexes"] = time.monotonic() - t
        log(f"    {'keys and indexes':<20} {len(restore):>11} built {timings['indexes']:6.1f}s")
        for tbl in ("people", "enrollments"):
            conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{tbl}', 'id'), (SELECT max(id) FROM {tbl}))")
    t = time.monotonic()
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        conn.exec_driver_sql("VACUUM (ANALYZE)")
        conn.exec_driver_sql("CHECKPOINT")
    timings["vacuum"] = time.monotonic() - t
    log(f"    {'vacuum analyze':<20} {'':>11}       {timings['vacuum']:6.1f}s")
    timings["total"] = time.monotonic() - t_all
    with eng.connect() as conn:
        timings["size_mb"] = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar() / 2**20
    eng.dispose()
    return timings


def checkpoint(url: str) -> None:
    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.exec_driver_sql("CHECKPOINT")
    eng.dispose()


def vacuum(url: str, *tables: str) -> None:
    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.exec_driver_sql(f"VACUUM (ANALYZE) {', '.join(tables)}")
        conn.exec_driver_sql("CHECKPOINT")
    eng.dispose()


__all__ = ["METRICS_DAY", "NOW", "build", "timedelta"]

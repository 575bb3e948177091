"""The rollups against a straight recount (in Python) of random event logs: every metric and latency bucket,
after recomputing the days in random, overlapping intervals; a rerun changes nothing; recomputing one interval
leaves every other day alone; and the DAG's aggregate_metrics in a backfill repairs exactly its interval."""
from __future__ import annotations

import json
import random
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from outreach.engine import metrics

DAY0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
DAYS = 6
KINDS = ["ENROLLED", "ATTEMPTED", "SENT", "SENT", "FAILED", "SKIPPED", "DEFERRED", "RETRY_SCHEDULED", "NEEDS_REVIEW",
         "TRIGGER_FIRED", "REPLIED", "REPLIED", "FOLLOWED_BACK", "CONNECTION_ACCEPTED", "READ", "DELIVERED",
         "BOUNCED", "MIGRATED"]
REASONS = {"FAILED": ["not_found", "dm_closed", "timeout:max_attempts"], "SKIPPED": ["suppressed", "missing_variable:x"],
           "DEFERRED": ["send_window", "rate_limited"], "RETRY_SCHEDULED": ["timeout", "server_error"],
           "NEEDS_REVIEW": ["reconcile_unknown", "timeout:max_attempts"], "TRIGGER_FIRED": ["NOT_REPLIED"],
           "SENT": [None, None, "reconciled"]}
INTENTS = ["positive", "negative", "neutral", "unsubscribe"]
DAILY = "SELECT day, sequence_id, version_id, step, variant, account_id, metric, value FROM metrics_daily"
LATENCY = "SELECT day, sequence_id, version_id, step, variant, account_id, signal, bucket, count, sum_seconds " \
          "FROM metrics_latency"


@pytest.fixture
def db(engine):
    with engine.begin() as c:
        c.exec_driver_sql("TRUNCATE metrics_latency")
    return engine


def random_events(rng: random.Random, n: int) -> list[dict]:
    """Events over DAYS days (some around UTC midnight), a few enrollments with SENTs and the signals after."""
    out = []
    for i in range(n):
        kind = rng.choice(KINDS)
        t = DAY0 + timedelta(days=rng.randrange(DAYS), seconds=rng.choice(
            [rng.randrange(86400), rng.randrange(3), 86399, rng.randrange(86340, 86400)]),
            microseconds=rng.randrange(10**6))
        reason = rng.choice(REASONS[kind]) if kind in REASONS else rng.choice([None, "x"])
        data = None
        if kind == "REPLIED":
            data = rng.choice([{"intent": rng.choice(INTENTS)}, {"intent": rng.choice(INTENTS), "text": "hi"}, {}])
        out.append({
            "occurred_at": t.isoformat(), "kind": kind,
            "enrollment_id": rng.choice([None] + list(range(1, 25))),
            "sequence_id": rng.choice([None, 1, 2, 2]), "version_id": rng.choice([1, 2, 3]),
            "step": rng.choice([None, "a", "b", "b"]), "variant": rng.choice([None, "", "x", "control"]),
            "account_id": rng.choice([None, 1, 2]), "reason": reason, "data": data,
            "dedupe_key": f"rnd:{i}",
        })
    return out


def insert(engine, events: list[dict]) -> None:
    with engine.begin() as c:
        c.execute(sa.text("""
            INSERT INTO events (occurred_at, kind, enrollment_id, sequence_id, version_id, step, variant, account_id,
                                reason, dedupe_key, data)
            SELECT occurred_at, kind, enrollment_id, sequence_id, version_id, step, variant, account_id, reason,
                   dedupe_key, data
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(occurred_at timestamptz, kind text,
                 enrollment_id bigint, sequence_id bigint, version_id bigint, step text, variant text,
                 account_id bigint, reason text, dedupe_key text, data jsonb)"""), {"rows": json.dumps(events)})


def recount(events: list[dict], days: set[date] | None = None) -> tuple[Counter, Counter]:
    """The rollups computed straight from the events, in Python (the definition, independent of the SQL)."""
    daily: Counter = Counter()
    latency: Counter = Counter()
    parsed = [dict(e, t=datetime.fromisoformat(e["occurred_at"])) for e in events]
    for e in parsed:
        day = e["t"].astimezone(timezone.utc).date()
        if e["sequence_id"] is None or (days is not None and day not in days):
            continue
        dims = (day, e["sequence_id"], e["version_id"], e["step"] or "", e["variant"] or "", e["account_id"] or 0)
        names = [e["kind"]]
        if e["kind"] in ("SKIPPED", "FAILED", "RETRY_SCHEDULED", "NEEDS_REVIEW", "DEFERRED", "TRIGGER_FIRED") \
                and e["reason"] is not None:
            names.append(e["kind"] + ":" + e["reason"].split(":")[0])
        if e["kind"] == "SENT" and e["reason"] == "reconciled":
            names.append("RECONCILED")
        if e["kind"] == "REPLIED" and e["data"] and "intent" in e["data"]:
            names.append("REPLIED:" + e["data"]["intent"])
        for m in names:
            daily[dims + (m,)] += 1
        if e["kind"] in metrics.RESPONSE_SIGNALS and e["enrollment_id"] is not None and e["step"] is not None:
            sends = [s["t"] for s in parsed if s["kind"] == "SENT" and s["enrollment_id"] == e["enrollment_id"]
                     and s["step"] == e["step"] and s["t"] <= e["t"]]
            if sends:
                seconds = (e["t"] - max(sends)) // timedelta(seconds=1)
                bucket = max(b for b in metrics.LATENCY_EDGES if b <= seconds)
                key = dims + (e["kind"], bucket)
                latency[key + ("count",)] += 1
                latency[key + ("sum",)] += seconds
    return daily, latency


def table(engine, days: set[date] | None = None) -> tuple[Counter, Counter]:
    with engine.connect() as c:
        daily = Counter({tuple(r[:7]): r[7] for r in c.execute(sa.text(DAILY)) if days is None or r[0] in days})
        latency: Counter = Counter()
        for r in c.execute(sa.text(LATENCY)):
            if days is None or r[0] in days:
                latency[tuple(r[:8]) + ("count",)] = r[8]
                latency[tuple(r[:8]) + ("sum",)] = r[9]
    return daily, latency


@pytest.mark.parametrize("seed", range(6))
def test_rollups_equal_a_straight_recount_of_random_events(db, seed):
    rng = random.Random(seed)
    events = random_events(rng, rng.choice([50, 200, 400]))
    insert(db, events)
    # recompute in random, overlapping intervals (datetimes and dates, as the DAG and the CLI pass them)
    for _ in range(rng.randrange(1, 5)):
        a = rng.randrange(DAYS)
        b = rng.randrange(a, DAYS + 1)
        start = DAY0 + timedelta(days=a, hours=rng.choice([0, 0, 6, 23]))
        end = DAY0 + timedelta(days=b, hours=rng.choice([0, 6]))
        metrics.aggregate(db, start, end if end > start else start + timedelta(hours=1))
    metrics.aggregate(db, DAY0.date(), (DAY0 + timedelta(days=DAYS)).date())  # then the whole period
    daily, latency = recount(events)
    got_daily, got_latency = table(db)
    assert got_daily == daily
    assert got_latency == latency
    assert sum(v for k, v in latency.items() if k[-1] == "count") > 0 or seed  # latency exercised

    # a rerun of the same interval changes nothing
    metrics.aggregate(db, DAY0.date(), (DAY0 + timedelta(days=DAYS)).date())
    assert table(db) == (daily, latency)


def test_recomputing_an_interval_touches_only_its_days_and_repairs_them(db):
    rng = random.Random(42)
    events = random_events(rng, 300)
    insert(db, events)
    metrics.aggregate(db, DAY0.date(), (DAY0 + timedelta(days=DAYS)).date())
    daily, latency = recount(events)
    # corrupt every day of the rollup, then recompute day 2 only (a backfill of one interval)
    with db.begin() as c:
        c.execute(sa.text("UPDATE metrics_daily SET value = value + 1000"))
        c.execute(sa.text("UPDATE metrics_latency SET count = count + 1000"))
    day2 = (DAY0 + timedelta(days=2)).date()
    summary = metrics.aggregate(db, DAY0 + timedelta(days=2, hours=6), DAY0 + timedelta(days=2, hours=12))
    assert summary["start_day"] == day2.isoformat() and summary["end_day"] == (day2 + timedelta(days=1)).isoformat()
    got_daily, got_latency = table(db)
    for k, v in got_daily.items():
        assert v == (daily[k] if k[0] == day2 else daily[k] + 1000), k
    assert {k for k in got_daily} == set(daily)
    assert all(v == latency[k] for k, v in got_latency.items() if k[0] == day2 and k[-1] == "count")
    assert all(v == latency[k] + 1000 for k, v in got_latency.items() if k[0] != day2 and k[-1] == "count")


def test_late_events_are_counted_when_their_day_is_recomputed(db):
    """A signal ingested late is dated when it happened: recomputing its day (the DAG includes the day before)
    picks it up; the rollup of the other days does not move."""
    rng = random.Random(7)
    events = random_events(rng, 100)
    insert(db, events)
    metrics.aggregate(db, DAY0.date(), (DAY0 + timedelta(days=DAYS)).date())
    late = [{"occurred_at": (DAY0 + timedelta(days=1, hours=3)).isoformat(), "kind": "REPLIED", "enrollment_id": 3,
             "sequence_id": 1, "version_id": 1, "step": "a", "variant": "", "account_id": 1, "reason": None,
             "data": {"intent": "positive"}, "dedupe_key": "late:1"}]
    insert(db, late)
    metrics.aggregate(db, DAY0 + timedelta(days=1), DAY0 + timedelta(days=2, hours=6))  # day 1 and day 2
    assert table(db) == recount(events + late)


def test_the_funnel_reads_the_rollup(db, sandbox):
    """The funnel's counts are the rollup's sums per step; positive replies and unsubscribes come from intents."""
    from tests.helpers import run_at, setup

    setup(db, n=12)
    for now in ("2026-01-05T09:00:00Z", "2026-01-05T13:30:00Z", "2026-01-05T17:00:00Z", "2026-01-08T09:00:00Z"):
        run_at(db, sandbox, now)
    metrics.aggregate(db, date(2026, 1, 5), date(2026, 1, 9))
    rows = {r["step"]: r for r in metrics.funnel(db, "founders-follow-dm")}
    assert list(rows) == ["follow", "dm_warm", "dm_cold"]  # graph order
    with db.connect() as c:
        sums = {(r.step, r.metric): int(r.v) for r in c.execute(sa.text(
            "SELECT step, metric, sum(value) AS v FROM metrics_daily GROUP BY 1, 2"))}
        replies = c.execute(sa.text("SELECT count(*) FROM events WHERE kind = 'REPLIED'")).scalar()
    for (step, metric), v in sums.items():
        assert rows[step][metric] == v
    assert rows["follow"]["conversion"] == 100.0
    for step in ("dm_warm", "dm_cold"):
        assert rows[step]["POSITIVE"] == sums.get((step, "REPLIED:positive"), 0)
        assert rows[step]["UNSUBSCRIBED"] == sums.get((step, "REPLIED:unsubscribe"), 0)
        base = rows["follow"]["SENT"]
        assert rows[step]["conversion"] == (round(100 * rows[step]["SENT"] / base, 1) if base else None)
    assert sum(r.get("REPLIED", 0) for r in rows.values()) == replies > 0
    p50 = [r["reply_p50_s"] for r in rows.values() if r.get("REPLIED")]
    assert p50 and all(x is not None and x >= 0 for x in p50)


def test_quantiles_from_buckets():
    assert metrics.quantile({}, 0.5) is None
    assert metrics.quantile({60: 2}, 0.5) == 180.0  # the middle of [60, 300)
    assert metrics.quantile({0: 1, 3600: 1}, 1.0) == 7200.0
    assert metrics.quantile({2592000: 2}, 0.5, {2592000: 2 * 3_000_000}) == 3_000_000  # open bucket: its mean
    assert metrics.bucket_label(3600) == "1h-2h" and metrics.bucket_label(2592000) == "30d+"

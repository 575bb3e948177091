"""The engine end to end on real parts: PostgreSQL, the X sandbox over HTTP, the same tick the DAG and CLI run.

The sandbox clock is always set to the engine clock ``now`` (tests.helpers.run_at).
"""
from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from outreach.clock import parse_now
from outreach.engine import metrics
from outreach.engine.advance import AdvanceConfig, advance_account
from outreach.engine.tick import accounts, ingest, poll
from outreach.providers import registry
from outreach.providers.x import XClient
from outreach.store import catalog, steps
from outreach.store.steps import Transition

from tests.helpers import pick_ids, run_at, setup

T0 = "2026-01-05T09:00:00Z"

DM_SEQUENCE = """
name: {name}
accounts: [x-main]
start: dm
actions:
  dm:
    type: SEND_TWITTER_DM
    message: "Hi {{{{ first_name }}}}, a question about {{{{ topic }}}}"
{fallback}
triggers:
  - {{from: dm, trigger: REPLIED, to: END}}
  - {{from: dm, trigger: NOT_REPLIED, after: 3d, to: END}}
"""


def dm_sequence(name: str = "dm-only", fallback: str | None = None) -> str:
    return DM_SEQUENCE.format(name=name, fallback=f'    fallback_message: "{fallback}"' if fallback else "")


def rows(engine, sql: str, **params) -> list:
    with engine.connect() as c:
        return c.execute(sa.text(sql), params).all()


def scalar(engine, sql: str, **params):
    with engine.connect() as c:
        return c.execute(sa.text(sql), params).scalar()


def enrollments(engine) -> dict[str, sa.Row]:
    """twitter id -> enrollment row (with every column)."""
    return {r.twitter: r for r in rows(engine, """
        SELECT i.value AS twitter, e.* FROM enrollments e
        JOIN identities i ON i.person_id = e.person_id AND i.kind = 'twitter' ORDER BY e.id""")}


def timeline(engine, enrollment_id: int) -> list[tuple]:
    return [tuple(r) for r in rows(engine, """
        SELECT kind, step, reason FROM events WHERE enrollment_id = :e ORDER BY id""", e=enrollment_id)]


def log_counts(engine) -> dict[str, int]:
    return dict(rows(engine, """
        SELECT CASE WHEN e.kind = 'SENT' THEN 'SENT:' || a.type ELSE e.kind END, count(*)
        FROM events e LEFT JOIN sequence_actions a ON a.version_id = e.version_id AND a.key = e.step
        GROUP BY 1"""))


def assert_log_matches_sandbox(engine, sandbox) -> dict:
    got, sb = log_counts(engine), sandbox.summary()
    assert got.get("SENT:FOLLOW_ON_TWITTER", 0) == sb["follows"]
    assert got.get("SENT:SEND_TWITTER_DM", 0) == sb["dms"]
    assert got.get("FOLLOWED_BACK", 0) == sb["follow_backs_visible"]
    assert got.get("REPLIED", 0) == sb["replies_visible"]
    assert sb["duplicate_dms"] == 0
    return sb


def write_calls(sandbox, since: int = 0) -> list[dict]:
    return [c for c in sandbox.calls() if c["seq"] > since and c["method"] in ("POST", "DELETE")]


def last_seq(sandbox) -> int:
    calls = sandbox.calls()
    return calls[-1]["seq"] if calls else 0


# -- the DESIGN flow ------------------------------------------------------------------------------------
def test_design_flow_both_branches_and_event_log_equals_sandbox(engine, sandbox):
    setup(engine, n=20)
    clock = [T0, "2026-01-05T13:30:00Z", "2026-01-05T17:00:00Z",  # follow, follow-backs + warm DMs, replies
             "2026-01-07T09:00:00Z", "2026-01-07T13:00:00Z",      # NOT_FOLLOWED_BACK -> cold DMs, replies
             "2026-01-10T09:00:00Z"]                              # NOT_REPLIED -> END
    for now in clock:
        run_at(engine, sandbox, now)
        assert_log_matches_sandbox(engine, sandbox)

    sb = sandbox.summary()
    assert sb["follows"] == 20 and sb["dms"] == 20
    by_id = enrollments(engine)
    assert len(by_id) == 20
    for tid, e in by_id.items():
        p = sandbox.state.predict(tid)
        if p["follows_back"] and p["replies"]:
            expect = ("COMPLETED", "dm_warm", "replied")
        elif p["follows_back"]:
            expect = ("ACTIVE", "dm_warm", None)  # dm_warm waits for a reply with no timeout
        elif p["replies"]:
            expect = ("COMPLETED", "dm_cold", "replied")
        else:
            expect = ("COMPLETED", "dm_cold", "not_replied")
        assert (e.status, e.current_step, e.ended_reason) == expect, tid
        assert e.lease_owner is None and not e.in_flight

    warm = next(e for t, e in by_id.items()
                if sandbox.state.predict(t)["follows_back"] and sandbox.state.predict(t)["replies"])
    assert timeline(engine, warm.id) == [
        ("ENROLLED", "follow", None), ("ATTEMPTED", "follow", None), ("SENT", "follow", None),
        ("FOLLOWED_BACK", "follow", None), ("ATTEMPTED", "dm_warm", None), ("SENT", "dm_warm", None),
        ("REPLIED", "dm_warm", None)]
    cold = next(e for t, e in by_id.items()
                if not sandbox.state.predict(t)["follows_back"] and not sandbox.state.predict(t)["replies"])
    assert timeline(engine, cold.id) == [
        ("ENROLLED", "follow", None), ("ATTEMPTED", "follow", None), ("SENT", "follow", None),
        ("TRIGGER_FIRED", "follow", "NOT_FOLLOWED_BACK"), ("ATTEMPTED", "dm_cold", None), ("SENT", "dm_cold", None),
        ("TRIGGER_FIRED", "dm_cold", "NOT_REPLIED")]


def test_follow_back_then_warm_dm_then_reply_ends(engine, sandbox):
    tid = pick_ids(sandbox, 1, follows_back=True, replies=True)[0]
    p = sandbox.state.predict(tid)
    setup(engine, leads=[{"name": "Ada Lovelace", "twitter_id": tid, "topic": "engines"}])
    run_at(engine, sandbox, T0)
    e = enrollments(engine)[tid]
    assert (e.status, e.current_step, e.phase) == ("ACTIVE", "follow", "waiting")
    assert e.next_run_at == parse_now(T0) + timedelta(days=2)  # the NOT_FOLLOWED_BACK deadline

    fb_at = parse_now(T0) + timedelta(seconds=p["follow_back_delay_seconds"] + 60)
    s = run_at(engine, sandbox, fb_at.isoformat())
    assert s["ingest"]["fired:FOLLOWED_BACK"] == 1 and s["advance_x"]["sent"] == 1
    e = enrollments(engine)[tid]
    assert (e.status, e.current_step, e.phase, e.next_run_at) == ("ACTIVE", "dm_warm", "waiting", None)
    dm = write_calls(sandbox)[-1]
    assert dm["path"] == f"/2/dm_conversations/with/{tid}/messages" and "Ada" in dm["text"]

    reply_at = fb_at + timedelta(seconds=p["reply_delay_seconds"] + 60)
    s = run_at(engine, sandbox, reply_at.isoformat())
    assert s["ingest"]["fired:REPLIED"] == 1
    e = enrollments(engine)[tid]
    assert (e.status, e.ended_reason) == ("COMPLETED", "replied")
    replied = rows(engine, "SELECT data FROM events WHERE kind = 'REPLIED'")
    assert replied[0].data["text"] == p["reply_text"] and replied[0].data["next"] == "COMPLETED"
    assert_log_matches_sandbox(engine, sandbox)


def test_no_follow_back_then_cold_dm_then_no_reply_ends(engine, sandbox):
    tid = pick_ids(sandbox, 1, follows_back=False, replies=False)[0]
    setup(engine, leads=[{"name": "Grace Hopper", "twitter_id": tid, "topic": "compilers"}])
    run_at(engine, sandbox, T0)
    s = run_at(engine, sandbox, "2026-01-07T08:59:00Z")  # just before the 2-day timeout: nothing
    assert "advance_x" not in s and not s["ingest"]
    s = run_at(engine, sandbox, "2026-01-07T09:00:00Z")
    assert s["ingest"]["fired:NOT_FOLLOWED_BACK"] == 1 and s["advance_x"]["sent"] == 1
    e = enrollments(engine)[tid]
    assert (e.current_step, e.phase) == ("dm_cold", "waiting")
    assert e.next_run_at == parse_now("2026-01-10T09:00:00Z")  # NOT_REPLIED after 3d
    assert write_calls(sandbox)[-1]["text"] == "Hi Grace, quick question about compilers"
    run_at(engine, sandbox, "2026-01-10T09:00:00Z")
    e = enrollments(engine)[tid]
    assert (e.status, e.ended_reason, e.next_run_at) == ("COMPLETED", "not_replied", None)
    assert_log_matches_sandbox(engine, sandbox)


# -- polling ---------------------------------------------------------------------------------------------
def test_re_polling_the_same_inbox_inserts_nothing_twice(engine, sandbox):
    setup(engine, dm_sequence(), leads=[{"name": f"P{i}", "twitter_id": t, "topic": "x"}
                                        for i, t in enumerate(pick_ids(sandbox, 3, replies=True))])
    run_at(engine, sandbox, T0)
    later = "2026-01-05T13:00:00Z"  # every reply (5 min .. 3 h) is visible
    sandbox.clock(later)
    now = parse_now(later)
    ids = [a.id for a in accounts(engine)]
    first = poll(engine, ids, "inbox", now)
    assert first["new_signals"] == 3
    again = poll(engine, ids, "inbox", now)  # same clock, stored cursor: nothing new
    assert again.get("new_signals", 0) == 0
    assert scalar(engine, "SELECT count(*) FROM inbound_signals") == 3

    # a lost cursor makes the provider return the same items again: they are recognised, not re-inserted
    with engine.begin() as c:
        c.execute(sa.text("DELETE FROM provider_cursors"))
    replay = poll(engine, ids, "inbox", now)
    assert replay["duplicate_signals"] == 3 and replay["new_signals"] == 0
    assert scalar(engine, "SELECT count(*) FROM inbound_signals") == 3

    assert ingest(engine, now)["fired:REPLIED"] == 3
    n_events = scalar(engine, "SELECT count(*) FROM events")
    with engine.begin() as c:
        c.execute(sa.text("DELETE FROM provider_cursors"))
    poll(engine, ids, "inbox", now)
    poll(engine, ids, "relationships", now)
    assert ingest(engine, now) == {}
    assert scalar(engine, "SELECT count(*) FROM events") == n_events
    assert scalar(engine, "SELECT count(*) FROM events WHERE kind = 'REPLIED'") == 3
    assert_log_matches_sandbox(engine, sandbox)


# -- the gate --------------------------------------------------------------------------------------------
def test_suppression_added_mid_sequence_stops_the_next_step(engine, sandbox):
    keep, stop = pick_ids(sandbox, 2, follows_back=True)
    setup(engine, leads=[{"name": "Keep Me", "twitter_id": keep, "topic": "a"},
                         {"name": "Stop Me", "twitter_id": stop, "topic": "b"}])
    run_at(engine, sandbox, T0)
    assert sandbox.summary()["follows"] == 2
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO suppressions (kind, value, reason) VALUES ('twitter', :v, 'asked_to_stop')"),
                  {"v": stop})
    since = last_seq(sandbox)
    run_at(engine, sandbox, "2026-01-05T13:30:00Z")  # both followed back: both warm DMs are due

    dms = write_calls(sandbox, since)
    assert [c["target_id"] for c in dms] == [keep]
    e = enrollments(engine)
    assert (e[stop].status, e[stop].ended_reason) == ("SKIPPED", "suppressed:twitter:asked_to_stop")
    assert timeline(engine, e[stop].id)[-1] == ("SKIPPED", "dm_warm", "suppressed:twitter:asked_to_stop")
    assert e[keep].status == "ACTIVE" and e[keep].current_step == "dm_warm"


def test_missing_variable_uses_the_fallback_message(engine, sandbox):
    setup(engine, dm_sequence(fallback="Hi there, a quick question"),
          leads=[{"name": "No Topic", "twitter_id": "50001"}, {"name": "Has Topic", "twitter_id": "50002",
                                                               "topic": "rust"}])
    run_at(engine, sandbox, T0)
    texts = {c["target_id"]: c["text"] for c in write_calls(sandbox)}
    assert texts == {"50001": "Hi there, a quick question", "50002": "Hi Has, a question about rust"}
    assert {e.status for e in enrollments(engine).values()} == {"ACTIVE"}


def test_missing_variable_without_fallback_skips_and_never_sends_blank(engine, sandbox):
    setup(engine, dm_sequence(), leads=[{"name": "No Topic", "twitter_id": "50001"},
                                        {"name": "Blank Topic", "twitter_id": "50002", "topic": "   "}])
    s = run_at(engine, sandbox, T0)
    assert s["advance_x"]["skipped:missing_variable"] == 2
    assert write_calls(sandbox) == []
    for e in enrollments(engine).values():
        assert (e.status, e.ended_reason) == ("SKIPPED", "missing_variable:topic")
        assert timeline(engine, e.id)[-1] == ("SKIPPED", "dm", "missing_variable:topic")
    assert scalar(engine, "SELECT count(*) FROM events WHERE kind IN ('ATTEMPTED', 'SENT')") == 0


# -- permanent provider errors ---------------------------------------------------------------------------
def test_unknown_user_fails_permanently_without_retries(engine, sandbox):
    setup(engine, leads=[{"name": "Ghost", "twitter_id": "40412345", "topic": "t"},
                         {"name": "Real", "twitter_id": "50002", "topic": "t"}])
    s = run_at(engine, sandbox, T0)
    assert s["advance_x"]["failed:user_not_found"] == 1 and s["advance_x"]["sent"] == 1
    e = enrollments(engine)["40412345"]
    assert (e.status, e.ended_reason, e.next_run_at) == ("FAILED", "user_not_found", None)
    assert timeline(engine, e.id)[-1] == ("FAILED", "follow", "user_not_found")
    for now in ("2026-01-05T10:00:00Z", "2026-01-07T10:00:00Z"):
        run_at(engine, sandbox, now)
    ghost_calls = [c for c in sandbox.calls() if c["target_id"] == "40412345"]
    assert len(ghost_calls) == 1 and ghost_calls[0]["status"] == 400
    assert scalar(engine, "SELECT count(*) FROM events WHERE enrollment_id = :e AND kind = 'RETRY_SCHEDULED'",
                  e=e.id) == 0


def test_dms_closed_fails_permanently(engine, sandbox):
    setup(engine, dm_sequence(), leads=[{"name": "Closed", "twitter_id": "40300001", "topic": "t"}])
    s = run_at(engine, sandbox, T0)
    assert s["advance_x"]["failed:dms_closed"] == 1
    e = enrollments(engine)["40300001"]
    assert (e.status, e.ended_reason) == ("FAILED", "dms_closed")
    run_at(engine, sandbox, "2026-01-05T12:00:00Z")
    assert len(write_calls(sandbox)) == 1


# -- pacing ----------------------------------------------------------------------------------------------
def test_one_tick_sends_at_most_the_budget_and_never_meets_a_429(engine, sandbox):
    setup(engine, n=120)
    s = run_at(engine, sandbox, T0)
    assert s["advance_x"]["sent"] == 45  # 90% of X's 50 follows per 15 minutes
    assert s["advance_x"]["budget_exhausted"] >= 1
    assert sandbox.summary()["follows"] == 45
    status = [e.status == "ACTIVE" and e.phase == "pending" for e in enrollments(engine).values()]
    assert sum(status) == 75

    # five minutes later the provider has 5 left in its window: the engine must not run into its limit
    run_at(engine, sandbox, "2026-01-05T09:05:00Z")
    calls = sandbox.calls()
    assert 429 not in {c["status"] for c in calls}
    assert sum(1 for c in calls if c["method"] == "POST" and c["status"] == 200) <= 50
    assert_log_matches_sandbox(engine, sandbox)

    run_at(engine, sandbox, "2026-01-05T09:20:00Z")  # a new provider window
    assert 429 not in {c["status"] for c in sandbox.calls()}
    assert sandbox.summary()["follows"] > 50
    assert_log_matches_sandbox(engine, sandbox)


def test_a_429_blocks_the_action_until_the_provider_resets_and_loses_nothing(engine, sandbox):
    setup(engine, n=10)
    other = XClient(sandbox.url, "sandbox-1001")  # another tool spends this account's follow window
    for i in range(50):
        other.follow("1001", str(59000 + i))
    since = last_seq(sandbox)
    s = run_at(engine, sandbox, T0)
    assert s["advance_x"]["rate_limited"] == 1 and "sent" not in s["advance_x"]
    posts = write_calls(sandbox, since)
    assert [c["status"] for c in posts] == [429]  # it stops at the first 429
    blocked = scalar(engine, "SELECT blocked_until FROM rate_budgets WHERE action_type = 'FOLLOW_ON_TWITTER'")
    assert parse_now("2026-01-05T09:15:00Z") <= blocked <= parse_now("2026-01-05T09:16:30Z")  # reset + jitter
    for e in enrollments(engine).values():
        assert (e.status, e.phase, e.attempts, e.lease_owner) == ("ACTIVE", "pending", 0, None)
        assert e.next_run_at >= parse_now("2026-01-05T09:15:00Z")

    since = last_seq(sandbox)
    s = run_at(engine, sandbox, "2026-01-05T09:10:00Z")  # still blocked: no call at all
    assert write_calls(sandbox, since) == []

    s = run_at(engine, sandbox, "2026-01-05T09:40:00Z")
    assert s["advance_x"]["sent"] == 10
    assert sandbox.summary()["follows"] == 60 and sandbox.summary()["unique_follows"] == 60
    assert scalar(engine, "SELECT count(*) FROM events WHERE kind = 'SENT'") == 10
    assert 429 not in {c["status"] for c in write_calls(sandbox, since)}


def test_max_actions_caps_the_sends_of_a_tick(engine, sandbox):
    setup(engine, n=10)
    s = run_at(engine, sandbox, T0, max_actions=3)
    assert s["advance_x"]["sent"] == 3
    assert sandbox.summary()["follows"] == 3
    assert sum(e.phase == "pending" for e in enrollments(engine).values()) == 7


def test_server_error_schedules_a_retry_with_backoff_then_succeeds(engine, sandbox):
    setup(engine, n=3)
    sandbox.faults(mode="500", error_rate=1.0, paths=["follow"])
    s = run_at(engine, sandbox, T0)
    assert s["advance_x"]["retried"] == 3 and "sent" not in s["advance_x"]
    assert {c["status"] for c in sandbox.calls() if c["method"] == "POST"} == {503}
    for e in enrollments(engine).values():
        assert (e.status, e.phase, e.current_step, e.attempts) == ("ACTIVE", "pending", "follow", 1)
        assert e.in_flight  # a POST that failed with 5xx may have landed: reconcile before re-sending
        assert parse_now(T0) <= e.next_run_at <= parse_now(T0) + timedelta(seconds=60)  # backoff base 60 s
        kind, step, reason = timeline(engine, e.id)[-1]
        assert (kind, step, reason) == ("RETRY_SCHEDULED", "follow", "server_error")
    data = rows(engine, "SELECT data FROM events WHERE kind = 'RETRY_SCHEDULED'")
    assert all(d.data["maybe_landed"] and 0 <= d.data["delay_s"] <= 60 for d in data)

    sandbox.faults()
    s = run_at(engine, sandbox, "2026-01-05T09:01:01Z")
    assert s["advance_x"]["sent"] == 3
    for e in enrollments(engine).values():
        assert (e.status, e.phase, e.attempts, e.in_flight) == ("ACTIVE", "waiting", 0, False)
    assert sandbox.summary()["follows"] == 3
    assert_log_matches_sandbox(engine, sandbox)


def test_a_dm_that_landed_before_a_5xx_is_reconciled_not_sent_twice(engine, sandbox):
    setup(engine, dm_sequence(), n=3)
    sandbox.faults(mode="accept_then_500", error_rate=1.0, paths=["dm"])
    s = run_at(engine, sandbox, T0)
    assert s["advance_x"]["retried"] == 3
    assert sandbox.summary()["dms"] == 3  # they did land
    sandbox.faults()
    s = run_at(engine, sandbox, "2026-01-05T09:01:01Z")
    assert s["advance_x"]["reconciled"] == 3 and s["advance_x"]["sent"] == 3
    sb = sandbox.summary()
    assert sb["dms"] == 3 and sb["duplicate_dms"] == 0
    sent = rows(engine, "SELECT reason, provider_ref FROM events WHERE kind = 'SENT'")
    assert [r.reason for r in sent] == ["reconciled"] * 3 and all(r.provider_ref for r in sent)
    assert all(e.phase == "waiting" and not e.in_flight for e in enrollments(engine).values())


def test_a_worker_that_died_after_sending_is_reconciled_after_its_lease(engine, sandbox):
    setup(engine, dm_sequence(), leads=[{"name": "Pat Doe", "twitter_id": "50000", "topic": "t"}])
    now = parse_now(T0)
    acc = accounts(engine)[0]
    with engine.begin() as c:  # what advance commits first: the claim and the intent
        (r,) = steps.claim(c, account_id=acc.id, action_type="SEND_TWITTER_DM", now=now, owner="w-dead", limit=5,
                           lease_seconds=300)
        steps.apply(c, [Transition(id=r.id, expect_step="dm", expect_phase="pending", status="ACTIVE", step="dm",
                                   phase="pending", next_run_at=now + timedelta(seconds=300), event_kind="ATTEMPTED",
                                   occurred_at=now, in_flight=True, keep_lease=True,
                                   dedupe_key=f"att:{r.id}:dm:{r.attempts}")],
                    owner="w-dead", account_id=acc.id, provider="x")
    sandbox.clock(T0)
    XClient(sandbox.url, "sandbox-1001").send_dm("50000", "Hi Pat, a question about t")  # the call landed; then the worker died

    s = run_at(engine, sandbox, "2026-01-05T09:02:00Z")  # the lease still holds: nobody touches it
    assert "advance_x" not in s
    s = run_at(engine, sandbox, "2026-01-05T09:06:00Z")
    assert s["advance_x"]["reconciled"] == 1 and s["advance_x"]["sent"] == 1
    assert sandbox.summary()["dms"] == 1  # not sent twice
    e = enrollments(engine)["50000"]
    assert (e.phase, e.in_flight, e.lease_owner) == ("waiting", False, None)
    assert timeline(engine, e.id)[-1] == ("SENT", "dm", "reconciled")


def test_retries_stop_after_max_attempts_and_ask_for_review(engine, sandbox):
    setup(engine, n=1)
    sandbox.faults(mode="500", error_rate=1.0, paths=["follow"])
    for hour in range(9, 15):  # backoff is at most 16 minutes by the 5th attempt
        run_at(engine, sandbox, f"2026-01-05T{hour:02d}:00:00Z")
    e = next(iter(enrollments(engine).values()))
    # the last attempt may have landed (a 5xx on a POST), so a person decides
    assert (e.status, e.ended_reason) == ("NEEDS_REVIEW", "server_error:max_attempts")
    kinds = [k for k, _, _ in timeline(engine, e.id)]
    assert kinds.count("ATTEMPTED") == 5 and kinds.count("RETRY_SCHEDULED") == 4 and kinds[-1] == "NEEDS_REVIEW"
    assert len([c for c in sandbox.calls() if c["method"] == "POST"]) == 5


def test_a_dm_whose_fate_cannot_be_read_goes_to_review_not_out_again(engine, sandbox):
    setup(engine, dm_sequence(), n=1)
    sandbox.faults(mode="500", error_rate=1.0, paths=["dm"])
    run_at(engine, sandbox, T0)  # maybe landed
    sandbox.faults(mode="500", error_rate=1.0, paths=["read"])  # and the conversation cannot be read
    s = run_at(engine, sandbox, "2026-01-05T10:00:00Z")
    assert s["advance_x"]["needs_review"] == 1
    e = next(iter(enrollments(engine).values()))
    assert (e.status, e.ended_reason) == ("NEEDS_REVIEW", "reconcile_unknown")
    assert len([c for c in sandbox.calls() if c["method"] == "POST"]) == 1  # never re-sent blind


# -- dry run, fencing, pause -----------------------------------------------------------------------------
SNAPSHOT = "SELECT * FROM enrollments ORDER BY id"


def test_dry_run_changes_nothing(engine, sandbox):
    setup(engine, n=5)
    before, events = rows(engine, SNAPSHOT), scalar(engine, "SELECT count(*) FROM events")
    s = run_at(engine, sandbox, T0, dry_run=True)
    assert s["advance_x"]["would_send"] == 5
    assert rows(engine, SNAPSHOT) == before
    assert scalar(engine, "SELECT count(*) FROM events") == events
    assert scalar(engine, "SELECT count(*) FROM rate_budgets WHERE tat <> '{}'::jsonb") == 0
    assert write_calls(sandbox) == []
    assert sandbox.summary()["follows"] == 0


def test_dry_run_changes_nothing_even_when_triggers_are_due(engine, sandbox):
    setup(engine, n=10)
    run_at(engine, sandbox, T0)  # follows sent; follow-backs arrive, the 2-day timeout passes
    before, events = rows(engine, SNAPSHOT), scalar(engine, "SELECT count(*) FROM events")
    since = last_seq(sandbox)
    run_at(engine, sandbox, "2026-01-07T10:00:00Z", dry_run=True)
    assert scalar(engine, "SELECT count(*) FROM events") == events
    assert rows(engine, SNAPSHOT) == before
    assert [c for c in sandbox.calls() if c["seq"] > since] == []


def test_a_transition_under_a_stale_lease_changes_nothing(engine, sandbox):
    setup(engine, n=1)
    now = parse_now(T0)
    acc = accounts(engine)[0]
    with engine.begin() as c:
        claimed = steps.claim(c, account_id=acc.id, action_type="FOLLOW_ON_TWITTER", now=now, owner="w-current",
                              limit=10, lease_seconds=300)
    assert len(claimed) == 1
    before, events = rows(engine, SNAPSHOT), scalar(engine, "SELECT count(*) FROM events")

    def sent(owner_note: str) -> Transition:
        r = claimed[0]
        return Transition(id=r.id, expect_step="follow", expect_phase="pending", status="ACTIVE", step="follow",
                          phase="waiting", next_run_at=now + timedelta(days=2), event_kind="SENT", occurred_at=now,
                          performed=True, dedupe_key=f"out:{r.id}:follow", data={"by": owner_note})

    with engine.begin() as c:
        assert steps.apply(c, [sent("stale")], owner="stale", account_id=acc.id, provider="x") == set()
    assert rows(engine, SNAPSHOT) == before
    assert scalar(engine, "SELECT count(*) FROM events") == events
    with engine.begin() as c:  # also a writer holding no lease at all
        assert steps.apply(c, [sent("none")], owner=None, account_id=acc.id, provider="x") == set()
    assert rows(engine, SNAPSHOT) == before

    with engine.begin() as c:  # the lease holder passes the fence
        assert steps.apply(c, [sent("current")], owner="w-current", account_id=acc.id, provider="x") == {claimed[0].id}
    e = rows(engine, SNAPSHOT)[0]
    assert (e.phase, e.lease_owner, e.last_action) == ("waiting", None, "follow")
    assert rows(engine, "SELECT data FROM events WHERE kind = 'SENT'")[0].data == {"by": "current"}


def test_a_paused_sequence_is_not_advanced_and_resumes_later(engine, sandbox):
    seq = setup(engine, n=4)
    with engine.begin() as c:
        catalog.set_sequence_status(c, seq.name, "PAUSED")
    s = run_at(engine, sandbox, T0)
    assert "advance_x" not in s
    assert write_calls(sandbox) == []
    assert all(e.phase == "pending" and e.status == "ACTIVE" for e in enrollments(engine).values())

    with engine.begin() as c:
        catalog.set_sequence_status(c, seq.name, "ACTIVE")
    s = run_at(engine, sandbox, "2026-01-05T09:10:00Z")
    assert s["advance_x"]["sent"] == 4
    assert sandbox.summary()["follows"] == 4

    # timeouts wait too while paused
    with engine.begin() as c:
        catalog.set_sequence_status(c, seq.name, "PAUSED")
    s = run_at(engine, sandbox, "2026-01-07T10:00:00Z")
    assert "fired:NOT_FOLLOWED_BACK" not in s["ingest"]
    with engine.begin() as c:
        catalog.set_sequence_status(c, seq.name, "ACTIVE")
    s = run_at(engine, sandbox, "2026-01-07T10:05:00Z")
    not_fb = sum(1 for t in enrollments(engine) if not sandbox.state.predict(t)["follows_back"])
    assert s["ingest"].get("fired:NOT_FOLLOWED_BACK", 0) == not_fb
    assert_log_matches_sandbox(engine, sandbox)


# -- cost of a batch ---------------------------------------------------------------------------------------
class SqlRecorder:
    """Transactions, statements, commits and provider responses through one engine, in order."""

    def __init__(self, engine: sa.Engine):
        self.engine, self.log, self.open, self.open_at_sql = engine, [], 0, []
        self._listeners = [("begin", self._begin), ("before_cursor_execute", self._before),
                           ("after_cursor_execute", self._after), ("commit", self._commit),
                           ("rollback", self._rollback)]
        for name, fn in self._listeners:
            sa.event.listen(engine, name, fn)

    def _begin(self, conn):
        self.open += 1

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self.log.append(["sql", " ".join(statement.split()).lower(), None])
        self.open_at_sql.append(self.open)

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        self.log[-1][2] = cursor.rowcount

    def _commit(self, conn):
        self.open -= 1
        self.log.append(["commit", None, None])

    def _rollback(self, conn):
        self.open = max(0, self.open - 1)

    def on_rate(self, info) -> None:
        """Called by the X client on every provider response."""
        self.log.append(["http", info.endpoint, self.open])

    def close(self):
        for name, fn in self._listeners:
            sa.event.remove(self.engine, name, fn)

    def batch(self) -> tuple[int, int]:
        """(statements, commits) of the batch that claimed leads: from the start of the claim's transaction
        to the commit that records the outcomes."""
        log = self.log
        claim = next(i for i, (k, sql, n) in enumerate(log)
                     if k == "sql" and "update enrollments" in sql and "skip locked" in sql and n)
        start = max((i for i in range(claim) if log[i][0] == "commit"), default=-1) + 1
        applies = [i for i in range(claim, len(log)) if log[i][0] == "sql"
                   and "update enrollments" in log[i][1] and "insert into events" in log[i][1]]
        end = next(i for i in range(applies[1], len(log)) if log[i][0] == "commit")  # intents, then outcomes
        span = log[start:end + 1]
        return sum(1 for k, _, _ in span if k == "sql"), sum(1 for k, _, _ in span if k == "commit")

    def total(self) -> int:
        return sum(1 for k, _, _ in self.log if k == "sql")

    def provider_calls(self) -> list:
        return [entry for entry in self.log if entry[0] == "http"]


def _measure(database_url: str, now: str) -> SqlRecorder:
    eng = sa.create_engine(database_url)
    rec = SqlRecorder(eng)
    try:
        acc = accounts(eng)[0]
        rec.log.clear()
        client = registry.build("x", acc.conn_id, on_rate=rec.on_rate)
        rec.counts = advance_account(eng, acc, client, now=parse_now(now), config=AdvanceConfig(batch_size=200))
    finally:
        rec.close()
        eng.dispose()
    return rec


def test_a_batch_costs_a_bounded_number_of_statements_and_two_commits(engine, sandbox, database_url):
    setup(engine, dm_sequence("dm-ten"), leads=[{"name": f"A{i}", "twitter_id": str(61000 + i), "topic": "t"}
                                                for i in range(10)])
    small = _measure(database_url, T0)
    assert small.counts["sent"] == 10

    setup(engine, dm_sequence("dm-hundred"), leads=[{"name": f"B{i}", "twitter_id": str(62000 + i), "topic": "t"}
                                                    for i in range(100)])
    big = _measure(database_url, T0)
    assert big.counts["sent"] == 100 and big.counts["claimed"] == 100  # one batch

    for rec, n in ((small, 10), (big, 100)):
        statements, commits = rec.batch()
        assert statements <= 15
        assert commits == 2
        calls = rec.provider_calls()
        assert len(calls) == n
        assert all(open_tx == 0 for _, _, open_tx in calls)  # no transaction is held open across a provider call
        assert min(rec.open_at_sql) >= 1  # (the recorder does see transactions)
    assert big.batch() == small.batch()  # does not grow with the number of leads
    assert big.total() == small.total()  # nor does the whole account's advance


# -- metrics -----------------------------------------------------------------------------------------------
METRIC_ROWS = "SELECT day, sequence_id, version_id, step, variant, account_id, metric, value FROM metrics_daily " \
              "ORDER BY 1, 2, 3, 4, 5, 6, 7"


def test_aggregate_is_idempotent_and_the_funnel_reads_it(engine, sandbox):
    setup(engine, n=10)
    for now in (T0, "2026-01-05T13:30:00Z", "2026-01-05T17:00:00Z"):
        run_at(engine, sandbox, now)
    start, end = parse_now("2026-01-05T00:00:00Z"), parse_now("2026-01-06T00:00:00Z")
    metrics.aggregate(engine, start, end)
    first = rows(engine, METRIC_ROWS)
    metrics.aggregate(engine, start, end)
    assert rows(engine, METRIC_ROWS) == first
    assert first

    sb = sandbox.summary()
    funnel = {r["step"]: r for r in metrics.funnel(engine, "founders-follow-dm")}
    assert funnel["follow"]["action"] == "FOLLOW_ON_TWITTER"
    assert funnel["follow"]["ENROLLED"] == 10 and funnel["follow"]["SENT"] == 10
    assert funnel["follow"]["FOLLOWED_BACK"] == sb["follow_backs_visible"]
    assert funnel["dm_warm"]["SENT"] == sb["dms"]
    assert funnel["dm_warm"]["REPLIED"] == sb["replies_visible"]
    assert metrics.funnel(engine, "no-such-sequence") == []

    # the rollup is derived: recomputing after deleting it gives the same rows
    with engine.begin() as c:
        c.execute(sa.text("DELETE FROM metrics_daily"))
    metrics.aggregate(engine, start, end)
    assert rows(engine, METRIC_ROWS) == first


def test_aggregate_does_not_depend_on_the_database_session_time_zone(engine, sandbox, database_url):
    setup(engine, n=3, now="2026-01-05T02:00:00Z")
    run_at(engine, sandbox, "2026-01-05T02:00:00Z")
    start, end = parse_now("2026-01-05T00:00:00Z"), parse_now("2026-01-06T00:00:00Z")
    metrics.aggregate(engine, start, end)
    utc = rows(engine, METRIC_ROWS)
    assert utc
    ny = sa.create_engine(database_url, connect_args={"options": "-c timezone=America/New_York"})
    try:
        metrics.aggregate(ny, start, end)
    finally:
        ny.dispose()
    assert rows(engine, METRIC_ROWS) == utc


# -- recovery and checks under the engine clock -------------------------------------------------------------
REPLY_STOPS = """
name: dm-then-nudge
accounts: [x-main]
start: dm
actions:
  dm: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}"}
  nudge: {type: SEND_TWITTER_DM, message: "Just bumping this, {{ first_name }}"}
triggers:
  - {from: dm, trigger: NOT_REPLIED, after: 1h, to: nudge}
  - {from: nudge, trigger: REPLIED, to: END}
"""


def test_a_reply_while_a_dead_worker_holds_an_expired_lease_still_stops_the_enrollment(engine, sandbox):
    setup(engine, REPLY_STOPS, leads=[{"name": "Pat Doe", "twitter_id": "50000"}])
    run_at(engine, sandbox, T0)
    ingest(engine, parse_now("2026-01-05T10:00:00Z"))  # NOT_REPLIED: the nudge is due
    acc = accounts(engine)[0]
    with engine.begin() as c:  # a worker claims the nudge and dies before recording anything
        assert steps.claim(c, account_id=acc.id, action_type="SEND_TWITTER_DM",
                           now=parse_now("2026-01-05T10:00:00Z"), owner="w-dead", limit=10, lease_seconds=300)
        c.execute(sa.text("""
            INSERT INTO inbound_signals (provider, account_id, kind, external_id, provider_ref, text, occurred_at)
            VALUES ('x', :a, 'REPLIED', '50000', 'dm:424242', 'Sounds interesting, tell me more.', '2026-01-05T10:01:00Z')"""),
            {"a": acc.id})
    since = last_seq(sandbox)
    run_at(engine, sandbox, "2026-01-05T10:30:00Z")  # lease expired at 10:05
    e = enrollments(engine)["50000"]
    assert (e.status, e.ended_reason) == ("COMPLETED", "replied")
    assert write_calls(sandbox, since) == []


CHECK_A = """
name: seq-a
accounts: [x-main]
allow_parallel: true  # this test is about a person in two conversations
start: dm
actions:
  dm: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}"}
triggers:
  - {from: dm, trigger: REPLIED, to: END}
"""
CHECK_B = """
name: seq-b
accounts: [x-main]
allow_parallel: true  # this test is about a person in two conversations
start: follow
actions:
  follow: {type: FOLLOW_ON_TWITTER}
  check: {type: CHECK_FOR_REPLY}
  nudge: {type: SEND_TWITTER_DM, message: "Nudge {{ first_name }}"}
triggers:
  - {from: follow, trigger: NORMAL_EDGE, after: 6h, to: check}
  - {from: check, trigger: REPLIED, to: END}
  - {from: check, trigger: NOT_REPLIED, after: 1h, to: nudge}
"""


def test_check_for_reply_without_a_reply_moves_to_the_timeout(engine, sandbox):
    tid = pick_ids(sandbox, 1, follows_back=False, replies=False)[0]
    setup(engine, CHECK_B, leads=[{"name": "Pat Doe", "twitter_id": tid}])
    run_at(engine, sandbox, T0)
    s = run_at(engine, sandbox, "2026-01-05T15:00:00Z")
    assert s["ingest"]["fired:NORMAL_EDGE"] == 1 and s["advance_x"]["checked"] == 1
    e = enrollments(engine)[tid]
    assert (e.current_step, e.phase, e.last_action) == ("check", "waiting", "check")
    assert e.next_run_at == parse_now("2026-01-05T16:00:00Z")
    run_at(engine, sandbox, "2026-01-05T16:00:00Z")
    assert write_calls(sandbox)[-1]["text"] == "Nudge Pat"


def test_check_for_reply_sees_a_reply_from_another_conversation_under_the_engine_clock(engine, sandbox):
    tid = pick_ids(sandbox, 1, follows_back=False, replies=True)[0]
    lead = [{"name": "Pat Doe", "twitter_id": tid}]
    setup(engine, CHECK_B, leads=lead)
    setup(engine, CHECK_A, leads=lead)  # the reply to seq-a's DM is matched to seq-a's enrollment
    run_at(engine, sandbox, T0)
    run_at(engine, sandbox, "2026-01-05T12:30:00Z")
    # one reply, logged for each of the person's active enrollments on that account
    assert scalar(engine, "SELECT count(DISTINCT provider_ref) FROM events WHERE kind = 'REPLIED'") == 1
    run_at(engine, sandbox, "2026-01-05T15:00:00Z")  # seq-b reaches its check: the person has replied
    b = rows(engine, """SELECT e.status, e.ended_reason FROM enrollments e JOIN sequences s ON s.id = e.sequence_id
                        WHERE s.name = 'seq-b'""")[0]
    assert (b.status, b.ended_reason) == ("COMPLETED", "replied")


NUDGE_A = """
name: dm-then-nudge-a
accounts: [x-main]
allow_parallel: true  # this test is about a person in two conversations
start: dm
actions:
  dm: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}"}
  nudge: {type: SEND_TWITTER_DM, message: "Bumping this, {{ first_name }}"}
triggers:
  - {from: dm, trigger: REPLIED, to: END}
  - {from: dm, trigger: NOT_REPLIED, after: 1d, to: nudge}
"""
FOLLOW_B = """
name: follow-only-b
accounts: [x-main]
start: follow
actions:
  follow: {type: FOLLOW_ON_TWITTER}
triggers:
  - {from: follow, trigger: FOLLOWED_BACK, to: END}
  - {from: follow, trigger: NOT_FOLLOWED_BACK, after: 2d, to: END}
"""


def test_a_reply_reaches_the_sequence_that_sent_the_dm_when_the_person_is_in_two(engine, sandbox):
    tid = pick_ids(sandbox, 1, follows_back=False, replies=True)[0]
    lead = [{"name": "Pat Doe", "twitter_id": tid}]
    setup(engine, NUDGE_A, leads=lead)
    setup(engine, FOLLOW_B, leads=lead)  # the same person, also followed by another sequence
    run_at(engine, sandbox, T0)  # A sends the DM, B follows
    run_at(engine, sandbox, "2026-01-05T13:00:00Z")  # the reply to A's DM is visible
    since = last_seq(sandbox)
    run_at(engine, sandbox, "2026-01-06T10:00:00Z")  # A's NOT_REPLIED deadline
    a = rows(engine, """SELECT e.status, e.ended_reason FROM enrollments e JOIN sequences s ON s.id = e.sequence_id
                        WHERE s.name = 'dm-then-nudge-a'""")[0]
    assert write_calls(sandbox, since) == []  # no nudge to a person who answered
    assert (a.status, a.ended_reason) == ("COMPLETED", "replied")

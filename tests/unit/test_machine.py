"""The per-enrollment state machine (outreach.domain.machine): every trigger type's semantics.

Sequences are built from YAML with the real parser, so the tests exercise the same definitions the engine runs.
"""
from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone


from outreach.domain import machine
from outreach.domain.sequence import parse_sequence

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
D = timedelta(days=1)


def seq(yaml_text: str):
    return parse_sequence(textwrap.dedent(yaml_text), "seq.yaml")


def trigger(s, step: str, kind: str):
    return next(t for t in s.triggers_from(step) if t.kind == kind)


DESIGN = seq("""
    name: founders-follow-dm
    accounts: [x-main]
    start: follow
    actions:
      follow: {type: FOLLOW_ON_TWITTER}
      dm_warm: {type: SEND_TWITTER_DM, message: "Hey {{ first_name }}", fallback_message: "Hey!"}
      dm_cold: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}"}
    triggers:
      - {from: follow, trigger: FOLLOWED_BACK, to: dm_warm}
      - {from: follow, trigger: NOT_FOLLOWED_BACK, after: 2d, to: dm_cold}
      - {from: dm_warm, trigger: REPLIED, to: END}
      - {from: dm_cold, trigger: REPLIED, to: END}
      - {from: dm_cold, trigger: NOT_REPLIED, after: 3d, to: END}
""")

LINKEDIN = seq("""
    name: li-connect
    accounts: [li-main]
    start: connect
    actions:
      connect: {type: SEND_CONNECTION_REQUEST, note: "Hi {{ first_name }}"}
      li_dm: {type: SEND_LINKEDIN_DM, message: "Thanks for connecting"}
      email: {type: SEND_EMAIL, subject: "Hello", message: "Hello {{ first_name }}"}
    triggers:
      - {from: connect, trigger: CONNECTION_ACCEPTED, to: li_dm}
      - {from: connect, trigger: REPLIED_TO_NOTE, to: END}
      - {from: connect, trigger: CONNECTION_NOT_ACCEPTED, after: 7d, to: email}
""")


# -- FOLLOWED_BACK / NOT_FOLLOWED_BACK ---------------------------------------------------------------
def test_after_follow_waits_for_follow_back_until_the_timeout():
    nxt = machine.after_action(DESIGN, "follow", T0)
    assert (nxt.status, nxt.step, nxt.phase) == ("ACTIVE", "follow", "waiting")
    assert nxt.next_run_at == T0 + 2 * D
    assert nxt.fired is None and nxt.provider is None


def test_followed_back_fires_to_the_warm_dm_now():
    now = T0 + 3 * H
    nxt = machine.on_signal(DESIGN, "follow", "waiting", T0, "FOLLOWED_BACK", T0 + 2 * H, now)
    assert nxt is not None
    assert (nxt.status, nxt.step, nxt.phase, nxt.next_run_at) == ("ACTIVE", "dm_warm", "pending", now)
    assert nxt.fired == "FOLLOWED_BACK" and nxt.reason == "FOLLOWED_BACK"
    assert nxt.provider == "x"


def test_not_followed_back_fires_at_the_deadline_to_the_cold_dm():
    now = T0 + 2 * D
    nxt = machine.on_deadline(DESIGN, "follow", now)
    assert (nxt.status, nxt.step, nxt.phase, nxt.next_run_at) == ("ACTIVE", "dm_cold", "pending", now)
    assert nxt.fired == "NOT_FOLLOWED_BACK"
    assert nxt.provider == "x"


def test_a_timeout_trigger_does_not_delay_the_next_action_once_it_fired():
    # `after` on a timeout trigger is the wait for the signal, not a delay after it
    late = T0 + 5 * D
    assert machine.on_deadline(DESIGN, "follow", late).next_run_at == late


# -- REPLIED / NOT_REPLIED / END ------------------------------------------------------------------
def test_replied_to_end_completes_with_reason_replied():
    nxt = machine.on_signal(DESIGN, "dm_warm", "waiting", T0, "REPLIED", T0 + H, T0 + 2 * H)
    assert nxt.status == "COMPLETED"
    assert nxt.step == "dm_warm"
    assert nxt.fired == "REPLIED" and nxt.reason == "replied"
    assert nxt.next_run_at is None


def test_not_replied_waits_then_ends():
    after = machine.after_action(DESIGN, "dm_cold", T0)
    assert (after.status, after.phase, after.next_run_at) == ("ACTIVE", "waiting", T0 + 3 * D)
    nxt = machine.on_deadline(DESIGN, "dm_cold", T0 + 3 * D)
    assert nxt.status == "COMPLETED" and nxt.fired == "NOT_REPLIED" and nxt.reason == "not_replied"
    assert nxt.next_run_at is None


def test_warm_dm_with_only_an_event_trigger_waits_indefinitely():
    nxt = machine.after_action(DESIGN, "dm_warm", T0)
    assert (nxt.status, nxt.phase, nxt.next_run_at) == ("ACTIVE", "waiting", None)


def test_a_step_without_triggers_ends_the_sequence():
    s = seq("""
        name: one-step
        accounts: [x-main]
        start: follow
        actions: {follow: {type: FOLLOW_ON_TWITTER}}
        triggers: []
    """)
    nxt = machine.after_action(s, "follow", T0)
    assert nxt.status == "COMPLETED" and nxt.reason == "end_of_sequence" and nxt.fired is None


END_SEQ = """
    name: end-after
    accounts: [x-main]
    start: follow
    actions: {{follow: {{type: FOLLOW_ON_TWITTER}}}}
    triggers:
      - {{from: follow, trigger: END{after}}}
"""


def test_end_without_delay_finishes_right_after_the_action():
    nxt = machine.after_action(seq(END_SEQ.format(after="")), "follow", T0)
    assert nxt.status == "COMPLETED" and nxt.fired == "END" and nxt.reason == "end"


def test_end_with_delay_finishes_when_the_delay_passes():
    s = seq(END_SEQ.format(after=", after: 1d"))
    after = machine.after_action(s, "follow", T0)
    assert (after.status, after.phase, after.next_run_at) == ("ACTIVE", "waiting", T0 + D)
    nxt = machine.on_deadline(s, "follow", T0 + D)
    assert nxt.status == "COMPLETED" and nxt.fired == "END" and nxt.reason == "end"


# -- NORMAL_EDGE ----------------------------------------------------------------------------------
EDGE_SEQ = """
    name: edge
    accounts: [x-main]
    start: follow
    actions:
      follow: {{type: FOLLOW_ON_TWITTER}}
      dm: {{type: SEND_TWITTER_DM, message: "hi"}}
    triggers:
      - {{from: follow, trigger: NORMAL_EDGE, to: dm{after}}}
"""


def test_normal_edge_without_delay_moves_on_immediately():
    nxt = machine.after_action(seq(EDGE_SEQ.format(after="")), "follow", T0)
    assert (nxt.status, nxt.step, nxt.phase, nxt.next_run_at) == ("ACTIVE", "dm", "pending", T0)
    assert nxt.fired == "NORMAL_EDGE" and nxt.provider == "x"


def test_normal_edge_with_delay_waits_then_moves_on():
    s = seq(EDGE_SEQ.format(after=", after: 6h"))
    after = machine.after_action(s, "follow", T0)
    assert (after.step, after.phase, after.next_run_at) == ("follow", "waiting", T0 + 6 * H)
    nxt = machine.on_deadline(s, "follow", T0 + 6 * H)
    assert (nxt.step, nxt.phase, nxt.next_run_at, nxt.fired) == ("dm", "pending", T0 + 6 * H, "NORMAL_EDGE")


# -- LinkedIn: CONNECTION_ACCEPTED / CONNECTION_NOT_ACCEPTED / REPLIED_TO_NOTE -------------------------
def test_connection_accepted_fires_to_the_linkedin_dm():
    nxt = machine.on_signal(LINKEDIN, "connect", "waiting", T0, "CONNECTION_ACCEPTED", T0 + D, T0 + D)
    assert (nxt.status, nxt.step, nxt.phase, nxt.fired) == ("ACTIVE", "li_dm", "pending", "CONNECTION_ACCEPTED")
    assert nxt.provider == "linkedin"


def test_connection_not_accepted_fires_at_the_deadline_and_switches_provider():
    after = machine.after_action(LINKEDIN, "connect", T0)
    assert after.next_run_at == T0 + 7 * D
    nxt = machine.on_deadline(LINKEDIN, "connect", T0 + 7 * D)
    assert (nxt.step, nxt.phase, nxt.fired) == ("email", "pending", "CONNECTION_NOT_ACCEPTED")
    assert nxt.provider == "email"  # the enrollment moves to its email sender account


def test_replied_to_note_fires_its_own_trigger():
    nxt = machine.on_signal(LINKEDIN, "connect", "waiting", T0, "REPLIED_TO_NOTE", T0 + H, T0 + H)
    assert nxt.status == "COMPLETED" and nxt.fired == "REPLIED_TO_NOTE" and nxt.reason == "replied_to_note"


def test_a_signal_kind_the_step_does_not_listen_for_changes_nothing():
    assert machine.on_signal(DESIGN, "follow", "waiting", T0, "CONNECTION_ACCEPTED", T0 + H, T0 + H) is None
    assert machine.on_signal(LINKEDIN, "connect", "waiting", T0, "FOLLOWED_BACK", T0 + H, T0 + H) is None


# -- within windows -------------------------------------------------------------------------------
WITHIN = seq("""
    name: within
    accounts: [li-main]
    start: connect
    actions:
      connect: {type: SEND_CONNECTION_REQUEST}
      li_dm: {type: SEND_LINKEDIN_DM, message: "Thanks"}
    triggers:
      - {from: connect, trigger: CONNECTION_ACCEPTED, within: 5d, to: li_dm}
      - {from: connect, trigger: REPLIED_TO_NOTE, within: 2d, to: END}
""")


def test_signal_inside_the_window_fires():
    nxt = machine.on_signal(WITHIN, "connect", "waiting", T0, "CONNECTION_ACCEPTED", T0 + 4 * D, T0 + 4 * D)
    assert nxt is not None and nxt.fired == "CONNECTION_ACCEPTED"


def test_signal_exactly_at_the_window_edge_fires():
    nxt = machine.on_signal(WITHIN, "connect", "waiting", T0, "CONNECTION_ACCEPTED", T0 + 5 * D, T0 + 5 * D)
    assert nxt is not None and nxt.fired == "CONNECTION_ACCEPTED"


def test_signal_outside_the_window_does_not_fire():
    late = T0 + 5 * D + timedelta(seconds=1)
    assert machine.on_signal(WITHIN, "connect", "waiting", T0, "CONNECTION_ACCEPTED", late, late) is None
    # each trigger has its own window: 3 days is inside 5d but outside 2d
    assert machine.on_signal(WITHIN, "connect", "waiting", T0, "REPLIED_TO_NOTE", T0 + 3 * D, T0 + 3 * D) is None


def test_all_event_triggers_within_gives_a_deadline_at_the_longest_window():
    nxt = machine.after_action(WITHIN, "connect", T0)
    assert (nxt.status, nxt.phase, nxt.next_run_at) == ("ACTIVE", "waiting", T0 + 5 * D)
    done = machine.on_deadline(WITHIN, "connect", T0 + 5 * D)
    assert done.status == "COMPLETED" and done.reason == "no_signal_within" and done.fired is None


def test_one_event_trigger_without_within_means_no_deadline():
    s = seq("""
        name: within-mixed
        accounts: [li-main]
        start: connect
        actions:
          connect: {type: SEND_CONNECTION_REQUEST}
          li_dm: {type: SEND_LINKEDIN_DM, message: "Thanks"}
        triggers:
          - {from: connect, trigger: CONNECTION_ACCEPTED, within: 5d, to: li_dm}
          - {from: connect, trigger: REPLIED_TO_NOTE, to: END}
    """)
    assert machine.after_action(s, "connect", T0).next_run_at is None


# -- which signals count ----------------------------------------------------------------------------
def test_a_signal_older_than_the_action_does_not_fire():
    assert machine.on_signal(DESIGN, "follow", "waiting", T0, "FOLLOWED_BACK", T0 - H, T0 + H) is None


def test_an_older_reply_does_not_fire_the_replied_trigger_but_still_stops_the_enrollment():
    nxt = machine.on_signal(DESIGN, "dm_cold", "waiting", T0, "REPLIED", T0 - H, T0 + H)
    assert nxt is not None
    assert nxt.fired is None  # the step's REPLIED trigger did not fire
    assert nxt.status == "COMPLETED" and nxt.reason == "replied"


def test_an_event_trigger_does_not_fire_before_the_action_was_performed():
    # pending: the action has not happened yet, so there is nothing to be followed back for
    assert machine.on_signal(DESIGN, "follow", "pending", None, "FOLLOWED_BACK", T0, T0) is None
    assert machine.on_signal(DESIGN, "follow", "waiting", None, "FOLLOWED_BACK", T0, T0) is None


def test_replied_on_a_step_with_no_replied_trigger_stops_the_enrollment():
    nxt = machine.on_signal(DESIGN, "follow", "waiting", T0, "REPLIED", T0 + H, T0 + H)
    assert nxt.status == "COMPLETED" and nxt.reason == "replied" and nxt.fired is None
    assert nxt.step == "follow"


def test_replied_while_a_step_is_pending_stops_the_enrollment():
    nxt = machine.on_signal(DESIGN, "dm_cold", "pending", T0, "REPLIED", T0 + H, T0 + H)
    assert nxt.status == "COMPLETED" and nxt.reason == "replied"
    assert nxt.phase == "pending"


def test_a_reply_after_the_within_window_still_stops_the_enrollment():
    s = seq("""
        name: reply-window
        accounts: [x-main]
        start: dm
        actions:
          dm: {type: SEND_TWITTER_DM, message: "Hi"}
          thanks: {type: SEND_TWITTER_DM, message: "Thanks for the quick answer"}
          nudge: {type: SEND_TWITTER_DM, message: "Just bumping this"}
        triggers:
          - {from: dm, trigger: REPLIED, within: 1d, to: thanks}
          - {from: dm, trigger: NOT_REPLIED, after: 3d, to: nudge}
    """)
    nxt = machine.on_signal(s, "dm", "waiting", T0, "REPLIED", T0 + 2 * D, T0 + 2 * D)
    # the REPLIED trigger must not fire (outside its window), but a person who answered is never nudged
    assert nxt is not None and nxt.status == "COMPLETED" and nxt.reason == "replied"


# -- event trigger `after` --------------------------------------------------------------------------
def test_event_trigger_after_delays_the_next_action():
    s = seq("""
        name: delayed
        accounts: [x-main]
        start: follow
        actions:
          follow: {type: FOLLOW_ON_TWITTER}
          dm: {type: SEND_TWITTER_DM, message: "hi"}
        triggers:
          - {from: follow, trigger: FOLLOWED_BACK, after: 1h, to: dm}
    """)
    now = T0 + 2 * H
    nxt = machine.on_signal(s, "follow", "waiting", T0, "FOLLOWED_BACK", now, now)
    assert (nxt.step, nxt.phase, nxt.next_run_at) == ("dm", "pending", now + H)
    # fire() applies the same delay
    assert machine.fire(s, trigger(s, "follow", "FOLLOWED_BACK"), now).next_run_at == now + H


def test_fire_follows_a_trigger_directly():
    t = trigger(DESIGN, "follow", "FOLLOWED_BACK")
    nxt = machine.fire(DESIGN, t, T0)
    assert (nxt.status, nxt.step, nxt.phase, nxt.next_run_at) == ("ACTIVE", "dm_warm", "pending", T0)
    end = machine.fire(DESIGN, trigger(DESIGN, "dm_warm", "REPLIED"), T0)
    assert end.status == "COMPLETED" and end.step == "dm_warm"


# -- CHECK_FOR_REPLY --------------------------------------------------------------------------------
CHECK = seq("""
    name: check
    accounts: [x-main]
    start: dm
    actions:
      dm: {type: SEND_TWITTER_DM, message: "Hi"}
      check: {type: CHECK_FOR_REPLY}
      nudge: {type: SEND_TWITTER_DM, message: "Bump"}
    triggers:
      - {from: dm, trigger: NORMAL_EDGE, after: 1d, to: check}
      - {from: check, trigger: REPLIED, to: END}
      - {from: check, trigger: NOT_REPLIED, after: 2d, to: nudge}
""")


def test_check_for_reply_is_reached_by_a_normal_edge_and_has_no_provider():
    nxt = machine.on_deadline(CHECK, "dm", T0 + D)
    assert (nxt.step, nxt.phase) == ("check", "pending")
    assert nxt.provider is None  # CHECK_FOR_REPLY needs no provider call


def test_check_for_reply_with_a_reply_fires_replied():
    # the engine performs the check, then feeds any reply found as a REPLIED signal dated at the check
    now = T0 + D
    after = machine.after_action(CHECK, "check", now)
    assert (after.phase, after.next_run_at) == ("waiting", now + 2 * D)
    nxt = machine.on_signal(CHECK, "check", "waiting", now, "REPLIED", now, now)
    assert nxt.status == "COMPLETED" and nxt.fired == "REPLIED"


def test_check_for_reply_without_a_reply_falls_through_to_not_replied():
    now = T0 + D
    nxt = machine.on_deadline(CHECK, "check", now + 2 * D)
    assert (nxt.step, nxt.phase, nxt.fired) == ("nudge", "pending", "NOT_REPLIED")

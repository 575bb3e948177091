"""Sequence YAML parsing: the DESIGN example, and one test per rejection rule (message, line, field)."""
from textwrap import dedent

import pytest

from outreach.domain.model import Action, SequenceDef, Trigger, ValidationError, Variant
from outreach.domain.sequence import load_sequence, parse_sequence

DESIGN = """\
name: founders-follow-dm
description: optional text
accounts: [x-main]
exclude_already_contacted: true
start: follow
actions:
  follow: {type: FOLLOW_ON_TWITTER}
  dm_warm:
    type: SEND_TWITTER_DM
    message: "Hey {{ first_name }}, thanks for the follow! Loved your post on {{ topic }}."
    fallback_message: "Hey, thanks for the follow!"
    variants:                       # optional A/B/n; each lead keeps one variant
      - {name: short, weight: 50, message: "Thanks for the follow, {{ first_name }}!"}
  dm_cold: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}, quick question about {{ topic }}"}
  mail: {type: SEND_EMAIL, subject: "Hi {{ first_name }}", message: "..."}
  invite: {type: SEND_CONNECTION_REQUEST, note: "optional note, max 300 chars"}
triggers:
  - {from: follow, trigger: FOLLOWED_BACK, to: dm_warm}
  - {from: follow, trigger: NOT_FOLLOWED_BACK, after: 2d, to: dm_cold}
  - {from: dm_warm, trigger: REPLIED, to: END}
  - {from: dm_cold, trigger: REPLIED, to: END}
  - {from: dm_cold, trigger: NOT_REPLIED, after: 3d, to: END}
"""
# The same without `mail` and `invite`, which no trigger reaches.
DESIGN_REACHABLE = "\n".join(line for line in DESIGN.splitlines() if not line.startswith(("  mail:", "  invite:"))) + "\n"

# A minimal valid sequence; the line numbers below refer to it.
BASE = """\
name: s
accounts: [x-main]
start: a
actions:
  a: {type: FOLLOW_ON_TWITTER}
  b: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}"}
triggers:
  - {from: a, trigger: FOLLOWED_BACK, to: b}
  - {from: b, trigger: REPLIED, to: END}
"""


def parse(text, providers=None):
    return parse_sequence(dedent(text), "seq.yaml", providers)


def issues_of(text, providers=None):
    with pytest.raises(ValidationError) as e:
        parse(text, providers)
    assert all(i.file == "seq.yaml" for i in e.value.issues)
    return e.value.issues


def assert_issue(text, line, field, *fragments, providers=None, alone=True):
    """Assert an issue at `line`/`field` whose message contains every fragment; by default the only one."""
    found = issues_of(text, providers)
    report = "\n".join(map(str, found))
    hits = [i for i in found if i.line == line and i.field == field and all(f in i.message for f in fragments)]
    assert hits, f"no issue at line {line} / {field} containing {fragments}; got:\n{report}"
    if alone:
        assert len(found) == 1, f"expected a single issue, got:\n{report}"
    return found


def with_line(text, lineno, new):
    """Replace line `lineno` (1-based) of `text`."""
    lines = text.splitlines()
    lines[lineno - 1] = new
    return "\n".join(lines) + "\n"


# -- valid input ---------------------------------------------------------------------------

def test_design_example_parses():
    seq = parse(DESIGN_REACHABLE, {"x-main": "x"})
    assert seq == SequenceDef(
        name="founders-follow-dm",
        description="optional text",
        accounts=("x-main",),
        exclude_already_contacted=True,
        start="follow",
        actions={
            "follow": Action("follow", "FOLLOW_ON_TWITTER"),
            "dm_warm": Action(
                "dm_warm",
                "SEND_TWITTER_DM",
                message="Hey {{ first_name }}, thanks for the follow! Loved your post on {{ topic }}.",
                fallback_message="Hey, thanks for the follow!",
                variants=(Variant("short", 50, "Thanks for the follow, {{ first_name }}!"),),
            ),
            "dm_cold": Action("dm_cold", "SEND_TWITTER_DM", message="Hi {{ first_name }}, quick question about {{ topic }}"),
        },
        triggers=(
            Trigger("follow", "FOLLOWED_BACK", "dm_warm"),
            Trigger("follow", "NOT_FOLLOWED_BACK", "dm_cold", after_seconds=2 * 86400),
            Trigger("dm_warm", "REPLIED", None),
            Trigger("dm_cold", "REPLIED", None),
            Trigger("dm_cold", "NOT_REPLIED", None, after_seconds=3 * 86400),
        ),
    )
    assert list(seq.actions) == ["follow", "dm_warm", "dm_cold"]


def test_design_example_as_written_flags_unreachable_mail_and_invite():
    found = issues_of(DESIGN)
    assert [(i.line, i.field) for i in found] == [(15, "actions.mail"), (16, "actions.invite")]
    assert "action 'mail' is unreachable from start 'follow'" in found[0].message


def test_email_and_connection_request_sequence():
    seq = parse(
        """\
        name: li-then-mail
        accounts: [li-main, mail-main]
        start: invite
        actions:
          invite: {type: SEND_CONNECTION_REQUEST, note: "Hi {{ first_name }}", fallback_message: "Hi!"}
          li_dm: {type: SEND_LINKEDIN_DM, message: "Thanks for connecting"}
          mail:
            type: SEND_EMAIL
            subject: "Hi {{ first_name }}"
            message: |
              Hello {{ first_name }},
              bye
          check: {type: CHECK_FOR_REPLY}
        triggers:
          - {from: invite, trigger: CONNECTION_ACCEPTED, after: 1h, within: P2W, to: li_dm}
          - {from: invite, trigger: CONNECTION_NOT_ACCEPTED, after: 1w, to: mail}
          - {from: li_dm, trigger: NOT_REPLIED, after: P3D, to: END}
          - {from: mail, trigger: NORMAL_EDGE, to: check}
          - {from: check, trigger: END}
        """,
        {"li-main": "linkedin", "mail-main": "email", "x-main": "x"},
    )
    assert seq.actions["invite"] == Action("invite", "SEND_CONNECTION_REQUEST", note="Hi {{ first_name }}",
                                           fallback_message="Hi!")
    assert seq.actions["mail"].subject == "Hi {{ first_name }}"
    assert seq.actions["mail"].message == "Hello {{ first_name }},\nbye\n"
    assert seq.triggers == (
        Trigger("invite", "CONNECTION_ACCEPTED", "li_dm", after_seconds=3600, within_seconds=14 * 86400),
        Trigger("invite", "CONNECTION_NOT_ACCEPTED", "mail", after_seconds=7 * 86400),
        Trigger("li_dm", "NOT_REPLIED", None, after_seconds=3 * 86400),
        Trigger("mail", "NORMAL_EDGE", "check", after_seconds=0),  # NORMAL_EDGE defaults to 0
        Trigger("check", "END", None, after_seconds=0),  # END needs no `to`
    )
    assert seq.exclude_already_contacted is False and seq.description is None
    assert seq.providers() == {"linkedin", "email"}


def test_load_sequence(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(BASE)
    assert load_sequence(path).name == "s"
    path.write_text(BASE.replace("start: a", "start: zz"))
    with pytest.raises(ValidationError) as e:
        load_sequence(path)
    assert str(e.value).startswith(f"{path}:3: start: ")


# -- YAML shape ----------------------------------------------------------------------------

def test_yaml_syntax_error_has_line():
    assert_issue(with_line(BASE, 3, "start: a: b"), 3, "(syntax)", "YAML syntax error", "mapping values are not allowed")


def test_top_level_must_be_mapping():
    assert_issue("- a\n- b\n", 1, "(top level)", "top level must be a mapping, got a list")


def test_empty_file():
    assert_issue("", None, "(top level)", "file is empty")


@pytest.mark.parametrize("key, lineno", [("name", 1), ("accounts", 2), ("start", 3), ("actions", 4), ("triggers", 7)])
def test_missing_required_key(key, lineno):
    lines = BASE.splitlines()
    end = {4: 6, 7: 9}.get(lineno, lineno)  # drop the whole block
    text = "\n".join(lines[: lineno - 1] + lines[end:]) + "\n"
    assert_issue(text, 1, key, f"missing required key {key!r}", alone=False)


def test_unknown_top_level_key():
    assert_issue(BASE + "owner: me\n", 10, "owner", "unknown key 'owner'", "allowed: name, description")


def test_unknown_action_key():
    assert_issue(with_line(BASE, 5, "  a: {type: FOLLOW_ON_TWITTER, mesage: hi}"), 5, "actions.a.mesage", "unknown key 'mesage'")


def test_unknown_trigger_key():
    text = with_line(BASE, 8, "  - {from: a, trigger: FOLLOWED_BACK, to: b, delay: 2d}")
    assert_issue(text, 8, "triggers[0].delay", "unknown key 'delay'", "allowed: from, trigger, to, after, within")


def test_on_key_gets_trigger_hint():
    # YAML 1.1 reads a bare `on` key as the boolean True; it must still be reported as `on`.
    text = BASE.replace("  - {from: a, trigger: FOLLOWED_BACK, to: b}\n", "  - from: a\n    on: FOLLOWED_BACK\n    to: b\n")
    found = assert_issue(text, 9, "triggers[0].on", "use 'trigger:' instead of 'on:'", alone=False)
    assert not any("missing required key" in i.message for i in found)


def test_wrong_value_types():
    text = """\
    name: [s]
    accounts: []
    exclude_already_contacted: maybe
    start: a
    actions: {}
    triggers: {}
    """
    found = {(i.line, i.field): i.message for i in issues_of(text)}
    assert found[(1, "name")] == "must be a non-empty string, got a list"
    assert found[(2, "accounts")] == "must list at least one account"
    assert found[(3, "exclude_already_contacted")] == "must be true or false, got 'maybe'"
    assert found[(5, "actions")] == "must define at least one action"
    assert found[(6, "triggers")] == "must be a list, got a mapping"


# -- types and references ------------------------------------------------------------------

def test_unknown_action_type():
    assert_issue(with_line(BASE, 5, "  a: {type: TWEET}"), 5, "actions.a.type", "unknown action type 'TWEET'",
                 "FOLLOW_ON_TWITTER")


def test_unknown_trigger_type():
    text = with_line(BASE, 8, "  - {from: a, trigger: LIKED, to: b}")
    assert_issue(text, 8, "triggers[0].trigger", "unknown trigger type 'LIKED'", "FOLLOWED_BACK", alone=False)


def test_dangling_start():
    assert_issue(with_line(BASE, 3, "start: zz"), 3, "start", "start names no action: 'zz'", "(actions: a, b)")


def test_dangling_from():
    assert_issue(BASE + "  - {from: zz, trigger: REPLIED, to: END}\n", 10, "triggers[2].from", "'from' names no action: 'zz'")


def test_dangling_to():
    assert_issue(with_line(BASE, 9, "  - {from: b, trigger: REPLIED, to: c}"), 9, "triggers[1].to", "'to' names no action: 'c'")


def test_reserved_action_name_end():
    text = with_line(BASE, 6, '  b: {type: SEND_TWITTER_DM, message: "Hi"}\n  END: {type: UNFOLLOW_ON_TWITTER}')
    assert_issue(text, 7, "actions.END", "'END' is reserved", alone=False)


# -- graph ---------------------------------------------------------------------------------

def test_unreachable_action():
    text = with_line(BASE, 6, '  b: {type: SEND_TWITTER_DM, message: "Hi"}\n  c: {type: SEND_TWITTER_DM, message: "Yo"}')
    assert_issue(text, 7, "actions.c", "action 'c' is unreachable from start 'a'")


def test_cycle():
    assert_issue(with_line(BASE, 9, "  - {from: b, trigger: REPLIED, to: a}"), 9, "triggers[1].to",
                 "cycle in the trigger graph: a -> b -> a")


def test_self_loop_is_a_cycle():
    text = BASE + "  - {from: b, trigger: NOT_REPLIED, after: 1d, to: b}\n"
    assert_issue(text, 10, "triggers[2].to", "cycle in the trigger graph: b -> b")


def test_trigger_not_allowed_after_action():
    text = with_line(BASE, 9, "  - {from: b, trigger: FOLLOWED_BACK, to: END}")
    assert_issue(text, 9, "triggers[1].trigger", "FOLLOWED_BACK cannot follow SEND_TWITTER_DM action 'b'",
                 "allowed: END, NORMAL_EDGE, NOT_REPLIED, REPLIED")


@pytest.mark.parametrize(
    "first, second",
    [
        ("{from: a, trigger: NOT_FOLLOWED_BACK, after: 2d, to: b}", "{from: a, trigger: NORMAL_EDGE, to: b}"),
        ("{from: a, trigger: END}", "{from: a, trigger: NOT_FOLLOWED_BACK, after: 2d, to: b}"),
    ],
)
def test_more_than_one_timeout_class_trigger(first, second):
    text = BASE + f"  - {first}\n  - {second}\n"
    assert_issue(text, 11, "triggers[3].trigger", "more than one timeout-class trigger from 'a'", "triggers[2]")


def test_same_trigger_twice_from_one_action():
    text = BASE + "  - {from: b, trigger: REPLIED, to: END}\n"
    assert_issue(text, 10, "triggers[2].trigger", "duplicate trigger REPLIED from 'b'", "triggers[1]")


# -- delays --------------------------------------------------------------------------------

def test_timeout_trigger_requires_after():
    text = BASE + "  - {from: a, trigger: NOT_FOLLOWED_BACK, to: b}\n"
    assert_issue(text, 10, "triggers[2].after", "NOT_FOLLOWED_BACK requires 'after'")


@pytest.mark.parametrize("after", ["-2d", "-5"])
def test_negative_after(after):
    text = BASE + f"  - {{from: b, trigger: NOT_REPLIED, after: {after}, to: END}}\n"
    assert_issue(text, 10, "triggers[2].after", "duration must not be negative")


def test_invalid_after():
    text = BASE + "  - {from: b, trigger: NOT_REPLIED, after: 2 days, to: END}\n"
    assert_issue(text, 10, "triggers[2].after", "invalid duration '2 days'")


def test_event_trigger_after_and_within():
    seq = parse(with_line(BASE, 8, "  - {from: a, trigger: FOLLOWED_BACK, after: 1h, within: 2d, to: b}"))
    assert seq.triggers[0] == Trigger("a", "FOLLOWED_BACK", "b", after_seconds=3600, within_seconds=2 * 86400)
    assert seq.triggers[1].after_seconds is None  # event trigger without `after`


def test_within_only_on_event_triggers():
    text = BASE + "  - {from: b, trigger: NOT_REPLIED, after: 1d, within: 2d, to: END}\n"
    assert_issue(text, 10, "triggers[2].within", "'within' is only allowed on event triggers")


def test_within_must_be_positive():
    text = with_line(BASE, 8, "  - {from: a, trigger: FOLLOWED_BACK, within: 0, to: b}")
    assert_issue(text, 8, "triggers[0].within", "'within' must be longer than zero")


def test_end_trigger_to_must_be_end():
    text = with_line(BASE, 9, "  - {from: b, trigger: END, to: a}")
    assert_issue(text, 9, "triggers[1].to", "'to' must be END or omitted, got 'a'")


def test_missing_to():
    assert_issue(with_line(BASE, 9, "  - {from: b, trigger: REPLIED}"), 9, "triggers[1].to", "missing required key 'to'")


# -- messages ------------------------------------------------------------------------------

TEMPLATES = """\
name: s
accounts: [x-main]
start: a
actions:
  a: {type: FOLLOW_ON_TWITTER}
  b:
    type: SEND_EMAIL
    subject: "Subj {{ first_name }}"
    message: "Msg {{ first_name }}"
    fallback_message: "Fallback"
    variants:
      - {name: v1, weight: 10, message: "Var {{ first_name }}"}
  c: {type: SEND_CONNECTION_REQUEST, note: "Note {{ first_name }}"}
triggers:
  - {from: a, trigger: NORMAL_EDGE, to: b}
  - {from: b, trigger: NORMAL_EDGE, to: c}
"""


def test_templates_base_is_valid():
    assert parse(TEMPLATES).actions["b"].variants == (Variant("v1", 10, "Var {{ first_name }}"),)


@pytest.mark.parametrize(
    "old, new, lineno, field",
    [
        ("Subj {{ first_name }}", "Subj {{ first_name", 8, "actions.b.subject"),
        ("Msg {{ first_name }}", "Msg {{ first_name", 9, "actions.b.message"),
        ('"Fallback"', '"Fallback {% if %}"', 10, "actions.b.fallback_message"),
        ("Var {{ first_name }}", "Var {{ first_name", 12, "actions.b.variants[0].message"),
        ("Note {{ first_name }}", "Note {{ first_name", 13, "actions.c.note"),
    ],
)
def test_template_syntax_error(old, new, lineno, field):
    assert_issue(TEMPLATES.replace(old, new), lineno, field, "template syntax error on template line 1")


def test_template_syntax_error_in_block_names_template_line():
    text = TEMPLATES.replace('    message: "Msg {{ first_name }}"\n', "    message: |\n      Hi\n      {{ oops \n")
    assert_issue(text, 9, "actions.b.message", "template syntax error on template line 2", "near '{{ oops'")


def test_message_required():
    assert_issue(with_line(BASE, 6, "  b: {type: SEND_TWITTER_DM}"), 6, "actions.b.message",
                 "SEND_TWITTER_DM requires a message")


def test_message_too_long():
    text = with_line(BASE, 6, f"  b: {{type: SEND_TWITTER_DM, message: {'x' * 10001}}}")
    assert_issue(text, 6, "actions.b.message", "is 10001 characters long; the limit is 10000")


def test_variant_message_too_long():
    text = TEMPLATES.replace("Var {{ first_name }}", "v" * 100001)
    assert_issue(text, 12, "actions.b.variants[0].message", "is 100001 characters long; the limit is 100000")


def test_note_too_long():
    text = TEMPLATES.replace("Note {{ first_name }}", "n" * 301)
    assert_issue(text, 13, "actions.c.note", "is 301 characters long; the limit is 300")


@pytest.mark.parametrize(
    "action, key",
    [
        ('{type: SEND_TWITTER_DM, message: "Hi", note: "x"}', "note"),
        ('{type: SEND_TWITTER_DM, message: "Hi", subject: "x"}', "subject"),
        ('{type: FOLLOW_ON_TWITTER, message: "Hi"}', "message"),
    ],
)
def test_field_not_allowed_on_action_type(action, key):
    text = with_line(BASE, 6, f'  b: {{type: SEND_TWITTER_DM, message: "Hi"}}\n  c: {action}')
    text += "  - {from: b, trigger: NOT_REPLIED, after: 1d, to: c}\n"
    type_ = action.split(",")[0].split(": ")[1]
    assert_issue(text, 7, f"actions.c.{key}", f"'{key}' is not allowed on {type_} actions")


# -- variants ------------------------------------------------------------------------------

def variants(*items):
    return TEMPLATES.replace(
        '      - {name: v1, weight: 10, message: "Var {{ first_name }}"}\n',
        "".join(f"      - {item}\n" for item in items),
    )


def test_variant_duplicate_name():
    text = variants("{name: v1, weight: 10, message: A}", "{name: v1, weight: 10, message: B}")
    assert_issue(text, 13, "actions.b.variants[1].name", "duplicate variant name 'v1' (first on line 12)")


def test_variant_name_control_reserved():
    assert_issue(variants("{name: control, weight: 10, message: A}"), 12, "actions.b.variants[0].name",
                 "'control' is reserved")


@pytest.mark.parametrize(
    "weight, message",
    [("0", "must be a positive integer, got 0"), ("-5", "must be a positive integer, got -5"),
     ("abc", "must be an integer, got 'abc'"), ("1.5", "must be an integer, got '1.5'"),
     ("true", "must be an integer, got 'true'")],
)
def test_variant_weight_must_be_positive_int(weight, message):
    assert_issue(variants(f"{{name: v1, weight: {weight}, message: A}}"), 12, "actions.b.variants[0].weight", message)


def test_variant_missing_weight():
    assert_issue(variants("{name: v1, message: A}"), 12, "actions.b.variants[0].weight", "missing required key 'weight'")


def test_variant_weights_sum_over_100():
    text = variants("{name: v1, weight: 60, message: A}", "{name: v2, weight: 50, message: B}")
    assert_issue(text, 12, "actions.b.variants", "variant weights add up to 110; they must not exceed 100")


def test_variants_not_allowed_on_connection_request():
    text = TEMPLATES.replace('note: "Note {{ first_name }}"}', 'variants: [{name: v, weight: 1, message: m}]}')
    assert_issue(text, 13, "actions.c.variants", "'variants' is not allowed on SEND_CONNECTION_REQUEST actions")


# -- duplicates ----------------------------------------------------------------------------

def test_duplicate_action_key():
    text = with_line(BASE, 6, '  b: {type: SEND_TWITTER_DM, message: "Hi"}\n  a: {type: UNFOLLOW_ON_TWITTER}')
    assert_issue(text, 7, "actions.a", "duplicate key 'a' (first defined on line 5)")


def test_duplicate_top_level_key():
    assert_issue(BASE + "name: t\n", 10, "name", "duplicate key 'name' (first defined on line 1)")


def test_duplicate_key_in_trigger():
    text = with_line(BASE, 9, "  - {from: b, trigger: REPLIED, to: END, to: b}")
    assert_issue(text, 9, "triggers[1].to", "duplicate key 'to'")


def test_duplicate_account():
    text = with_line(BASE, 2, "accounts:\n  - x-main\n  - x-alt\n  - x-main")
    assert_issue(text, 5, "accounts[2]", "duplicate account 'x-main' (already accounts[0])")


# -- accounts against the accounts file ----------------------------------------------------

def test_accounts_checked_only_when_providers_given():
    assert parse(BASE).accounts == ("x-main",)
    assert parse(BASE, {"x-main": "x"}).accounts == ("x-main",)


def test_unknown_account():
    text = with_line(BASE, 2, "accounts:\n  - x-main\n  - x-typo")
    assert_issue(text, 4, "accounts[1]", "unknown account 'x-typo'", providers={"x-main": "x"})


def test_provider_without_account():
    text = BASE + "  - {from: b, trigger: NOT_REPLIED, after: 1d, to: c}\n"
    text = with_line(text, 6, '  b: {type: SEND_TWITTER_DM, message: "Hi"}\n  c: {type: SEND_CONNECTION_REQUEST}')
    assert_issue(text, 2, "accounts", "actions c need a linkedin account", providers={"x-main": "x"})


def test_account_of_unused_provider():
    text = with_line(BASE, 2, "accounts:\n  - x-main\n  - li-main")
    assert_issue(text, 4, "accounts[1]", "account 'li-main' is a linkedin account but no action uses linkedin",
                 providers={"x-main": "x", "li-main": "linkedin"})


# -- reporting -----------------------------------------------------------------------------

def test_all_issues_collected_sorted_and_nothing_returned():
    text = BASE.replace("start: a", "start: zz").replace("FOLLOW_ON_TWITTER", "TWEET") + "bogus: 1\n"
    found = issues_of(text)
    assert [(i.line, i.field) for i in found] == [(3, "start"), (5, "actions.a.type"), (10, "bogus")]
    with pytest.raises(ValidationError) as e:
        parse(text)
    assert str(e.value).splitlines()[0] == "seq.yaml:3: start: start names no action: 'zz' (actions: a, b)"

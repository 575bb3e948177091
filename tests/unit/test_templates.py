"""Templates: sandboxed strict rendering, fallbacks, skip reasons and deterministic A/B/n."""
from collections import Counter

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from outreach.domain.model import Action, Variant
from outreach.domain.templates import (
    ENV,
    MissingVariable,
    TemplateSecurityError,
    check_syntax,
    choose_variant,
    render,
    render_action,
)

LEAD = {"first_name": "Ada", "name": "Ada Lovelace", "topic": "engines"}


def dm(**kw) -> Action:
    return Action(key="dm", type="SEND_TWITTER_DM", **{"message": "Hi {{ first_name }}, re {{ topic }}", **kw})


# -- environment and filters ------------------------------------------------------------

def test_env_is_strict_sandbox():
    assert isinstance(ENV, SandboxedEnvironment)
    assert ENV.undefined is StrictUndefined
    assert ENV.autoescape is False
    assert render("a\n", {}) == "a\n"  # keep_trailing_newline


def test_filters():
    assert render("{{ name | first_name }}", LEAD) == "Ada"
    assert render("{{ 'ada lovelace' | title }}", {}) == "Ada Lovelace"
    assert render("{{ company | default('your team') }}", {}) == "your team"
    assert render("<{{ name }}>", {"name": "<b>"}) == "<<b>>"  # no autoescape


# -- check_syntax --------------------------------------------------------------------------

def test_check_syntax_ok():
    assert check_syntax("Hi {{ first_name }}{% if topic %} re {{ topic }}{% endif %}") is None


def test_check_syntax_error_names_template_line():
    msg = check_syntax("Hello\nthere {{ first_name ")
    assert msg.startswith("template syntax error on template line 2:")
    assert "there {{ first_name" in msg


# -- render --------------------------------------------------------------------------------

def test_render_ok():
    assert render("Hi {{ first_name }}, re {{ topic }}", LEAD) == "Hi Ada, re engines"


@pytest.mark.parametrize(
    "src, variables, name",
    [
        ("Hi {{ topic }}", {}, "topic"),
        ("Hi {{ topic | title }}", {}, "topic"),
        ("Hi {{ topic }}", {"topic": None}, "topic"),  # None counts as missing
        ("Hi {{ topic }}", {"topic": "  "}, "topic"),  # so does a blank string
        ("Hi {{ lead.company }}", {"lead": {}}, "company"),
        ("{{ x | default('') }}", {}, "x"),  # blank output
        ("   ", {}, "<empty>"),
    ],
)
def test_render_missing_variable(src, variables, name):
    with pytest.raises(MissingVariable) as e:
        render(src, variables)
    assert e.value.name == name
    assert name in str(e.value)


@pytest.mark.parametrize(
    "src",
    ["{{ ''.__class__.__mro__ }}", "{{ first_name.__class__ }}", "{{ (1).__class__.__base__.__subclasses__() }}"],
)
def test_render_sandbox_blocks_dunder_access(src):
    with pytest.raises(TemplateSecurityError, match="unsafe"):
        render(src, LEAD)


# -- render_action -------------------------------------------------------------------------

def test_render_action_message():
    assert render_action(dm(), None, LEAD) == ("Hi Ada, re engines", "message", None)


def test_render_action_strict_undefined_falls_back():
    action = dm(fallback_message="Hi {{ first_name }}!")
    assert render_action(action, None, {"first_name": "Ada"}) == ("Hi Ada!", "fallback", None)


def test_render_action_neither_renders_gives_skip_reason():
    action = dm(fallback_message="Hi {{ first_name }}!")
    assert render_action(action, None, {}) == (None, None, "missing_variable:first_name")


def test_render_action_no_fallback_gives_skip_reason():
    assert render_action(dm(), None, {"first_name": "Ada"}) == (None, None, "missing_variable:topic")


def test_render_action_security_error_is_skip_not_crash():
    action = dm(message="{{ ''.__class__.__mro__ }}", fallback_message="Hi")
    text, source, reason = render_action(action, None, LEAD)
    assert (text, source) == (None, None)
    assert reason.startswith("template_error:") and "unsafe" in reason


def test_render_action_runtime_error_is_skip():
    text, source, reason = render_action(dm(message="{{ 1 // 0 }}"), None, LEAD)
    assert text is None and reason.startswith("template_error:")


def test_render_action_variants():
    action = dm(variants=(Variant("short", 50, "Yo {{ first_name }}"),))
    assert render_action(action, "short", LEAD) == ("Yo Ada", "message", None)
    assert render_action(action, "control", LEAD) == ("Hi Ada, re engines", "message", None)
    assert render_action(action, None, LEAD) == ("Hi Ada, re engines", "message", None)
    assert render_action(action, "gone", LEAD) == ("Hi Ada, re engines", "message", None)


def test_render_action_variant_falls_back():
    action = dm(fallback_message="Hey!", variants=(Variant("short", 50, "Yo {{ nickname }}"),))
    assert render_action(action, "short", LEAD) == ("Hey!", "fallback", None)


def test_render_action_connection_note():
    invite = Action(key="invite", type="SEND_CONNECTION_REQUEST", note="Hi {{ first_name }}")
    assert render_action(invite, None, LEAD) == ("Hi Ada", "message", None)
    assert render_action(invite, None, {}) == (None, None, "missing_variable:first_name")
    bare = Action(key="invite", type="SEND_CONNECTION_REQUEST")
    assert render_action(bare, None, {}) == ("", "message", None)


@pytest.mark.parametrize("type_", ["FOLLOW_ON_TWITTER", "UNFOLLOW_ON_TWITTER", "CHECK_FOR_REPLY"])
def test_render_action_without_message(type_):
    assert render_action(Action(key="a", type=type_), None, {}) == ("", "message", None)


# -- choose_variant ------------------------------------------------------------------------

def test_choose_variant_none_without_variants():
    assert choose_variant(dm(), 1) is None


def test_choose_variant_deterministic():
    action = dm(variants=(Variant("a", 30, "A"), Variant("b", 30, "B")))
    first = [choose_variant(action, i) for i in range(500)]
    assert first == [choose_variant(action, i) for i in range(500)]
    assert set(first) == {"control", "a", "b"}


def test_choose_variant_respects_weights():
    action = dm(variants=(Variant("a", 20, "A"), Variant("b", 30, "B")))
    counts = Counter(choose_variant(action, i) for i in range(10_000))
    assert abs(counts["a"] - 2000) < 300
    assert abs(counts["b"] - 3000) < 300
    assert abs(counts["control"] - 5000) < 300


def test_choose_variant_full_weight_excludes_control():
    action = dm(variants=(Variant("a", 60, "A"), Variant("b", 40, "B")))
    counts = Counter(choose_variant(action, i) for i in range(2_000))
    assert "control" not in counts and abs(counts["a"] - 1200) < 150


def test_choose_variant_depends_on_action_key():
    variants = (Variant("a", 50, "A"),)
    one = [choose_variant(Action("x", "SEND_TWITTER_DM", "m", variants=variants), i) for i in range(200)]
    two = [choose_variant(Action("y", "SEND_TWITTER_DM", "m", variants=variants), i) for i in range(200)]
    assert one != two

"""Accounts file parsing: the DESIGN example, defaults, and one test per rejection rule."""
import pytest

from outreach.domain.accounts import AccountDef, load_accounts, parse_accounts
from outreach.domain.model import ValidationError

EXAMPLE = """\
accounts:
  - name: x-main
    provider: x
    conn_id: x_main
    user_id: "1001"
    timezone: Europe/Berlin
    send_window: {days: [mon, tue, wed, thu, fri], start: "09:00", end: "18:00"}
    limits: {SEND_TWITTER_DM: {per_15min: 100, per_day: 500}}
  - name: li-main
    provider: linkedin
    conn_id: li_main
    user_id: 42
"""


def issues_of(text):
    with pytest.raises(ValidationError) as e:
        parse_accounts(text, "accounts.yaml")
    assert all(i.file == "accounts.yaml" for i in e.value.issues)
    return e.value.issues


def assert_issue(text, line, field, *fragments):
    """Assert the only issue is at `line`/`field` and its message contains every fragment."""
    found = issues_of(text)
    report = "\n".join(map(str, found))
    assert len(found) == 1, f"expected a single issue, got:\n{report}"
    issue = found[0]
    assert (issue.line, issue.field) == (line, field), report
    assert all(f in issue.message for f in fragments), report


def replace_line(lineno, new, text=EXAMPLE):
    lines = text.splitlines()
    lines[lineno - 1] = new
    return "\n".join(lines) + "\n"


def test_example_parses():
    assert parse_accounts(EXAMPLE, "accounts.yaml") == [
        AccountDef(
            name="x-main",
            provider="x",
            conn_id="x_main",
            user_id="1001",
            timezone="Europe/Berlin",
            send_window={"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"},
            limits={"SEND_TWITTER_DM": {"per_15min": 100, "per_day": 500}},
        ),
        AccountDef(name="li-main", provider="linkedin", conn_id="li_main", user_id="42"),  # int user_id -> str
    ]


def test_defaults():
    acc = parse_accounts(EXAMPLE, "a.yaml")[1]
    assert (acc.timezone, acc.send_window, acc.limits) == ("UTC", None, {})


def test_send_window_unquoted_times_and_default_days():
    # YAML 1.1 reads an unquoted 18:00 as the base-60 integer 1080; the raw text is used instead.
    text = replace_line(7, "    send_window: {start: 9:00, end: 18:00}")
    assert parse_accounts(text, "a.yaml")[0].send_window == {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "09:00", "end": "18:00"}


def test_send_window_until_midnight():
    text = replace_line(7, "    send_window: {days: [sat, sun], start: '20:00', end: '24:00'}")
    assert parse_accounts(text, "a.yaml")[0].send_window == {"days": ["sat", "sun"], "start": "20:00", "end": "24:00"}


def test_empty_accounts_list():
    assert parse_accounts("accounts: []\n", "a.yaml") == []


def test_load_accounts(tmp_path):
    path = tmp_path / "accounts.yaml"
    path.write_text(EXAMPLE)
    assert [a.name for a in load_accounts(path)] == ["x-main", "li-main"]
    path.write_text(replace_line(3, "    provider: myspace"))
    with pytest.raises(ValidationError) as e:
        load_accounts(path)
    assert str(e.value).startswith(f"{path}:3: accounts[0].provider: unknown provider 'myspace'")


# -- rejections ----------------------------------------------------------------------------

def test_yaml_syntax_error():
    assert_issue(replace_line(4, "    conn_id: [x"), 5, "(syntax)", "YAML syntax error")


def test_top_level_must_be_mapping():
    assert_issue("- name: x\n", 1, "(top level)", "top level must be a mapping")


def test_accounts_must_be_list():
    assert_issue("accounts: {name: x}\n", 1, "accounts", "must be a list, got a mapping")


def test_missing_accounts_key():
    assert_issue("{}\n", 1, "accounts", "missing required key 'accounts'")


def test_unknown_top_level_key():
    assert_issue(EXAMPLE + "owner: me\n", 13, "owner", "unknown key 'owner' (allowed: accounts)")


def test_unknown_account_key():
    assert_issue(replace_line(6, "    tz: Europe/Berlin"), 6, "accounts[0].tz", "unknown key 'tz'", "timezone")


@pytest.mark.parametrize("key, lineno", [("provider", 10), ("conn_id", 11), ("user_id", 12)])
def test_missing_required_account_key(key, lineno):
    lines = EXAMPLE.splitlines()
    del lines[lineno - 1]
    assert_issue("\n".join(lines) + "\n", 9, f"accounts[1].{key}", f"missing required key {key!r}")


def test_duplicate_names():
    assert_issue(replace_line(9, "  - name: x-main"), 9, "accounts[1].name", "duplicate account name 'x-main' (first on line 2)")


def test_duplicate_key_in_account():
    assert_issue(replace_line(11, "    conn_id: li_main\n    conn_id: other"), 12, "accounts[1].conn_id", "duplicate key 'conn_id'")


@pytest.mark.parametrize("name", ["X-Main", "-x", "x main", "x/main", "_x"])
def test_invalid_name(name):
    assert_issue(replace_line(2, f"  - name: '{name}'"), 2, "accounts[0].name", f"invalid account name {name!r}")


def test_unknown_provider():
    assert_issue(replace_line(3, "    provider: myspace"), 3, "accounts[0].provider", "unknown provider 'myspace'",
                 "x, linkedin, xmtp, email")


def test_empty_user_id():
    assert_issue(replace_line(5, "    user_id:"), 5, "accounts[0].user_id", "must be a non-empty string, got null")


@pytest.mark.parametrize("tz", ["Mars/Olympus", "Europe/", "../etc/passwd"])
def test_invalid_timezone(tz):
    assert_issue(replace_line(6, f"    timezone: {tz}"), 6, "accounts[0].timezone", f"unknown timezone {tz!r}")


@pytest.mark.parametrize(
    "window, field, message",
    [
        ("{days: [mon, funday], start: '09:00', end: '18:00'}", "days[1]", "unknown day 'funday'"),
        ("{days: [mon, mon], start: '09:00', end: '18:00'}", "days[1]", "duplicate day 'mon'"),
        ("{days: [], start: '09:00', end: '18:00'}", "days", "must list at least one day"),
        ("{start: '9am', end: '18:00'}", "start", "invalid time '9am'"),
        ("{start: '09:00', end: '25:00'}", "end", "invalid time '25:00'"),
        ("{start: '24:00', end: '24:00'}", "start", "invalid time '24:00': use HH:MM between 00:00 and 23:59"),
        ("{start: '18:00', end: '09:00'}", "end", "must end after it starts"),
        ("{start: '09:00'}", "end", "missing required key 'end'"),
        ("{start: '09:00', end: '18:00', tz: UTC}", "tz", "unknown key 'tz'"),
    ],
)
def test_invalid_send_window(window, field, message):
    assert_issue(replace_line(7, f"    send_window: {window}"), 7, f"accounts[0].send_window.{field}", message)


@pytest.mark.parametrize(
    "limits, field, message",
    [
        ("{TWEET: {per_day: 5}}", "TWEET", "unknown action type 'TWEET'"),
        ("{SEND_LINKEDIN_DM: {per_day: 5}}", "SEND_LINKEDIN_DM", "SEND_LINKEDIN_DM is not a x action (linkedin provider)"),
        ("{SEND_TWITTER_DM: {per_month: 5}}", "SEND_TWITTER_DM.per_month", "unknown key 'per_month'"),
        ("{SEND_TWITTER_DM: {per_day: 0}}", "SEND_TWITTER_DM.per_day", "must be a positive integer, got 0"),
        ("{SEND_TWITTER_DM: {per_day: -3}}", "SEND_TWITTER_DM.per_day", "must be a positive integer, got -3"),
        ("{SEND_TWITTER_DM: {per_day: lots}}", "SEND_TWITTER_DM.per_day", "must be an integer, got 'lots'"),
        ("{SEND_TWITTER_DM: {per_day: 1.5}}", "SEND_TWITTER_DM.per_day", "must be an integer, got '1.5'"),
    ],
)
def test_invalid_limits(limits, field, message):
    assert_issue(replace_line(8, f"    limits: {limits}"), 8, f"accounts[0].limits.{field}", message)


def test_all_issues_collected():
    text = replace_line(3, "    provider: myspace", replace_line(9, "  - name: x-main"))
    found = issues_of(text)
    assert [(i.line, i.field) for i in found] == [(3, "accounts[0].provider"), (9, "accounts[1].name")]


def test_pacing_settings_and_holidays_parse():
    from outreach.domain.accounts import parse_accounts

    text = """
accounts:
  - name: x-main
    provider: x
    conn_id: x_main
    user_id: "1"
    send_window: {days: [mon, fri], start: "09:00", end: "17:00", holidays: us}
    spacing: {min_seconds: 30, max_seconds: 90}
    warmup: {start_per_day: 20, increase_per_day: 10}
"""
    (a,) = parse_accounts(text, "a.yaml")
    assert a.send_window["holidays"] == "US"
    assert a.spacing == {"min_seconds": 30, "max_seconds": 90}
    assert a.warmup == {"start_per_day": 20, "increase_per_day": 10}


def test_bad_pacing_settings_are_rejected_with_line_and_field():
    import pytest

    from outreach.domain.accounts import parse_accounts
    from outreach.domain.model import ValidationError

    text = """accounts:
  - name: x-main
    provider: x
    conn_id: x_main
    user_id: "1"
    send_window: {start: "09:00", end: "17:00", holidays: XX}
    spacing: {min_seconds: 90, max_seconds: 30}
    warmup: {start_per_day: 0, increase_per_day: 10}
"""
    with pytest.raises(ValidationError) as e:
        parse_accounts(text, "a.yaml")
    msgs = [str(i) for i in e.value.issues]
    assert any("a.yaml:6: accounts[0].send_window.holidays: unknown country code 'XX'" in m for m in msgs)
    assert any("a.yaml:7: accounts[0].spacing: min_seconds must not exceed max_seconds" in m for m in msgs)
    assert any("a.yaml:8: accounts[0].warmup.start_per_day: must be a whole number >= 1" in m for m in msgs)


def test_a_sequence_may_carry_its_own_send_window():
    from outreach.domain.sequence import parse_sequence

    seq = parse_sequence("""
name: s
accounts: [x-main]
send_window: {days: [tue], start: "10:00", end: "12:00"}
start: dm
actions:
  dm: {type: SEND_TWITTER_DM, message: "hi"}
triggers: []
""", "s.yaml")
    assert seq.extras["send_window"] == {"days": ["tue"], "start": "10:00", "end": "12:00"}

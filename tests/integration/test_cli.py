"""The `outreach` command in-process (outreach.cli.main) against the test database (OUTREACH_DATABASE_URL)."""
from __future__ import annotations

import argparse
import json
import re
import textwrap

import pytest
import sqlalchemy as sa

from outreach import cli

from tests.helpers import ACCOUNTS, DESIGN_SEQUENCE

T0 = "2026-01-05T09:00:00Z"
SEQ = "founders-follow-dm"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def count(engine, table: str) -> int:
    with engine.connect() as c:
        return c.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()


def write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return p


@pytest.fixture
def files(tmp_path):
    return {"accounts": write(tmp_path, "accounts.yaml", ACCOUNTS),
            "sequence": write(tmp_path, "seq.yaml", DESIGN_SEQUENCE),
            "leads": write(tmp_path, "leads.csv", """
                name,twitter_id,twitter_username,timezone,company_domain,topic,title
                Ada Lovelace,50001,ada,Europe/London,engines.io,analytical engines,Founder
                Grace Hopper,50002,@Grace,America/New_York,cobol.dev,compilers,CTO
                """)}


@pytest.fixture
def applied(engine, files, capsys):
    """Accounts and the DESIGN sequence applied, two leads imported at T0."""
    assert run(capsys, "accounts", "apply", files["accounts"])[0] == 0
    assert run(capsys, "sequences", "apply", files["sequence"])[0] == 0
    assert run(capsys, "leads", "import", "--sequence", SEQ, "--now", T0, files["leads"])[0] == 0
    return files


# -- schema, accounts, sequences ---------------------------------------------------------------------------
def test_db_upgrade_is_idempotent(engine, database_url, capsys):
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0 and "up to date" in out and "schema version" in out
    before = count(engine, "schema_migrations")
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0 and "up to date" in out
    assert count(engine, "schema_migrations") == before
    password = sa.engine.make_url(database_url).password
    if password:
        assert password not in out  # the URL is shown without its password


def test_accounts_apply_creates_then_reports_unchanged(engine, files, capsys):
    code, out, _ = run(capsys, "accounts", "apply", files["accounts"])
    assert code == 0 and out.strip() == "account x-main: created"
    code, out, _ = run(capsys, "accounts", "apply", files["accounts"])
    assert code == 0 and out.strip() == "account x-main: unchanged"
    assert count(engine, "sender_accounts") == 1


def test_an_account_cannot_change_provider(engine, files, tmp_path, capsys):
    run(capsys, "accounts", "apply", files["accounts"])
    moved = write(tmp_path, "moved.yaml", ACCOUNTS.replace("provider: x", "provider: linkedin"))
    code, out, err = run(capsys, "accounts", "apply", moved)
    assert code == 2 and out == ""
    assert "'x-main' exists with provider 'x'" in err
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT provider FROM sender_accounts")).scalars().all() == ["x"]


def test_sequences_validate_apply_unchanged_then_new_version(engine, files, tmp_path, capsys):
    run(capsys, "accounts", "apply", files["accounts"])
    code, out, _ = run(capsys, "sequences", "validate", files["sequence"])
    assert code == 0 and f"sequence {SEQ!r} is valid" in out and "3 actions, 5 triggers" in out
    assert count(engine, "sequences") == 0  # validate stores nothing

    code, out, _ = run(capsys, "sequences", "apply", files["sequence"])
    assert (code, out.strip()) == (0, f"sequence {SEQ}: published version 1")
    code, out, _ = run(capsys, "sequences", "apply", files["sequence"])
    assert (code, out.strip()) == (0, f"sequence {SEQ}: unchanged (version 1)")

    changed = write(tmp_path, "seq2.yaml", DESIGN_SEQUENCE.replace("after: 3d", "after: 4d"))
    code, out, _ = run(capsys, "sequences", "apply", changed)
    assert (code, out.strip()) == (0, f"sequence {SEQ}: published version 2")
    assert count(engine, "sequence_versions") == 2 and count(engine, "sequences") == 1


BAD_TYPE = """
name: bad-type
accounts: [x-main]
start: follow
actions:
  follow: {type: FOLLOW_ON_TWITTER}
  dm: {type: SEND_TWITTER_DMS, message: "hi"}
triggers:
  - {from: follow, trigger: FOLLOWED_BACK, to: dm}
"""
CYCLE = """
name: cyclic
accounts: [x-main]
start: follow
actions:
  follow: {type: FOLLOW_ON_TWITTER}
  dm: {type: SEND_TWITTER_DM, message: "hi"}
triggers:
  - {from: follow, trigger: FOLLOWED_BACK, to: dm}
  - {from: dm, trigger: REPLIED, to: follow}
"""


@pytest.mark.parametrize("text,line,field,message", [
    (BAD_TYPE, 6, "actions.dm.type", "unknown action type 'SEND_TWITTER_DMS'"),
    (CYCLE, 9, "triggers[1].to", "cycle in the trigger graph: follow -> dm -> follow"),
], ids=["unknown-action-type", "cycle"])
@pytest.mark.parametrize("verb", ["validate", "apply"])
def test_a_bad_sequence_file_exits_2_naming_file_line_field_and_stores_nothing(engine, files, tmp_path, capsys,
                                                                               verb, text, line, field, message):
    run(capsys, "accounts", "apply", files["accounts"])
    bad = write(tmp_path, "bad.yaml", text)
    code, out, err = run(capsys, "sequences", verb, bad)
    assert code == 2
    assert f"{bad}:{line}: {field}: {message}" in err
    assert out == ""
    assert count(engine, "sequences") == 0 and count(engine, "sequence_versions") == 0


def test_a_sequence_naming_an_account_of_the_wrong_provider_exits_2(engine, files, tmp_path, capsys):
    run(capsys, "accounts", "apply", files["accounts"])
    email = write(tmp_path, "email.yaml", """
        name: email-only
        accounts: [x-main]
        start: mail
        actions:
          mail: {type: SEND_EMAIL, subject: "Hello", message: "Hi {{ first_name }}"}
        triggers: []
        """)
    code, _, err = run(capsys, "sequences", "apply", email)
    assert code == 2
    assert f"{email}:2: accounts[0]: account 'x-main' is a x account but no action uses x" in err
    assert "need a email account" in err
    assert count(engine, "sequences") == 0


def test_a_sequence_naming_an_unknown_account_exits_2(engine, files, tmp_path, capsys):
    run(capsys, "accounts", "apply", files["accounts"])
    seq = write(tmp_path, "unknown.yaml", DESIGN_SEQUENCE.replace("[x-main]", "[x-nope]"))
    code, _, err = run(capsys, "sequences", "apply", seq)
    assert code == 2 and "unknown account 'x-nope'" in err
    assert count(engine, "sequences") == 0


# -- leads -----------------------------------------------------------------------------------------------
def test_leads_import_turns_extra_columns_into_variables(engine, applied, capsys):
    with engine.connect() as c:
        rows = {r.value: r for r in c.execute(sa.text("""
            SELECT i.value, e.variables, e.current_step, e.phase, e.status, p.timezone, p.company_domain
            FROM enrollments e JOIN identities i ON i.person_id = e.person_id AND i.kind = 'twitter'
            JOIN people p ON p.id = e.person_id"""))}
        usernames = set(c.execute(sa.text("SELECT value FROM identities WHERE kind = 'twitter_username'")).scalars())
    assert set(rows) == {"50001", "50002"}
    ada = rows["50001"]
    assert ada.variables["topic"] == "analytical engines" and ada.variables["title"] == "Founder"
    assert ada.variables["first_name"] == "Ada"
    assert (ada.current_step, ada.phase, ada.status) == ("follow", "pending", "ACTIVE")
    assert (ada.timezone, ada.company_domain) == ("Europe/London", "engines.io")
    assert usernames == {"ada", "grace"}  # normalised: no '@', lower case

    # importing the same file again enrols nobody twice
    code, out, _ = run(capsys, "leads", "import", "--sequence", SEQ, "--now", T0, applied["leads"])
    assert code == 0 and "0 enrolled" in out and "2 already enrolled" in out
    assert count(engine, "enrollments") == 2


@pytest.mark.parametrize("body,line,column,message", [
    ("Ada,50001,UTC\nBob,12ab,UTC\n", 3, "twitter_id", "X user ids are numeric: '12ab'"),
    ("Ada,50001,UTC\nBob,50001,UTC\n", 3, "twitter_id", "'50001' already appears on line 2"),
    ("Ada,50001,UTC\nBob,50002,Mars/Olympus\n", 3, "timezone", "unknown timezone 'Mars/Olympus'"),
], ids=["bad-twitter-id", "duplicate-identity", "unknown-timezone"])
def test_a_bad_leads_csv_exits_2_naming_line_and_column_and_writes_nothing(engine, files, tmp_path, capsys,
                                                                           body, line, column, message):
    run(capsys, "accounts", "apply", files["accounts"])
    run(capsys, "sequences", "apply", files["sequence"])
    bad = write(tmp_path, "bad.csv", "name,twitter_id,timezone\n" + body)
    code, out, err = run(capsys, "leads", "import", "--sequence", SEQ, bad)
    assert code == 2
    assert f"{bad}:{line}: {column}: {message}" in err
    assert out == ""
    assert count(engine, "people") == 0 and count(engine, "enrollments") == 0 and count(engine, "events") == 0


def test_a_duplicate_identity_names_the_csv_column(engine, files, tmp_path, capsys):
    run(capsys, "accounts", "apply", files["accounts"])
    run(capsys, "sequences", "apply", files["sequence"])
    bad = write(tmp_path, "dup.csv", "name,twitter_id\nAda,50001\nBob,50001\n")
    code, _, err = run(capsys, "leads", "import", "--sequence", SEQ, bad)
    assert code == 2
    assert f"{bad}:3: twitter_id: " in err


def test_leads_import_into_an_unknown_sequence_exits_2(engine, files, capsys):
    run(capsys, "accounts", "apply", files["accounts"])
    code, _, err = run(capsys, "leads", "import", "--sequence", "nope", files["leads"])
    assert code == 2 and "no sequence named 'nope'" in err
    assert count(engine, "people") == 0


def test_suppress_add(engine, capsys):
    code, out, _ = run(capsys, "suppress", "add", "--kind", "twitter_username", "--value", "@Ada", "--reason", "asked")
    assert (code, out.strip()) == (0, "suppressed twitter_username=ada")
    code, out, _ = run(capsys, "suppress", "add", "--kind", "twitter_username", "--value", "ada", "--reason", "again")
    assert code == 0 and "already suppressed" in out
    code, _, err = run(capsys, "suppress", "add", "--kind", "phone", "--value", "1", "--reason", "x")
    assert code == 2 and "--kind" in err
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT kind, value, reason, source FROM suppressions")).all() == [
            ("twitter_username", "ada", "asked", "cli")]


def test_a_suppressed_username_is_never_contacted(engine, applied, sandbox, capsys):
    code, _, _ = run(capsys, "suppress", "add", "--kind", "twitter_username", "--value", "@GRACE", "--reason", "dnc")
    assert code == 0
    sandbox.clock(T0)
    code, out, _ = run(capsys, "tick", "--now", T0, "--json")
    assert json.loads(out)["advance_x"]["sent"] == 1
    assert [c["target_id"] for c in sandbox.calls() if c["method"] == "POST"] == ["50001"]
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT status, ended_reason FROM enrollments e JOIN identities i "
                                 "ON i.person_id = e.person_id WHERE i.value = '50002'")).one() == (
            "SKIPPED", "suppressed:twitter_username:dnc")


# -- running ----------------------------------------------------------------------------------------------
def test_tick_json_then_lead_show_then_metrics(engine, applied, sandbox, capsys):
    sandbox.clock(T0)
    code, out, _ = run(capsys, "tick", "--now", T0, "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["now"] == "2026-01-05T09:00:00+00:00"
    assert summary["advance_x"]["sent"] == 2
    assert sandbox.summary()["follows"] == 2

    code, out, _ = run(capsys, "tick", "--now", T0)  # the human summary
    assert code == 0 and out.startswith("tick at 2026-01-05T09:00:00+00:00")

    with engine.connect() as c:
        eid = c.execute(sa.text("""SELECT e.id FROM enrollments e JOIN identities i ON i.person_id = e.person_id
                                   WHERE i.value = '50001'""")).scalar()
    code, out, _ = run(capsys, "lead", "show", eid)
    assert code == 0
    assert f"enrollment {eid}: Ada Lovelace in {SEQ} v1 via x-main" in out
    assert "twitter=50001" in out and "status ACTIVE; step follow (waiting)" in out
    timeline = out.split("timeline:")[1]
    assert [line.split()[1] for line in timeline.strip().splitlines()] == ["ENROLLED", "ATTEMPTED", "SENT"]
    assert "ref=follow:1001:50001" in timeline

    code, _, err = run(capsys, "lead", "show", 999999)
    assert code == 2 and "no enrollment with id 999999" in err

    code, out, _ = run(capsys, "metrics", "--sequence", SEQ)
    assert code == 0
    header, rule, *lines = out.strip().splitlines()
    assert header.split()[:3] == ["sequence", "step", "action"] and "sent" in header
    follow = next(line for line in lines if line.split()[1] == "follow")
    assert follow.split()[:6] == [SEQ, "follow", "FOLLOW_ON_TWITTER", "2", "2", "2"]  # enrolled, attempted, sent

    code, out, _ = run(capsys, "metrics", "--json")
    assert code == 0 and any(r["step"] == "follow" and r["SENT"] == 2 for r in json.loads(out))


def test_tick_rejects_a_bad_clock(engine, capsys):
    code, _, err = run(capsys, "tick", "--now", "yesterday")
    assert code == 2 and "not an ISO 8601 timestamp" in err


def test_pause_and_resume(engine, applied, sandbox, capsys):
    code, out, _ = run(capsys, "sequences", "pause", SEQ)
    assert (code, out.strip()) == (0, f"sequence {SEQ}: PAUSED")
    sandbox.clock(T0)
    code, out, _ = run(capsys, "tick", "--now", T0, "--json")
    assert code == 0 and "advance_x" not in json.loads(out)
    assert sandbox.summary()["follows"] == 0

    code, out, _ = run(capsys, "sequences", "resume", SEQ)
    assert (code, out.strip()) == (0, f"sequence {SEQ}: ACTIVE")
    code, out, _ = run(capsys, "tick", "--now", T0, "--json")
    assert json.loads(out)["advance_x"]["sent"] == 2


@pytest.mark.parametrize("verb", ["pause", "resume"])
def test_pausing_an_unknown_sequence_exits_2_with_a_clear_message(engine, capsys, verb):
    code, out, err = run(capsys, "sequences", verb, "no-such-sequence")
    assert code == 2 and out == ""
    assert err.strip() == "error: no sequence named 'no-such-sequence'"


def test_a_missing_file_exits_2(engine, tmp_path, capsys):
    code, _, err = run(capsys, "sequences", "validate", tmp_path / "missing.yaml")
    assert code == 2 and "missing.yaml: no such file" in err


# -- help ----------------------------------------------------------------------------------------------------
def _commands(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[str, ...]]:
    out = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _commands(sub, prefix + (name,))
    return out


COMMANDS = _commands(cli.build_parser())


def test_the_command_tree_covers_the_design_contract():
    names = {" ".join(c) for c in COMMANDS}
    assert {"db upgrade", "accounts apply", "sequences validate", "sequences apply", "sequences pause",
            "sequences resume", "leads import", "suppress add", "tick", "lead show", "metrics",
            "sandbox serve"} <= names


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "outreach")
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert re.match(r"usage: outreach", out)

"""One person, one conversation: dedup across sequences, replies stop other enrollments, frequency caps,
cooldowns, and the suppression list's commands."""
from __future__ import annotations

import json

import sqlalchemy as sa

from outreach.cli import main

from tests.helpers import pick_ids, run_at, setup

T0 = "2026-01-05T09:00:00Z"


def seq(name, extra="", message="Hi {{ first_name }}", start_follow=False):
    if start_follow:
        return f"""
name: {name}
accounts: [x-main]
{extra}
start: follow
actions:
  follow: {{type: FOLLOW_ON_TWITTER}}
  dm: {{type: SEND_TWITTER_DM, message: "{message}"}}
triggers:
  - {{from: follow, trigger: NORMAL_EDGE, after: 1d, to: dm}}
  - {{from: dm, trigger: END}}
"""
    return f"""
name: {name}
accounts: [x-main]
{extra}
start: dm
actions:
  dm: {{type: SEND_TWITTER_DM, message: "{message}"}}
  again: {{type: SEND_TWITTER_DM, message: "Again {{{{ first_name }}}}"}}
triggers:
  - {{from: dm, trigger: NOT_REPLIED, after: 2d, to: again}}
"""


def status(engine):
    with engine.connect() as c:
        return {(r.name, r.value): (r.status, r.ended_reason) for r in c.execute(sa.text("""
            SELECT s.name, i.value, e.status, e.ended_reason FROM enrollments e JOIN sequences s ON s.id = e.sequence_id
            JOIN identities i ON i.person_id = e.person_id AND i.kind = 'twitter'"""))}


def dms(sandbox):
    return [c for c in sandbox.calls() if c["path"].endswith("/messages") and c["effect"]]


def test_a_person_in_two_sequences_is_contacted_by_one_only(engine, sandbox):
    tid = pick_ids(sandbox, 1, replies=False)[0]
    lead = [{"name": "Pat Doe", "twitter_id": tid}]
    setup(engine, seq("first"), leads=lead)
    setup(engine, seq("second", message="Other {{ first_name }}"), leads=lead)
    run_at(engine, sandbox, T0)
    assert len(dms(sandbox)) == 1
    st = status(engine)
    assert sorted(v for v in st.values()) == [("ACTIVE", None), ("SKIPPED", "active_elsewhere")]


def test_allow_parallel_opts_out_of_dedup(engine, sandbox):
    tid = pick_ids(sandbox, 1, replies=False)[0]
    lead = [{"name": "Pat Doe", "twitter_id": tid}]
    setup(engine, seq("first"), leads=lead)
    run_at(engine, sandbox, T0)
    setup(engine, seq("second", "allow_parallel: true", message="Other {{ first_name }}"), leads=lead)
    run_at(engine, sandbox, "2026-01-05T10:00:00Z")
    assert len(dms(sandbox)) == 2


def test_a_reply_stops_the_persons_other_enrollments(engine, sandbox, monkeypatch):
    # `later` runs on another sender account: the reply to `talks` still ends it
    monkeypatch.setenv("AIRFLOW_CONN_X_SECOND", json.dumps({"conn_type": "x", "host": sandbox.url,
                                                            "password": "sandbox-1002"}))
    accounts = """
    accounts:
      - {name: x-main, provider: x, conn_id: x_main, user_id: "1001"}
      - {name: x-second, provider: x, conn_id: x_second, user_id: "1002"}
    """
    tid = pick_ids(sandbox, 1, replies=True)[0]
    lead = [{"name": "Pat Doe", "twitter_id": tid}]
    setup(engine, seq("talks", "allow_parallel: true"), leads=lead, accounts_yaml=accounts)
    setup(engine, seq("later", "allow_parallel: true", start_follow=True).replace("[x-main]", "[x-second]"),
          leads=lead, accounts_yaml=accounts)
    run_at(engine, sandbox, T0)  # `talks` DMs from x-main, `later` follows from x-second
    run_at(engine, sandbox, "2026-01-05T18:00:00Z")  # the reply to x-main comes in
    st = status(engine)
    assert st[("talks", tid)] == ("COMPLETED", "replied")
    assert st[("later", tid)] == ("COMPLETED", "replied_elsewhere")
    run_at(engine, sandbox, "2026-01-07T18:00:00Z")
    assert len(dms(sandbox)) == 1  # `later` never sends its DM
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM events WHERE kind = 'STOPPED'")).scalar() == 1


def test_a_reply_can_stop_everyone_at_the_same_company(engine, sandbox):
    talker = pick_ids(sandbox, 1, replies=True)[0]
    colleague = pick_ids(sandbox, 1, replies=False, start=int(talker) + 1)[0]
    setup(engine, seq("acme", "stop_company_on_reply: true", start_follow=False),
          leads=[{"name": "Pat Doe", "twitter_id": talker, "company_domain": "acme.io"}])
    setup(engine, seq("acme-2", start_follow=True),
          leads=[{"name": "Sam Roe", "twitter_id": colleague, "company_domain": "acme.io"}])
    run_at(engine, sandbox, T0)
    run_at(engine, sandbox, "2026-01-05T18:00:00Z")
    assert status(engine)[("acme-2", colleague)] == ("COMPLETED", "company_replied")


def test_frequency_cap_defers_a_second_touch(engine, sandbox):
    tid = pick_ids(sandbox, 1, follows_back=False, replies=False)[0]
    lead = [{"name": "Pat Doe", "twitter_id": tid}]
    setup(engine, seq("capped", "frequency_cap: 48h\nallow_parallel: true", start_follow=True), leads=lead)
    run_at(engine, sandbox, T0)  # follow
    run_at(engine, sandbox, "2026-01-06T09:30:00Z")  # the DM is due after 1d, but the cap is 48h
    assert len(dms(sandbox)) == 0
    with engine.connect() as c:
        ev = c.execute(sa.text("SELECT reason, data->>'until' FROM events WHERE kind = 'DEFERRED'")).one()
    assert ev[0] == "frequency_cap" and ev[1].startswith("2026-01-07T09:00")
    run_at(engine, sandbox, "2026-01-07T09:00:00Z")
    assert len(dms(sandbox)) == 1


def test_exclude_already_contacted_honours_the_cooldown(engine, sandbox):
    tid = pick_ids(sandbox, 1, replies=False)[0]
    lead = [{"name": "Pat Doe", "twitter_id": tid}]
    setup(engine, seq("first", start_follow=True), leads=lead)
    setup(engine, seq("second", "exclude_already_contacted: true\nallow_parallel: true\ncontact_cooldown: 30d"),
          leads=lead)
    run_at(engine, sandbox, T0)  # `first` follows (a touch); then `second`'s DM batch sees it at the gate
    assert status(engine)[("second", tid)] == ("SKIPPED", "already_contacted")
    # at enrolment, the same rule: a third sequence does not even enrol the person within the cooldown
    setup(engine, seq("third", "exclude_already_contacted: true\nallow_parallel: true"), leads=lead)
    assert ("third", tid) not in status(engine)


def test_suppress_commands(engine, tmp_path, capsys):
    assert main(["suppress", "add", "--kind", "email", "--value", "Ada@Example.COM", "--reason", "asked"]) == 0
    assert main(["suppress", "add", "--kind", "domain", "--value", "@Spam.io", "--reason", "competitor"]) == 0
    assert main(["suppress", "add", "--kind", "fax", "--value", "1", "--reason", "x"]) == 2
    capsys.readouterr()
    assert main(["suppress", "list"]) == 0
    out = capsys.readouterr().out
    assert "Ada@example.com" in out and "spam.io" in out and "competitor" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,value,reason\nemail,a@b.io,asked\nperson,notanumber,x\ntwitter,123,\n")
    assert main(["suppress", "import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv:3: kind/value: a person is suppressed by its numeric id" in err
    assert "bad.csv:4: reason: a reason is required" in err
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM suppressions")).scalar() == 2  # nothing half-written
    good = tmp_path / "good.csv"
    good.write_text("kind,value,reason\nemail,a@b.io,asked\ntwitter,123,blocked us\nemail,Ada@example.com,dup\n")
    assert main(["suppress", "import", str(good)]) == 0
    assert "3 rows; 2 new suppressions, 1 already suppressed" in capsys.readouterr().out
    assert main(["suppress", "remove", "--kind", "twitter", "--value", "123"]) == 0
    assert main(["suppress", "remove", "--kind", "twitter", "--value", "123"]) == 2

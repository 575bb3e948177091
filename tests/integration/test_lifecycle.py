"""Sequence lifecycle: pinned versions, explicit migrations, pause/resume, audience snapshots, opt-outs, winners."""
from __future__ import annotations

import os
import textwrap

import sqlalchemy as sa

from outreach.cli import main
from outreach.clock import parse_now
from outreach.domain.sequence import parse_sequence
from outreach.engine.experiments import decide_winners
from outreach.engine.tick import run_tick
from outreach.store import catalog

from tests.helpers import setup

SEQ = """
name: nurture
accounts: [x-main]
start: follow
actions:
  follow: {type: FOLLOW_ON_TWITTER}
  dm: {type: SEND_TWITTER_DM, message: "MSG_V1 hi {{ first_name }}"}
triggers:
  - {from: follow, trigger: NORMAL_EDGE, after: 1h, to: dm}
  - {from: dm, trigger: END}
"""
T0, T1 = "2026-01-05T09:00:00Z", "2026-01-05T10:30:00Z"


def tick(engine, sandbox, now):
    sandbox.clock(now)
    return run_tick(engine, parse_now(now))


def publish(engine, text):
    with engine.begin() as conn:
        seq = parse_sequence(textwrap.dedent(text), "seq.yaml", catalog.account_providers(conn))
        return catalog.apply_sequence(conn, seq)


def dm_texts(sandbox):
    return [c["text"] for c in sandbox.calls() if c["path"].endswith("/messages") and c["effect"]]


def test_leads_mid_sequence_on_v1_keep_v1_messages(engine, sandbox):
    setup(engine, SEQ, n=5)
    tick(engine, sandbox, T0)  # follows sent; waiting 1h before the DM
    assert publish(engine, SEQ.replace("MSG_V1", "MSG_V2")) == (2, True)
    assert publish(engine, SEQ.replace("MSG_V1", "MSG_V2")) == (2, False)  # unchanged: no new version
    tick(engine, sandbox, T1)
    texts = dm_texts(sandbox)
    assert len(texts) == 5 and all(t.startswith("MSG_V1") for t in texts)
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT DISTINCT v.version FROM enrollments e "
                                 "JOIN sequence_versions v ON v.id = e.version_id")).scalars().all() == [1]


def test_migration_dry_run_matches_real_run_and_moves_to_v2_text(engine, sandbox, capsys):
    setup(engine, SEQ, n=6)
    tick(engine, sandbox, T0)
    publish(engine, SEQ.replace("MSG_V1", "MSG_V2").replace("dm:", "dm2:").replace("to: dm}", "to: dm2}")
            .replace("from: dm,", "from: dm2,"))
    # v2 has no step `follow`... it does; but `dm` is renamed: waiting leads on follow map 1:1
    assert main(["sequences", "migrate", "nurture", "--from", "1", "--to", "2", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "would move 6 leads" in dry and "follow (waiting) -> follow: 6" in dry
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM events WHERE kind = 'MIGRATED'")).scalar() == 0
    assert main(["sequences", "migrate", "nurture", "--from", "1", "--to", "2"]) == 0
    real = capsys.readouterr().out
    assert "moved 6 leads" in real and "follow (waiting) -> follow: 6" in real
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM events WHERE kind = 'MIGRATED'")).scalar() == 6
    tick(engine, sandbox, T1)
    texts = dm_texts(sandbox)
    assert len(texts) == 6 and all(t.startswith("MSG_V2") for t in texts)


def test_migration_refuses_to_strand_anyone(engine, sandbox, capsys):
    setup(engine, SEQ, n=4)
    tick(engine, sandbox, T0)
    tick(engine, sandbox, T1)  # now waiting after dm? dm -> END completes them; enrol fresh ones pending on follow
    setup(engine, SEQ, leads=[{"name": "New One", "twitter_id": "61001"}])
    publish(engine, SEQ.replace("follow", "hello"))  # v2 has no `follow` step
    assert main(["sequences", "migrate", "nurture", "--from", "1", "--to", "2", "--dry-run"]) == 0
    assert "STRANDED follow (pending): 1" in capsys.readouterr().out
    assert main(["sequences", "migrate", "nurture", "--from", "1", "--to", "2"]) == 2
    assert "would be stranded; nothing moved" in capsys.readouterr().err
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM enrollments e JOIN sequence_versions v ON v.id = e.version_id "
                                 "WHERE v.version = 2")).scalar() == 0
    assert main(["sequences", "migrate", "nurture", "--from", "1", "--to", "2", "--map", "follow=hello"]) == 0


def test_pause_and_resume_account_and_enrollment(engine, sandbox, capsys):
    setup(engine, SEQ, n=3)
    assert main(["accounts", "pause", "x-main"]) == 0
    tick(engine, sandbox, T0)
    assert sandbox.summary()["follows"] == 0
    assert main(["accounts", "resume", "x-main"]) == 0
    assert main(["lead", "pause", "1"]) == 0
    assert main(["lead", "pause", "1"]) == 2  # already paused: a clear error
    tick(engine, sandbox, T0)
    assert sandbox.summary()["follows"] == 2
    assert main(["lead", "resume", "1"]) == 0
    tick(engine, sandbox, T0)
    assert sandbox.summary()["follows"] == 3
    with engine.connect() as c:
        kinds = c.execute(sa.text("SELECT kind FROM events WHERE enrollment_id = 1 ORDER BY id")).scalars().all()
    assert kinds[:3] == ["ENROLLED", "PAUSED", "RESUMED"]


def test_preview_shows_the_exact_text(engine, sandbox, capsys):
    seq = SEQ.replace('"MSG_V1 hi {{ first_name }}"', '"{Hi|Hey} {{ first_name }}"')
    setup(engine, seq, leads=[{"name": "Ada Lovelace", "twitter_id": "51000"}])
    assert main(["sequences", "preview", "nurture", "--lead", "1"]) == 0
    preview = capsys.readouterr().out.splitlines()
    shown = preview[preview.index("[dm] SEND_TWITTER_DM") + 1].strip()
    tick(engine, sandbox, T0)
    tick(engine, sandbox, T1)
    assert dm_texts(sandbox) == [shown]


def test_audience_snapshot_from_a_query(engine, sandbox, database_url, tmp_path, capsys):
    setup(engine, SEQ, leads=[{"name": "Seed", "twitter_id": "59999"}])
    base = sa.engine.make_url(database_url)
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql("DROP TABLE IF EXISTS audience_founders")
        c.exec_driver_sql("CREATE TABLE audience_founders AS SELECT 'Aud ' || g AS name, (80000 + g)::text "
                          "AS twitter_id, 'ml' AS topic FROM generate_series(1, 30) g")
    main(["suppress", "add", "--kind", "twitter", "--value", "80002", "--reason", "asked"])
    sql = tmp_path / "segment.sql"
    sql.write_text("SELECT name, twitter_id, topic FROM audience_founders WHERE twitter_id::int % 2 = 0")
    url = base.set(drivername="postgresql").render_as_string(hide_password=False)
    os.environ["AIRFLOW_CONN_AUDIENCE_DB"] = url
    try:
        capsys.readouterr()
        assert main(["leads", "import", "--sequence", "nurture", "--query", str(sql), "--conn", "audience_db"]) == 0
        out = capsys.readouterr().out
        assert "15 rows; 15 new people" in out and "1 suppressed" in out and "14 enrolled" in out
        assert main(["leads", "import", "--sequence", "nurture", "--query", str(sql)]) == 2
    finally:
        os.environ.pop("AIRFLOW_CONN_AUDIENCE_DB")
        with admin.connect() as c:
            c.exec_driver_sql("DROP TABLE IF EXISTS audience_founders")


def test_opt_out_reply_suppresses_the_person_everywhere(engine, sandbox):
    state = sandbox.state
    opt = next(str(i) for i in range(52000, 60000) if state.predict(str(i))["replies"] and state.predict(str(i))["opt_out"])
    seq = """
    name: one-dm
    accounts: [x-main]
    start: dm
    actions:
      dm: {type: SEND_TWITTER_DM, message: "hello {{ first_name }}"}
      again: {type: SEND_TWITTER_DM, message: "again {{ first_name }}"}
    triggers:
      - {from: dm, trigger: REPLIED, to: again}
    """
    setup(engine, seq, leads=[{"name": "Opt Out", "twitter_id": opt}])
    tick(engine, sandbox, T0)
    tick(engine, sandbox, "2026-01-06T09:00:00Z")  # the reply arrives: REPLIED -> again, but it is an opt-out
    tick(engine, sandbox, "2026-01-06T09:05:00Z")
    assert len(dm_texts(sandbox)) == 1  # never a second message
    with engine.connect() as c:
        sup = c.execute(sa.text("SELECT kind, reason FROM suppressions ORDER BY kind")).all()
        skipped = c.execute(sa.text("SELECT reason FROM events WHERE kind = 'SKIPPED'")).scalars().all()
        intent = c.execute(sa.text("SELECT data->>'intent' FROM events WHERE kind = 'REPLIED'")).scalar()
    assert ("twitter", "opt_out_reply") in sup and ("person", "opt_out_reply") in sup
    assert intent == "unsubscribe" and skipped and skipped[0].startswith("suppressed:")


def test_winner_is_recorded_once_enough_sample(engine, sandbox):
    seq = SEQ.replace('dm: {type: SEND_TWITTER_DM, message: "MSG_V1 hi {{ first_name }}"}',
                      'dm: {type: SEND_TWITTER_DM, message: "A {{ first_name }}", '
                      'variants: [{name: b, weight: 50, message: "B {{ first_name }}"}]}')
    setup(engine, seq, n=1)
    with engine.begin() as c:
        vid, sid = c.execute(sa.text("SELECT id, sequence_id FROM sequence_versions")).one()
        rows = [("control", "SENT", 99), ("control", "REPLIED:positive", 5), ("b", "SENT", 400),
                ("b", "REPLIED:positive", 90)]
        for variant, metric, value in rows:
            c.execute(sa.text("INSERT INTO metrics_daily (day, sequence_id, version_id, step, variant, account_id, "
                              "metric, value) VALUES ('2026-01-05', :s, :v, 'dm', :var, 1, :m, :n)"),
                      {"s": sid, "v": vid, "var": variant, "m": metric, "n": value})
    now = parse_now(T0)
    assert decide_winners(engine, now)["decided"] == 0  # control has 99 < 100 sends
    with engine.begin() as c:
        c.execute(sa.text("UPDATE metrics_daily SET value = 400 WHERE variant = 'control' AND metric = 'SENT'"))
    assert decide_winners(engine, now)["decided"] == 1
    assert decide_winners(engine, now)["decided"] == 0  # decided once
    with engine.connect() as c:
        ev = c.execute(sa.text("SELECT variant, data FROM events WHERE kind = 'VARIANT_WINNER'")).one()
    assert ev.variant == "b" and "z-test" in ev.data["test"]


def test_applied_sequences_feed_the_dag_trigger_forms_multi_select(engine, tmp_path, monkeypatch, capsys):
    import importlib.util

    from outreach.store import db

    monkeypatch.setattr(db, "STATE_DIR", tmp_path)
    setup(engine, SEQ, n=1)
    seq_file = tmp_path / "s.yaml"
    seq_file.write_text(SEQ.replace("name: nurture", "name: another"))
    assert main(["sequences", "apply", str(seq_file)]) == 0
    assert catalog.cached_sequence_names() == ["another", "nurture"]
    spec = importlib.util.spec_from_file_location("dag_under_test", "dags/outreach_sequences.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    schema = module.dag.params.get_param("sequences").schema
    assert schema["examples"] == ["another", "nurture"] and schema["type"] == "array"

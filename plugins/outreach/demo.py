"""``make demo``: the main job end to end on this machine.

Embedded PostgreSQL (a fresh ``outreach_demo`` database each run), the X sandbox, the DESIGN example sequence
with 200 leads, then real ``airflow dags test outreach_sequences`` runs with the engine's clock (and the
sandbox's) moved forward between them: follow -> follow-back -> DM -> reply -> END. Prints the funnel and checks
it against the sandbox's own record of calls.
"""
from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import requests
import sqlalchemy as sa

from outreach.localenv import airflow_bin, airflow_env, ensure_airflow_db
from outreach.store.db import PROJECT_ROOT, STATE_DIR, embedded_url

DEMO_DIR = STATE_DIR / "demo"
SEQUENCE = PROJECT_ROOT / "include" / "demo" / "founders-follow-dm.yaml"
ACCOUNTS = PROJECT_ROOT / "include" / "demo" / "accounts.yaml"
# The engine clock for each DAG run: four follow batches 20 minutes apart (50 follows per 15 minutes on X),
# then the 6-hour rhythm, then past the 2-day NOT_FOLLOWED_BACK and the 3-day NOT_REPLIED timeouts.
CLOCK = ["2026-01-05T09:00:00Z", "2026-01-05T09:20:00Z", "2026-01-05T09:40:00Z", "2026-01-05T10:00:00Z",
         "2026-01-05T10:20:00Z", "2026-01-05T15:00:00Z", "2026-01-05T21:00:00Z", "2026-01-07T12:00:00Z",
         "2026-01-07T18:00:00Z", "2026-01-10T18:00:00Z"]
TOPICS = ["AI agents", "developer tools", "data pipelines", "growth loops", "open source"]


def say(msg: str) -> None:
    print(msg, flush=True)


def demo_database() -> str:
    url = os.environ.get("OUTREACH_DEMO_DATABASE_URL")
    if url:
        return url
    base = sa.engine.make_url(embedded_url())
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql("DROP DATABASE IF EXISTS outreach_demo WITH (FORCE)")
        c.exec_driver_sql("CREATE DATABASE outreach_demo")
    admin.dispose()
    return base.set(database="outreach_demo").render_as_string(hide_password=False)


def write_leads(path: Path, n: int = 200) -> None:
    rng = random.Random(7)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "twitter_id", "twitter_username", "timezone", "company_domain", "topic", "title"])
        for i in range(n):
            first = rng.choice(["Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Alan", "Radia"])
            topic = "" if i % 15 == 0 else rng.choice(TOPICS)  # a few leads lack {{ topic }}
            w.writerow([f"{first} Founder{i}", str(70000 + i), f"{first.lower()}{i}", "UTC", f"startup{i}.io",
                        topic, "Founder"])


def start_sandbox(env: dict) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "outreach.sandbox.server", "--port", "0", "--seed", "42"],
                            stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline().strip()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"sandbox did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[-1]


def run(cmd: list[str], env: dict, log: Path | None = None) -> str:
    out = subprocess.run(cmd, env=env, text=True, capture_output=True)
    if log:
        log.write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
        raise SystemExit(f"demo: `{' '.join(cmd[:4])} ...` failed (exit {out.returncode})"
                         + (f"; full log in {log}" if log else ""))
    return out.stdout


def main() -> int:
    t0 = time.monotonic()
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    (DEMO_DIR / "logs").mkdir(exist_ok=True)
    say("== outreach demo ==")
    url = demo_database()
    say(f"database: {sa.engine.make_url(url).render_as_string(hide_password=True)}")
    env = airflow_env(url)
    sandbox, base_url = start_sandbox(env)
    try:
        say(f"sandbox: {base_url}")
        env["AIRFLOW_CONN_X_MAIN"] = json.dumps({"conn_type": "x", "host": base_url, "password": "sandbox-1001"})
        outreach = str(Path(sys.executable).with_name("outreach"))
        leads = DEMO_DIR / "leads.csv"
        write_leads(leads)
        for cmd in (["db", "upgrade"], ["accounts", "apply", str(ACCOUNTS)], ["sequences", "apply", str(SEQUENCE)],
                    ["leads", "import", "--sequence", "founders-follow-dm", "--now", CLOCK[0], str(leads)]):
            say(f"$ outreach {' '.join(cmd)}\n  " + run([outreach, *cmd], env).strip().replace("\n", "\n  "))
        say("preparing Airflow (metadata database under .outreach/airflow) ...")
        ensure_airflow_db(env)
        engine = sa.create_engine(url)
        last_id = 0
        for i, now in enumerate(CLOCK, 1):
            requests.post(f"{base_url}/_sandbox/clock", json={"now": now}, timeout=5).raise_for_status()
            started = time.monotonic()
            run([airflow_bin(), "dags", "test", "outreach_sequences", "-c", json.dumps({"now": now})], env,
                log=DEMO_DIR / "logs" / f"run-{i:02d}.log")
            line, last_id = _progress(engine, last_id)
            say(f"DAG run {i:2d}/{len(CLOCK)} at {now} ({time.monotonic() - started:4.1f}s): {line}")
        say("")
        say("$ outreach metrics")
        say(run([outreach, "metrics", "--sequence", "founders-follow-dm"], env))
        return _check(engine, base_url, t0)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)


def _progress(engine: sa.Engine, after_id: int) -> tuple[str, int]:
    """What this run did (events after ``after_id``) and where the enrollments stand."""
    with engine.connect() as c:
        rows = c.execute(sa.text("""
            SELECT kind, step, count(*), max(id) FROM events WHERE id > :after
              AND kind IN ('SENT', 'FOLLOWED_BACK', 'REPLIED', 'TRIGGER_FIRED', 'SKIPPED', 'FAILED')
            GROUP BY kind, step ORDER BY kind, step"""), {"after": after_id}).all()
        last = c.execute(sa.text("SELECT coalesce(max(id), 0) FROM events")).scalar()
        status = dict(c.execute(sa.text("SELECT status, count(*) FROM enrollments GROUP BY status")).all())
    done = ", ".join(f"{k.lower()} {s}={n}" for k, s, n, _ in rows) or "nothing new"
    return f"{done} | enrollments: " + ", ".join(f"{k.lower()}={v}" for k, v in sorted(status.items())), last


def _check(engine: sa.Engine, base_url: str, t0: float) -> int:
    sandbox = requests.get(f"{base_url}/_sandbox/summary", timeout=5).json()
    with engine.connect() as c:
        got = dict(c.execute(sa.text("""
            SELECT CASE WHEN e.kind = 'SENT' THEN e.kind || ':' || a.type ELSE e.kind END, count(*)
            FROM events e LEFT JOIN sequence_actions a ON a.version_id = e.version_id AND a.key = e.step
            GROUP BY 1""")).all())
    pairs = [("follows", got.get("SENT:FOLLOW_ON_TWITTER", 0), sandbox["follows"]),
             ("DMs", got.get("SENT:SEND_TWITTER_DM", 0), sandbox["dms"]),
             ("follow-backs", got.get("FOLLOWED_BACK", 0), sandbox["follow_backs_visible"]),
             ("replies", got.get("REPLIED", 0), sandbox["replies_visible"])]
    say("event log vs the sandbox's own record of calls:")
    ok = True
    for name, ours, theirs in pairs:
        good = ours == theirs and ours > 0
        ok &= good
        say(f"  {name:<13} engine={ours:<5} sandbox={theirs:<5} {'ok' if good else 'MISMATCH'}")
    say(f"  duplicate DMs: {sandbox['duplicate_dms']}")
    ok &= sandbox["duplicate_dms"] == 0
    say(f"demo {'finished' if ok else 'FAILED'} in {time.monotonic() - t0:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

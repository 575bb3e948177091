"""Small helpers shared by the DAG's tasks and operators."""
from __future__ import annotations

from datetime import datetime


def engine_clock(value) -> datetime:
    """The run's clock: the ``now`` param when set (simulations, demos), else real time."""
    from outreach.clock import parse_now

    return parse_now(None if value in (None, "", "None") else value)


def is_backfill(context) -> bool:
    run = context.get("dag_run")
    return str(getattr(run, "run_type", "")).lower().endswith("backfill")


def summary_line(counts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "nothing to do"

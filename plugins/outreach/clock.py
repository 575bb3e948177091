"""The engine's clock. Real UTC time, unless a run sets it (``outreach tick --now``, the DAG's ``now`` param)."""
from __future__ import annotations

from datetime import datetime, timezone


def parse_now(value: str | datetime | None) -> datetime:
    if value is None or value == "":
        return datetime.now(timezone.utc)
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as e:
            raise ValueError(f"--now: {value!r} is not an ISO 8601 timestamp (e.g. 2026-01-05T09:00:00Z)") from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)

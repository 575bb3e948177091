"""Signing secrets of the web app's endpoints: the password of an Airflow connection, cached for a minute (a
rotated secret takes effect without a restart; a request does not pay a secrets-backend lookup). Never logged."""
from __future__ import annotations

import threading
import time

TTL_SECONDS = 60.0
_cache: dict[str, tuple[float, str | None]] = {}
_lock = threading.Lock()


def connection_password(conn_id: str) -> str | None:
    """The connection's password, or None when the connection is not defined (the endpoint then refuses)."""
    now = time.monotonic()
    with _lock:
        hit = _cache.get(conn_id)
        if hit and now - hit[0] < TTL_SECONDS:
            return hit[1]
    from airflow.sdk import BaseHook

    try:
        value = BaseHook.get_connection(conn_id).password or None
    except Exception:  # noqa: BLE001 - not configured
        value = None
    with _lock:
        _cache[conn_id] = (now, value)
    return value


def clear() -> None:
    with _lock:
        _cache.clear()

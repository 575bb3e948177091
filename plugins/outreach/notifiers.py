"""Airflow notifier for outreach alerts: task failures (the DAG's ``on_failure_callback``) and account alerts.

It always logs. When an Airflow connection ``outreach_alerts`` exists (type http, e.g.
``AIRFLOW_CONN_OUTREACH_ALERTS='{"conn_type": "http", "host": "hooks.example.com", "schema": "https",
"extra": {"endpoint": "/outreach"}}'``), it also POSTs a small JSON document to it. A notification that cannot be
delivered is logged, never raised: an alert must not fail the task that sends it.

URL: ``host`` when it is already a URL, else ``schema`` (http or https, default http) + host + port; then
``extra.endpoint`` (or the connection's path). Credentials: login/password as basic auth, a password alone as a
bearer token, ``extra.headers`` as extra headers. Nothing of them is logged.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from airflow.sdk.bases.notifier import BaseNotifier

log = logging.getLogger(__name__)

CONN_ID = "outreach_alerts"


class OutreachNotifier(BaseNotifier):
    """Log a notification and POST it as JSON to the ``outreach_alerts`` HTTP connection, if there is one."""

    template_fields: Sequence[str] = ("message",)

    def __init__(self, message: str = "", *, event: str = "task_failed", details: dict | None = None,
                 conn_id: str = CONN_ID, timeout: float = 5.0):
        super().__init__()
        self.message = message
        self.event = event
        self.details = dict(details or {})
        self.conn_id = conn_id
        self.timeout = timeout

    def payload(self, context) -> dict:
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        exc = context.get("exception")
        body = {
            "source": "outreach",
            "event": self.event,
            "message": self.message or _default_message(self.event, ti, exc),
            "dag_id": getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None),
            "task_id": getattr(ti, "task_id", None),
            "run_id": getattr(dag_run, "run_id", None) or context.get("run_id"),
            "try_number": getattr(ti, "try_number", None),
            "map_index": getattr(ti, "map_index", None),
            "exception": f"{type(exc).__name__}: {exc}"[:1000] if exc else None,
        }
        body.update(self.details)
        return {k: v for k, v in body.items() if v is not None}

    def notify(self, context) -> None:
        body = self.payload(context)
        log.warning("outreach notification: %s", body["message"])
        url, auth, headers = _target(self.conn_id)
        if url is None:
            return
        import requests

        try:
            resp = requests.post(url, json=body, auth=auth, headers=headers, timeout=self.timeout)
            if resp.status_code >= 300:
                log.error("outreach notification to connection %s: HTTP %s", self.conn_id, resp.status_code)
        except requests.RequestException as e:
            log.error("outreach notification to connection %s failed: %s", self.conn_id, type(e).__name__)


def _default_message(event: str, ti, exc) -> str:
    if ti is not None:
        return f"outreach: task {ti.dag_id}.{ti.task_id} failed" + (f": {type(exc).__name__}: {exc}" if exc else "")
    return f"outreach: {event}"


def _target(conn_id: str) -> tuple[str | None, object, dict]:
    """(url, auth, headers) from the Airflow connection, or (None, None, {}) when it is not defined."""
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception:  # noqa: BLE001 - not defined, or no secrets backend reachable: log only
        return None, None, {}
    host = (conn.host or "").strip()
    if not host:
        return None, None, {}
    extra = conn.extra_dejson or {}
    if host.startswith(("http://", "https://")):
        base = host.rstrip("/")
    else:
        scheme = conn.schema if conn.schema in ("http", "https") else "http"
        base = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
    endpoint = extra.get("endpoint") or ""
    url = base + ("/" + endpoint.lstrip("/") if endpoint else "")
    auth = None
    headers = {str(k): str(v) for k, v in (extra.get("headers") or {}).items()}
    if conn.login:
        auth = (conn.login, conn.password or "")
    elif conn.password:
        headers.setdefault("Authorization", f"Bearer {conn.password}")
    return url, auth, headers


def notify_alerts(alerts: list[dict], context: dict | None = None) -> int:
    """Send one notification per account alert (from ``outreach.engine.alerts.check_accounts``)."""
    from outreach.engine.alerts import describe

    for a in alerts:
        OutreachNotifier(describe(a), event="account_paused", details={"alert": a}).notify(dict(context or {}))
    return len(alerts)

"""A small JSON-over-HTTP client shared by the LinkedIn and XMTP gateway providers (docs/providers.md).

Same error model as the X client: 429 -> RateLimited (reset from ``x-rate-limit-reset`` or ``retry-after``),
401 -> AccountError, 5xx/timeouts -> RetryableError (``maybe_landed`` for writes), other 4xx -> PermanentError with
the gateway's ``error`` code as the reason.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import requests

from outreach.providers.base import AccountError, BearerHTTPClient, PermanentError, RateInfo, RateLimited, RetryableError


def parse_time(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s.replace("Z", "+00:00")) if s else None


def conn_base_url(conn, default: str) -> str:
    host = (conn.host or default).rstrip("/")
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
        if conn.port:
            host = f"{host}:{conn.port}"
    return host


class GatewayClient(BearerHTTPClient):
    """``requests`` session with a bearer API key, rate-limit headers read on every response."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0,
                 on_rate: Callable[[RateInfo], None] | None = None, conn_id: str = "?"):
        super().__init__(base_url, api_key, timeout, on_rate, conn_id)
        self.requests = 0  # how many HTTP requests this client made (polling cost, tests)

    def request(self, method: str, path: str, endpoint: str, **kw: Any) -> dict:
        self.requests += 1
        try:
            resp = self.session.request(method, self.base_url + path, timeout=self.timeout, **kw)
        except requests.Timeout as e:
            raise RetryableError("timeout", f"{method} {endpoint}", maybe_landed=method != "GET") from e
        except requests.ConnectionError as e:
            landed = "refused" not in str(e).lower()
            raise RetryableError("connection_error", type(e).__name__, maybe_landed=landed and method != "GET") from e
        self._read_rate(endpoint, resp)
        if resp.status_code < 300:
            return resp.json() if resp.content else {}
        try:
            body = resp.json()
        except ValueError:
            body = {}
        code = str(body.get("error") or "invalid_request")
        detail = str(body.get("detail") or resp.reason)[:300]
        status = resp.status_code
        if status == 429:
            info = self.last_rate.get(endpoint)
            reset = info.reset_at if info and info.reset_at else None
            if reset is None and resp.headers.get("retry-after", "").isdigit():
                reset = datetime.now(timezone.utc) + timedelta(seconds=int(resp.headers["retry-after"]))
            raise RateLimited(f"{method} {endpoint}", reset)
        if status == 401:
            raise AccountError("unauthorized", f"connection {self.conn_id!r}: {detail}", status)
        if status >= 500:
            raise RetryableError("server_error", f"{status} {detail}", status, maybe_landed=method != "GET")
        raise PermanentError(code, detail, status)

    def pages(self, path: str, endpoint: str, key: str, params: dict, cursor: str | None
              ) -> tuple[list[dict], str | None]:
        """Follow ``next_cursor`` while ``has_more``; one request when nothing is new."""
        items: list[dict] = []
        while True:
            q = dict(params)
            if cursor:
                q["cursor"] = cursor
            body = self.request("GET", path, endpoint, params=q)
            items += body.get(key) or []
            cursor = body.get("next_cursor") or cursor
            if not body.get("has_more"):
                return items, cursor

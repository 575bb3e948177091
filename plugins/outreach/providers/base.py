"""Provider-neutral results and errors. Every provider client speaks these to the engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone


@dataclass
class RateInfo:
    """What the provider said about its own limit on the last response."""

    endpoint: str
    limit: int | None
    remaining: int | None
    reset_at: datetime | None


def rate_info(endpoint: str, headers) -> RateInfo | None:
    """``x-rate-limit-limit/-remaining/-reset`` (epoch seconds) from a response's headers, if present."""
    if "x-rate-limit-remaining" not in headers:
        return None

    def _int(name: str) -> int | None:
        try:
            return int(headers[name])
        except (KeyError, ValueError):
            return None

    reset = _int("x-rate-limit-reset")
    return RateInfo(endpoint, _int("x-rate-limit-limit"), _int("x-rate-limit-remaining"),
                    datetime.fromtimestamp(reset, timezone.utc) if reset else None)


@dataclass
class SendResult:
    provider_ref: str | None = None
    data: dict = field(default_factory=dict)


@dataclass
class Signal:
    """An inbound signal read from a provider (a reply, a follow-back, an acceptance)."""

    kind: str  # REPLIED, FOLLOWED_BACK, CONNECTION_ACCEPTED, REPLIED_TO_NOTE
    external_id: str  # the other party's provider id
    provider_ref: str  # unique per provider: re-polling the same item inserts nothing twice
    occurred_at: datetime
    conversation_id: str | None = None
    text: str | None = None

    def as_row(self) -> dict:
        """A JSON-ready row for ``inbound_signals``. NUL characters are dropped from the strings: PostgreSQL
        refuses them, and one in a reply's text would otherwise fail its whole poll or delivery, every time."""
        row = {k: (v.replace("\x00", "") if isinstance(v, str) else v) for k, v in self.__dict__.items()}
        row["occurred_at"] = self.occurred_at.isoformat() if self.occurred_at else None
        return row


class ProviderError(Exception):
    """Base of provider failures. ``reason`` is a short machine-readable code recorded in the event log."""

    retryable = False

    def __init__(self, reason: str, detail: str = "", status: int | None = None):
        self.reason = reason
        self.detail = detail
        self.status = status
        super().__init__(f"{reason}: {detail}" if detail else reason)


class PermanentError(ProviderError):
    """The provider refused for good (user not found, DMs closed, protected account, bad input)."""


class RetryableError(ProviderError):
    """Transient failure (5xx, timeout, reset). ``maybe_landed`` means the effect may have happened anyway,
    so the next attempt must reconcile before it re-sends."""

    retryable = True

    def __init__(self, reason: str, detail: str = "", status: int | None = None, maybe_landed: bool = False):
        super().__init__(reason, detail, status)
        self.maybe_landed = maybe_landed


class RateLimited(RetryableError):
    """429: nothing happened; the account and action are blocked until ``reset_at``."""

    def __init__(self, detail: str, reset_at: datetime | None, status: int = 429):
        super().__init__("rate_limited", detail, status, maybe_landed=False)
        self.reset_at = reset_at


class AccountError(RetryableError):
    """The sender account itself cannot act (bad or revoked token): block the account, keep the leads."""

    def __init__(self, reason: str, detail: str = "", status: int | None = None):
        super().__init__(reason, detail, status, maybe_landed=False)


class BearerHTTPClient:
    """A ``requests`` session with a bearer credential; reads the rate-limit headers of every response.
    The X client and the messaging-gateway clients build on it."""

    def __init__(self, base_url: str, token: str, timeout: float = 10.0, on_rate=None, conn_id: str = "?"):
        import requests

        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.on_rate = on_rate
        self.conn_id = conn_id
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["User-Agent"] = "outreach-engine/0.1"
        self.last_rate: dict[str, RateInfo] = {}

    def _read_rate(self, endpoint: str, resp) -> None:
        info = rate_info(endpoint, resp.headers)
        if info is None:
            return
        self.last_rate[endpoint] = info
        if self.on_rate:
            self.on_rate(info)

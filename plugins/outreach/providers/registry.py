"""Which provider clients exist, and how to build one for a sender account (credentials via its hook)."""
from __future__ import annotations

from typing import Callable

from outreach.domain.model import ACTION_PROVIDERS
from outreach.providers.base import RateInfo

IMPLEMENTED = ("x",)


def action_types(provider: str) -> list[str]:
    """Action types an account of ``provider`` performs, plus CHECK_FOR_REPLY (no provider call)."""
    return [t for t, p in ACTION_PROVIDERS.items() if p == provider] + ["CHECK_FOR_REPLY"]


def build(provider: str, conn_id: str, on_rate: Callable[[RateInfo], None] | None = None):
    if provider == "x":
        from outreach.providers.x import XHook

        return XHook(x_conn_id=conn_id, on_rate=on_rate).get_provider()
    raise NotImplementedError(f"provider {provider!r} is not implemented yet (implemented: {', '.join(IMPLEMENTED)})")

"""Which provider clients exist, and how to build one for a sender account (credentials via its hook)."""
from __future__ import annotations

from typing import Callable

from outreach.domain.model import ACTION_PROVIDERS
from outreach.providers.base import RateInfo

IMPLEMENTED = ("x", "linkedin", "xmtp", "email")


def action_types(provider: str) -> list[str]:
    """Action types an account of ``provider`` performs, plus CHECK_FOR_REPLY (no provider call)."""
    return [t for t, p in ACTION_PROVIDERS.items() if p == provider] + ["CHECK_FOR_REPLY"]


def build(provider: str, conn_id: str, on_rate: Callable[[RateInfo], None] | None = None):
    if provider == "x":
        from outreach.providers.x import XHook

        return XHook(x_conn_id=conn_id, on_rate=on_rate).get_provider()
    if provider == "linkedin":
        from outreach.providers.linkedin import LinkedInHook

        return LinkedInHook(linkedin_conn_id=conn_id, on_rate=on_rate).get_provider()
    if provider == "xmtp":
        from outreach.providers.xmtp import XmtpHook

        return XmtpHook(xmtp_conn_id=conn_id, on_rate=on_rate).get_provider()
    if provider == "email":
        from outreach.providers.email import EmailHook

        return EmailHook(smtp_conn_id=conn_id).get_provider()
    raise NotImplementedError(f"provider {provider!r} is not implemented (implemented: {', '.join(IMPLEMENTED)})")

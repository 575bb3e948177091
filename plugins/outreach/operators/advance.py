"""Advance operators: one per provider, thin, mapped over batches of sender accounts.

Each calls one engine function (``outreach.engine.tick.advance``) and returns its counts as a small XCom.
"""
from __future__ import annotations

from typing import Any, Sequence

from airflow.sdk import BaseOperator

from outreach.operators.common import engine_clock, is_backfill, summary_line


class AdvanceOperator(BaseOperator):
    """Claim, gate, send and record for the given sender accounts of ``provider``."""

    provider: str = ""
    template_fields: Sequence[str] = ("account_ids", "enrollment_ids", "now", "sequences", "max_actions", "dry_run")
    ui_color = "#e8f4fd"

    def __init__(self, *, account_ids: list[int] | str, now: str | None = None, sequences: list[str] | str | None = None,
                 max_actions: int | str | None = None, dry_run: bool | str = False, batch_size: int = 200,
                 lease_seconds: int = 300, enrollment_ids: list[int] | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.account_ids = account_ids
        self.enrollment_ids = enrollment_ids  # only these leads (the reactions DAG); None: every due one
        self.now = now
        self.sequences = sequences
        self.max_actions = max_actions
        self.dry_run = dry_run
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds

    def execute(self, context) -> dict:
        from outreach.engine.advance import AdvanceConfig
        from outreach.engine.tick import advance
        from outreach.store.db import get_engine

        if is_backfill(context):
            self.log.info("backfill run: sends are decided for now only, so a backfill never sends")
            return {"skipped": "backfill"}
        now = engine_clock(self.now)
        cfg = AdvanceConfig(batch_size=self.batch_size, lease_seconds=self.lease_seconds,
                            max_actions=int(self.max_actions) if self.max_actions not in (None, "", "None") else None,
                            dry_run=self.dry_run in (True, "True", "true"), sequences=list(self.sequences or []) or None,
                            enrollment_ids=None if self.enrollment_ids in (None, "", "None")
                            else [int(i) for i in self.enrollment_ids])
        counts = advance(get_engine(), [int(a) for a in self.account_ids], now, cfg)
        self.log.info("advance %s at %s%s: %s", self.provider, now.isoformat(),
                      f" ({len(cfg.enrollment_ids)} leads)" if cfg.enrollment_ids is not None else "", summary_line(counts))
        return counts


class TwitterAdvanceOperator(AdvanceOperator):
    """Follow, unfollow and DM on X for a batch of X sender accounts."""

    provider = "x"


class LinkedInAdvanceOperator(AdvanceOperator):
    """Connection requests (optional note) and DMs on LinkedIn through the gateway; stale invitations withdrawn."""

    provider = "linkedin"


class XmtpAdvanceOperator(AdvanceOperator):
    """XMTP DMs through the gateway for a batch of XMTP sender accounts."""

    provider = "xmtp"


class EmailAdvanceOperator(AdvanceOperator):
    """Emails through Airflow's SMTP hook for a batch of email sender accounts."""

    provider = "email"


OPERATORS: dict[str, type[AdvanceOperator]] = {"x": TwitterAdvanceOperator, "linkedin": LinkedInAdvanceOperator,
                                               "xmtp": XmtpAdvanceOperator, "email": EmailAdvanceOperator}

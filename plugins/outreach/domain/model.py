"""Vocabulary of the engine: action types, trigger types, and the immutable sequence definition.

Pure Python; no Airflow, no SQL.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

# action type -> provider that performs it (None: no provider call)
ACTION_PROVIDERS: dict[str, str | None] = {
    "FOLLOW_ON_TWITTER": "x",
    "UNFOLLOW_ON_TWITTER": "x",
    "SEND_TWITTER_DM": "x",
    "SEND_CONNECTION_REQUEST": "linkedin",
    "SEND_LINKEDIN_DM": "linkedin",
    "SEND_XMTP_DM": "xmtp",
    "SEND_EMAIL": "email",
    "CHECK_FOR_REPLY": None,
}
ACTION_TYPES = frozenset(ACTION_PROVIDERS)

# action types whose definition carries a message template
MESSAGE_ACTIONS = frozenset({"SEND_TWITTER_DM", "SEND_LINKEDIN_DM", "SEND_XMTP_DM", "SEND_EMAIL"})
# SEND_CONNECTION_REQUEST may carry an optional note (max 300 chars)
NOTE_ACTIONS = frozenset({"SEND_CONNECTION_REQUEST"})

# Event triggers fire when a matching inbound signal is ingested.
EVENT_TRIGGERS = frozenset({"REPLIED", "FOLLOWED_BACK", "CONNECTION_ACCEPTED", "REPLIED_TO_NOTE"})
# Timeout triggers fire when `after` passes with no matching signal.
TIMEOUT_TRIGGERS = frozenset({"NOT_REPLIED", "NOT_FOLLOWED_BACK", "CONNECTION_NOT_ACCEPTED"})
# NORMAL_EDGE fires unconditionally after its delay (default 0); END finishes the enrollment.
UNCONDITIONAL_TRIGGERS = frozenset({"NORMAL_EDGE", "END"})
# REPLY_UNKNOWN fires instead of NOT_REPLIED when the provider could not have shown a reply (encrypted DMs the
# gateway cannot read, an inbox not polled for longer than the provider keeps history). It needs a NOT_REPLIED
# from the same action and takes no delay of its own.
UNKNOWN_TRIGGERS = frozenset({"REPLY_UNKNOWN"})
TRIGGER_TYPES = EVENT_TRIGGERS | TIMEOUT_TRIGGERS | UNCONDITIONAL_TRIGGERS | UNKNOWN_TRIGGERS
# the signal a timeout trigger waits for in vain
TIMEOUT_FOR_SIGNAL = {
    "NOT_REPLIED": "REPLIED",
    "NOT_FOLLOWED_BACK": "FOLLOWED_BACK",
    "CONNECTION_NOT_ACCEPTED": "CONNECTION_ACCEPTED",
}

_DM_TRIGGERS = frozenset({"REPLIED", "NOT_REPLIED", "REPLY_UNKNOWN"}) | UNCONDITIONAL_TRIGGERS
# which triggers may follow which action
ALLOWED_TRIGGERS: dict[str, frozenset[str]] = {
    "FOLLOW_ON_TWITTER": frozenset({"FOLLOWED_BACK", "NOT_FOLLOWED_BACK"}) | UNCONDITIONAL_TRIGGERS,
    "UNFOLLOW_ON_TWITTER": UNCONDITIONAL_TRIGGERS,
    "SEND_TWITTER_DM": _DM_TRIGGERS,
    "SEND_LINKEDIN_DM": _DM_TRIGGERS,
    "SEND_XMTP_DM": _DM_TRIGGERS,
    "SEND_EMAIL": _DM_TRIGGERS,
    "CHECK_FOR_REPLY": _DM_TRIGGERS,
    "SEND_CONNECTION_REQUEST": frozenset(
        {"CONNECTION_ACCEPTED", "CONNECTION_NOT_ACCEPTED", "REPLIED_TO_NOTE"}
    ) | UNCONDITIONAL_TRIGGERS,
}

PROVIDERS = ("x", "linkedin", "xmtp", "email")

# Provider message length limits (characters), checked at validation.
MESSAGE_LIMITS = {"SEND_TWITTER_DM": 10000, "SEND_LINKEDIN_DM": 8000, "SEND_XMTP_DM": 10000, "SEND_EMAIL": 100000}
NOTE_LIMIT = 300


@dataclass(frozen=True)
class Variant:
    name: str
    weight: int
    message: str


@dataclass(frozen=True)
class Action:
    key: str
    type: str
    message: str | None = None
    fallback_message: str | None = None
    subject: str | None = None  # SEND_EMAIL only
    note: str | None = None  # SEND_CONNECTION_REQUEST only
    variants: tuple[Variant, ...] = ()

    @property
    def provider(self) -> str | None:
        return ACTION_PROVIDERS[self.type]


@dataclass(frozen=True)
class Trigger:
    from_action: str
    kind: str
    to: str | None  # None means END
    after_seconds: int | None = None  # delay (timeout triggers, NORMAL_EDGE, optional on event triggers)
    within_seconds: int | None = None  # event triggers only: how long to wait for the signal


@dataclass(frozen=True)
class SequenceDef:
    name: str
    accounts: tuple[str, ...]
    start: str
    actions: dict[str, Action]
    triggers: tuple[Trigger, ...]
    exclude_already_contacted: bool = False
    description: str | None = None
    extras: dict = field(default_factory=dict)

    def triggers_from(self, key: str) -> list[Trigger]:
        return [t for t in self.triggers if t.from_action == key]

    def providers(self) -> set[str]:
        return {a.provider for a in self.actions.values() if a.provider}

    def canonical(self) -> dict:
        """A JSON-able form; equal definitions give equal canonical forms (accounts excluded)."""
        d = asdict(self)
        d.pop("accounts")
        d["actions"] = {k: d["actions"][k] for k in sorted(d["actions"])}
        d["triggers"] = sorted(d["triggers"], key=lambda t: json.dumps(t, sort_keys=True))
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True).encode()).hexdigest()

    @staticmethod
    def from_canonical(name: str, accounts: tuple[str, ...], d: dict) -> "SequenceDef":
        actions = {
            k: Action(**{**a, "variants": tuple(Variant(**v) for v in a.get("variants") or ())})
            for k, a in d["actions"].items()
        }
        return SequenceDef(
            name=name,
            accounts=tuple(accounts),
            start=d["start"],
            actions=actions,
            triggers=tuple(Trigger(**t) for t in d["triggers"]),
            exclude_already_contacted=d.get("exclude_already_contacted", False),
            description=d.get("description"),
            extras=d.get("extras") or {},
        )


@dataclass
class ValidationIssue:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}"


class ValidationError(Exception):
    """Raised with every problem found in an input file; nothing has been stored."""

    def __init__(self, issues: list[ValidationIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))

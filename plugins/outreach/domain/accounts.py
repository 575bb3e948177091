"""Parse and validate the accounts file (sending identities, send windows, rate-limit overrides).

Errors use the same style as sequences: every issue has file, line and field, and all of
them are raised together as ValidationError.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from yaml.nodes import Node

from .model import ACTION_PROVIDERS, PROVIDERS
from .sequence import NodeReader, node_line

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LIMIT_KEYS = ("per_5min", "per_15min", "per_hour", "per_day", "per_week")
ACCOUNT_KEYS = ("name", "provider", "conn_id", "user_id", "timezone", "send_window", "limits", "spacing", "warmup")
ACCOUNT_REQUIRED = ("name", "provider", "conn_id", "user_id")
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")


@dataclass
class AccountDef:
    """One sending identity. send_window is {"days": [...], "start": "HH:MM", "end": "HH:MM"} or None;
    limits maps action type -> {per_15min|per_hour|per_day|per_week: n}."""

    name: str
    provider: str
    conn_id: str
    user_id: str
    timezone: str = "UTC"
    send_window: dict | None = None
    limits: dict = field(default_factory=dict)
    # pacing: a random gap between consecutive sends, and a warm-up ramp of the daily cap for new accounts
    spacing: dict | None = None  # {"min_seconds": n, "max_seconds": m}
    warmup: dict | None = None  # {"start_per_day": n, "increase_per_day": m}


def parse_accounts(text: str, filename: str) -> list[AccountDef]:
    """Parse and validate an accounts file; raise ValidationError listing every issue."""
    r = NodeReader(filename)
    root = r.compose(text)
    out: list[AccountDef] = []
    top = r.mapping(root, "", ("accounts",), ("accounts",)) if root is not None else None
    items = r.sequence(top["accounts"][1], "accounts") if top and "accounts" in top else None
    first_seen: dict[str, Node] = {}
    for i, item in enumerate(items or ()):
        account = _account(r, item, f"accounts[{i}]", first_seen)
        if account is not None:
            out.append(account)
    r.raise_if_issues()
    return out


def load_accounts(path: str | Path) -> list[AccountDef]:
    """Read and parse the accounts file at `path`."""
    return parse_accounts(Path(path).read_text(encoding="utf-8"), str(path))


def _account(r: NodeReader, node: Node, path: str, first_seen: dict[str, Node]) -> AccountDef | None:
    n_issues = len(r.issues)
    f = r.mapping(node, path, ACCOUNT_KEYS, ACCOUNT_REQUIRED)
    if f is None:
        return None
    val = lambda key: f[key][1]  # noqa: E731
    name = r.string(val("name"), f"{path}.name") if "name" in f else None
    if name is not None:
        if not NAME_RE.match(name):
            r.error(val("name"), f"{path}.name", f"invalid account name {name!r}: use lowercase letters, "
                                                 "digits, '_', '.', '-' (starting with a letter or digit)")
        elif name in first_seen:
            r.error(val("name"), f"{path}.name",
                    f"duplicate account name {name!r} (first on line {node_line(first_seen[name])})")
        else:
            first_seen[name] = val("name")
    provider = r.string(val("provider"), f"{path}.provider") if "provider" in f else None
    if provider is not None and provider not in PROVIDERS:
        r.error(val("provider"), f"{path}.provider", f"unknown provider {provider!r} (known: {', '.join(PROVIDERS)})")
        provider = None
    conn_id = r.string(val("conn_id"), f"{path}.conn_id") if "conn_id" in f else None
    user_id = r.string(val("user_id"), f"{path}.user_id") if "user_id" in f else None  # read as written: 1001 -> "1001"
    timezone = r.string(val("timezone"), f"{path}.timezone") if "timezone" in f else "UTC"
    try:
        ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError, OSError):
        r.error(val("timezone"), f"{path}.timezone", f"unknown timezone {timezone!r}")
    window = _send_window(r, val("send_window"), f"{path}.send_window") if "send_window" in f else None
    limits = _limits(r, val("limits"), f"{path}.limits", provider, name) if "limits" in f else {}
    spacing = _ints(r, val("spacing"), f"{path}.spacing", ("min_seconds", "max_seconds"), 0) if "spacing" in f else None
    if spacing and spacing["min_seconds"] > spacing["max_seconds"]:
        r.error(val("spacing"), f"{path}.spacing", "min_seconds must not exceed max_seconds")
    warmup = (_ints(r, val("warmup"), f"{path}.warmup", ("start_per_day", "increase_per_day"), 1)
              if "warmup" in f else None)
    if len(r.issues) > n_issues:
        return None
    return AccountDef(name, provider, conn_id, user_id, timezone, window, limits, spacing, warmup)


def _ints(r: NodeReader, node: Node, path: str, keys: tuple[str, ...], minimum: int) -> dict | None:
    """A mapping of exactly ``keys`` to whole numbers >= ``minimum``."""
    f = r.mapping(node, path, keys, keys)
    if f is None:
        return None
    out = {}
    for k in keys:
        if k not in f:
            continue
        v = f[k][1].value
        if not (isinstance(v, str) and v.isdigit() and int(v) >= minimum):
            r.error(f[k][1], f"{path}.{k}", f"must be a whole number >= {minimum}, got {v!r}")
        else:
            out[k] = int(v)
    return out if len(out) == len(keys) else None


def _minutes(r: NodeReader, node: Node, path: str, allow_24: bool) -> int | None:
    """Minutes since midnight from "HH:MM" (read as written, so unquoted 18:00 is not base-60 1080)."""
    text = r.string(node, path)
    if text is None:
        return None
    m = _TIME_RE.match(text)
    minutes = int(m.group(1)) * 60 + int(m.group(2)) if m and int(m.group(2)) < 60 else None
    if minutes is None or minutes > (1440 if allow_24 else 1439):
        r.error(node, path, f"invalid time {text!r}: use HH:MM between 00:00 and {'24:00' if allow_24 else '23:59'}")
        return None
    return minutes


def _send_window(r: NodeReader, node: Node, path: str) -> dict | None:
    f = r.mapping(node, path, ("days", "start", "end", "holidays"), ("start", "end"))
    if f is None:
        return None
    days = list(DAYS)
    if "days" in f:
        days = []
        for i, d in enumerate(r.sequence(f["days"][1], f"{path}.days") or ()):
            day = r.string(d, f"{path}.days[{i}]")
            if day is None:
                continue
            day = day.lower()
            if day not in DAYS:
                r.error(d, f"{path}.days[{i}]", f"unknown day {day!r} (use {', '.join(DAYS)})")
            elif day in days:
                r.error(d, f"{path}.days[{i}]", f"duplicate day {day!r}")
            else:
                days.append(day)
        if not days and f["days"][1].value == []:
            r.error(f["days"][1], f"{path}.days", "must list at least one day")
    start = _minutes(r, f["start"][1], f"{path}.start", allow_24=False) if "start" in f else None
    end = _minutes(r, f["end"][1], f"{path}.end", allow_24=True) if "end" in f else None
    if start is not None and end is not None and start >= end:
        r.error(f["end"][1], f"{path}.end", "the window must end after it starts (same day)")
    hhmm = lambda m: f"{m // 60:02d}:{m % 60:02d}"  # noqa: E731
    window = {"days": [d for d in DAYS if d in days], "start": hhmm(start or 0), "end": hhmm(end or 0)}
    if "holidays" in f:
        country = r.string(f["holidays"][1], f"{path}.holidays")
        import holidays as _holidays

        if country and country.upper() not in _holidays.list_supported_countries():
            r.error(f["holidays"][1], f"{path}.holidays", f"unknown country code {country!r} (ISO 3166-1, e.g. US, DE)")
        elif country:
            window["holidays"] = country.upper()
    return window


def _limits(r: NodeReader, node: Node, path: str, provider: str | None, account: str | None) -> dict:
    out: dict[str, dict[str, int]] = {}
    for action_type, (knode, vnode) in (r.mapping(node, path) or {}).items():
        apath = f"{path}.{action_type}"
        if action_type not in ACTION_PROVIDERS:
            r.error(knode, apath, f"unknown action type {action_type!r}")
            continue
        owner = ACTION_PROVIDERS[action_type]
        if provider is not None and owner != provider:
            r.error(knode, apath, f"{action_type} is not a {provider} action "
                                  f"({'no provider' if owner is None else owner + ' provider'}); "
                                  f"account {account!r} cannot be limited on it")
        windows = {}
        for key, (wk, wv) in (r.mapping(vnode, apath, LIMIT_KEYS) or {}).items():
            n = r.integer(wv, f"{apath}.{key}")
            if n is not None and n <= 0:
                r.error(wv, f"{apath}.{key}", f"must be a positive integer, got {n}")
            windows[key] = n
        out[action_type] = windows
    return out

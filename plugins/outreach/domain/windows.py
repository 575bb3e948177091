"""Send windows in the lead's timezone (lead -> account -> UTC), across DST changes, optionally skipping
public holidays of a country (the ``holidays`` package). Pure functions.

A window is ``{"days": ["mon", ...], "start": "HH:MM", "end": "HH:MM", "holidays": "US"}``; the end is
exclusive and may be "24:00".
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def zone(*names: str | None) -> ZoneInfo:
    """The first valid timezone among ``names`` (lead, account), else UTC."""
    for n in names:
        if n:
            try:
                return ZoneInfo(n)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


@lru_cache(maxsize=64)
def _holidays(country: str, year: int):
    import holidays

    return holidays.country_holidays(country, years=year)


def _open_day(d: date, window: dict) -> bool:
    if DAYS[d.weekday()] not in window.get("days", DAYS):
        return False
    country = window.get("holidays")
    return not (country and d in _holidays(country, d.year))


def _local(d: date, minutes: int, tz: ZoneInfo) -> datetime:
    """The instant of local wall time ``minutes`` after midnight on ``d``; a wall time that DST skips is moved
    forward by the gap (02:30 on a spring-forward night -> 03:30)."""
    if minutes >= 1440:
        return _local(d + timedelta(days=1), minutes - 1440, tz)
    # zoneinfo reads a wall time in a DST gap with the offset before the change (fold=0), which lands the
    # instant exactly the gap later in wall time; a repeated (autumn) wall time takes its first occurrence
    return datetime.combine(d, time(minutes // 60, minutes % 60), tzinfo=tz).astimezone(timezone.utc)


def is_open(now: datetime, window: dict | None, tz: ZoneInfo) -> bool:
    if not window:
        return True
    local = now.astimezone(tz)
    if not _open_day(local.date(), window):
        return False
    start, end = _local(local.date(), _minutes(window["start"]), tz), _local(local.date(), _minutes(window["end"]), tz)
    return start <= now < end


def next_open(now: datetime, window: dict | None, tz: ZoneInfo, horizon_days: int = 400) -> datetime:
    """``now`` if the window is open, else the next instant it opens."""
    if is_open(now, window, tz):
        return now
    d = now.astimezone(tz).date()
    for i in range(horizon_days):
        day = d + timedelta(days=i)
        if not _open_day(day, window):
            continue
        start = _local(day, _minutes(window["start"]), tz)
        end = _local(day, _minutes(window["end"]), tz)
        if start >= now:
            return start
        if start <= now < end:
            return now
    raise ValueError(f"send window {window} never opens within {horizon_days} days")

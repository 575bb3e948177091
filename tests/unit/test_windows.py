"""Send windows: lead's timezone, DST changes (Europe/Berlin, America/New_York), the date line, holidays."""
from datetime import datetime, timezone

import pytest

from outreach.domain.windows import is_open, next_open, zone

WEEKDAYS = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}
UTC = timezone.utc


def u(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def test_falls_back_lead_then_account_then_utc():
    assert zone("Europe/Berlin", "America/New_York").key == "Europe/Berlin"
    assert zone(None, "America/New_York").key == "America/New_York"
    assert zone("Not/AZone", None).key == "UTC"


@pytest.mark.parametrize("tzname,before,after", [
    # Europe/Berlin springs forward on 2026-03-29 (UTC+1 -> UTC+2), falls back on 2026-10-25 (UTC+2 -> UTC+1)
    ("Europe/Berlin", ("2026-03-27 08:00", "2026-03-27 16:00"), ("2026-03-30 07:00", "2026-03-30 15:00")),
    ("Europe/Berlin", ("2026-10-23 07:00", "2026-10-23 15:00"), ("2026-10-26 08:00", "2026-10-26 16:00")),
    # America/New_York: 2026-03-08 (UTC-5 -> UTC-4) and 2026-11-01 (UTC-4 -> UTC-5)
    ("America/New_York", ("2026-03-06 14:00", "2026-03-06 22:00"), ("2026-03-09 13:00", "2026-03-09 21:00")),
    ("America/New_York", ("2026-10-30 13:00", "2026-10-30 21:00"), ("2026-11-02 14:00", "2026-11-02 22:00")),
])
def test_window_opens_at_local_nine_across_dst(tzname, before, after):
    tz = zone(tzname)
    for open_utc, close_utc in (before, after):
        o, c = u(open_utc), u(close_utc)
        assert is_open(o, WEEKDAYS, tz) and not is_open(c, WEEKDAYS, tz)
        assert next_open(c, WEEKDAYS, tz) > c
    # from the Friday close, the next opening is Monday 09:00 local, whatever the offset change in between
    assert next_open(u(before[1]), WEEKDAYS, tz) == u(after[0])


def test_wall_time_skipped_by_dst_moves_forward():
    tz = zone("Europe/Berlin")
    w = {"days": ["sun"], "start": "02:30", "end": "05:00"}  # 02:30 does not exist on 2026-03-29
    assert next_open(u("2026-03-29 00:00"), w, tz) == u("2026-03-29 01:30")  # 03:30 CEST


def test_window_across_the_date_line():
    tz = zone("Pacific/Auckland")  # UTC+13 in January: Monday 09:00 local is Sunday 20:00 UTC
    assert not is_open(u("2026-01-11 19:59"), WEEKDAYS, tz)
    assert is_open(u("2026-01-11 20:00"), WEEKDAYS, tz)
    assert next_open(u("2026-01-10 12:00"), WEEKDAYS, tz) == u("2026-01-11 20:00")
    # Friday 17:00 local (Friday 04:00 UTC) closes; Saturday local is still Friday in UTC
    assert not is_open(u("2026-01-16 04:00"), WEEKDAYS, tz)
    assert next_open(u("2026-01-16 04:00"), WEEKDAYS, tz) == u("2026-01-18 20:00")


def test_public_holidays_are_skipped():
    w = {**WEEKDAYS, "holidays": "US"}
    tz = zone("America/New_York")
    # 2026-01-01 (Thursday) is New Year's Day
    assert not is_open(u("2026-01-01 15:00"), w, tz)
    assert next_open(u("2026-01-01 15:00"), w, tz) == u("2026-01-02 14:00")
    assert is_open(u("2026-01-01 15:00"), WEEKDAYS, tz)


def test_no_window_is_always_open():
    assert is_open(u("2026-01-03 03:00"), None, zone(None))
    assert next_open(u("2026-01-03 03:00"), None, zone(None)) == u("2026-01-03 03:00")

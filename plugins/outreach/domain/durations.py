"""Duration parsing for sequence delays (`after:`, `within:`).

Accepted forms, all returning whole seconds:

* a non-negative integer (or a string of digits): seconds, e.g. ``90`` or ``"90"``;
* unit shorthand, optionally combined: ``"45s"``, ``"30m"``, ``"6h"``, ``"2d"``, ``"1w"``, ``"1d12h"``;
* ISO 8601 durations with weeks, days, hours, minutes, seconds: ``"P2D"``, ``"PT6H"``, ``"P1DT2H30M"``.
"""
from __future__ import annotations

import re

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SHORTHAND = re.compile(r"(?:\d+[smhdw])+", re.ASCII)
_SHORTHAND_PART = re.compile(r"(\d+)([smhdw])", re.ASCII)
# P must be followed by something; T must be followed by at least one time component.
_ISO = re.compile(
    r"P(?!$)(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?",
    re.ASCII,
)
_HELP = "use e.g. '45s', '30m', '6h', '2d', '1w', '1d12h', a number of seconds, or ISO 8601 like 'P1DT2H30M'"


def parse_duration(value: int | str) -> int:
    """Return `value` as a number of seconds; raise ValueError if it is invalid or negative."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"invalid duration {value!r}: {_HELP}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return value
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"duration must not be negative, got {value!r}")
    if re.fullmatch(r"\d+", text, re.ASCII):
        return int(text)
    compact = re.sub(r"\s+", "", text).lower()
    if _SHORTHAND.fullmatch(compact):
        return sum(int(n) * _UNIT_SECONDS[u] for n, u in _SHORTHAND_PART.findall(compact))
    iso = _ISO.fullmatch(text.upper())
    if iso:
        return sum(int(iso.group(u) or 0) * _UNIT_SECONDS[u] for u in "wdhms")
    if text.upper().startswith("P"):
        raise ValueError(
            f"invalid ISO 8601 duration {value!r}: only weeks, days, hours, minutes and whole seconds "
            f"are supported (no years, months or fractions)"
        )
    raise ValueError(f"invalid duration {value!r}: {_HELP}")

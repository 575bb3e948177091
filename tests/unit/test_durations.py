"""parse_duration: shorthand, integers and ISO 8601, and clear errors."""
import pytest

from outreach.domain.durations import parse_duration


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("45s", 45),
        ("30m", 1800),
        ("6h", 21600),
        ("2d", 172800),
        ("1w", 604800),
        ("1d12h", 129600),
        ("1h30m15s", 5415),
        ("1D", 86400),
        (" 2d ", 172800),
        ("0s", 0),
        (0, 0),
        (3600, 3600),
        ("3600", 3600),
        ("P2D", 172800),
        ("PT6H", 21600),
        ("P1DT2H30M", 95400),
        ("PT45S", 45),
        ("P1W", 604800),
        ("pt1m", 60),
    ],
)
def test_valid(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["-2d", -5, "-30", " -1h"])
def test_negative_rejected(value):
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["", "2x", "d2", "2 days", "1.5h", "P", "PT", "P1DT", "abc", "2d-1h"])
def test_invalid_rejected(value):
    with pytest.raises(ValueError, match="invalid"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["P1Y", "P2M", "PT1.5H"])
def test_iso_years_months_fractions_rejected(value):
    with pytest.raises(ValueError, match="ISO 8601.*no years, months or fractions"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, 1.5, None, [1]])
def test_wrong_type_rejected(value):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)

"""Reading the times people type, in their own time zone."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import pytest

from bot.timeparse import TimeParseError, parse_timezone, parse_when

BERLIN = parse_timezone("Europe/Berlin")
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=BERLIN)  # a Sunday


@pytest.mark.parametrize("text, expected", [
    ("tomorrow 18:30", datetime(2026, 11, 23, 18, 30)),
    ("Fri 8am", datetime(2026, 11, 27, 8, 0)),
    ("2026-12-03 19:00", datetime(2026, 12, 3, 19, 0)),
    ("3 Dec 7pm", datetime(2026, 12, 3, 19, 0)),
    ("December 3rd 19.00", datetime(2026, 12, 3, 19, 0)),
    ("tonight", datetime(2026, 11, 22, 19, 0)),
    ("18:30", datetime(2026, 11, 22, 18, 30)),
    ("9:00", datetime(2026, 11, 23, 9, 0)),  # already past today: the next one
    ("monday at 8.30", datetime(2026, 11, 23, 8, 30)),
    ("7:15pm tomorrow", datetime(2026, 11, 23, 19, 15)),
    ("in 3 days", datetime(2026, 11, 25, 10, 0)),
    ("TOMORROW 6PM", datetime(2026, 11, 23, 18, 0)),
])
def test_understood_formats(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW) == expected.replace(tzinfo=BERLIN)


def test_times_are_in_the_users_zone() -> None:
    ny = parse_timezone("america/new_york")
    when = parse_when("tomorrow 18:30", datetime(2026, 11, 22, 10, 0, tzinfo=ny))
    assert when.astimezone(timezone.utc) == datetime(2026, 11, 23, 23, 30, tzinfo=timezone.utc)


def test_daylight_saving_is_respected() -> None:
    before_switch = datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN)  # clocks go forward on the 29th
    when = parse_when("tomorrow 18:00", before_switch)
    assert when.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize("text, message", [
    ("blah", "couldn't read 'blah'"),
    ("25:00", "couldn't read"),
    ("tomorrow", "What time?"),
    ("", "Please type a date and time"),
    ("31 Feb 10:00", "couldn't read"),
])
def test_clear_errors(text: str, message: str) -> None:
    with pytest.raises(TimeParseError, match=message):
        parse_when(text, NOW)


def test_default_time_fills_a_bare_date() -> None:
    assert parse_when("next tuesday", NOW, default_time=time(10, 0)) == datetime(2026, 11, 24, 10, 0, tzinfo=BERLIN)


def test_time_zones() -> None:
    assert str(parse_timezone("UTC+5:30")) == "UTC+05:30"
    assert parse_timezone("utc") is timezone.utc
    assert parse_timezone("Europe/London").key == "Europe/London"
    with pytest.raises(TimeParseError, match="Europe/London"):
        parse_timezone("Mars/Olympus")
    with pytest.raises(TimeParseError):
        parse_timezone("UTC+19")

"""Understanding the times people type: "tomorrow 18:30", "Fri 8am", "2026-12-03 19:00".

Deliberately small and predictable rather than clever: a date part (optional) and a time part
(optional), each from a short list of shapes, interpreted in the user's own time zone. Anything
else gets a clear error that shows the shapes we understand.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

EXAMPLES = '"tomorrow 18:30", "Fri 8am", "3 Dec 19:00" or "2026-12-03 19:00"'

WEEKDAYS = {
    name: i
    for i, names in enumerate(
        [("mon", "monday"), ("tue", "tues", "tuesday"), ("wed", "weds", "wednesday"), ("thu", "thur", "thurs", "thursday"),
         ("fri", "friday"), ("sat", "saturday"), ("sun", "sunday")]
    )
    for name in names
}
MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",), ("jun", "june"),
         ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
         ("dec", "december")]
    )
    for name in names
}
_TIME_RE = re.compile(r"^(?P<h>\d{1,2})(?:[:.h](?P<m>\d{2}))?\s*(?P<ampm>am|pm|a\.m\.|p\.m\.)?$")
_NAMED_TIMES = {"noon": time(12, 0), "midday": time(12, 0), "midnight": time(0, 0), "morning": time(9, 0),
                "lunchtime": time(12, 30), "evening": time(18, 30), "tonight": time(19, 0)}


class TimeParseError(ValueError):
    """The text could not be read as a date/time; the message says what would work."""


def parse_timezone(text: str) -> tzinfo:
    """An IANA name ("Europe/Berlin", any case) or a fixed offset ("UTC", "UTC+2", "GMT-5:30")."""
    raw = text.strip()
    m = re.fullmatch(r"(?i)(?:utc|gmt)\s*(?:(?P<sign>[+-])\s*(?P<h>\d{1,2})(?::?(?P<m>\d{2}))?)?", raw)
    if m:
        if not m.group("sign"):
            return timezone.utc
        hours, minutes = int(m.group("h")), int(m.group("m") or 0)
        if hours > 14 or minutes >= 60:
            raise TimeParseError(f"{raw!r} is not a valid UTC offset.")
        offset = timedelta(hours=hours, minutes=minutes) * (1 if m.group("sign") == "+" else -1)
        return timezone(offset, f"UTC{m.group('sign')}{hours:02d}:{minutes:02d}")
    candidate = raw.replace(" ", "_")
    names = _zone_names()
    name = names.get(candidate.lower())
    if name is None:
        raise TimeParseError(f"I don't know the time zone {raw!r}. Try a name like Europe/London or an offset like UTC+2.")
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:  # pragma: no cover - listed but not loadable
        raise TimeParseError(f"I don't know the time zone {raw!r}.") from None


_ZONES: dict[str, str] = {}


def _zone_names() -> dict[str, str]:
    if not _ZONES:
        _ZONES.update({n.lower(): n for n in available_timezones()})
    return _ZONES


def zone_name(tz: tzinfo) -> str:
    return getattr(tz, "key", None) or str(tz)


def parse_when(text: str, now: datetime, default_time: time | None = None) -> datetime:
    """Read ``text`` as a moment in ``now``'s time zone (``now`` must be timezone-aware).

    Without a date, the next occurrence of the time is meant; without a time, ``default_time``
    (if given). Past moments are returned as they are: the caller decides whether that is allowed.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    raw = " ".join(text.strip().lower().replace(",", " ").split())
    if not raw:
        raise TimeParseError(f"Please type a date and time, like {EXAMPLES}.")

    relative = re.fullmatch(r"in (\d+) (minute|min|hour|day|week)s?", raw)
    if relative:
        n, unit = int(relative.group(1)), relative.group(2)
        delta = {"minute": timedelta(minutes=n), "min": timedelta(minutes=n), "hour": timedelta(hours=n),
                 "day": timedelta(days=n), "week": timedelta(weeks=n)}[unit]
        return now + delta

    words = raw.split()
    day, rest = _take_date(words, now)
    clock = _parse_time(" ".join(rest)) if rest else None
    if rest and clock is None:
        raise TimeParseError(f"I couldn't read {text.strip()!r} as a date and time. Try {EXAMPLES}.")
    if clock is None and "tonight" in words:
        clock = _NAMED_TIMES["tonight"]
    if clock is None:
        if day is None:
            raise TimeParseError(f"I couldn't read {text.strip()!r} as a date and time. Try {EXAMPLES}.")
        if default_time is None:
            raise TimeParseError(f"What time? For example {day:%a %d %b} 18:30.")
        clock = default_time
    if day is None:
        candidate = _at(now, now.date(), clock)
        return candidate if candidate > now else _at(now, now.date() + timedelta(days=1), clock)
    return _at(now, day, clock)


def _at(now: datetime, day: date, clock: time) -> datetime:
    return datetime.combine(day, clock, tzinfo=now.tzinfo)


def _take_date(words: list[str], now: datetime) -> tuple[date | None, list[str]]:
    """Consume a leading (or trailing) date expression; return the date and the words left."""
    today = now.date()
    for take_from_end in (False, True):
        seq = list(reversed(words)) if take_from_end else list(words)
        for length in (3, 2, 1):
            if len(seq) < length:
                continue
            chunk = seq[:length]
            if take_from_end:
                chunk = list(reversed(chunk))
            parsed = _parse_date(chunk, today)
            if parsed is not None:
                remaining = words[:-length] if take_from_end else words[length:]
                return parsed, remaining
    return None, words


def _parse_date(chunk: list[str], today: date) -> date | None:
    text = " ".join(chunk)
    if text in ("today", "tonight"):
        return today
    if text == "tomorrow":
        return today + timedelta(days=1)
    if text == "yesterday":
        return today - timedelta(days=1)
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", text)
    if m:
        return _safe_date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    m = re.fullmatch(r"(?:next )?([a-z]+)", text)
    if m and m.group(1) in WEEKDAYS:
        ahead = (WEEKDAYS[m.group(1)] - today.weekday()) % 7
        if ahead == 0 or text.startswith("next "):
            ahead = ahead or 7
        return today + timedelta(days=ahead)
    m = re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)? ([a-z]+)(?: (\d{4}))?", text) or None
    if m and m.group(2) in MONTHS:
        return _upcoming(today, MONTHS[m.group(2)], int(m.group(1)), m.group(3))
    m = re.fullmatch(r"([a-z]+) (\d{1,2})(?:st|nd|rd|th)?(?: (\d{4}))?", text)
    if m and m.group(1) in MONTHS:
        return _upcoming(today, MONTHS[m.group(1)], int(m.group(2)), m.group(3))
    return None


def _upcoming(today: date, month: int, day: int, year: str | None) -> date | None:
    if year:
        return _safe_date(int(year), month, day)
    this_year = _safe_date(today.year, month, day)
    if this_year is not None and this_year >= today - timedelta(days=31):
        return this_year  # recent past dates stay in this year, so "yesterday's event" works
    return _safe_date(today.year + 1, month, day)


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _parse_time(text: str) -> time | None:
    text = text.strip().removeprefix("at ").strip()
    if text in _NAMED_TIMES:
        return _NAMED_TIMES[text]
    m = _TIME_RE.fullmatch(text)
    if not m:
        return None
    hour, minute = int(m.group("h")), int(m.group("m") or 0)
    ampm = (m.group("ampm") or "").replace(".", "")
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    return time(hour, minute)

"""Real events, the people met there, and the prompts around them (prep, reflection, reminders).

The coaching loop after practice: register an event -> a short prep message before it -> a
guided reflection after it -> each person met becomes a contact -> a keep-in-touch reminder on
the agreed day. Everything is stored per user; the timing lives in :mod:`bot.schedule`.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Callable

from bot.config import Timing
from bot.reflection import Reflection, ReflectionResult, reminder_suggestion, score_reflection, short_name
from bot.scenarios import Scenario, ScenarioLibrary
from bot.schedule import Scheduler
from bot.scoring import OfflineScorer
from bot.store import Store
from bot.timeparse import MONTHS, WEEKDAYS, TimeParseError, parse_timezone, parse_when, zone_name

EVENTS = "events"
CONTACTS = "contacts"
PROFILE = "profile"


class EventError(ValueError):
    """A request about events that cannot be done; the message is meant for the user."""


@dataclass
class Event:
    id: str
    name: str
    starts_at: str  # ISO, UTC
    ends_at: str
    tz: str
    hope: str = ""
    status: str = "upcoming"  # upcoming | cancelled
    created_at: str = ""
    reflection: dict[str, Any] | None = None  # answers and result once reflected

    def start(self, tz: tzinfo | None = None) -> datetime:
        return datetime.fromisoformat(self.starts_at).astimezone(tz or parse_timezone(self.tz))

    def end(self, tz: tzinfo | None = None) -> datetime:
        return datetime.fromisoformat(self.ends_at).astimezone(tz or parse_timezone(self.tz))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Contact:
    id: str
    name: str
    event_id: str
    event_name: str
    learned: str = ""
    followup: str = ""
    followup_due: str = ""  # ISO, UTC
    status: str = "active"  # active | done | dropped
    created_at: str = ""
    reminders: int = 0
    history: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventBook:
    """Events, reflections and contacts for users, over the store and the scheduler."""

    def __init__(self, store: Store, scheduler: Scheduler, library: ScenarioLibrary, scorer: OfflineScorer,
                 timing: Timing = Timing(), clock: Callable[[], datetime] | None = None):
        self.store = store
        self.scheduler = scheduler
        self.library = library
        self.scorer = scorer
        self.timing = timing
        self.clock = clock or scheduler.clock

    def now(self) -> datetime:
        return self.clock()

    # -- time zone ------------------------------------------------------------------------------

    def timezone_of(self, user_id: str) -> tzinfo | None:
        name = (self.store.get(user_id, PROFILE, PROFILE) or {}).get("tz")
        return parse_timezone(name) if name else None

    def set_timezone(self, user_id: str, text: str) -> tzinfo:
        tz = parse_timezone(text)  # raises TimeParseError with a helpful message
        self.store.update(user_id, PROFILE, PROFILE, lambda p: {**(p or {}), "tz": zone_name(tz)})
        return tz

    # -- events ---------------------------------------------------------------------------------

    def parse_start(self, user_id: str, text: str) -> datetime:
        """The user's typed time as an aware datetime in their zone; refuses past times."""
        tz = self.timezone_of(user_id) or timezone.utc
        now = self.now().astimezone(tz)
        when = parse_when(text, now)
        if when <= now:
            raise TimeParseError(f"{when:%a %d %b %H:%M} is in the past. When is the event?")
        return when

    def register(self, user_id: str, name: str, start: datetime, hope: str = "",
                 end: datetime | None = None) -> Event:
        name = " ".join(name.split())[:120]
        if not name:
            raise EventError("The event needs a name.")
        if start <= self.now():
            raise EventError("That time is in the past.")
        tz = start.tzinfo or timezone.utc
        end = end or start + timedelta(hours=self.timing.default_duration_hours)
        event = Event(
            id=secrets.token_hex(4), name=name, starts_at=_utc(start), ends_at=_utc(end), tz=zone_name(tz),
            hope=" ".join(hope.split())[:300], created_at=_utc(self.now()),
        )
        self.store.put(user_id, EVENTS, event.id, event.to_dict())
        prep = self.prep_time(event)
        if prep is not None:
            self.scheduler.schedule(user_id, "prep", event.id, prep)
        self.scheduler.schedule(user_id, "reflect", event.id, self.reflect_time(event))
        return event

    def add_past(self, user_id: str, name: str) -> Event:
        """An event the user went to without registering it, so they can still reflect on it."""
        now = self.now()
        tz = self.timezone_of(user_id) or timezone.utc
        event = Event(id=secrets.token_hex(4), name=" ".join(name.split())[:120] or "an event",
                      starts_at=_utc(now - timedelta(hours=2)), ends_at=_utc(now), tz=zone_name(tz),
                      created_at=_utc(now))
        self.store.put(user_id, EVENTS, event.id, event.to_dict())
        return event

    def prep_time(self, event: Event) -> datetime | None:
        """The evening before; for a same-day event (or if that evening has passed), a little before."""
        start = event.start()
        now = self.now().astimezone(start.tzinfo)
        evening = datetime.combine(start.date() - timedelta(days=1), self.timing.prep_evening_at, tzinfo=start.tzinfo)
        if evening > now and start.date() != now.date():
            return evening
        shortly = start - timedelta(hours=self.timing.prep_same_day_hours)
        if shortly > now:
            return shortly
        return None if start - now < timedelta(minutes=30) else now  # still time to glance at it

    def reflect_time(self, event: Event) -> datetime:
        return event.end() + timedelta(hours=self.timing.reflect_after_hours)

    def get(self, user_id: str, event_id: str) -> Event | None:
        data = self.store.get(user_id, EVENTS, event_id)
        return Event(**data) if data else None

    def all(self, user_id: str) -> list[Event]:
        return sorted((Event(**d) for d in self.store.all(user_id, EVENTS)), key=lambda e: e.starts_at)

    def upcoming(self, user_id: str) -> list[Event]:
        now = self.now()
        return [e for e in self.all(user_id) if e.status == "upcoming" and e.end() > now]

    def awaiting_reflection(self, user_id: str) -> list[Event]:
        now = self.now()
        return [e for e in self.all(user_id) if e.status == "upcoming" and e.start() <= now and e.reflection is None]

    def cancel(self, user_id: str, event_id: str) -> Event | None:
        event = self.get(user_id, event_id)
        if event is None or event.status != "upcoming":
            return None
        event.status = "cancelled"
        self.store.put(user_id, EVENTS, event.id, event.to_dict())
        for kind in ("prep", "reflect"):
            self.scheduler.cancel(user_id, kind, event.id)
        return event

    def matching_scenario(self, event: Event) -> Scenario:
        """The practice scenario whose words best match the event's name and hopes."""
        words = {w for w in f"{event.name} {event.hope}".lower().replace("-", " ").split() if len(w) > 3}

        def overlap(s: Scenario) -> int:
            text = f"{s.id.replace('-', ' ')} {s.title} {s.setting} {' '.join(s.tags)}".lower()
            return sum(1 for w in words if w in text)

        scenarios = self.library.all()
        best = max(scenarios, key=lambda s: (overlap(s), s.difficulty == "easy"))
        return best

    # -- reflection -----------------------------------------------------------------------------

    def finish_reflection(self, user_id: str, reflection: Reflection) -> ReflectionResult:
        """Score the reflection, keep it with the event, and turn each person into a contact."""
        event = self.get(user_id, reflection.event_id)
        if event is None:
            raise EventError("That event no longer exists.")
        result = score_reflection(reflection)
        event.reflection = {"answers": reflection.to_dict(), "result": result.to_dict(), "at": _utc(self.now())}
        self.store.put(user_id, EVENTS, event.id, event.to_dict())
        self.scheduler.cancel(user_id, "reflect", event.id)
        for person in reflection.people:
            self._add_contact(user_id, event, person, reflection.learned.get(person, ""),
                              reflection.followup.get(person, ""))
        return result

    def _add_contact(self, user_id: str, event: Event, person: str, learned: str, followup: str) -> Contact:
        tz = parse_timezone(event.tz)
        due = self._followup_due(event, followup, tz)
        contact = Contact(id=secrets.token_hex(4), name=person, event_id=event.id, event_name=event.name,
                          learned=learned, followup=followup, followup_due=_utc(due), created_at=_utc(self.now()))
        self.store.put(user_id, CONTACTS, contact.id, contact.to_dict())
        self.scheduler.schedule(user_id, "reminder", contact.id, due)
        return contact

    def _followup_due(self, event: Event, followup: str, tz: tzinfo) -> datetime:
        now = self.now().astimezone(tz)
        if followup:
            for candidate in _date_phrases(followup):
                try:
                    when = parse_when(candidate, now, default_time=self.timing.reminder_at)
                except TimeParseError:
                    continue
                if when > now:
                    return when
        default_day = max(event.end(tz), now).date() + timedelta(days=self.timing.reminder_default_days)
        return datetime.combine(default_day, self.timing.reminder_at, tzinfo=tz)

    # -- contacts -------------------------------------------------------------------------------

    def contacts(self, user_id: str, active_only: bool = True) -> list[Contact]:
        contacts = [Contact(**d) for d in self.store.all(user_id, CONTACTS)]
        contacts = [c for c in contacts if c.status == "active" or not active_only]
        return sorted(contacts, key=lambda c: c.followup_due)

    def contact(self, user_id: str, contact_id: str) -> Contact | None:
        data = self.store.get(user_id, CONTACTS, contact_id)
        return Contact(**data) if data else None

    def suggestion(self, contact: Contact) -> str:
        return reminder_suggestion(short_name(contact.name), contact.learned, contact.followup, contact.event_name)

    def contact_action(self, user_id: str, contact_id: str, action: str) -> Contact | None:
        """done / snooze / drop from a reminder's buttons; None if the contact is gone or settled."""
        contact = self.contact(user_id, contact_id)
        if contact is None or contact.status != "active":
            return None
        now = self.now()
        contact.history.append(f"{_utc(now)} {action}")
        if action == "snooze":
            tz = parse_timezone(self._event_tz(user_id, contact))
            day = now.astimezone(tz).date() + timedelta(days=self.timing.snooze_days)
            due = datetime.combine(day, self.timing.reminder_at, tzinfo=tz)
            contact.followup_due = _utc(due)
            self.store.put(user_id, CONTACTS, contact.id, contact.to_dict())
            self.scheduler.schedule(user_id, "reminder", contact.id, due, again=True)
            return contact
        contact.status = "done" if action == "done" else "dropped"
        self.store.put(user_id, CONTACTS, contact.id, contact.to_dict())
        self.scheduler.cancel(user_id, "reminder", contact.id)
        return contact

    def _event_tz(self, user_id: str, contact: Contact) -> str:
        event = self.get(user_id, contact.event_id)
        return event.tz if event else "UTC"


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


_DATE_WORDS = {*WEEKDAYS, *MONTHS, "today", "tomorrow", "tonight", "in", "next"}


def _date_phrases(text: str) -> list[str]:
    """Candidate date phrases inside a free-text follow-up ("coffee next Tuesday at 9"), longest
    first; a phrase must name a day, so "send her 3 slides" is not read as 3 o'clock."""
    words = text.lower().replace(",", " ").replace(".", " ").replace("?", " ").split()
    phrases = []
    for size in (4, 3, 2, 1):
        for i in range(len(words) - size + 1):
            chunk = words[i:i + size]
            if any(w in _DATE_WORDS or w[:4].isdigit() for w in chunk):
                phrases.append(" ".join(chunk))
    return phrases

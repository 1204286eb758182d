"""The post-event reflection: guided questions, then a score through the same lens as practice.

:class:`Reflection` is a small state machine a front end drives: ask :meth:`Reflection.question`,
feed the answer to :meth:`Reflection.answer` (or :meth:`Reflection.skip`), until ``done``. It is
plain data (``to_dict``/``from_dict``) so a half-finished reflection survives a restart.

:func:`score_reflection` reads the answers: how much the user learned about the people they met
(their interests, insights and issues) versus told them about themselves, whether they gave before
asking, and whether a reason to keep in touch exists.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.scoring import verdict_for
from bot.templates import render_html_string, wording

MAX_PEOPLE = 5
STEPS = ("who", "learned", "followup", "offered", "balance")
WEIGHTS = {"learned": 40, "balance": 20, "gave": 20, "followup": 20}
PITCH_PENALTY = 10  # per sentence in the answers that reads as a pitch ("I told them about our product")
BALANCE = {"them": 1.0, "even": 0.5, "me": 0.0}


def _cues() -> dict[str, list[str]]:
    return wording("reflection.toml")["cues"]


def is_nothing(text: str) -> bool:
    cleaned = re.sub(r"[^\w/ -]", "", text.strip().lower()).strip()
    return not cleaned or cleaned in _cues()["none"]


def split_people(text: str) -> list[str]:
    """"Sam (data lead), Priya" -> ["Sam (data lead)", "Priya"]; commas inside brackets are kept."""
    parts, depth, current = [], 0, ""
    for ch in text.replace(" and ", ",").replace(";", ","):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        if (ch in ",\n") and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    people = [re.sub(r"\s+", " ", p).strip(" .-•*") for p in parts]
    return [p[:80] for p in people if p and not is_nothing(p)][:MAX_PEOPLE]


def short_name(person: str) -> str:
    """The name part of "Sam (data lead at Acme)" or "Sam - data lead"."""
    return re.split(r"[(\-–,:]", person, maxsplit=1)[0].strip() or person


@dataclass
class Reflection:
    event_id: str
    event_name: str
    step: str = "who"
    index: int = 0  # which person, for the per-person steps
    people: list[str] = field(default_factory=list)
    learned: dict[str, str] = field(default_factory=dict)
    followup: dict[str, str] = field(default_factory=dict)
    offered: str = ""
    balance: str = ""  # them | even | me | "" (skipped)

    @property
    def done(self) -> bool:
        return self.step == "done"

    @property
    def person(self) -> str:
        return self.people[self.index] if self.people else ""

    def question(self) -> tuple[str, str]:
        """(key, text): the key says which step, so a front end can offer the right buttons."""
        text = wording("reflection.toml")["questions"][self.step]
        return self.step, render_html_string(text, event=self.event_name, person=short_name(self.person))

    def answer(self, text: str) -> None:
        text = text.strip()[:2000]
        if self.step == "who":
            self.people = split_people(text)
        elif self.step == "learned":
            self.learned[self.person] = "" if is_nothing(text) else text
        elif self.step == "followup":
            self.followup[self.person] = "" if is_nothing(text) else text
        elif self.step == "offered":
            self.offered = "" if is_nothing(text) else text
        elif self.step == "balance":
            words = set(re.findall(r"[a-z]+", text.lower()))
            if words & {"even", "both", "equal", "equally", "half", "balanced"}:
                self.balance = "even"
            elif words & {"them", "they", "theirs", "listened"}:
                self.balance = "them"
            elif words & {"me", "myself", "mine", "i"}:
                self.balance = "me"
            else:
                self.balance = ""
        self._advance()

    def skip(self) -> None:
        self._advance()

    def _advance(self) -> None:
        if self.step in ("learned", "followup") and self.index + 1 < len(self.people):
            self.index += 1
            return
        self.index = 0
        order = list(STEPS)
        nxt = order.index(self.step) + 1 if self.step in order else len(order)
        if self.step == "who" and not self.people:
            nxt = order.index("offered")  # nobody to ask about
        self.step = order[nxt] if nxt < len(order) else "done"
        if self.step == "followup" and not self.people:
            self.step = "offered"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Reflection":
        return cls(**data)


@dataclass(frozen=True)
class PersonLearned:
    person: str
    kinds: tuple[str, ...]  # which of interests / insights / issues the notes touch
    words: int
    followup: str


@dataclass(frozen=True)
class ReflectionResult:
    score: int
    verdict: str
    people: tuple[PersonLearned, ...]
    gave_first: bool
    pitches: tuple[str, ...]  # the user's own sentences that read as pitching
    went_well: tuple[str, ...]
    try_next: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _has(text: str, cues: list[str]) -> bool:
    lowered = f" {text.lower()} "
    return any(c in lowered for c in cues)


def kinds_in(text: str) -> tuple[str, ...]:
    lowered = f" {text.lower()} "
    cues = _cues()
    return tuple(k for k in ("interests", "insights", "issues") if any(c in lowered for c in cues[k]))


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def score_reflection(r: Reflection) -> ReflectionResult:
    # Answers are reported speech ("I offered to introduce her"), so they are read with cue
    # lists for giving versus telling/selling rather than with the turn scorer. A sentence about
    # what the user told or sold is neither learning nor a reason to keep in touch.
    cues = _cues()
    pitches = [s for text in [*r.learned.values(), *r.followup.values(), r.offered] for s in sentences(text)
               if _has(s, cues["told"])]

    def about_them(text: str) -> str:
        return " ".join(s for s in sentences(text) if not _has(s, cues["told"]))

    people = tuple(
        PersonLearned(p, kinds_in(about_them(r.learned.get(p, ""))), len(about_them(r.learned.get(p, "")).split()),
                      about_them(r.followup.get(p, "")))
        for p in r.people
    )
    if people:
        learned = sum(min(1.0, pl.words / 12) * 0.5 + 0.5 * len(pl.kinds) / 3 for pl in people) / len(people)
        followups = sum(1 for pl in people if pl.followup) / len(people)
    else:
        learned = followups = 0.0
    gave_first = bool(r.offered) and _has(r.offered, cues["gave"]) and not _has(r.offered, cues["told"])
    gave = 1.0 if gave_first else 0.0
    balance = BALANCE.get(r.balance, 0.5)

    raw = (WEIGHTS["learned"] * learned + WEIGHTS["balance"] * balance + WEIGHTS["gave"] * gave
           + WEIGHTS["followup"] * followups)
    score = max(0, min(100, round(raw) - PITCH_PENALTY * len(pitches)))

    text = wording("reflection.toml")["result"]
    names = [short_name(p.person) for p in people]
    issue_person = next((short_name(p.person) for p in people if "issues" in p.kinds), None)
    well = []
    if learned >= 0.5:
        well.append(render_html_string(text["went_well_learned"], people=", ".join(names)))
    if issue_person:
        well.append(render_html_string(text["went_well_issue"], person=issue_person))
    if gave_first:
        well.append(render_html_string(text["went_well_gave"], offered=r.offered[:200]))
    if people and followups > 0:
        well.append(render_html_string(text["went_well_followups"], n=sum(1 for p in people if p.followup),
                                       total=len(people)))
    if r.balance == "them":
        well.append(render_html_string(text["went_well_listened"]))
    if not well:
        well.append(render_html_string(text["went_well_showed_up"]))

    if r.balance == "me" or pitches:
        key = "try_listen"
    elif learned < 0.5:
        key = "try_learn_more"
    elif not issue_person:
        key = "try_issues"
    elif not gave_first:
        key = "try_give"
    elif followups < 1:
        key = "try_followup"
    else:
        key = "try_keep_going"
    return ReflectionResult(score, verdict_for(score), people, gave_first, tuple(pitches), tuple(well[:3]),
                            render_html_string(text[key]))


def reminder_suggestion(name: str, learned: str, followup: str, event: str) -> str:
    """What to do for the keep-in-touch reminder, grounded in what the user learned."""
    text = wording("reflection.toml")["reminder"]
    facts = sentences(learned)
    cues = _cues()
    issue = next((s for s in facts if any(c in f" {s.lower()} " for c in cues["issues"])), None)
    interest = next((s for s in facts if any(c in f" {s.lower()} " for c in cues["interests"])), None)
    if issue:
        line = render_html_string(text["issue"], name=name, fact=issue[:200])
    elif interest:
        line = render_html_string(text["interest"], name=name, fact=interest[:200])
    else:
        line = render_html_string(text["plain"], name=name, event=event)
    if followup:
        line += "\n" + render_html_string(text["agreed"], followup=followup[:200])
    return line

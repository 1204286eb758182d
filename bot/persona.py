"""Personas: the person the user practises with, and the offline engine that plays them.

The persona's warmth is one number, ``engagement`` (0-100), that starts at the scenario's
``openness``. Curiosity about them raises it, pitching and prospecting lower it, and at zero they
excuse themselves. Their issues (the challenges a good networker could later help with) come out
only once the user has earned trust: a few other-focused turns and a warm mood.

:func:`update_engagement` is shared by every persona engine (offline here, the LLM one later), so
the persona's mood follows the same rules whichever engine writes the words. All wording comes
from the scenario file or ``prompts/offline_persona.toml``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, Sequence

from bot.scenarios import Scenario, Topic
from bot.scoring import Turn, TurnScore
from bot.templates import render_string, wording

WARM_AT = 70
COOL_BELOW = 35
RAPPORT_FOR_ISSUES = 2
ENGAGEMENT_FOR_ISSUES = 55

_WORD_RE = re.compile(r"[a-z0-9']+")


@dataclass
class PersonaState:
    """Everything the persona remembers between turns; stored with the session."""

    engagement: int
    rapport: int = 0
    pitches: int = 0
    revealed: dict[str, int] = field(default_factory=dict)  # topic key -> lines of ``says`` used
    used: list[str] = field(default_factory=list)  # stock lines used, oldest first, for variety
    last_topic: str | None = None
    left: bool = False

    @classmethod
    def initial(cls, scenario: Scenario) -> "PersonaState":
        return cls(engagement=scenario.persona.openness)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PersonaState":
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["revealed"], data["used"] = dict(self.revealed), list(self.used)
        return data

    @property
    def mood(self) -> str:
        if self.engagement >= WARM_AT:
            return "warm"
        if self.engagement < COOL_BELOW:
            return "cool"
        return "neutral"

    @property
    def issues_earned(self) -> bool:
        return self.rapport >= RAPPORT_FOR_ISSUES and self.engagement >= ENGAGEMENT_FOR_ISSUES


@dataclass(frozen=True)
class Reading:
    """How the engine read the user's turn: the scorer's verdict plus the intents it recognised."""

    score: TurnScore
    intents: frozenset[str]

    @property
    def label(self) -> str:
        return self.score.label


@dataclass(frozen=True)
class PersonaReply:
    text: str
    left: bool = False


class PersonaEngine(Protocol):
    """Writes the persona's words. ``state`` has already been updated for this turn."""

    async def reply(
        self, scenario: Scenario, state: PersonaState, history: Sequence[Turn], user_text: str, reading: Reading
    ) -> PersonaReply: ...


def update_engagement(state: PersonaState, reading: Reading, user_text: str) -> int:
    """Move the persona's engagement for one user turn; returns the change."""
    intents = reading.intents
    delta = 0
    if reading.label == "other_focus":
        delta += 10
        state.rapport += 1
        if reading.score.follow_up:
            delta += 5
        if intents & {"offer_help", "propose_follow_up"}:
            delta += 5
    elif reading.label == "pitch":
        state.pitches += 1
        delta -= 20
        if intents & {"prospecting", "call_to_action", "ask_favour"}:
            delta -= 5
    else:
        if intents & {"greeting", "small_talk", "thanks"}:
            delta += 2
        if len(user_text.split()) > 60:
            delta -= 5  # a long neutral monologue still takes the floor from them
    before = state.engagement
    state.engagement = max(0, min(100, state.engagement + delta))
    return state.engagement - before


def matching_topics(scenario: Scenario, text: str) -> list[Topic]:
    """Topics whose keywords appear in ``text``: a keyword matches words starting with it."""
    lowered = text.lower()
    words = _WORD_RE.findall(lowered)
    found = []
    for topic in scenario.persona.topics():
        for kw in topic.keywords:
            if (" " in kw and kw in lowered) or (" " not in kw and any(w.startswith(kw) for w in words)):
                found.append(topic)
                break
    return found


class OfflinePersona:
    """A rule-driven persona: no network, no model, deterministic for a given session."""

    wording_file = "offline_persona.toml"

    def __init__(self, seed: str = ""):
        self.seed = seed
        self.lines: dict[str, list[str]] = wording(self.wording_file)["lines"]
        self.injection_markers: list[str] = wording(self.wording_file)["injection_markers"]
        self.leisure_markers: list[str] = wording(self.wording_file)["leisure_markers"]
        self.challenge_markers: list[str] = wording(self.wording_file)["challenge_markers"]

    async def reply(
        self, scenario: Scenario, state: PersonaState, history: Sequence[Turn], user_text: str, reading: Reading
    ) -> PersonaReply:
        return self.compose(scenario, state, user_text, reading)

    def compose(self, scenario: Scenario, state: PersonaState, user_text: str, reading: Reading) -> PersonaReply:
        """Pick what the persona says; synchronous core of :meth:`reply`."""
        persona = scenario.persona
        ctx = {"name": persona.first_name, "company": persona.company, "role": persona.role, "topic": ""}
        if state.engagement <= 0:
            state.left = True
            return PersonaReply(persona.exit_line, left=True)

        intents = reading.intents
        lowered = user_text.lower()
        if any(marker in lowered for marker in self.injection_markers):
            return PersonaReply(self._stock(state, "injection", ctx))
        if reading.label == "pitch":
            return PersonaReply(self._pick(state, "pitch_reaction", list(persona.pitch_reaction), in_order=True))

        topics = matching_topics(scenario, user_text)
        issue_hits = [t for t in topics if t.kind == "issues"]
        if issue_hits and not state.issues_earned and len(issue_hits) == len(topics):
            ctx["topic"] = issue_hits[0].topic
            return PersonaReply(self._toned(state, self._stock(state, "deflect_issue", ctx), ctx))
        topics = [t for t in topics if t.kind != "issues" or state.issues_earned]
        asks_challenges = reading.label == "other_focus" and any(m in lowered for m in self.challenge_markers)
        small_talk_question = bool(intents & {"small_talk", "greeting"}) and "asks_what_they_do" not in intents

        if topics:
            text = self._talk_about(state, self._freshest(state, topics), ctx)
        elif asks_challenges:
            # "What's been hardest lately?": the moment issues come out, if trust was earned.
            text = self._open_up_issue(scenario, state, ctx)
        elif small_talk_question:
            text = self._pick(state, "small_talk", list(persona.small_talk) + self._stock_options("small_talk", ctx))
        elif "asks_what_they_do" in intents and not any(m in lowered for m in self.leisure_markers):
            text = self._pick(state, "self_intro", list(persona.self_intro))
        elif "offer_help" in intents:
            text = self._stock(state, "thanks_offer", ctx)
        elif "propose_follow_up" in intents:
            key = "accept_follow_up" if state.engagement >= 45 else "vague_follow_up"
            text = self._stock(state, key, ctx)
        elif "closing" in intents:
            text = self._stock(state, "goodbye", ctx)
        elif reading.label == "other_focus":
            text = self._continue_or_open_up(scenario, state, ctx, follow_up=reading.score.follow_up)
        elif persona.pitches and state.rapport < RAPPORT_FOR_ISSUES:
            # The pitcher persona keeps selling until the user steers them to themselves.
            text = self._pick(state, "own_pitch", list(persona.pitches), in_order=True)
        elif "self_disclosure" in intents:
            text = self._stock(state, "acknowledge_self", ctx)
        elif "thanks" in intents:
            text = self._stock(state, "welcome", ctx)
        else:
            text = self._pick(state, "small_talk", list(persona.small_talk) + self._stock_options("small_talk", ctx))
        return PersonaReply(self._toned(state, text, ctx))

    # -- choosing what to talk about ------------------------------------------------------------

    def _talk_about(self, state: PersonaState, topic: Topic, ctx: dict[str, str]) -> str:
        """Say the next line about ``topic``; once it is exhausted, a short 'as I said' line."""
        used = state.revealed.get(topic.key, 0)
        state.last_topic = topic.key
        if used < len(topic.says):
            state.revealed[topic.key] = used + 1
            return topic.says[used]
        ctx["topic"] = topic.topic
        return self._stock(state, "already_said", ctx)

    def _freshest(self, state: PersonaState, topics: list[Topic]) -> Topic:
        """Among matched topics prefer the one with the most left to say (and the current one on ties)."""
        return max(
            topics,
            key=lambda t: (len(t.says) - state.revealed.get(t.key, 0) > 0, t.key == state.last_topic, -topics.index(t)),
        )

    def _open_up_issue(self, scenario: Scenario, state: PersonaState, ctx: dict[str, str]) -> str:
        if not state.issues_earned:
            return self._stock(state, "deflect_issue", ctx)
        issues = scenario.persona.issues
        current = next((t for t in issues if t.key == state.last_topic), None)
        if current and state.revealed.get(current.key, 0) < len(current.says):
            return self._talk_about(state, current, ctx)
        fresh = next((t for t in issues if state.revealed.get(t.key, 0) < len(t.says)), None)
        return self._talk_about(state, fresh, ctx) if fresh else self._stock(state, "talked_out", ctx)

    def _continue_or_open_up(self, scenario: Scenario, state: PersonaState, ctx: dict[str, str], follow_up: bool) -> str:
        persona = scenario.persona
        by_key = {t.key: t for t in persona.topics()}
        current = by_key.get(state.last_topic or "")
        if follow_up and current and state.revealed.get(current.key, 0) < len(current.says):
            return self._talk_about(state, current, ctx)
        # General curiosity: open up about something new. Issues first once trust is earned,
        # because that is what they were holding back.
        order = (persona.issues if state.issues_earned else ()) + persona.interests + persona.insights
        for topic in order:
            if topic.key not in state.revealed:
                return self._talk_about(state, topic, ctx)
        for topic in order:
            if state.revealed.get(topic.key, 0) < len(topic.says):
                return self._talk_about(state, topic, ctx)
        return self._stock(state, "talked_out", ctx)

    # -- tone and variety --------------------------------------------------------------------------

    def _toned(self, state: PersonaState, text: str, ctx: dict[str, str]) -> str:
        if state.mood == "cool":
            return f"{self._stock(state, 'cool_prefix', ctx)} {text}"
        if state.mood == "warm" and not text.rstrip().endswith("?") and len(state.used) % 3 == 0:
            return f"{text} {self._stock(state, 'ask_back', ctx)}"
        return text

    def _stock_options(self, key: str, ctx: dict[str, str]) -> list[str]:
        return [render_string(line, **ctx) for line in self.lines[key]]

    def _stock(self, state: PersonaState, key: str, ctx: dict[str, str]) -> str:
        return self._pick(state, key, self._stock_options(key, ctx))

    def _pick(self, state: PersonaState, key: str, options: list[str], in_order: bool = False) -> str:
        """Choose a line not yet used in this session; if all were, the one used longest ago.

        ``in_order`` keeps the written order (for lines that escalate, like pitch reactions);
        otherwise the starting point depends on the session so sessions don't all sound alike.
        """
        n = len(options)
        start = 0 if in_order else zlib.crc32(f"{self.seed}:{key}".encode()) % n
        candidates = [(start + i) % n for i in range(n)]
        ids = [f"{key}:{i}" for i in range(n)]
        fresh = [i for i in candidates if ids[i] not in state.used]
        if fresh:
            choice = fresh[0]
        else:
            choice = min(candidates, key=lambda i: state.used.index(ids[i]))
            state.used.remove(ids[choice])
        state.used.append(ids[choice])
        return options[choice]

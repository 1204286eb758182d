"""The practice debrief: score, labels with the user's own words, discoveries, metrics, advice.

:func:`build_debrief` turns a finished conversation into a :class:`Debrief` (pure data); the
front ends render it with ``prompts/debrief.txt.j2`` (terminal) or ``prompts/debrief.html.j2``
(Telegram, every value escaped). The advice names one thing to try next and rewrites one of the
user's own weaker lines, grounded in what they learned (or could have learned) about the persona.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from bot.persona import PersonaState
from bot.scenarios import TOPIC_KINDS, Scenario
from bot.scoring import ConversationScore, OfflineScorer, Turn
from bot.templates import render, render_html, render_string, wording

QUESTION_START = re.compile(
    r"^(what|how|why|where|when|who|which|whats|hows|do|does|did|are|is|was|were|have|has|can|could|would|will)\b",
    re.IGNORECASE,
)
# Lines whose intent is most worth rewriting, strongest first.
REWRITE_ORDER = ("call_to_action", "prospecting", "ask_favour", "offer_product", "self_promotion", "steer_to_self")


@dataclass(frozen=True)
class TurnReview:
    text: str
    label: str
    confidence: float
    reasons: tuple[str, ...]
    follow_up: bool


@dataclass(frozen=True)
class Discovery:
    kind: str  # interests | insights | issues
    found: tuple[str, ...]
    missed: tuple[str, ...]


@dataclass(frozen=True)
class Metrics:
    user_turns: int
    user_words: int
    partner_words: int
    questions: int
    follow_up_questions: int
    longest_monologue: int  # words in the user's longest uninterrupted stretch

    @property
    def talk_share(self) -> int:
        """The user's share of the words spoken, in percent."""
        total = self.user_words + self.partner_words
        return round(100 * self.user_words / total) if total else 0


@dataclass(frozen=True)
class Debrief:
    scenario_id: str
    scenario_title: str
    persona_name: str
    focus_score: int
    verdict: str
    turns: tuple[TurnReview, ...]
    discoveries: tuple[Discovery, ...]
    metrics: Metrics
    went_well: tuple[str, ...]
    try_next: str
    weak_line: str | None
    better_line: str | None
    partner_left: bool

    def count(self, label: str) -> int:
        return sum(1 for t in self.turns if t.label == label)

    def context(self) -> dict:
        return {"d": self, "m": self.metrics}

    def render_text(self) -> str:
        return render("debrief.txt.j2", **self.context())

    def render_html(self) -> str:
        return render_html("debrief.html.j2", **self.context())


def is_question(text: str) -> bool:
    return "?" in text or bool(QUESTION_START.match(text.strip()))


def conversation_metrics(turns: Sequence[Turn], reviews: Sequence[TurnReview]) -> Metrics:
    user_words = partner_words = longest = run = 0
    for turn in turns:
        n = len(turn.text.split())
        if turn.role == "user":
            user_words += n
            run += n
            longest = max(longest, run)
        else:
            partner_words += n
            run = 0
    questions = sum(1 for r in reviews if is_question(r.text))
    follow_ups = sum(1 for r in reviews if r.follow_up and is_question(r.text))
    return Metrics(len(reviews), user_words, partner_words, questions, follow_ups, longest)


def discoveries(scenario: Scenario, state: PersonaState) -> tuple[Discovery, ...]:
    persona = scenario.persona
    result = []
    for kind in TOPIC_KINDS:
        topics = getattr(persona, kind)
        found = tuple(t.topic for t in topics if t.key in state.revealed)
        missed = tuple(t.topic for t in topics if t.key not in state.revealed)
        result.append(Discovery(kind, found, missed))
    return tuple(result)


def build_debrief(
    scenario: Scenario,
    state: PersonaState,
    turns: Sequence[Turn],
    scorer: OfflineScorer,
    score: ConversationScore | None = None,
    rewrites: Mapping[int, str] | None = None,
) -> Debrief:
    """``score`` and ``rewrites`` (user-turn index -> a better line) come from the LLM judge when one
    is configured (see bot/llm/combine.py); without them everything is the offline scorer's."""
    score = score or scorer.score_conversation(turns)
    user_turns = [t for t in turns if t.role == "user"]
    reviews = tuple(
        TurnReview(turn.text, ts.label, ts.confidence, ts.reasons, ts.follow_up)
        for turn, ts in zip(user_turns, score.turn_scores)
    )
    metrics = conversation_metrics(turns, reviews)
    found = discoveries(scenario, state)
    advice = wording("coaching.toml")
    ctx = _advice_context(scenario, state)

    well: list[str] = []
    for code, ok in _strengths(reviews, metrics, found):
        if ok:
            well.append(render_string(advice["went_well"][code], m=metrics, **ctx))
    if not well:
        well.append(render_string(advice["went_well"]["showed_up"], **ctx))

    weak = _weakest(reviews)
    if weak is not None:
        family = next((r for r in REWRITE_ORDER if r in weak.reasons), "pitch" if weak.label == "pitch" else "neutral")
        tip = advice["rewrite"][family]
        try_next = render_string(tip["try"], **ctx)
        better = (rewrites or {}).get(reviews.index(weak)) or render_string(tip["better"], **ctx)
        weak_text = weak.text
    else:
        code = _next_step(reviews, metrics, found)
        try_next = render_string(advice["next_step"][code], **ctx)
        better = weak_text = None

    return Debrief(
        scenario_id=scenario.id,
        scenario_title=scenario.title,
        persona_name=scenario.persona.name,
        focus_score=score.focus_score,
        verdict=score.verdict,
        turns=reviews,
        discoveries=found,
        metrics=metrics,
        went_well=tuple(well[:3]),
        try_next=try_next,
        weak_line=weak_text,
        better_line=better,
        partner_left=state.left,
    )


def _advice_context(scenario: Scenario, state: PersonaState) -> dict[str, str]:
    """Names the advice can ground itself in: only what the user discovered, so the debrief never
    gives away what is still to be found on a replay."""
    persona = scenario.persona
    revealed = [t for t in persona.topics() if t.key in state.revealed]
    last = next((t for t in persona.topics() if t.key == state.last_topic), None)
    return {
        "name": persona.first_name,
        "company": persona.company,
        "interest": next((t.topic for t in revealed if t.kind == "interests"), ""),
        "issue": next((t.topic for t in revealed if t.kind == "issues"), ""),
        "topic": (last or (revealed[0] if revealed else None)).topic if (last or revealed) else "",
    }


def _strengths(reviews: Sequence[TurnReview], m: Metrics, found: Sequence[Discovery]) -> list[tuple[str, bool]]:
    reasons = {r for t in reviews for r in t.reasons if t.label == "other_focus"}
    issues_found = next(d for d in found if d.kind == "issues").found
    return [
        ("discovered_issue", bool(issues_found)),
        ("follow_ups", m.follow_up_questions >= 2),
        ("offered_help", "offer_help" in reasons),
        ("agreed_follow_up", "propose_follow_up" in reasons),
        ("listened", m.user_turns >= 3 and m.talk_share <= 45 and sum(t.label == "other_focus" for t in reviews) >= 2),
        ("curious", sum(1 for t in reviews if t.label == "other_focus") >= 3),
    ]


def _weakest(reviews: Sequence[TurnReview]) -> TurnReview | None:
    """The user's most pitch-like line, or None when nothing was a pitch."""
    pitches = [t for t in reviews if t.label == "pitch"]
    if not pitches:
        return None
    return max(pitches, key=lambda t: (t.confidence, len(t.text)))


def _next_step(reviews: Sequence[TurnReview], m: Metrics, found: Sequence[Discovery]) -> str:
    reasons = {r for t in reviews for r in t.reasons}
    if not reviews:
        return "say_something"
    if m.questions == 0:
        return "ask_questions"
    if m.follow_up_questions == 0:
        return "follow_up"
    if not next(d for d in found if d.kind == "issues").found:
        return "dig_for_issues"
    if "offer_help" not in reasons:
        return "give_first"
    if "propose_follow_up" not in reasons:
        return "agree_next_step"
    return "keep_going"

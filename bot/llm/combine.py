"""How the LLM judge and the offline scorer are combined. The offline labels are always computed.

Per user turn:

* the **judge wins** when it is confident (``confidence >= JUDGE_MIN_CONFIDENCE``) *and* its evidence
  quote was found in that turn (:mod:`bot.llm.judge` drops quotes that are not);
* otherwise the **offline label stands** (no judgement for the turn, an unsure judge, or an ungrounded one).

The winning label comes with its own confidence; the offline ``reasons`` and ``follow_up`` are kept
(they describe the recognised intents, whatever the final label), so the debrief can still explain.

Focus score: when no label changed it is the offline score, unchanged. Otherwise the offline score is
shifted by the turns whose label changed, with the shape the offline scorer documents: each turn weighs
``sqrt(words)`` (greetings, thanks and other social filler x 0.3), and is worth 1 for other_focus, 0.5 for
neutral, 0 for pitch; ``shift = 100 * sum(weight * (new value - old value)) / sum(all weights)``, clamped
to 0-100. It depends only on the scorer's public output, so tuning the scorer's internals cannot break it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from bot.llm.base import JudgedTurn, Judgement
from bot.scoring import ConversationScore, Turn, TurnScore, verdict_for

JUDGE_MIN_CONFIDENCE = 0.7
VALUE = {"other_focus": 1.0, "neutral": 0.5, "pitch": 0.0}
SOCIAL_REASONS = frozenset({"greeting", "thanks", "closing", "acknowledge", "small_talk", "logistics"})
SOCIAL_WEIGHT = 0.3


@dataclass(frozen=True)
class Combined:
    score: ConversationScore
    rewrites: dict[int, str]  # user-turn index -> the judge's better line
    sources: tuple[str, ...]  # per user turn: "agree" | "judge" | "offline"


def combine(offline: ConversationScore, turns: Sequence[Turn], judgement: Judgement | None) -> Combined:
    user_texts = [t.text for t in turns if t.role == "user"]
    by_index = {j.index: j for j in judgement.turns} if judgement else {}
    scores: list[TurnScore] = []
    sources: list[str] = []
    shift = weights = 0.0
    for i, (text, mine) in enumerate(zip(user_texts, offline.turn_scores)):
        weight = _weight(text, mine)
        weights += weight
        final, source = decide(mine, by_index.get(i))
        scores.append(final)
        sources.append(source)
        shift += weight * (VALUE[final.label] - VALUE[mine.label])
    focus = offline.focus_score
    if shift and weights:
        focus = max(0, min(100, round(offline.focus_score + 100 * shift / weights)))
    rewrites = {j.index: j.better for j in by_index.values() if j.better}
    return Combined(ConversationScore(focus, verdict_for(focus), tuple(scores)), rewrites, tuple(sources))


def decide(mine: TurnScore, judged: JudgedTurn | None) -> tuple[TurnScore, str]:
    """One turn: the judge's label if it is confident and grounded, else the offline one."""
    if judged is None or judged.evidence is None or judged.confidence < JUDGE_MIN_CONFIDENCE:
        return mine, "offline"
    if judged.label == mine.label:
        return replace(mine, confidence=max(mine.confidence, judged.confidence)), "agree"
    return replace(mine, label=judged.label, confidence=judged.confidence), "judge"


def _weight(text: str, score: TurnScore) -> float:
    weight = math.sqrt(max(len(text.split()), 1))
    if score.label == "neutral" and score.reasons and set(score.reasons) <= SOCIAL_REASONS:
        weight *= SOCIAL_WEIGHT
    return weight

"""The scorer's vocabulary: labels, turns, results, and the interface every scorer implements.

The coaching engine only ever talks to a :class:`Scorer`; the offline scorer is the default and
the LLM judge (a later layer) wraps it. Nothing here knows about Telegram or storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence

Label = Literal["other_focus", "pitch", "neutral"]
Role = Literal["partner", "user"]
Verdict = Literal["connector", "mixed", "pitcher"]

LABELS: tuple[Label, ...] = ("other_focus", "pitch", "neutral")
ROLES: tuple[Role, ...] = ("partner", "user")

CONNECTOR_MIN = 70
MIXED_MIN = 35


@dataclass(frozen=True)
class Turn:
    """One line of a conversation. ``partner`` is the other person (the persona), ``user`` is the trainee."""

    role: Role
    text: str


@dataclass(frozen=True)
class TurnScore:
    """How one user turn was read.

    ``reasons`` names the intents recognised (e.g. ``"open_question"``, ``"call_to_action"``) so the
    debrief can explain a label instead of just stating it.
    """

    label: Label
    confidence: float
    reasons: tuple[str, ...] = ()
    follow_up: bool = False  # builds on the partner's previous line


@dataclass(frozen=True)
class ConversationScore:
    focus_score: int
    verdict: Verdict
    turn_scores: tuple[TurnScore, ...] = field(default_factory=tuple)

    @property
    def turn_labels(self) -> list[Label]:
        return [t.label for t in self.turn_scores]


def verdict_for(focus_score: int) -> Verdict:
    """connector >= 70, mixed 35-69, pitcher < 35."""
    if focus_score >= CONNECTOR_MIN:
        return "connector"
    if focus_score >= MIXED_MIN:
        return "mixed"
    return "pitcher"


class Scorer(Protocol):
    """Reads user turns in context. Implementations must be deterministic for the same input."""

    def score_turn(self, text: str, context: Sequence[Turn] = ()) -> TurnScore:
        """Label one user turn; ``context`` is the conversation before it, oldest first."""
        ...

    def score_conversation(self, turns: Sequence[Turn]) -> ConversationScore:
        """Label every user turn in ``turns`` and compute the focus score."""
        ...

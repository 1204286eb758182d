"""The LLM layer's vocabulary, kept free of the ``openai`` import so the engine can use it cheaply.

Adapters (persona, judge, hints) catch :class:`LLMUnavailable` and fall back to the offline engine;
the engine only ever sees a finished reply, a :class:`Judgement` or ``None``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, Sequence

from bot.persona import PersonaState
from bot.scenarios import Scenario
from bot.scoring import LABELS, Label, Turn


class LLMUnavailable(Exception):
    """The one exception the client raises: no usable answer this time.

    ``kind`` says why (``timeout``, ``connection``, ``server_error``, ``rate_limited``, ``http_401``,
    ``bad_request``, ``refusal``, ``empty``, ``bad_response``, ``circuit_open``...). It never carries the
    key, the prompt or the server's message, so it is safe to log.
    """

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True)
class JudgedTurn:
    """The judge's reading of one user turn, already validated."""

    index: int  # 0-based among the user's turns
    label: Label
    confidence: float
    evidence: str | None  # a quote from that turn; None when the judge's quote was not in the turn
    better: str | None  # the judge's rephrasing of the line; None when it offered none


@dataclass(frozen=True)
class Judgement:
    model: str
    turns: tuple[JudgedTurn, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "turns": [asdict(t) for t in self.turns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Judgement | None":
        """Read a stored judgement back; anything unreadable is ignored (the offline labels stand)."""
        if not isinstance(data, dict):
            return None
        try:
            turns = tuple(
                JudgedTurn(int(t["index"]), t["label"], float(t["confidence"]), t.get("evidence"), t.get("better"))
                for t in data.get("turns", [])
                if t.get("label") in LABELS
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return cls(str(data.get("model", "")), turns)


class Judge(Protocol):
    async def judge(self, scenario: Scenario | None, turns: Sequence[Turn]) -> Judgement | None:
        """Label the user's turns; ``None`` when no usable judgement could be had (offline stands)."""
        ...


class Hinter(Protocol):
    async def hint(self, scenario: Scenario, state: PersonaState, turns: Sequence[Turn], offline_hint: str) -> str:
        """A nudge for the conversation so far; ``offline_hint`` when the LLM has nothing usable."""
        ...

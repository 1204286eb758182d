"""The LLM judge: labels every user turn with quoted evidence and a better line, validated before use.

Structured output is asked for in the strongest form the server accepts, and the answer is always
parsed and validated here whatever the server promised:

1. ``response_format={"type": "json_schema", ...}`` with the :class:`JudgeAnswer` schema (OpenAI, vLLM,
   recent Ollama and llama.cpp);
2. on a 400 for that, ``{"type": "json_object"}`` (JSON mode);
3. on a 400 again, no ``response_format``: the prompt asks for JSON and the first JSON object in the
   text is parsed.

A server that rejected a format is not asked for it again by this judge. Each turn of the answer is
validated on its own (a bad entry drops that entry, not the whole answer); an evidence quote that is not
in that user turn is dropped, which (see :mod:`bot.llm.combine`) leaves the offline label in charge of
that turn. Malformed or truncated JSON, a refusal or any failure of the endpoint: ``None``, and the
offline scorer's labels stand.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from bot.llm.base import JudgedTurn, Judgement, LLMUnavailable
from bot.llm.client import LLMClient
from bot.llm.text import clean_reply, out_of_character, transcript_json
from bot.scenarios import Scenario
from bot.scoring import LABELS, Turn
from bot.templates import render

log = logging.getLogger(__name__)

MAX_BETTER_CHARS = 300


class TurnVerdict(BaseModel):
    """One user turn, as the judge must answer it (this is also the schema sent to the server)."""

    model_config = ConfigDict(extra="forbid")

    turn: int
    label: Literal["other_focus", "pitch", "neutral"]
    confidence: float
    evidence: str
    better: str


class JudgeAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    turns: list[TurnVerdict]


class _LenientVerdict(TurnVerdict):
    """What we accept back: small slips (label spelling, a percentage, a missing rewrite) are forgiven."""

    model_config = ConfigDict(extra="ignore")

    evidence: str = ""
    better: str = ""

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, value: Any) -> Any:
        return re.sub(r"[\s-]+", "_", value.strip().lower()) if isinstance(value, str) else value

    @field_validator("confidence", mode="before")
    @classmethod
    def _confidence(cls, value: Any) -> Any:
        value = float(value)
        if 1 < value <= 100:
            value /= 100  # "85" meaning 85 %
        return min(max(value, 0.0), 1.0)


def _json_schema() -> dict[str, Any]:
    return {"type": "json_schema",
            "json_schema": {"name": "netcoach_judgement", "strict": True, "schema": JudgeAnswer.model_json_schema()}}


# Strongest first; ``None`` means plain text, parsed and validated here.
FORMATS: tuple[Callable[[], dict[str, Any] | None], ...] = (_json_schema, lambda: {"type": "json_object"}, lambda: None)


class LLMJudge:
    """Implements :class:`bot.llm.base.Judge`."""

    def __init__(self, client: LLMClient, model: str):
        self.client = client
        self.model = model
        self._format = 0  # index into FORMATS of the strongest format this server accepted

    def messages(self, scenario: Scenario | None, turns: Sequence[Turn]) -> list[dict[str, str]]:
        """The rubric in the system prompt; the conversation, as JSON data, in the user message."""
        return [
            {"role": "system", "content": render("judge.j2", scenario=scenario, labels=LABELS)},
            {"role": "user", "content": transcript_json(turns)},
        ]

    async def judge(self, scenario: Scenario | None, turns: Sequence[Turn]) -> Judgement | None:
        user_texts = [t.text for t in turns if t.role == "user"]
        if not user_texts:
            return None
        try:
            text = await self._ask(self.messages(scenario, turns), max_tokens=min(4000, 200 + 150 * len(user_texts)))
            judged = validate(parse_answer(text), user_texts)
        except LLMUnavailable as exc:
            log.info("LLM judge unavailable (%s); offline labels used", exc.kind)
            return None
        except ValueError as exc:
            log.warning("LLM judge answer unusable (%s); offline labels used", exc)
            return None
        except Exception:  # a bug here must not cost the user their debrief
            log.exception("LLM judge failed unexpectedly; offline labels used")
            return None
        if not judged:
            log.warning("LLM judge answer had no valid turn; offline labels used")
            return None
        return Judgement(self.model, judged)

    async def _ask(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        for i in range(self._format, len(FORMATS)):
            try:
                result = await self.client.chat(messages, model=self.model, max_tokens=max_tokens, temperature=0,
                                                response_format=FORMATS[i]())
            except LLMUnavailable as exc:
                if exc.kind == "bad_request" and i + 1 < len(FORMATS):
                    self._format = i + 1
                    continue
                raise
            return result.text
        raise LLMUnavailable("bad_request")  # pragma: no cover - the loop always returns or raises


def parse_answer(text: str) -> list[Any]:
    """The list of per-turn entries in a JSON answer (fenced, or wrapped in prose); ValueError if none."""
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        data = json.loads(body)
    except ValueError:
        start, end = body.find("{"), body.rfind("}")
        if start < 0 or end <= start:
            raise ValueError("no JSON object in the answer") from None
        try:
            data = json.loads(body[start:end + 1])
        except ValueError:
            raise ValueError("malformed or truncated JSON") from None
    items = data.get("turns") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError('no "turns" list in the answer')
    return items


def validate(items: Sequence[Any], user_texts: Sequence[str]) -> tuple[JudgedTurn, ...]:
    """Keep the well-formed entries for real turns (first one wins), with evidence checked against the turn."""
    judged: dict[int, JudgedTurn] = {}
    for item in items:
        try:
            v = _LenientVerdict.model_validate(item)
        except (ValidationError, TypeError, ValueError):
            continue
        index = v.turn - 1
        if not 0 <= index < len(user_texts) or index in judged:
            continue
        text = user_texts[index]
        evidence = v.evidence.strip() if quote_in(v.evidence, text) else None
        judged[index] = JudgedTurn(index, v.label, round(v.confidence, 4), evidence, _better(v.better, text))
    return tuple(judged[i] for i in sorted(judged))


def _norm(text: str) -> str:
    text = text.translate(str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "…": "..."}))
    return re.sub(r"\s+", " ", text).strip().lower()


def quote_in(quote: str, text: str) -> bool:
    """Is ``quote`` (give or take case, spacing, curly quotes and its own wrapping punctuation) in ``text``?"""
    q = _norm(quote).strip(" \"'.,;:!?")
    return len(q) >= 2 and q in _norm(text)


def _better(line: str, original: str) -> str | None:
    line = clean_reply(line, max_chars=MAX_BETTER_CHARS)
    if not line or out_of_character(line) or _norm(line) == _norm(original):
        return None
    return line

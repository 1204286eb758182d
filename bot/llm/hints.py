"""/hint with an LLM: the rule-based hint, rephrased for the conversation at hand.

The model sees the rule-based hint, the persona's public side and what the user has discovered so far
(never the topics still hidden, so a hint cannot give them away); the conversation goes in the user
message as data. Any failure or an answer that breaks the coaching frame: the rule-based hint.
"""

from __future__ import annotations

import logging
from typing import Sequence

from bot.llm.base import LLMUnavailable
from bot.llm.client import LLMClient
from bot.llm.text import clean_reply, out_of_character, transcript_json, trim_to_budget
from bot.persona import PersonaState
from bot.scenarios import Scenario
from bot.scoring import Turn
from bot.templates import render

log = logging.getLogger(__name__)

MAX_HINT_CHARS = 300
CONVERSATION_TOKENS = 1200


class LLMHinter:
    """Implements :class:`bot.llm.base.Hinter`."""

    def __init__(self, client: LLMClient, model: str):
        self.client = client
        self.model = model

    def messages(
        self, scenario: Scenario, state: PersonaState, turns: Sequence[Turn], offline_hint: str
    ) -> list[dict[str, str]]:
        persona = scenario.persona
        discovered = [t.topic for t in persona.topics() if t.key in state.revealed]
        recent = trim_to_budget([{"role": t.role, "content": t.text} for t in turns], CONVERSATION_TOKENS)
        return [
            {"role": "system", "content": render("hint.j2", scenario=scenario, p=persona, mood=state.mood,
                                                 discovered=discovered, offline_hint=offline_hint)},
            {"role": "user", "content": transcript_json([Turn(m["role"], m["content"]) for m in recent])},
        ]

    async def hint(self, scenario: Scenario, state: PersonaState, turns: Sequence[Turn], offline_hint: str) -> str:
        try:
            result = await self.client.chat(self.messages(scenario, state, turns, offline_hint), model=self.model,
                                            max_tokens=120, temperature=0.4)
        except LLMUnavailable as exc:
            log.debug("hint from the rules (%s)", exc.kind)
            return offline_hint
        except Exception:
            log.exception("LLM hint failed unexpectedly; rule-based hint used")
            return offline_hint
        text = clean_reply(result.text, max_chars=MAX_HINT_CHARS, truncated=result.truncated)
        return text if text and not out_of_character(text) else offline_hint

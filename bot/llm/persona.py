"""The LLM persona: the offline engine decides *what* the persona shares, the model decides *how*.

Each turn the offline engine runs first, exactly as it would without an LLM.
Its line becomes the turn's "cue" in the system prompt and its bookkeeping (which topics were revealed,
issues only once trust is earned, leaving at zero engagement) is kept whatever happens next. So:

* the debrief's "what you discovered" means the same in both modes: a topic counts once the persona
  was told to share it, and the prompt tells the model not to volunteer other topics;
* hidden issues are not in the prompt at all until ``state.issues_earned``: no instruction the user
  types can make the model reveal what it was never given;
* when the model fails (any :class:`LLMUnavailable`, an out-of-character answer, or a bug here), the
  user gets the offline line for that turn, the very reply offline mode would have given.

User turns travel only as ``user`` messages; the system prompt is built from the scenario file and the
persona's state. History is trimmed to ``history_tokens`` (estimated, see :mod:`bot.llm.text`).
"""

from __future__ import annotations

import logging
from typing import Sequence

from bot.llm.base import LLMUnavailable
from bot.llm.client import LLMClient, Message
from bot.llm.text import clean_reply, out_of_character, trim_to_budget
from bot.persona import RAPPORT_FOR_ISSUES, OfflinePersona, PersonaReply, PersonaState, Reading
from bot.scenarios import Scenario
from bot.scoring import Turn
from bot.templates import render

log = logging.getLogger(__name__)

MAX_REPLY_CHARS = 600
MAX_REPLY_TOKENS = 220


class LLMPersona:
    """Implements :class:`bot.persona.PersonaEngine`; bind one per session with :meth:`for_session`."""

    def __init__(self, client: LLMClient, model: str, history_tokens: int = 1500, seed: str = ""):
        self.client = client
        self.model = model
        self.history_tokens = history_tokens
        self.seed = seed
        self._offline = OfflinePersona(seed=seed)

    def for_session(self, seed: str) -> "LLMPersona":
        """The same persona with the session's seed, so its offline fallback matches offline mode exactly."""
        return LLMPersona(self.client, self.model, self.history_tokens, seed)

    async def reply(
        self, scenario: Scenario, state: PersonaState, history: Sequence[Turn], user_text: str, reading: Reading
    ) -> PersonaReply:
        # The offline engine's bookkeeping on ``state`` stands whether or not the model answers.
        draft = self._offline.compose(scenario, state, user_text, reading)
        if draft.left:
            return draft  # the scenario's own exit line: no model needed to say goodbye
        try:
            messages = self.messages(scenario, state, history, user_text, reading, cue=draft.text)
            result = await self.client.chat(messages, model=self.model, max_tokens=MAX_REPLY_TOKENS, temperature=0.8)
            names = (scenario.persona.name, scenario.persona.first_name)
            text = clean_reply(result.text, names, MAX_REPLY_CHARS, truncated=result.truncated)
            if not text or out_of_character(text):
                raise LLMUnavailable("out_of_character" if text else "empty")
        except LLMUnavailable as exc:
            log.debug("persona reply from the offline engine (%s)", exc.kind)
            return draft
        except Exception:  # a bug in this layer must not cost the user their turn
            log.exception("LLM persona failed unexpectedly; offline reply used")
            return draft
        return PersonaReply(text)

    def system_prompt(self, scenario: Scenario, state: PersonaState, reading: Reading | None, cue: str) -> str:
        persona = scenario.persona
        return render(
            "persona_system.j2",
            scenario=scenario,
            p=persona,
            mood=state.mood,
            issues_open=state.issues_earned,
            last_was_pitch=reading is not None and reading.label == "pitch",
            still_pitching=bool(persona.pitches) and state.rapport < RAPPORT_FOR_ISSUES,
            cue=cue,
        )

    def messages(
        self,
        scenario: Scenario,
        state: PersonaState,
        history: Sequence[Turn],
        user_text: str,
        reading: Reading | None,
        cue: str = "",
    ) -> list[Message]:
        """System prompt, then the conversation within the token budget, then the user's new turn."""
        past = [{"role": "assistant" if t.role == "partner" else "user", "content": t.text} for t in history]
        return [
            {"role": "system", "content": self.system_prompt(scenario, state, reading, cue)},
            *trim_to_budget(past, self.history_tokens),
            {"role": "user", "content": user_text},
        ]

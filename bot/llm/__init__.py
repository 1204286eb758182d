"""The optional LLM layer: persona, judge and hints on any OpenAI-compatible endpoint.

Nothing here is imported unless LLM mode is configured (see :mod:`bot.llm.config`), and every part
falls back to the offline engine on any failure. See docs/llm.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from bot.llm.config import LLMConfig


def llm_options(config: "LLMConfig") -> dict[str, Any]:
    """Keyword arguments for :class:`bot.session.PracticeEngine`: ``{}`` offline, else the LLM persona,
    judge and hints sharing one client (one circuit breaker per endpoint)."""
    if not config.enabled:
        return {}
    from bot.llm.client import LLMClient
    from bot.llm.hints import LLMHinter
    from bot.llm.judge import LLMJudge
    from bot.llm.persona import LLMPersona

    client = LLMClient(config)
    return {
        "persona": LLMPersona(client, config.persona_model, config.history_tokens),
        "judge": LLMJudge(client, config.judge_model),
        "hinter": LLMHinter(client, config.judge_model),
    }

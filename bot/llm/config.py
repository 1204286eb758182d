"""LLM settings from the environment. The API key is kept out of every repr, log line and printout.

LLM mode is on when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set (a local server such as Ollama
needs no key) and ``NETCOACH_LLM`` is not ``off``. Anything unset or unreadable falls back to a
default and is listed in :attr:`LLMConfig.problems`, so a typo in a number never stops the bot;
``netcoach doctor`` shows the problems.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"


def mask_key(key: str | None) -> str:
    """``sk-...abcd``: enough to tell two keys apart, never enough to use one."""
    if not key:
        return "(not set)"
    if len(key) < 12:
        return "****"
    return f"{key[:3]}...{key[-4:]}"


@dataclass(frozen=True)
class LLMConfig:
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None  # None: OpenAI's own endpoint
    model: str = DEFAULT_MODEL
    persona_model_override: str | None = None
    judge_model_override: str | None = None
    timeout: float = 20.0  # seconds per request
    max_retries: int = 1  # extra attempts after a 429 / 5xx / dropped connection (never after a timeout)
    history_tokens: int = 1500  # persona history budget (approximate tokens, see bot/llm/persona.py)
    retry_after_cap: float = 5.0  # longest Retry-After we wait for inside a turn; longer ones pause the endpoint
    breaker_threshold: int = 3  # consecutive failures that open the circuit
    breaker_cooldown: float = 60.0  # seconds before a dead endpoint is tried again
    disabled: bool = False  # NETCOACH_LLM=off
    problems: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return not self.disabled and bool(self.api_key or self.base_url)

    @property
    def persona_model(self) -> str:
        return self.persona_model_override or self.model

    @property
    def judge_model(self) -> str:
        """Also used for /hint: both are coaching, not role-play."""
        return self.judge_model_override or self.model

    @property
    def endpoint(self) -> str:
        return self.base_url or DEFAULT_BASE_URL

    @property
    def masked_key(self) -> str:
        return mask_key(self.api_key)

    def __repr__(self) -> str:  # the dataclass repr already skips api_key; say that one is set
        return (
            f"LLMConfig(enabled={self.enabled}, endpoint={self.endpoint!r}, api_key={self.masked_key!r}, "
            f"persona_model={self.persona_model!r}, judge_model={self.judge_model!r}, timeout={self.timeout})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "LLMConfig":
        env = os.environ if env is None else env
        problems: list[str] = []

        def number(name: str, default: float, cast: type = float, minimum: float = 0.0) -> float:
            raw = (env.get(name) or "").strip()
            if not raw:
                return default
            try:
                value = cast(raw)
            except ValueError:
                problems.append(f"{name}={raw!r} is not a number; using {default}")
                return default
            if value < minimum:
                problems.append(f"{name}={raw!r} must be at least {minimum}; using {default}")
                return default
            return value

        switch = (env.get("NETCOACH_LLM") or "").strip().lower()
        if switch and switch not in {"on", "off", "auto"}:
            problems.append(f"NETCOACH_LLM={switch!r} should be on, off or auto; using auto")
        return cls(
            api_key=(env.get("OPENAI_API_KEY") or "").strip() or None,
            base_url=(env.get("OPENAI_BASE_URL") or "").strip().rstrip("/") or None,
            model=(env.get("NETCOACH_MODEL") or "").strip() or DEFAULT_MODEL,
            persona_model_override=(env.get("NETCOACH_PERSONA_MODEL") or "").strip() or None,
            judge_model_override=(env.get("NETCOACH_JUDGE_MODEL") or "").strip() or None,
            timeout=number("NETCOACH_LLM_TIMEOUT", 20.0, minimum=0.1),
            max_retries=int(number("NETCOACH_LLM_MAX_RETRIES", 1, int)),
            history_tokens=int(number("NETCOACH_LLM_HISTORY_TOKENS", 1500, int, minimum=100)),
            disabled=switch == "off",
            problems=tuple(problems),
        )

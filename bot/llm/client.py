"""One Chat Completions client per configuration, with the failure policy a chat bot needs.

The SDK's own retries are off (``max_retries=0``): a user is waiting for each answer, so this module
decides how long that wait may be.

* 429: wait for ``Retry-After`` when it is at most ``retry_after_cap`` seconds and a retry is left;
  a longer one pauses the endpoint (the circuit opens until then) and this call falls back.
* 5xx and dropped connections: retried after a short backoff while retries are left.
* Timeouts are never retried (the user has already waited ``timeout`` seconds).
* Any other HTTP error (401, 403, 404...) fails at once.

Every failure counts towards the :class:`CircuitBreaker`; after ``breaker_threshold`` in a row the
endpoint is left alone for ``breaker_cooldown`` seconds, then one request probes it. Requests the
server *answered* but that are unusable (400, a refusal, an empty answer) do not count: the endpoint
is alive. Callers see only :class:`~bot.llm.base.LLMUnavailable`. Each outage is logged a handful of
times (first failure, circuit opening, recovery), never per request, and never with the key or the
prompt.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

import openai

from bot.llm import usage
from bot.llm.base import LLMUnavailable
from bot.llm.config import LLMConfig

log = logging.getLogger(__name__)

Message = dict[str, str]


@dataclass(frozen=True)
class ChatResult:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    truncated: bool  # the answer hit max_tokens (finish_reason "length")


class CircuitBreaker:
    """closed -> (threshold failures in a row) -> open -> (cooldown) -> half-open: one probe -> closed | open.

    ``clock`` is injectable so tests can move time instead of waiting.
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

    def __init__(self, threshold: int = 3, cooldown: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
        self.clock = clock
        self.state = self.CLOSED
        self.failures = 0
        self.open_until = 0.0
        self._probing = False

    def allow(self) -> bool:
        """May a request go out now? In half-open state only one probe at a time."""
        if self.state == self.OPEN:
            if self.clock() < self.open_until:
                return False
            self.state = self.HALF_OPEN
        if self.state == self.HALF_OPEN:
            if self._probing:
                return False
            self._probing = True
        return True

    def success(self) -> str | None:
        """Record a success; returns the transition ("recovered") if the circuit closed."""
        was = self.state
        self.state, self.failures, self._probing = self.CLOSED, 0, False
        return "recovered" if was != self.CLOSED else None

    def failure(self) -> str | None:
        """Record a failure; returns the transition ("first", "opened", "still_down") worth logging."""
        self.failures += 1
        if self.state == self.HALF_OPEN:
            self._open(self.cooldown)
            return "still_down"
        if self.state == self.CLOSED and self.failures >= self.threshold:
            self._open(self.cooldown)
            return "opened"
        return "first" if self.failures == 1 else None

    def hold_off(self, seconds: float) -> None:
        """Open the circuit for ``seconds`` (a server asked us to wait longer than a turn can)."""
        self._open(max(seconds, 0.0))

    def release(self) -> None:
        """A probe that ended without a verdict on the endpoint (e.g. a 400) frees the probe slot."""
        self._probing = False

    def _open(self, seconds: float) -> None:
        self.state = self.OPEN
        self.open_until = max(self.open_until, self.clock() + seconds)
        self._probing = False


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (a number); None when absent or unreadable."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / divisor
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            return value
    return None


class LLMClient:
    """A small façade over ``AsyncOpenAI`` shared by the persona, the judge and the hints."""

    def __init__(
        self,
        config: LLMConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.config = config
        self.sleep = sleep
        self.breaker = CircuitBreaker(config.breaker_threshold, config.breaker_cooldown, clock)
        self._warned_bad_request = False
        self._sdk = openai.AsyncOpenAI(
            # Local servers need no key, but the SDK insists on one.
            api_key=config.api_key or "no-key",
            base_url=config.endpoint,
            timeout=config.timeout,
            max_retries=0,
        )

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> ChatResult:
        """One completion's text and usage, or :class:`LLMUnavailable`."""
        if not self.breaker.allow():
            raise LLMUnavailable("circuit_open")
        kwargs: dict[str, Any] = {"model": model, "messages": list(messages)}
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if temperature is not None:
            kwargs["temperature"] = temperature
        if response_format is not None:
            kwargs["response_format"] = response_format
        attempt = 0
        while True:
            try:
                response = await self._sdk.chat.completions.create(**kwargs)
                break
            except asyncio.CancelledError:
                self.breaker.release()  # a cancelled probe says nothing about the endpoint
                raise
            except openai.RateLimitError as exc:
                wait = retry_after_seconds(exc.response.headers)
                if wait is not None and wait > self.config.retry_after_cap:
                    self.breaker.hold_off(wait)
                    log.warning("LLM endpoint asked us to wait %.0f s (429); using the offline engine until then", wait)
                    raise LLMUnavailable("rate_limited") from None
                if attempt < self.config.max_retries:
                    attempt += 1
                    await self.sleep(wait if wait is not None else self._backoff(attempt))
                    continue
                raise self._failed("rate_limited") from None
            except openai.APITimeoutError:
                raise self._failed("timeout") from None
            except openai.APIConnectionError:
                if attempt < self.config.max_retries:
                    attempt += 1
                    await self.sleep(self._backoff(attempt))
                    continue
                raise self._failed("connection") from None
            except openai.APIStatusError as exc:
                if exc.status_code >= 500 and attempt < self.config.max_retries:
                    attempt += 1
                    await self.sleep(self._backoff(attempt))
                    continue
                if exc.status_code in (400, 422):
                    # The server is alive and rejected this request (often a response_format it does
                    # not support); the caller may try another way.
                    self.breaker.release()
                    if not self._warned_bad_request:
                        self._warned_bad_request = True
                        log.warning("LLM endpoint rejected a request (HTTP %d) for model %s; if this repeats, "
                                    "check the model with `netcoach doctor`", exc.status_code, model)
                    raise LLMUnavailable("bad_request") from None
                raise self._failed("server_error" if exc.status_code >= 500 else f"http_{exc.status_code}") from None
            except (openai.OpenAIError, ValueError, TypeError):
                raise self._failed("bad_response") from None
        return self._result(response, model)

    def _result(self, response: Any, model: str) -> ChatResult:
        transition = self.breaker.success()
        if transition:
            log.warning("LLM endpoint is answering again; LLM mode resumed")
        tokens = getattr(response, "usage", None)
        prompt = int(getattr(tokens, "prompt_tokens", 0) or 0)
        completion = int(getattr(tokens, "completion_tokens", 0) or 0)
        usage.note(model, prompt, completion, int(getattr(tokens, "total_tokens", 0) or 0) or None)
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise LLMUnavailable("empty")
        choice = choices[0]
        message = choice.message
        if getattr(message, "refusal", None) or choice.finish_reason == "content_filter":
            raise LLMUnavailable("refusal")
        text = (message.content or "").strip()
        if not text:
            raise LLMUnavailable("empty")
        return ChatResult(text, model, prompt, completion, choice.finish_reason == "length")

    async def list_models(self) -> list[str]:
        """Model ids the endpoint lists (``netcoach doctor``); bypasses the breaker."""
        try:
            page = await self._sdk.models.list()
        except openai.APITimeoutError:
            raise LLMUnavailable("timeout") from None
        except openai.APIConnectionError:
            raise LLMUnavailable("connection") from None
        except openai.APIStatusError as exc:
            raise LLMUnavailable(f"http_{exc.status_code}") from None
        except (openai.OpenAIError, ValueError, TypeError):
            raise LLMUnavailable("bad_response") from None
        return [m.id for m in page.data]

    async def aclose(self) -> None:
        await self._sdk.close()

    def _backoff(self, attempt: int) -> float:
        return min(0.25 * 2 ** (attempt - 1), 2.0)

    def _failed(self, kind: str) -> LLMUnavailable:
        """Count a failure against the endpoint and log it if it changes the picture."""
        transition = self.breaker.failure()
        if transition == "first":
            log.warning("LLM request failed (%s); this turn uses the offline engine", kind)
        elif transition == "opened":
            log.warning("LLM endpoint failed %d times in a row (%s); offline engine only for the next %.0f s",
                        self.breaker.failures, kind, self.breaker.cooldown)
        elif transition == "still_down":
            log.info("LLM endpoint still failing (%s); next try in %.0f s", kind, self.breaker.cooldown)
        return LLMUnavailable(kind)

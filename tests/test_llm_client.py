"""The LLM client against a real local OpenAI-compatible server: answers, usage, failures, retries,
Retry-After, timeouts and the circuit breaker. Only 127.0.0.1, a dummy key, short timeouts."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Iterator

import pytest

from bot.llm import usage
from bot.llm.base import LLMUnavailable
from bot.llm.client import CircuitBreaker, LLMClient
from bot.llm.config import LLMConfig
from tests.fakes.openai_stub import OpenAIStub, StubReply, closed_port_url

KEY = "sk-test-0123456789abcd"
HELLO = [{"role": "user", "content": "hello"}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as s:
        yield s


def make_client(url: str, clock: FakeClock | None = None, sleeps: list[float] | None = None, **overrides) -> LLMClient:
    settings = dict(api_key=KEY, base_url=url, timeout=0.5, max_retries=1, retry_after_cap=1.0)
    settings.update(overrides)

    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    return LLMClient(LLMConfig(**settings), clock=clock or FakeClock(), sleep=sleep)


# -- configuration ------------------------------------------------------------------------------


def test_config_from_env_and_the_key_never_shows() -> None:
    assert not LLMConfig.from_env({}).enabled
    assert LLMConfig.from_env({"OPENAI_BASE_URL": "http://localhost:11434/v1/"}).enabled  # Ollama: no key needed
    assert not LLMConfig.from_env({"OPENAI_API_KEY": KEY, "NETCOACH_LLM": "off"}).enabled
    config = LLMConfig.from_env({
        "OPENAI_API_KEY": KEY, "NETCOACH_MODEL": "m-base", "NETCOACH_JUDGE_MODEL": "m-judge",
        "NETCOACH_LLM_TIMEOUT": "7.5", "NETCOACH_LLM_MAX_RETRIES": "oops",
    })
    assert config.enabled and config.endpoint == "https://api.openai.com/v1"
    assert (config.persona_model, config.judge_model) == ("m-base", "m-judge")
    assert (config.timeout, config.max_retries) == (7.5, 1)
    assert any("NETCOACH_LLM_MAX_RETRIES" in p for p in config.problems)
    assert config.masked_key == "sk-...abcd"
    assert KEY not in repr(config) and "sk-...abcd" in repr(config)
    from bot.config import Config

    assert KEY not in repr(Config.from_env({"OPENAI_API_KEY": KEY}))
    assert not Config().llm.enabled  # tests and embedders get offline unless they opt in


# -- the circuit breaker ------------------------------------------------------------------------


def test_breaker_opens_after_three_failures_and_probes_after_the_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, cooldown=60, clock=clock)
    assert [breaker.failure() for _ in range(3)] == ["first", None, "opened"]
    assert not breaker.allow()
    clock.now += 59
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow() and not breaker.allow()  # one probe at a time when half-open
    assert breaker.failure() == "still_down" and not breaker.allow()
    clock.now += 60
    assert breaker.allow()
    assert breaker.success() == "recovered" and breaker.allow() and breaker.allow()


# -- the client against the stub -----------------------------------------------------------------


async def test_good_answer_with_usage_recorded(stub: OpenAIStub) -> None:
    stub.push(StubReply.text("  Hi there!  ", usage=(30, 5)))
    client = make_client(stub.url)
    with usage.collecting() as spent:
        result = await client.chat(HELLO, model="stub-model", max_tokens=50, temperature=0.5)
    assert result.text == "Hi there!" and not result.truncated
    assert spent == {"stub-model": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35, "calls": 1}}
    request = stub.chat_requests[0]
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.body["max_tokens"] == 50 and request.body["model"] == "stub-model"
    await client.aclose()


async def test_500_is_retried_once_then_fails(stub: OpenAIStub) -> None:
    sleeps: list[float] = []
    client = make_client(stub.url, sleeps=sleeps)
    stub.push(StubReply.error(500), StubReply.text("recovered"))
    assert (await client.chat(HELLO, model="m")).text == "recovered"
    stub.push(StubReply.error(503), StubReply.error(500))
    with pytest.raises(LLMUnavailable) as err:
        await client.chat(HELLO, model="m")
    assert err.value.kind == "server_error"
    assert len(stub.chat_requests) == 4 and len(sleeps) == 2
    await client.aclose()


async def test_429_waits_for_retry_after_within_the_cap(stub: OpenAIStub) -> None:
    sleeps: list[float] = []
    client = make_client(stub.url, sleeps=sleeps)
    stub.push(StubReply.rate_limited(0.3), StubReply.text("after the wait"))
    assert (await client.chat(HELLO, model="m")).text == "after the wait"
    assert sleeps == [0.3]  # exactly what the server asked for
    await client.aclose()


async def test_429_with_a_long_retry_after_pauses_the_endpoint(stub: OpenAIStub) -> None:
    clock = FakeClock()
    sleeps: list[float] = []
    client = make_client(stub.url, clock=clock, sleeps=sleeps)
    stub.push(StubReply.rate_limited(30))
    with pytest.raises(LLMUnavailable) as err:
        await client.chat(HELLO, model="m")
    assert err.value.kind == "rate_limited" and sleeps == []  # no one waits 30 s for a chat reply
    with pytest.raises(LLMUnavailable, match="circuit_open"):
        await client.chat(HELLO, model="m")
    assert len(stub.chat_requests) == 1  # the server was left alone as asked
    clock.now += 30
    assert (await client.chat(HELLO, model="m")).text
    await client.aclose()


async def test_slow_answer_times_out_without_a_retry(stub: OpenAIStub) -> None:
    client = make_client(stub.url, timeout=0.3)
    stub.push(StubReply.slow(3.0))
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="timeout"):
        await client.chat(HELLO, model="m")
    assert time.monotonic() - started < 2.0
    assert len(stub.chat_requests) == 1
    await client.aclose()


@pytest.mark.parametrize("reply,kind", [
    (StubReply.refused(), "refusal"),
    (StubReply.text(""), "empty"),
    (StubReply.error(401), "http_401"),
    (StubReply.error(400), "bad_request"),
])
async def test_unusable_answers_raise_one_exception_type(stub: OpenAIStub, reply: StubReply, kind: str) -> None:
    client = make_client(stub.url)
    stub.push(reply)
    with pytest.raises(LLMUnavailable) as err:
        await client.chat(HELLO, model="m")
    assert err.value.kind == kind
    await client.aclose()


async def test_truncated_answer_is_flagged(stub: OpenAIStub) -> None:
    client = make_client(stub.url)
    stub.push(StubReply.text("A long answer that was cut", finish_reason="length"))
    assert (await client.chat(HELLO, model="m")).truncated
    await client.aclose()


async def test_dropped_connection_is_retried(stub: OpenAIStub) -> None:
    client = make_client(stub.url)
    stub.push(StubReply.dropped(), StubReply.text("second try"))
    assert (await client.chat(HELLO, model="m")).text == "second try"
    await client.aclose()


async def test_dead_endpoint_opens_the_circuit_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    client = make_client(closed_port_url(), clock=clock, max_retries=0)
    caplog.set_level(logging.DEBUG, logger="bot.llm")
    kinds = []
    for _ in range(6):
        with pytest.raises(LLMUnavailable) as err:
            await client.chat(HELLO, model="m")
        kinds.append(err.value.kind)
    assert kinds == ["connection"] * 3 + ["circuit_open"] * 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2  # the first failure, then the circuit opening; not one per turn
    assert "offline" in warnings[-1].getMessage()
    assert KEY not in caplog.text
    await client.aclose()


async def test_circuit_recovers_when_the_endpoint_comes_back(stub: OpenAIStub,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    client = make_client(stub.url, clock=clock, max_retries=0)
    stub.push(*[StubReply.error(500)] * 3)
    for _ in range(3):
        with pytest.raises(LLMUnavailable):
            await client.chat(HELLO, model="m")
    with pytest.raises(LLMUnavailable, match="circuit_open"):
        await client.chat(HELLO, model="m")
    assert len(stub.chat_requests) == 3
    clock.now += client.config.breaker_cooldown
    caplog.set_level(logging.WARNING, logger="bot.llm")
    assert (await client.chat(HELLO, model="m")).text
    assert "answering again" in caplog.text
    await client.aclose()


async def test_a_cancelled_probe_frees_the_half_open_slot(stub: OpenAIStub) -> None:
    clock = FakeClock()
    client = make_client(stub.url, clock=clock, timeout=5.0)
    client.breaker.hold_off(10)
    clock.now += 10  # half-open: the next request is the one probe
    stub.push(StubReply.slow(3.0))
    probe = asyncio.create_task(client.chat(HELLO, model="m"))
    await asyncio.sleep(0.2)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert (await client.chat(HELLO, model="m")).text  # not stuck refusing every request
    await client.aclose()


async def test_rejected_requests_are_logged_once_and_do_not_open_the_circuit(
        stub: OpenAIStub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bot.llm")
    client = make_client(stub.url, max_retries=0)
    stub.push(*[StubReply.error(400)] * 4)
    for _ in range(4):
        with pytest.raises(LLMUnavailable, match="bad_request"):
            await client.chat(HELLO, model="m")
    assert len(caplog.records) == 1 and "netcoach doctor" in caplog.text
    assert client.breaker.state == CircuitBreaker.CLOSED
    await client.aclose()

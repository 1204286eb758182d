"""A practice session in Telegram with the LLM up, down, and failing midway: the real PTB application
(built by ``build_application`` from a ``Config``, as ``netcoach run`` does) against the fake Bot API
server, with the real ``openai`` client against the local stub. Every session must end with a debrief
and the user must never see an LLM error."""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from bot.config import Config
from bot.session import all_sessions
from bot.store import TinyDBStore
from bot.llm.config import LLMConfig
from bot.telegram.app import build_application, start_polling, stop_polling
from tests.fakes import FakeBotAPI
from tests.fakes.openai_stub import OpenAIStub, RecordedRequest, StubReply, closed_port_url
from tests.test_telegram_bot import CURIOUS, TOKEN, chat, end_and_debrief, start_practice

LLM_HINT = "Pick up on what she just said about the meetup and ask what she enjoys about organising it."
# None of these appear in this scenario's lines, the offline wording or the debrief.
ERROR_SIGNS = ("something went wrong", "error", "traceback", "exception", "llm", "openai", "timed out", "timeout",
               "unavailable", "rate limit", "429", "500", "connection", "refused", "api key", "test-key")


def persona_line(n: int) -> str:
    return f"Oh, I love that question, it's my favourite part of the evening (take {n})."


def answering(stub: OpenAIStub):
    """A healthy model: a persona line, a hint, or a judgement, depending on the request."""

    def respond(request: RecordedRequest) -> StubReply:
        if request.response_format:
            rows = json.loads(request.user_messages[0])["conversation"]
            return StubReply.json({"turns": [
                {"turn": r["turn"], "label": "other_focus", "confidence": 0.9, "evidence": r["text"], "better": ""}
                for r in rows if r["speaker"] == "user"]})
        if "networking coach" in request.system:
            return StubReply.text(LLM_HINT)
        return StubReply.text(persona_line(len(stub.chat_requests)))

    return respond


@pytest.fixture
async def server() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI(token=TOKEN, bot_username="netcoach_test_bot") as s:
        yield s


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as s:
        yield s


@asynccontextmanager
async def bot_with_llm(server: FakeBotAPI, data_dir: Path, base_url: str) -> AsyncIterator[None]:
    llm = LLMConfig(api_key="test-key", base_url=base_url, model="persona-model", judge_model_override="judge-model",
                    timeout=2.0, max_retries=0)
    config = Config(data_dir=data_dir, telegram_token=server.token, telegram_base_url=server.base_url, llm=llm)
    app = build_application(config)
    await start_polling(app, poll_timeout=1)
    try:
        yield
    finally:
        await stop_polling(app)


def assert_no_error_shown(user) -> None:
    for reply in user.replies:
        text = (reply.text or reply.caption or "").lower()
        assert not any(sign in text for sign in ERROR_SIGNS), reply.text


def sessions_of(data_dir: Path, user) -> list[dict]:
    return sorted(all_sessions(TinyDBStore(data_dir), f"tg-{user.id}"), key=lambda s: (s["started_at"], s["id"]))


async def practise(user, lines: list[str]) -> tuple[list, str, str]:
    await start_practice(user, "Data engineering meetup")
    replies = await chat(user, lines)
    user.send_text("/hint")
    hint = (await user.next_reply()).text
    debrief = await end_and_debrief(user, replies[-1])
    return replies, hint, debrief


async def test_session_with_the_llm_up(server: FakeBotAPI, stub: OpenAIStub, data_dir: Path) -> None:
    stub.default = answering(stub)
    user = server.user(first_name="Ula")
    async with bot_with_llm(server, data_dir, stub.url):
        replies, hint, debrief = await practise(user, CURIOUS[:4])
    assert [r.text for r in replies] == [f"Priya: {persona_line(n)}" for n in range(1, 5)]
    assert LLM_HINT in hint
    assert "Focus score" in debrief and "(connector)" in debrief
    assert [r.response_format for r in stub.chat_requests] == [None] * 5 + ["json_schema"]
    assert_no_error_shown(user)
    session = sessions_of(data_dir, user)[0]
    assert session["result"]["judgement"]["model"] == "judge-model"
    assert session["usage"]["persona-model"]["calls"] == 4
    assert session["usage"]["judge-model"] == {"prompt_tokens": 80, "completion_tokens": 20, "total_tokens": 100,
                                               "calls": 2}  # the hint and the judge


async def test_session_with_the_llm_down(server: FakeBotAPI, data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    user = server.user(first_name="Dan")
    async with bot_with_llm(server, data_dir, closed_port_url()):
        replies, hint, debrief = await practise(user, CURIOUS)
    assert all(r.text.startswith("Priya: ") for r in replies)
    assert hint.startswith("💡") and "Focus score" in debrief
    assert_no_error_shown(user)
    session = sessions_of(data_dir, user)[0]
    assert session["status"] == "ended" and "judgement" not in session["result"] and session["usage"] == {}
    llm_warnings = [r for r in caplog.records if r.name.startswith("bot.llm") and r.levelno >= logging.WARNING]
    assert 1 <= len(llm_warnings) <= 2  # the first failure and the circuit opening, not one per turn
    assert not any(r.name.startswith("bot.telegram") and r.levelno >= logging.ERROR for r in caplog.records)


async def test_session_with_the_llm_failing_midway(server: FakeBotAPI, stub: OpenAIStub, data_dir: Path) -> None:
    stub.default = answering(stub)
    user = server.user(first_name="Mia")
    async with bot_with_llm(server, data_dir, stub.url):
        await start_practice(user, "Data engineering meetup")
        first = await chat(user, CURIOUS[:2])
        stub.default = StubReply.error(500)
        rest = await chat(user, CURIOUS[2:])
        user.send_text("/hint")
        hint = (await user.next_reply()).text
        debrief = await end_and_debrief(user, rest[-1])
    assert [r.text for r in first] == [f"Priya: {persona_line(n)}" for n in (1, 2)]
    assert all(r.text.startswith("Priya: ") and "(take" not in r.text for r in rest)  # the offline engine took over
    assert LLM_HINT not in hint and "Focus score" in debrief
    # three failures opened the circuit: the remaining turns, the hint and the judge left the endpoint alone
    assert len(stub.chat_requests) == 2 + 3
    assert_no_error_shown(user)
    session = sessions_of(data_dir, user)[0]
    assert session["status"] == "ended" and "judgement" not in session["result"]

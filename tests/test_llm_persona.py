"""The LLM persona: uses the model's words when they are good, the offline engine's otherwise, and
keeps the same bookkeeping either way (so the debrief's discoveries mean the same thing)."""

from __future__ import annotations

import copy
from typing import Iterator

import pytest

from bot.llm.client import LLMClient
from bot.llm.config import LLMConfig
from bot.llm.persona import LLMPersona
from bot.llm.text import MESSAGE_OVERHEAD, approx_tokens
from bot.persona import OfflinePersona, PersonaEngine, PersonaState, Reading, update_engagement
from bot.scenarios import Scenario, ScenarioLibrary
from bot.scoring import Turn, default_scorer
from tests.fakes.openai_stub import OpenAIStub, StubReply, closed_port_url

TURNS = [
    "Hi! Did you get any pizza?",
    "What do you do when you're not at work?",
    "Bouldering! How did you get into climbing?",
    "What's been the hardest part of work lately?",
    "We sell a monitoring tool, can I book you in for a demo?",
    "Sorry, that was pushy. What did you think of the talk on streaming?",
]


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as s:
        yield s


@pytest.fixture
def scenario(library: ScenarioLibrary) -> Scenario:
    return library.get("tech-meetup")


def llm_persona(url: str, **overrides) -> LLMPersona:
    config = LLMConfig(**{"api_key": "test-key", "base_url": url, "timeout": 1.0, "max_retries": 0, **overrides})
    return LLMPersona(LLMClient(config), "persona-model", config.history_tokens).for_session("session-1")


async def play(engine: PersonaEngine, scenario: Scenario, lines: list[str]) -> tuple[list[str], PersonaState]:
    """Run the turns the way PracticeEngine does; returns the replies and the final state."""
    scorer = default_scorer()
    state = PersonaState.initial(scenario)
    history = [Turn("partner", scenario.persona.opening_line)]
    replies = []
    for text in lines:
        score = scorer.score_turn(text, history)
        reading = Reading(score, scorer.intents(text, history))
        update_engagement(state, reading, text)
        reply = await engine.reply(scenario, state, list(history), text, reading)
        replies.append(reply.text)
        history += [Turn("user", text), Turn("partner", reply.text)]
        if reply.left:
            break
    return replies, state


async def test_llm_down_gives_exactly_the_offline_conversation(scenario: Scenario) -> None:
    offline_replies, offline_state = await play(OfflinePersona(seed="session-1"), scenario, TURNS)
    replies, state = await play(llm_persona(closed_port_url()), scenario, TURNS)
    assert replies == offline_replies
    assert state == offline_state


async def test_llm_up_speaks_its_own_words_with_the_offline_bookkeeping(stub: OpenAIStub, scenario: Scenario) -> None:
    stub.default = lambda request: StubReply.text(f"LLM line {len(stub.chat_requests)}.")
    persona, offline = llm_persona(stub.url), OfflinePersona(seed="session-1")
    scorer = default_scorer()
    state = PersonaState.initial(scenario)
    history = [Turn("partner", scenario.persona.opening_line)]
    for i, text in enumerate(TURNS, 1):
        reading = Reading(scorer.score_turn(text, history), scorer.intents(text, history))
        update_engagement(state, reading, text)
        expected_state = copy.deepcopy(state)
        cue = offline.compose(scenario, expected_state, text, reading).text
        reply = await persona.reply(scenario, state, list(history), text, reading)
        assert reply.text == f"LLM line {i}."
        assert state == expected_state  # which topics were revealed: the offline engine's bookkeeping
        assert f'"{cue}"' in stub.chat_requests[-1].system  # ...and its line is the model's cue
        history += [Turn("user", text), Turn("partner", reply.text)]
    assert state.revealed


async def test_model_output_is_cleaned_for_chat(stub: OpenAIStub, scenario: Scenario) -> None:
    persona = llm_persona(stub.url)
    state = PersonaState.initial(scenario)
    reading = Reading(default_scorer().score_turn("Hi!"), frozenset())
    for raw, shown in [
        ('Priya Raman: *laughs* "Ha, the veggie one went in minutes."\nUser: and you?',
         "Ha, the veggie one went in minutes."),
        ("Assistant: Priya: I'm mostly here for the talks.\n\nHonestly.", "I'm mostly here for the talks. Honestly."),
        ("I love the canal view. And the pizza is great, and also the", "I love the canal view."),
    ]:
        stub.push(StubReply.text(raw, finish_reason="length" if raw.endswith("the") else "stop"))
        assert (await persona.reply(scenario, state, [], "Hi!", reading)).text == shown


@pytest.mark.parametrize("reply", [
    StubReply.error(500), StubReply.rate_limited(0.01), StubReply.slow(3.0), StubReply.refused(), StubReply.dropped(),
    StubReply.text("", finish_reason="stop"), StubReply.text("and then the", finish_reason="length"),
    StubReply.text("I'm an AI, so I can't really eat pizza."),
])
async def test_every_failure_falls_back_to_the_offline_line(stub: OpenAIStub, scenario: Scenario, reply) -> None:
    stub.push(reply)
    offline, _ = await play(OfflinePersona(seed="session-1"), scenario, TURNS[:1])
    persona = llm_persona(stub.url, timeout=0.3)
    assert (await play(persona, scenario, TURNS[:1]))[0] == offline


async def test_history_is_trimmed_to_the_token_budget(stub: OpenAIStub, scenario: Scenario) -> None:
    persona = llm_persona(stub.url, history_tokens=300)
    history = [Turn("partner" if i % 2 else "user", f"line {i} " + "word " * 60) for i in range(40)]
    state = PersonaState.initial(scenario)
    reading = Reading(default_scorer().score_turn("And then?"), frozenset())
    await persona.reply(scenario, state, history, "And then?", reading)
    messages = stub.chat_requests[0].messages
    past = messages[1:-1]
    assert 0 < len(past) < len(history)
    assert sum(approx_tokens(m["content"]) + MESSAGE_OVERHEAD for m in past) <= 300
    assert past[-1]["content"] == history[-1].text  # the most recent lines are the ones kept
    assert messages[-1] == {"role": "user", "content": "And then?"}


async def test_leaving_uses_the_scenarios_exit_line_without_a_call(stub: OpenAIStub, scenario: Scenario) -> None:
    persona = llm_persona(stub.url)
    state = PersonaState(engagement=0, pitches=4)
    reading = Reading(default_scorer().score_turn("Buy my tool"), frozenset())
    reply = await persona.reply(scenario, copy.deepcopy(state), [], "Buy my tool", reading)
    assert reply.left and reply.text == scenario.persona.exit_line
    assert stub.chat_requests == []

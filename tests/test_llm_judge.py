"""The LLM judge: structured output (with fallbacks for servers without it), validation of every
entry, the combination rule with the offline scorer, and the debrief it feeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from bot.debrief import build_debrief
from bot.llm.base import JudgedTurn, Judgement
from bot.llm.client import LLMClient
from bot.llm.combine import JUDGE_MIN_CONFIDENCE, combine
from bot.llm.config import LLMConfig
from bot.llm.judge import LLMJudge
from bot.scenarios import ScenarioLibrary
from bot.scoring import ConversationScore, Turn, TurnScore, default_scorer
from bot.session import PracticeEngine
from bot.store import TinyDBStore
from tests.fakes.openai_stub import OpenAIStub, RecordedRequest, StubReply

CONVERSATION = [
    Turn("partner", "Did you manage to get any of the veggie pizza?"),
    Turn("user", "Hi! How are you finding the meetup so far?"),
    Turn("partner", "Good turnout tonight."),
    Turn("user", "I run a consultancy myself. What are you working on at the moment?"),
    Turn("partner", "Pipelines, mostly."),
    Turn("user", "How did you get into data engineering?"),
]
USER_LINES = [t.text for t in CONVERSATION if t.role == "user"]
BETTER = "What's the most interesting pipeline you're working on?"


def answer(labels: list[str], confidence: float = 0.9, evidence: list[str] | None = None) -> dict[str, Any]:
    return {"turns": [
        {"turn": i + 1, "label": label, "confidence": confidence,
         "evidence": (evidence or USER_LINES)[i], "better": BETTER if label == "pitch" else ""}
        for i, label in enumerate(labels)]}


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as s:
        yield s


def judge_for(stub: OpenAIStub, **overrides: Any) -> LLMJudge:
    config = LLMConfig(**{"api_key": "test-key", "base_url": stub.url, "timeout": 1.0, "max_retries": 0, **overrides})
    return LLMJudge(LLMClient(config), "judge-model")


async def test_structured_output_is_requested_and_validated(stub: OpenAIStub) -> None:
    stub.push(StubReply.json(answer(["neutral", "pitch", "other_focus"])))
    judgement = await judge_for(stub).judge(None, CONVERSATION)
    request = stub.chat_requests[0]
    assert request.response_format == "json_schema"
    schema = request.body["response_format"]["json_schema"]
    assert schema["strict"] is True and schema["schema"]["required"] == ["turns"]
    first_user_turn = json.loads(request.user_messages[0])["conversation"][1]
    assert first_user_turn == {"turn": 1, "speaker": "user", "text": USER_LINES[0]}
    assert judgement is not None and judgement.model == "judge-model"
    assert [(t.index, t.label, t.evidence) for t in judgement.turns] == [
        (0, "neutral", USER_LINES[0]), (1, "pitch", USER_LINES[1]), (2, "other_focus", USER_LINES[2])]
    assert judgement.turns[1].better == BETTER and judgement.turns[0].better is None


async def test_bad_entries_are_dropped_one_by_one(stub: OpenAIStub) -> None:
    data = answer(["neutral", "pitch", "other_focus"])
    data["turns"][0]["evidence"] = "a quote the user never said"
    data["turns"][2]["label"] = "flattery"
    data["turns"].append({"turn": 9, "label": "pitch", "confidence": 1, "evidence": "x", "better": ""})
    data["turns"].append({"turn": 2, "label": "neutral", "confidence": 1, "evidence": "x", "better": ""})  # duplicate
    data["turns"][1]["label"] = "Pitch"  # small slips are forgiven
    data["turns"][1]["confidence"] = 85
    stub.push(StubReply.json(data))
    judgement = await judge_for(stub).judge(None, CONVERSATION)
    assert judgement is not None
    assert [(t.index, t.label, t.confidence, t.evidence is None) for t in judgement.turns] == [
        (0, "neutral", 0.9, True), (1, "pitch", 0.85, False)]


async def test_servers_without_json_schema_get_json_mode_then_plain_text(stub: OpenAIStub) -> None:
    judge = judge_for(stub)
    stub.json_schema_supported = False
    stub.push(StubReply.json(answer(["neutral", "pitch", "other_focus"])))
    assert await judge.judge(None, CONVERSATION) is not None
    assert [r.response_format for r in stub.chat_requests] == ["json_schema", "json_object"]
    stub.push(StubReply.json(answer(["neutral", "pitch", "other_focus"])))
    assert await judge.judge(None, CONVERSATION) is not None
    assert stub.chat_requests[-1].response_format == "json_object"  # remembered: no second 400

    stub.json_mode_supported = False
    prose = "Sure! Here are the labels:\n```json\n" + json.dumps(answer(["neutral", "pitch", "other_focus"])) + "\n```"
    stub.push(StubReply.text(prose))
    judgement = await judge.judge(None, CONVERSATION)
    assert judgement is not None and [t.label for t in judgement.turns] == ["neutral", "pitch", "other_focus"]
    assert stub.chat_requests[-1].response_format is None


@pytest.mark.parametrize("reply", [
    StubReply.malformed(),
    StubReply.truncated(answer(["neutral", "pitch", "other_focus"])),
    StubReply.json({"labels": "all good"}),
    StubReply.json({"turns": [{"turn": 1, "label": "pitch"}]}),  # no confidence: the entry is dropped
    StubReply.refused(),
    StubReply.error(500),
    StubReply.rate_limited(0.01),
    StubReply.slow(3.0),
    StubReply.dropped(),
])
async def test_unusable_answers_leave_the_offline_labels(stub: OpenAIStub, reply: StubReply) -> None:
    stub.push(reply)
    assert await judge_for(stub, timeout=0.3).judge(None, CONVERSATION) is None


# -- the combination rule ------------------------------------------------------------------------


def offline_score(labels: list[str], focus: int = 50) -> ConversationScore:
    return ConversationScore(focus, "mixed", tuple(TurnScore(label, 0.8) for label in labels))


def judged(*turns: tuple[int, str, float, bool]) -> Judgement:
    return Judgement("m", tuple(JudgedTurn(i, label, conf, USER_LINES[i] if grounded else None, None)
                                for i, label, conf, grounded in turns))


def test_judge_wins_only_when_confident_and_grounded() -> None:
    offline = offline_score(["neutral", "other_focus", "other_focus"])
    combined = combine(offline, CONVERSATION, judged(
        (0, "pitch", 0.95, True),  # confident and its quote checks out: judge wins
        (1, "pitch", JUDGE_MIN_CONFIDENCE - 0.01, True),  # not sure enough: offline
        (2, "pitch", 0.99, False),  # quote not in the turn: offline
    ))
    assert [t.label for t in combined.score.turn_scores] == ["pitch", "other_focus", "other_focus"]
    assert combined.sources == ("judge", "offline", "offline")
    assert combined.score.focus_score < offline.focus_score


def test_focus_is_the_offline_one_unless_a_label_changed() -> None:
    offline = offline_score(["neutral", "pitch", "other_focus"], focus=41)
    agree = combine(offline, CONVERSATION, judged((0, "neutral", 0.9, True), (1, "pitch", 0.9, True)))
    assert agree.score.focus_score == 41 and agree.sources == ("agree", "agree", "offline")
    assert combine(offline, CONVERSATION, None).score == ConversationScore(41, "mixed", offline.turn_scores)
    # one pitch judged other_focus: +100 * weight(turn 2) / sum(weights)
    up = combine(offline, CONVERSATION, judged((1, "other_focus", 0.9, True)))
    weights = [len(line.split()) ** 0.5 for line in USER_LINES]
    assert up.score.focus_score == round(41 + 100 * weights[1] / sum(weights))


# -- in the practice engine --------------------------------------------------------------------


async def test_the_debrief_uses_the_judges_labels_and_better_line(stub: OpenAIStub, data_dir: Path,
                                                                  library: ScenarioLibrary) -> None:
    engine = PracticeEngine(TinyDBStore(data_dir), library, judge=judge_for(stub))
    session = await engine.start("u1", "tech-meetup")
    for line in USER_LINES:
        await engine.say("u1", line)
    stub.push(StubReply.json(answer(["neutral", "pitch", "other_focus"], confidence=0.95)))
    ended, debrief = await engine.end("u1")

    assert [t.label for t in debrief.turns] == ["neutral", "pitch", "other_focus"]
    assert debrief.weak_line == USER_LINES[1] and debrief.better_line == BETTER
    assert ended.result["judgement"]["model"] == "judge-model"
    assert ended.usage == {
        "judge-model": {"prompt_tokens": 40, "completion_tokens": 10, "total_tokens": 50, "calls": 1}}
    again = engine.debrief("u1", session.id)  # /history rebuilds it from the store, no new call
    assert again == debrief and len(stub.chat_requests) == 1
    offline = default_scorer().score_conversation(ended.transcript())
    expected = combine(offline, ended.transcript(), Judgement.from_dict(ended.result["judgement"]))
    assert debrief.focus_score == ended.result["focus_score"] == expected.score.focus_score


async def test_a_failing_judge_leaves_exactly_the_offline_debrief(stub: OpenAIStub, data_dir: Path,
                                                                   library: ScenarioLibrary) -> None:
    stub.push(StubReply.malformed())
    engine = PracticeEngine(TinyDBStore(data_dir), library, judge=judge_for(stub))
    await engine.start("u1", "tech-meetup")
    for line in USER_LINES:
        await engine.say("u1", line)
    ended, debrief = await engine.end("u1")
    assert "judgement" not in ended.result and len(stub.chat_requests) == 1
    scenario = library.get("tech-meetup")
    offline = build_debrief(scenario, ended.persona, ended.transcript(), default_scorer())
    assert debrief == offline


def test_recorded_request_helpers() -> None:
    request = RecordedRequest("/v1/chat/completions", {}, {"messages": [{"role": "system", "content": "S"},
                                                                        {"role": "user", "content": "U"}]})
    assert request.system == "S" and request.user_messages == ["U"] and request.response_format is None

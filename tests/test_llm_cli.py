"""``netcoach doctor``, ``netcoach usage`` and ``netcoach score --llm``, run as a user would."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator

import pytest

from bot.cli import main
from bot.llm import llm_options
from bot.llm.config import LLMConfig
from bot.scenarios import ScenarioLibrary
from bot.session import PracticeEngine
from bot.store import TinyDBStore
from tests.conftest import run_netcoach
from tests.fakes.openai_stub import OpenAIStub, RecordedRequest, StubReply, closed_port_url

KEY = "sk-test-0123456789abcd"
SCORE_INPUT = "\n".join([
    json.dumps({"id": 1, "context": [{"role": "partner", "text": "We just opened a second site."}],
                "text": "How did you pick the location?"}),
    json.dumps({"id": 2, "turns": [{"role": "partner", "text": "Hi!"},
                                   {"role": "user", "text": "Here is my card, call me if you need anything."}]}),
    "not json",
]) + "\n"


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(models=("stub-model",)) as s:
        yield s


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, data_dir: Path):
    """A clean environment (no real key can leak in), with the data dir set; returns a setter."""
    import os

    for name in list(os.environ):
        if name.startswith(("OPENAI_", "NETCOACH_", "TELEGRAM_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NETCOACH_DATA_DIR", str(data_dir))

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_doctor_offline(env, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "offline" in out and "(not set)" in out and "check:" not in out


def test_doctor_shows_the_configuration_with_the_key_masked(env, stub: OpenAIStub,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=stub.url, NETCOACH_MODEL="stub-model", NETCOACH_LLM_TIMEOUT="abc")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "sk-...abcd" in out and KEY not in out
    assert stub.url in out and "stub-model" in out and "NETCOACH_LLM_TIMEOUT" in out
    assert "OK: the endpoint lists 1 model(s)" in out
    assert stub.chat_requests == []  # listing the models was enough: no tokens spent


def test_doctor_tries_a_completion_when_the_model_is_not_listed(env, stub: OpenAIStub,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    env(OPENAI_BASE_URL=stub.url, NETCOACH_MODEL="llama3", NETCOACH_JUDGE_MODEL="qwen")
    assert main(["doctor"]) == 0
    assert "answered a 1-token completion" in capsys.readouterr().out
    assert sorted(r.body["model"] for r in stub.chat_requests) == ["llama3", "qwen"]
    assert all(r.body["max_tokens"] == 1 for r in stub.chat_requests)


def test_doctor_fails_when_the_endpoint_is_unreachable(env, capsys: pytest.CaptureFixture[str]) -> None:
    env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=closed_port_url())
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: cannot connect" in out and KEY not in out


def test_doctor_reports_a_rejected_key(env, stub: OpenAIStub, capsys: pytest.CaptureFixture[str]) -> None:
    env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=stub.url, NETCOACH_MODEL="other-model")
    stub.push(StubReply.error(401))
    assert main(["doctor"]) == 1
    assert "HTTP 401" in capsys.readouterr().out


async def test_usage_totals_per_model(env, stub: OpenAIStub, data_dir: Path, library: ScenarioLibrary,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["usage"]) == 0
    assert "No LLM usage recorded" in capsys.readouterr().out

    config = LLMConfig(api_key="test-key", base_url=stub.url, model="stub-model", judge_model_override="judge-model")
    engine = PracticeEngine(TinyDBStore(data_dir), library, **llm_options(config))
    for user in ("alice", "bob"):
        await engine.start(user, "tech-meetup")
        await engine.say(user, "Hi! What brings you here tonight?")
        await engine.say(user, "How did you get into that?")
        stub.push(StubReply.json({"turns": []}, usage=(100, 20)))
        await engine.end(user)
    await engine.start("alice", "chamber-breakfast")  # a session in progress counts too
    await engine.say("alice", "Good morning!")

    assert main(["usage"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: [int(v.replace(",", "")) for v in line.split()[1:]] for line in lines[1:-1]}
    # sessions, calls, prompt, completion, total; the stub bills 40 + 10 per persona call
    assert rows == {"stub-model": [3, 5, 200, 50, 250], "judge-model": [2, 2, 200, 40, 240]}
    assert lines[-1].split() == ["total", "7", "400", "90", "490"]


def test_score_llm_without_configuration_scores_offline(env, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for args in (["score"], ["score", "--llm"]):
        monkeypatch.setattr("sys.stdin", io.StringIO(SCORE_INPUT))
        assert main(args) == 0
        captured = capsys.readouterr()
        outputs.append(captured.out)
    assert outputs[0] == outputs[1]
    assert "--llm needs OPENAI_API_KEY or OPENAI_BASE_URL" in captured.err


def label_everything_pitch(request: RecordedRequest) -> StubReply:
    rows = json.loads(request.user_messages[0])["conversation"]
    return StubReply.json({"turns": [
        {"turn": r["turn"], "label": "pitch", "confidence": 0.93, "evidence": r["text"], "better": "Ask about them."}
        for r in rows if r["speaker"] == "user"]})


def test_score_llm_uses_the_judge_and_keeps_the_output_contract(stub: OpenAIStub, data_dir: Path) -> None:
    stub.default = label_everything_pitch
    offline = run_netcoach("score", stdin=SCORE_INPUT, data_dir=data_dir)
    judged = run_netcoach("score", "--llm", stdin=SCORE_INPUT, data_dir=data_dir,
                          env={"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": stub.url})
    assert judged.returncode == 0, judged.stderr
    before = [json.loads(line) for line in offline.stdout.splitlines()]
    after = [json.loads(line) for line in judged.stdout.splitlines()]
    assert [sorted(o) for o in after] == [sorted(o) for o in before]  # exactly the offline keys
    assert after[0] == {"id": 1, "label": "pitch", "confidence": 0.93}
    assert after[1]["turn_labels"] == ["pitch"] and after[1]["verdict"] == "pitcher"
    assert after[2] == before[2]  # a bad line is still an error on its own line
    assert len(stub.chat_requests) == 2 and all(r.response_format == "json_schema" for r in stub.chat_requests)

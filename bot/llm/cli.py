"""``netcoach doctor``, ``netcoach usage`` and the judge behind ``netcoach score --llm``."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence, TextIO

from bot.llm.base import Judge, LLMUnavailable
from bot.llm.combine import combine, decide
from bot.llm.config import LLMConfig
from bot.scoring import ConversationScore, OfflineScorer, Turn, TurnScore
from bot.templates import wording

DOCTOR_TIMEOUT = 10.0
# Answers that prove the endpoint is up even though they are no use for a completion.
ALIVE = {"empty", "refusal", "bad_request"}


def describe(kind: str, timeout: float) -> str:
    """An operator-facing explanation of an :class:`LLMUnavailable` kind."""
    known = {
        "timeout": f"no answer within {timeout:g} s",
        "connection": "cannot connect (refused, unknown host or no network)",
        "http_401": "HTTP 401: the API key was rejected",
        "http_403": "HTTP 403: this key may not use this endpoint or model",
        "http_404": "HTTP 404: wrong base URL, or the model does not exist there",
        "server_error": "the server answered with an error (5xx)",
        "rate_limited": "rate limited (429)",
        "bad_response": "the answer was not an OpenAI-compatible response",
    }
    return known.get(kind, kind)


def doctor(config: LLMConfig, out: TextIO | None = None) -> int:
    """Print the effective configuration (key masked) and check the endpoint; 1 if configured but unusable."""
    out = out or sys.stdout
    if config.enabled:
        mode = "LLM (offline engine as fallback)"
    elif config.disabled:
        mode = "offline (NETCOACH_LLM=off)"
    else:
        mode = "offline (set OPENAI_API_KEY or OPENAI_BASE_URL for LLM mode)"
    rows = [
        ("mode", mode),
        ("endpoint", config.endpoint + ("" if config.base_url else " (OpenAI's default)")),
        ("api key", config.masked_key),
        ("persona model", config.persona_model),
        ("judge model", config.judge_model + " (also used for /hint)"),
        ("timeout", f"{config.timeout:g} s, {config.max_retries} retr{'y' if config.max_retries == 1 else 'ies'}"),
        ("circuit breaker", f"opens after {config.breaker_threshold} failures in a row, retries after "
                            f"{config.breaker_cooldown:g} s"),
    ]
    for name, value in rows:
        print(f"{name + ':':<17}{value}", file=out)
    for problem in config.problems:
        print(f"{'warning:':<17}{problem}", file=out)
    if not config.enabled:
        return 0
    ok, detail = asyncio.run(check_endpoint(config))
    print(f"{'check:':<17}{detail}", file=out)
    return 0 if ok else 1


async def check_endpoint(config: LLMConfig) -> tuple[bool, str]:
    """List the models; if that is not conclusive, ask each model for a 1-token completion."""
    from bot.llm.client import LLMClient

    probe = replace(config, timeout=min(config.timeout, DOCTOR_TIMEOUT), max_retries=0, breaker_threshold=100)
    wanted = sorted({config.persona_model, config.judge_model})
    client = LLMClient(probe)
    try:
        try:
            models: list[str] | None = await client.list_models()
        except LLMUnavailable as exc:
            if exc.kind in {"timeout", "connection", "http_401", "http_403"}:
                return False, f"FAILED: {describe(exc.kind, probe.timeout)}"
            models = None  # some servers have no /models: a completion will tell
        if models is not None and all(m in models for m in wanted):
            return True, f"OK: the endpoint lists {len(models)} model(s), including {', '.join(wanted)}"
        question = wording("llm.toml")["doctor_probe"]
        for model in wanted:
            try:
                await client.chat([{"role": "user", "content": question}], model=model, max_tokens=1)
            except LLMUnavailable as exc:
                if exc.kind not in ALIVE:
                    return False, f"FAILED: {model}: {describe(exc.kind, probe.timeout)}"
        listed = "" if models is None else f" ({', '.join(m for m in wanted if m not in models)} not in its model list)"
        return True, f"OK: {', '.join(wanted)} answered a 1-token completion{listed}"
    finally:
        await client.aclose()


def usage(data_dir: Path, out: TextIO | None = None) -> int:
    """Token totals per model across every user's practice sessions in ``data_dir``."""
    out = out or sys.stdout
    from bot.llm.usage import totals
    from bot.session import all_sessions
    from bot.store import StoreError, TinyDBStore

    store = TinyDBStore(data_dir)
    records = []
    for user_id in store.user_ids():
        try:
            records.extend(s.get("usage") for s in all_sessions(store, user_id))
        except (StoreError, ValueError) as exc:
            print(f"netcoach usage: skipped {user_id}: {exc}", file=sys.stderr)
    rows = totals(records)
    if not rows:
        print(f"No LLM usage recorded in {data_dir}.", file=out)
        return 0
    header = ("model", "sessions", "calls", "prompt", "completion", "total")
    table = [(r.model, r.sessions, r.calls, r.prompt_tokens, r.completion_tokens, r.total_tokens) for r in rows]
    total = ("total", "", *(sum(row[i] for row in table) for i in range(2, 6)))  # a session may use two models
    width = max(len(header[0]), *(len(r[0]) for r in table), len(total[0]))
    for row in (header, *table, total):
        print(f"{row[0]:<{width}}" + "".join(f"{v:>12,}" if isinstance(v, int) else f"{v:>12}" for v in row[1:]),
              file=out)
    return 0


class JudgedScorer:
    """The offline scorer with the LLM judge combined in, behind the synchronous ``Scorer`` interface
    that ``netcoach score`` pipes through. Output keys are exactly the offline ones."""

    def __init__(self, offline: OfflineScorer, judge: Judge, runner: asyncio.Runner):
        self.offline = offline
        self.judge = judge
        self.runner = runner

    def score_turn(self, text: str, context: Sequence[Turn] = ()) -> TurnScore:
        mine = self.offline.score_turn(text, context)
        turns = [*context, Turn("user", text)]
        judgement = self.runner.run(self.judge.judge(None, turns))
        last = sum(1 for t in turns if t.role == "user") - 1
        judged = next((j for j in judgement.turns if j.index == last), None) if judgement else None
        return decide(mine, judged)[0]

    def score_conversation(self, turns: Sequence[Turn]) -> ConversationScore:
        offline = self.offline.score_conversation(turns)
        if not offline.turn_scores:
            return offline
        return combine(offline, turns, self.runner.run(self.judge.judge(None, turns))).score


@contextlib.contextmanager
def judged_scorer(config: LLMConfig, offline: OfflineScorer) -> Iterator[JudgedScorer]:
    """A :class:`JudgedScorer` with its own event loop and client, closed afterwards."""
    from bot.llm.client import LLMClient
    from bot.llm.judge import LLMJudge

    with asyncio.Runner() as runner:
        client = LLMClient(config)
        try:
            yield JudgedScorer(offline, LLMJudge(client, config.judge_model), runner)
        finally:
            runner.run(client.aclose())

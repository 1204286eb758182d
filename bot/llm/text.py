"""Small text utilities for the LLM layer: token estimates, history trimming, cleaning model output.

Token counts are estimated as ``ceil(characters / 4)`` plus 4 per message. That is the usual rule of
thumb for English with GPT-style tokenisers; it needs no tokenizer download and only has to keep
requests comfortably inside a context window, not bill anyone (billing uses the server's counts).
"""

from __future__ import annotations

import json
import math
import re
from typing import Iterable, Sequence

from bot.scoring import Turn
from bot.templates import wording

MESSAGE_OVERHEAD = 4
_SENTENCE_END = re.compile(r"[.!?…](?=[\s\"')\]]|$)")
_EMOTE = re.compile(r"(?<!\w)\*[^*\n]{1,60}\*(?!\w)")


def approx_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def message_tokens(message: dict[str, str]) -> int:
    return approx_tokens(message.get("content", "")) + MESSAGE_OVERHEAD


def trim_to_budget(messages: Sequence[dict[str, str]], budget: int) -> list[dict[str, str]]:
    """The most recent messages whose estimated tokens fit in ``budget`` (oldest dropped first)."""
    kept: list[dict[str, str]] = []
    spent = 0
    for message in reversed(messages):
        cost = message_tokens(message)
        if spent + cost > budget:
            break
        kept.append(message)
        spent += cost
    kept.reverse()
    return kept


def transcript_json(turns: Sequence[Turn]) -> str:
    """The conversation as data for the judge and hints: user turns numbered from 1, partner lines as context."""
    rows = []
    n = 0
    for turn in turns:
        if turn.role == "user":
            n += 1
            rows.append({"turn": n, "speaker": "user", "text": turn.text})
        else:
            rows.append({"speaker": "partner", "text": turn.text})
    return json.dumps({"conversation": rows}, ensure_ascii=False)


def out_of_character(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in wording("llm.toml")["out_of_character"])


def clean_reply(text: str, names: Iterable[str] = (), max_chars: int = 600, truncated: bool = False) -> str:
    """Make a model's answer fit to show as one chat line; "" when nothing usable is left.

    Strips speaker prefixes ("Priya:", "Assistant:"), stops where the model starts writing the
    other side of the dialogue, drops *stage directions* and wrapping quotes, joins lines, and cuts
    at a sentence end when the answer is too long or was truncated by the token limit.
    """
    words = wording("llm.toml")
    own = [re.escape(n) for n in {*names, *words["speaker_prefixes"]} if n]
    prefix = re.compile(r"^\s*(?:\*\*)?(?:%s)(?:\*\*)?\s*:\s*(?:\*\*)?" % "|".join(own), re.IGNORECASE)
    other = re.compile(r"^\s*(?:%s)\s*:" % "|".join(map(re.escape, words["other_speaker_prefixes"])), re.IGNORECASE)

    lines = []
    for i, line in enumerate(text.strip().splitlines()):
        if i and other.match(line):
            break
        lines.append(line)
    text = " ".join(line.strip() for line in lines if line.strip())
    while True:
        stripped = prefix.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    text = _EMOTE.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) >= 2 and text[0] in "\"“'" and text[-1] in "\"”'":
        text = text[1:-1].strip()
    if truncated or len(text) > max_chars:
        text = _cut_at_sentence(text[:max_chars])
    return text


def _cut_at_sentence(text: str) -> str:
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""

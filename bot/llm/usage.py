"""Token accounting: what each practice session spent, per model, and totals across a data folder.

The client notes every completion's usage into the tally of the task it runs in
(:func:`collecting`, a ``ContextVar``), so the persona, judge and hint adapters keep their plain
interfaces and the engine still knows which session paid for which call. Each session record keeps
``usage = {model: {"prompt_tokens", "completion_tokens", "total_tokens", "calls"}}``.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "calls")

Tally = dict[str, dict[str, int]]  # model -> FIELDS -> count

_current: ContextVar[Tally | None] = ContextVar("netcoach_llm_usage", default=None)


def note(model: str, prompt_tokens: int, completion_tokens: int, total_tokens: int | None = None) -> None:
    """Add one completion to the tally being collected, if any (outside a session it is not kept)."""
    tally = _current.get()
    if tally is None:
        return
    add(tally, model, {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total_tokens if total_tokens is not None else prompt_tokens + completion_tokens,
        "calls": 1,
    })


def add(tally: Tally, model: str, counts: dict[str, Any]) -> None:
    row = tally.setdefault(model, dict.fromkeys(FIELDS, 0))
    for name in FIELDS:
        value = counts.get(name, 0)
        row[name] = row.get(name, 0) + (int(value) if isinstance(value, (int, float)) else 0)


def merge(into: Tally, other: Tally) -> Tally:
    for model, counts in other.items():
        add(into, model, counts)
    return into


@contextlib.contextmanager
def collecting(into: Tally | None = None) -> Iterator[Tally]:
    """Collect the usage of LLM calls made inside the block (in this task), and add it to ``into``
    (e.g. a session's ``usage``) at the end; nested blocks add up."""
    outer = _current.get()
    tally: Tally = {}
    token = _current.set(tally)
    try:
        yield tally
    finally:
        _current.reset(token)
        for target in (outer, into):
            if target is not None:
                merge(target, tally)


@dataclass(frozen=True)
class ModelTotals:
    model: str
    sessions: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def totals(session_usages: Iterable[dict[str, Any] | None]) -> list[ModelTotals]:
    """Sum the ``usage`` of many session records, per model (sorted by total tokens, largest first)."""
    tally: Tally = {}
    sessions: dict[str, int] = {}
    for usage in session_usages:
        if not isinstance(usage, dict):
            continue
        for model, counts in usage.items():
            if isinstance(counts, dict):
                add(tally, str(model), counts)
                sessions[str(model)] = sessions.get(str(model), 0) + 1
    rows = [ModelTotals(m, sessions[m], c["calls"], c["prompt_tokens"], c["completion_tokens"], c["total_tokens"])
            for m, c in tally.items()]
    return sorted(rows, key=lambda r: (-r.total_tokens, r.model))

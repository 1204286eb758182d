"""``netcoach score``: score turns and conversations given as JSON Lines (a pipe-friendly contract).

Input, one JSON object per line:

* ``{"id": ..., "context": [{"role": "partner"|"user", "text": ...}, ...], "text": "..."}`` — one user turn
  (``context`` optional) → ``{"id": ..., "label": "other_focus"|"pitch"|"neutral", "confidence": 0..1}``
* ``{"id": ..., "turns": [{"role": ..., "text": ...}, ...]}`` — a conversation
  → ``{"id": ..., "focus_score": int, "verdict": "connector"|"mixed"|"pitcher", "turn_labels": [...]}``

Unknown keys are ignored. A line that cannot be scored (invalid JSON, not an object, no ``text``/``turns``,
a bad role, a non-string text, a blank line...) yields ``{"id": <id or null>, "error": "<message>"}`` on
its own line and the run goes on, so output line N always answers input line N. Every output line is
flushed at once. The exit code is 0 unless the input cannot be read at all (then 1).

This module imports nothing heavy: the scorer passed in is built by the caller.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from bot.scoring.base import ROLES, Scorer, Turn

__all__ = ["run", "handle_line"]


class LineError(ValueError):
    pass


def _turns(value: Any, field: str) -> list[Turn]:
    if not isinstance(value, list):
        raise LineError(f'"{field}" must be a list of {{"role", "text"}} objects')
    out: list[Turn] = []
    for i, t in enumerate(value):
        if not isinstance(t, dict):
            raise LineError(f'"{field}"[{i}] must be an object with "role" and "text"')
        role = t.get("role")
        if role not in ROLES:
            raise LineError(f'"{field}"[{i}].role must be "partner" or "user", got {json.dumps(role)}')
        text = t.get("text")
        if not isinstance(text, str):
            raise LineError(f'"{field}"[{i}].text must be a string')
        out.append(Turn(role=role, text=text))
    return out


def handle_line(line: str, scorer: Scorer) -> dict[str, Any]:
    """Score one input line; never raises for bad input (returns an error object instead)."""
    if not line.strip():
        return {"id": None, "error": "blank line: expected a JSON object"}
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        return {"id": None, "error": f"invalid JSON: {exc}"}
    if not isinstance(obj, dict):
        return {"id": None, "error": f"expected a JSON object, got {type(obj).__name__}"}
    ident = obj.get("id")
    try:
        if "text" in obj:
            text = obj["text"]
            if not isinstance(text, str):
                raise LineError('"text" must be a string')
            ctx = obj.get("context")
            context = [] if ctx is None else _turns(ctx, "context")
            ts = scorer.score_turn(text, context)
            return {"id": ident, "label": ts.label, "confidence": round(float(ts.confidence), 4)}
        if "turns" in obj:
            turns = _turns(obj["turns"], "turns")
            cs = scorer.score_conversation(turns)
            return {
                "id": ident,
                "focus_score": int(cs.focus_score),
                "verdict": cs.verdict,
                "turn_labels": [t.label for t in cs.turn_scores],
            }
        return {"id": ident, "error": 'expected a "text" (one turn) or a "turns" (a conversation) field'}
    except LineError as exc:
        return {"id": ident, "error": str(exc)}
    except Exception as exc:  # a scorer bug must not kill a pipe: report it on this line
        return {"id": ident, "error": f"could not score this line: {type(exc).__name__}: {exc}"}


def _safe_id(obj: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(obj["id"])
        return obj
    except (TypeError, ValueError):
        obj = dict(obj)
        obj["id"] = None
        return obj


def run(infile: TextIO, outfile: TextIO, scorer: Scorer) -> int:
    """Read JSON Lines from ``infile``, write one JSON line per input line to ``outfile``; return the exit code."""
    try:
        for raw in infile:
            line = raw.rstrip("\r\n")
            result = _safe_id(handle_line(line, scorer))
            outfile.write(json.dumps(result, ensure_ascii=False) + "\n")
            outfile.flush()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"netcoach score: cannot read input: {exc}", file=sys.stderr)
        return 1
    return 0

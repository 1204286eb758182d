"""Jinja2 templates and wording data from ``prompts/``: everything netcoach says lives there, not in code."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from bot.config import PROMPTS_DIR


@lru_cache(maxsize=8)
def environment(prompts_dir: Path = PROMPTS_DIR, html: bool = False, snippets: bool = False) -> jinja2.Environment:
    """StrictUndefined so a missing variable is a loud error, not a silently blank line.

    ``html=True`` autoescapes every value, for Telegram's HTML parse mode: user text can never
    inject markup. Template files trim the newline after a block tag (so tags can sit on their
    own lines); short ``snippets`` from wording files keep every newline as written.
    """
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(prompts_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=html,
        trim_blocks=not snippets,
        lstrip_blocks=not snippets,
        keep_trailing_newline=False,
    )


def render(name: str, /, **context: Any) -> str:
    """Render ``prompts/<name>`` as plain text."""
    return environment().get_template(name).render(**context).strip()


def render_html(name: str, /, **context: Any) -> str:
    """Render ``prompts/<name>`` with every value HTML-escaped."""
    return environment(html=True).get_template(name).render(**context).strip()


@lru_cache(maxsize=2048)
def _snippet(source: str, html: bool) -> jinja2.Template:
    """Compiled once: Jinja's ``from_string`` compiles afresh on every call (about a millisecond of
    CPU per message otherwise). Compiled templates are immutable, so sharing them is safe."""
    return environment(html=html, snippets=True).from_string(source)


def render_string(source: str, /, **context: Any) -> str:
    """Render a short wording snippet (e.g. one line from a ``.toml`` wording file)."""
    return _snippet(source, False).render(**context).strip()


@lru_cache(maxsize=16)
def wording(name: str, prompts_dir: Path = PROMPTS_DIR) -> dict[str, Any]:
    """Load a TOML wording file from ``prompts/`` (e.g. the offline persona's stock lines)."""
    with open(prompts_dir / name, "rb") as fh:
        return tomllib.load(fh)


def render_html_string(source: str, /, **context: Any) -> str:
    """Like :func:`render_string`, with every value HTML-escaped (Telegram's HTML parse mode)."""
    return _snippet(source, True).render(**context).strip()

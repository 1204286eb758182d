"""Message formatting helpers: wording lookup and splitting long texts under Telegram's limit."""

from __future__ import annotations

from typing import Any

from bot.templates import render_html_string, wording

TELEGRAM_LIMIT = 4096
SAFE_LIMIT = 4000  # headroom so a split never lands exactly on the limit


def say(key: str, /, **context: Any) -> str:
    """The bot's wording ``key`` from ``prompts/telegram.toml``, rendered with values HTML-escaped."""
    return render_html_string(wording("telegram.toml")["text"][key], **context)


def button(key: str) -> str:
    return wording("telegram.toml")["buttons"][key]


def command_descriptions() -> dict[str, str]:
    return dict(wording("telegram.toml")["commands"])


def split_message(text: str, limit: int = SAFE_LIMIT) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters.

    Cuts at the last paragraph break, else line break, else space before the limit, so HTML
    written by our templates (which never spans lines) stays balanced in every chunk.
    """
    chunks: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[:limit]
        cut = next((window.rfind(sep) for sep in ("\n\n", "\n", " ") if window.rfind(sep) > limit // 4), limit)
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        chunks.append(rest)
    return chunks

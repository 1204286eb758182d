"""The Telegram front end: a thin python-telegram-bot adapter over the coaching engine."""

from bot.telegram.app import build_application, run_bot

__all__ = ["build_application", "run_bot"]

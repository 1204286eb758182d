"""Small helpers every Telegram handler module uses."""

from __future__ import annotations

import asyncio
from typing import Any

from telegram import Update
from telegram.ext import ContextTypes

from bot.session import PracticeEngine


def engine_of(context: ContextTypes.DEFAULT_TYPE) -> PracticeEngine:
    return context.bot_data["engine"]


def user_key(update: Update) -> str:
    """Our user id for a Telegram user: ``tg-<telegram id>`` (their private chat has the same id)."""
    assert update.effective_user is not None
    return f"tg-{update.effective_user.id}"


def profile_of(context: ContextTypes.DEFAULT_TYPE, uid: str) -> dict[str, Any]:
    """The user's profile record (goal, time zone, forms in progress...), or {}."""
    return engine_of(context).store.get(uid, "profile", "profile") or {}


def update_profile(context: ContextTypes.DEFAULT_TYPE, uid: str, **changes: Any) -> None:
    """Merge ``changes`` into the profile atomically (under the user's lock)."""
    engine_of(context).store.update(uid, "profile", "profile", lambda p: {**(p or {}), **changes})


async def io_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Store calls touch disk (and fsync); keep them off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)

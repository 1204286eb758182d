"""Small helpers every Telegram handler module uses."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

from telegram import CallbackQuery, Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.session import PracticeEngine
from bot.store import read_call, write_many


def engine_of(context: ContextTypes.DEFAULT_TYPE) -> PracticeEngine:
    return context.bot_data["engine"]


def user_key(update: Update) -> str:
    """Our user id for a Telegram user: ``tg-<telegram id>`` (their private chat has the same id)."""
    assert update.effective_user is not None
    return f"tg-{update.effective_user.id}"


def profile_of(context: ContextTypes.DEFAULT_TYPE, uid: str) -> dict[str, Any]:
    """The user's profile record (goal, time zone, forms in progress...), or {}."""
    return engine_of(context).store.get(uid, "profile", "profile") or {}


async def write_profile(context: ContextTypes.DEFAULT_TYPE, uid: str, **changes: Any) -> None:
    """Merge ``changes`` into the profile atomically (under the user's lock). Only the slow disk work
    (fsync, rename) leaves the event loop (see ``bot.store.write_many``)."""
    await write_many(engine_of(context).store, uid,
                     {("profile", "profile"): lambda p: {**(p or {}), **changes}})


async def io_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Store writes touch disk (and fsync); keep them off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def io_read(context: ContextTypes.DEFAULT_TYPE, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A read-only store call: inline if the store's reads never wait (see ``bot.store.read_call``)."""
    return await read_call(engine_of(context).store, fn, *args, **kwargs)


@contextlib.asynccontextmanager
async def answering(query: CallbackQuery) -> AsyncIterator[None]:
    """Answer a button press while the work it asked for goes on: the client's spinner stops as
    soon as Telegram hears back, and the visible reply does not wait for that round trip."""
    task = asyncio.create_task(query.answer())
    try:
        yield
    finally:
        with contextlib.suppress(TelegramError):
            await task

"""The user's own data in Telegram: /export sends everything netcoach keeps about them as one JSON
file; /forget deletes it all, after a confirmation button that carries a one-time token (so a
forged, replayed or week-old button deletes nothing).
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
from datetime import datetime, timezone

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Update
from telegram.constants import ParseMode
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.session import all_sessions, export_user
from bot.telegram import coach
from bot.telegram.common import engine_of, io_call, io_read, profile_of, user_key, write_profile
from bot.telegram.formatting import button, say

FORGET_TOKEN_TTL = 600  # seconds a /forget confirmation button stays valid


async def export(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    uid = user_key(update)
    data = await io_call(export_user, engine_of(context).store, uid)
    document = {
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "telegram_user_id": update.effective_user.id if update.effective_user else None,
        "data": data,
    }
    payload = json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")
    await update.effective_message.reply_document(
        InputFile(io.BytesIO(payload), filename="netcoach-export.json"),
        caption=say("export_caption", sessions=len(data.get("sessions", []))), parse_mode=ParseMode.HTML,
    )


async def forget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Ask first: the confirm button carries a one-time token kept in the profile."""
    uid = user_key(update)
    token = secrets.token_urlsafe(9)
    sessions = await io_call(all_sessions, engine_of(context).store, uid)
    await write_profile(context, uid, forget_token=token,
                  forget_asked_at=datetime.now(timezone.utc).timestamp())
    markup = InlineKeyboardMarkup([[InlineKeyboardButton(button("forget_yes"), callback_data=f"f:yes:{token}"),
                                    InlineKeyboardButton(button("forget_no"), callback_data="f:no")]])
    await update.effective_message.reply_html(say("forget_confirm", sessions=len(sessions)), reply_markup=markup)


async def btn_forget(update: Update, context: ContextTypes.DEFAULT_TYPE, arg: str) -> None:
    query = update.callback_query
    uid = user_key(update)
    profile = await io_read(context, profile_of, context, uid)
    token = profile.get("forget_token")
    fresh = datetime.now(timezone.utc).timestamp() - float(profile.get("forget_asked_at") or 0) < FORGET_TOKEN_TTL
    if not token or not fresh or not secrets.compare_digest(token, arg):
        await query.answer(say("expired"))
        return
    await query.answer()
    await coach.on_forget(context, uid)
    await io_call(engine_of(context).store.delete_user, uid)
    with contextlib.suppress(TelegramError):
        await query.edit_message_text(say("forget_done"), parse_mode=ParseMode.HTML)


async def btn_keep(update: Update, context: ContextTypes.DEFAULT_TYPE, arg: str) -> None:
    uid = user_key(update)
    await write_profile(context, uid, forget_token=None)
    await update.callback_query.answer()
    with contextlib.suppress(TelegramError):
        await update.callback_query.edit_message_text(say("forget_kept"), parse_mode=ParseMode.HTML)

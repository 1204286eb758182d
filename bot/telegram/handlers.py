"""Telegram handlers: translate updates into engine calls and engine results into messages.

Handlers stay thin: no coaching logic lives here. All conversation state is in the store (via the
engine), never only in memory, so a restart loses nothing and a button from before the restart
either still works or says "this menu has expired".

Callback data is ``<area>:<action>[:<arg>]`` and always re-checked against the store, so forged
or stale data can do nothing the user could not do by typing a command.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import unicodedata
from datetime import datetime, timezone
from typing import AsyncIterator

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message, Update
from telegram.constants import ChatAction, ParseMode
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.progress import chart_png, summarise
from bot.scenarios import DIFFICULTIES, Scenario
from bot.session import ACTIVE, PracticeEngine, Session, SessionError
from bot.store import StoreError
from bot.telegram import account, coach
from bot.telegram import events as ev
from bot.telegram.common import answering, engine_of, io_call, io_read, profile_of, user_key, write_profile
from bot.telegram.formatting import button, say, split_message

log = logging.getLogger(__name__)

HISTORY_LINES = 10


# -- plumbing -------------------------------------------------------------------------------------


async def send_html(message: Message, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Send possibly long HTML, split below Telegram's limit; buttons go on the last part."""
    parts = split_message(text)
    for i, part in enumerate(parts):
        await message.reply_html(part, reply_markup=markup if i == len(parts) - 1 else None,
                                 disable_web_page_preview=True)


TYPING_AFTER = 0.3  # seconds before "typing…" shows; the offline persona answers well within it


@contextlib.asynccontextmanager
async def typing(context: ContextTypes.DEFAULT_TYPE, chat_id: int) -> AsyncIterator[None]:
    """Show "typing…" while the persona thinks (an LLM call); Telegram clears it after ~5 s, so
    repeat it. An answer ready within ``TYPING_AFTER`` needs none: nobody would see it flash, and
    each one is a request counted against Telegram's ~30 requests/s (it halved the turns per
    second the bot could answer under that limit)."""

    async def keep_typing() -> None:
        await asyncio.sleep(TYPING_AFTER)
        while True:
            with contextlib.suppress(TelegramError):
                await context.bot.send_chat_action(chat_id, ChatAction.TYPING)
            await asyncio.sleep(4.5)

    task = asyncio.create_task(keep_typing())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def session_buttons(session_id: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(button("hint"), callback_data=f"s:hint:{session_id}"),
          InlineKeyboardButton(button("end"), callback_data=f"s:end:{session_id}")]]
    )


def after_debrief_buttons() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(button("again"), callback_data="m:practice"),
          InlineKeyboardButton(button("progress"), callback_data="m:progress")]]
    )


def scenario_keyboard(engine: PracticeEngine, difficulty: str | None, extra: list[Scenario] = ()) -> InlineKeyboardMarkup:
    filters_row = [
        InlineKeyboardButton(("• " if (difficulty or "all") == key else "") + button(key), callback_data=f"p:list:{key}")
        for key in ("all", *DIFFICULTIES)
    ]
    dots = {"easy": "🟢", "medium": "🟡", "hard": "🔴"}
    scenarios = [*engine.library.all(difficulty), *(s for s in extra if difficulty in (None, s.difficulty))]
    rows = [[InlineKeyboardButton(f"{dots[s.difficulty]} {s.title}", callback_data=f"p:pick:{s.id}")]
            for s in scenarios]
    return InlineKeyboardMarkup([filters_row, *rows])


# -- commands -------------------------------------------------------------------------------------


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Onboarding: what the bot does, then the user's networking goal (asked once)."""
    if context.args:
        await coach.start_with_invite(update, context, context.args[0])
        return
    uid = user_key(update)
    first_name = update.effective_user.first_name if update.effective_user else ""
    profile = await io_read(context, profile_of, context, uid)
    markup = InlineKeyboardMarkup([[InlineKeyboardButton(button("practice"), callback_data="m:practice")]])
    if profile.get("goal"):
        await update.effective_message.reply_html(say("welcome_back", first_name=first_name, goal=profile["goal"]),
                                                  reply_markup=markup)
        return
    await update.effective_message.reply_html(say("welcome", first_name=first_name))
    await write_profile(context, uid, awaiting="goal",
                  created_at=profile.get("created_at") or datetime.now(timezone.utc).isoformat(timespec="seconds"))
    await update.effective_message.reply_html(
        say("ask_goal"), reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton(button("skip"), callback_data="g:skip")]])
    )


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_html(say("help"))


async def practice(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    extra = await io_read(context, coach.coaching(context).scenarios_for, user_key(update))
    await update.effective_message.reply_html(
        say("pick_scenario", difficulty=None), reply_markup=scenario_keyboard(engine_of(context), None, extra)
    )


async def hint(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    try:
        text = await engine_of(context).hint(user_key(update))
    except SessionError as exc:
        await update.effective_message.reply_text(str(exc))
        return
    await update.effective_message.reply_html(say("hint", hint=text))


async def end(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await finish_session(update.effective_message, context, user_key(update))


async def finish_session(message: Message, context: ContextTypes.DEFAULT_TYPE, uid: str,
                         from_button: bool = False) -> None:
    try:
        async with typing(context, message.chat_id):  # the LLM judge may take a few seconds
            session, debrief = await engine_of(context).end(uid)
    except SessionError as exc:
        if not from_button:  # a second tap on "End" while the first is ending: its debrief is on the way
            await message.reply_text(str(exc))
        return
    await send_html(message, debrief.render_html(), after_debrief_buttons())
    await coach.report_attempt(context, uid, session.scenario_id, debrief.focus_score)


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    uid = user_key(update)
    cancelled = await ev.cancel_forms(context, uid) or await engine_of(context).cancel(uid)
    profile = await io_read(context, profile_of, context, uid)
    if profile.get("awaiting"):
        await write_profile(context, uid, awaiting=None)
        cancelled = True
    await update.effective_message.reply_html(say("cancelled" if cancelled else "nothing_to_cancel"))


async def history(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    engine = engine_of(context)
    # history reads the user's archive: for a long one, tens of ms of parsing, kept off the event loop
    sessions = list(reversed(await io_call(engine.history, user_key(update))))
    if not sessions:
        await update.effective_message.reply_html(say("history_empty"))
        return
    lines = [say("history_head")]
    buttons = []
    for s in sessions[:HISTORY_LINES]:
        scenario = engine.library.get(s.scenario_id)
        title = scenario.title if scenario else s.scenario_id
        result = s.result or {}
        date = s.started_at[:10]
        lines.append(say("history_line", date=date, title=title, score=result.get("focus_score", 0),
                         verdict=result.get("verdict", "")))
        if len(buttons) < 5 and scenario is not None:
            buttons.append([InlineKeyboardButton(f"📄 {date} {title[:30]} ({result.get('focus_score', 0)})",
                                                 callback_data=f"h:show:{s.id}")])
    if len(sessions) > HISTORY_LINES:
        lines.append(say("history_more", n=len(sessions) - HISTORY_LINES))
    await send_html(update.effective_message, "\n".join(lines), InlineKeyboardMarkup(buttons) if buttons else None)


async def progress(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await send_progress(update.effective_message, context, user_key(update))


async def send_progress(message: Message, context: ContextTypes.DEFAULT_TYPE, uid: str) -> None:
    sessions = await io_call(engine_of(context).history, uid)  # the archive: off the event loop
    scores = [int((s.result or {}).get("focus_score", 0)) for s in sessions]
    if len(scores) < 2:
        await message.reply_html(say("progress_few", n=len(scores), score=scores[0] if scores else 0))
        return
    summary = summarise(scores)
    png = await asyncio.to_thread(chart_png, summary)
    caption = say(
        "progress_caption", n=len(scores), latest=scores[-1], last5=round(summary.last5 or 0),
        prev5=None if summary.prev5 is None else round(summary.prev5),
        change=None if summary.change is None else round(summary.change),
        slope=None if summary.slope is None else round(summary.slope, 1),
    )
    await message.reply_photo(InputFile(io.BytesIO(png), filename="progress.png"), caption=caption,
                              parse_mode=ParseMode.HTML)


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_html(say("unknown_command"))


# -- messages -------------------------------------------------------------------------------------


def has_visible_text(text: str) -> bool:
    """False for text made only of spaces, control and format characters (zero-width spaces and
    joiners, direction marks, BOMs): nothing a person could read or reply to."""
    return any(not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf") for ch in text)


async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Text is a role-play turn, the answer to a question we asked, or a pointer to /practice."""
    message = update.effective_message
    if not has_visible_text(message.text or ""):
        await message.reply_html(say("empty_text"))
        return
    uid = user_key(update)
    engine = engine_of(context)
    profile = await io_read(context, profile_of, context, uid)
    if await ev.on_form_text(update, context, profile):
        return
    if not profile.get(ACTIVE):  # no role-play in progress (engine.say re-checks it under the user's lock)
        if profile.get("awaiting") == "goal":
            goal = message.text.strip()[:200]
            await write_profile(context, uid, goal=goal, awaiting=None)
            markup = InlineKeyboardMarkup([[InlineKeyboardButton(button("practice"), callback_data="m:practice")]])
            await message.reply_html(say("goal_saved", goal=goal), reply_markup=markup)
            return
        await message.reply_html(say("no_session"))
        return
    try:
        async with typing(context, message.chat_id):
            result = await engine.say(uid, message.text)
    except SessionError as exc:
        await message.reply_text(str(exc))
        return
    name = result.partner
    if result.left:
        await message.reply_html(say("partner_says", name=name, text=result.reply))
        await message.reply_html(say("partner_left", name=name))
        await finish_session(message, context, uid)
        return
    await message.reply_html(say("partner_says", name=name, text=result.reply), reply_markup=session_buttons(result.session_id))


async def on_non_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stickers, photos, voice...: a friendly pointer; nothing in the role-play changes.
    (A coach's .toml document is a scenario upload.)"""
    if update.effective_message.document is not None and await coach.on_document(update, context):
        return
    await update.effective_message.reply_html(say("text_only"))


async def on_group(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """In groups we only answer once per message addressed to us (commands or any message we see)."""
    await update.effective_message.reply_html(say("group_only_private"))


# -- buttons --------------------------------------------------------------------------------------


async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    assert query is not None
    parts = (query.data or "").split(":")
    area, action, arg = (parts + ["", "", ""])[:3]
    if area in ("co", "ci", "cl", "as", "cs"):
        if not await coach.on_coach_button(update, context, parts):
            await query.answer(say("expired"))
        return
    if len(parts) <= 3 and area in ("ev", "rf", "ct"):
        if not await ev.on_event_button(update, context, area, action, arg):
            await query.answer(say("expired"))
        return
    handler = BUTTONS.get((area, action))
    if handler is None or len(parts) > 3:
        await query.answer(say("expired_hint"), show_alert=False)
        return
    await handler(update, context, arg)


async def _expired(update: Update) -> None:
    await update.callback_query.answer(say("expired_hint"))


async def btn_list(update: Update, context: ContextTypes.DEFAULT_TYPE, arg: str) -> None:
    query = update.callback_query
    if arg not in ("all", *DIFFICULTIES):
        await _expired(update)
        return
    difficulty = None if arg == "all" else arg
    async with answering(query):
        text = say("pick_scenario", difficulty=difficulty)
        extra = await io_read(context, coach.coaching(context).scenarios_for, user_key(update))
        markup = scenario_keyboard(engine_of(context), difficulty, extra)
        if query.message is not None and (query.message.text_html != text or query.message.reply_markup != markup):
            with contextlib.suppress(TelegramError):  # "message is not modified" and friends
                await query.edit_message_text(text, parse_mode=ParseMode.HTML, reply_markup=markup)


async def btn_pick(update: Update, context: ContextTypes.DEFAULT_TYPE, arg: str) -> None:
    query = update.callback_query
    engine = engine_of(context)
    scenario = await io_read(context, coach.coaching(context).scenario, user_key(update), arg)  # only what this user may use
    if scenario is None:
        await _expired(update)
        return
    async with answering(query):
        uid = user_key(update)
        session, previous = await engine.switch_to(uid, scenario.id)
        intro = say("scenario_intro", s=scenario, p=scenario.persona)
        with contextlib.suppress(TelegramError):
            await query.edit_message_text(intro, parse_mode=ParseMode.HTML)
    message = query.message
    if previous is not None:
        prev_name = engine.scenario_for(previous).persona.first_name if previous.scenario_id in engine.library else ""
        await context.bot.send_message(message.chat.id, say("set_aside", name=prev_name), parse_mode=ParseMode.HTML)
    await context.bot.send_message(
        message.chat.id, say("partner_says", name=scenario.persona.first_name, text=session.turns[0]["text"]),
        parse_mode=ParseMode.HTML, reply_markup=session_buttons(session.id),
    )


async def _active_matching(update: Update, context: ContextTypes.DEFAULT_TYPE, session_id: str) -> Session | None:
    session = await io_read(context, engine_of(context).active, user_key(update))
    return session if session is not None and session.id == session_id else None


async def btn_end(update: Update, context: ContextTypes.DEFAULT_TYPE, arg: str) -> None:
    if await _active_matching(update, context, arg) is None:
        await update.callback_query.answer(say("expired"))
        return
    async with answering(update.callback_query):
        await finish_session(update.callback_query.message, context, user_key(update), from_button=True)


async def btn_hint(update: Update, context: ContextTypes.DEFAULT_TYPE, arg: str) -> None:
    if await _active_matching(update, context, arg) is None:
        await update.callback_query.answer(say("expired"))
        return
    await update.callback_query.answer()
    text = await engine_of(context).hint(user_key(update))
    await update.callback_query.message.reply_html(say("hint", hint=text))


async def btn_show(update: Update, context: ContextTypes.DEFAULT_TYPE, arg: str) -> None:
    engine = engine_of(context)
    try:
        debrief = await io_call(engine.debrief, user_key(update), arg)  # may read the archive
    except SessionError:
        debrief = None
    if debrief is None:
        await update.callback_query.answer(say("expired"))
        return
    await update.callback_query.answer()
    await send_html(update.callback_query.message, debrief.render_html())


async def btn_menu_practice(update: Update, context: ContextTypes.DEFAULT_TYPE, arg: str) -> None:
    await update.callback_query.answer()
    await practice(update, context)  # effective_message is the message carrying the button


async def btn_menu_progress(update: Update, context: ContextTypes.DEFAULT_TYPE, arg: str) -> None:
    await update.callback_query.answer()
    await progress(update, context)


async def btn_skip_goal(update: Update, context: ContextTypes.DEFAULT_TYPE, arg: str) -> None:
    uid = user_key(update)
    profile = await io_read(context, profile_of, context, uid)
    if profile.get("awaiting") != "goal":
        await update.callback_query.answer(say("expired"))
        return
    await write_profile(context, uid, awaiting=None)
    await update.callback_query.answer()
    markup = InlineKeyboardMarkup([[InlineKeyboardButton(button("practice"), callback_data="m:practice")]])
    await update.callback_query.message.reply_html(say("goal_skipped"), reply_markup=markup)


BUTTONS = {
    ("p", "list"): btn_list,
    ("p", "pick"): btn_pick,
    ("s", "end"): btn_end,
    ("s", "hint"): btn_hint,
    ("h", "show"): btn_show,
    ("m", "practice"): btn_menu_practice,
    ("m", "progress"): btn_menu_progress,
    ("g", "skip"): btn_skip_goal,
    ("f", "yes"): account.btn_forget,
    ("f", "no"): account.btn_keep,
}


# -- errors ---------------------------------------------------------------------------------------


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log with the update id; tell the user something went wrong, never what (no traces, no token)."""
    error = context.error
    update_id = update.update_id if isinstance(update, Update) else None
    log.error("update %s failed: %s: %s", update_id, type(error).__name__, error, exc_info=error)
    if not isinstance(update, Update) or update.effective_chat is None:
        return
    key = "storage_error" if isinstance(error, StoreError) else "error"
    with contextlib.suppress(Exception):
        if update.callback_query is not None:
            with contextlib.suppress(TelegramError):
                await update.callback_query.answer()
        await context.bot.send_message(update.effective_chat.id, say(key), parse_mode=ParseMode.HTML)

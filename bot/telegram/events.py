"""Telegram handlers for real events: /event, /events, /debrief, /contacts, and the scheduled
prep / reflection / keep-in-touch messages.

Multi-step input (registering an event, answering reflection questions) is kept in the user's
profile in the store (``form`` and ``reflection``), so it survives a restart like everything else.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from datetime import datetime, tzinfo
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden
from telegram.ext import Application, ContextTypes

from bot.events import EventBook, EventError
from bot.reflection import Reflection
from bot.schedule import Job, PermanentDeliveryError
from bot.telegram.common import io_call, io_read, profile_of, user_key, write_profile
from bot.templates import render_html_string, wording
from bot.timeparse import TimeParseError, parse_timezone, parse_when

log = logging.getLogger(__name__)
PROFILE = "profile"


def book(context: ContextTypes.DEFAULT_TYPE | Application) -> EventBook:
    data = context.bot_data
    return data["events"]


def text(key: str, /, **ctx: Any) -> str:
    return render_html_string(wording("events.toml")["text"][key], **ctx)


def label(key: str, /, **ctx: Any) -> str:
    return render_html_string(wording("events.toml")["buttons"][key], **ctx)


def fmt(moment: datetime, tz: tzinfo) -> str:
    local = moment.astimezone(tz)
    return f"{local:%a %d %b %H:%M}"


def _skip_markup(data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(label("skip"), callback_data=data)]])


# -- /event: a small form kept in the profile -------------------------------------------------


async def event_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    uid = user_key(update)
    name = " ".join(context.args or [])[:120]
    form = {"kind": "event", "step": "tz", "name": name}
    profile = await io_read(context, profile_of, context, uid)
    if profile.get("tz"):
        form["step"] = "when" if name else "name"
    await write_profile(context, uid, form=form)
    await ask_form_step(update.effective_message, context, uid, form)


async def ask_form_step(message, context: ContextTypes.DEFAULT_TYPE, uid: str, form: dict[str, Any]) -> None:
    step = form["step"]
    if step == "tz":
        zones = wording("events.toml")["common_zones"]
        rows = [[InlineKeyboardButton(z, callback_data=f"ev:tz:{z}") for z in zones[i:i + 2]] for i in range(0, len(zones), 2)]
        await message.reply_html(text("ask_tz"), reply_markup=InlineKeyboardMarkup(rows))
    elif step == "name":
        await message.reply_html(text("ask_name"))
    elif step == "when":
        events = book(context)
        tz = await io_call(events.timezone_of, uid)
        now = events.now().astimezone(tz)
        choices = []
        for phrase in wording("events.toml")["common_times"]:
            try:
                if parse_when(phrase, now) > now:
                    choices.append(InlineKeyboardButton(phrase.capitalize(), callback_data=f"ev:when:{phrase}"))
            except TimeParseError:
                continue
        await message.reply_html(text("ask_when", name=form["name"]),
                                 reply_markup=InlineKeyboardMarkup([choices]) if choices else None)
    elif step == "hope":
        await message.reply_html(text("ask_hope"), reply_markup=_skip_markup("ev:hope:skip"))


async def form_input(update: Update, context: ContextTypes.DEFAULT_TYPE, uid: str, value: str) -> None:
    """One answer to the event form, typed or from a button."""
    message = update.effective_message
    events = book(context)
    profile = await io_read(context, profile_of, context, uid)
    form = profile.get("form")
    if not form:
        return
    step = form["step"]
    try:
        if step == "adhoc":
            event = await io_call(events.add_past, uid, value)
            await start_reflection(message, context, uid, event.id)
            return
        if step == "tz":
            tz = await io_call(events.set_timezone, uid, value)
            await message.reply_html(text("tz_saved", tz=str(getattr(tz, "key", tz))))
            form["step"] = "when" if form.get("name") else "name"
        elif step == "name":
            if not value.strip():
                await message.reply_html(text("ask_name"))
                return
            form["name"], form["step"] = " ".join(value.split())[:120], "when"
        elif step == "when":
            start = events.parse_start(uid, value)
            form["start"], form["step"] = start.isoformat(), "hope"
        elif step == "hope":
            tz = await io_call(events.timezone_of, uid)
            start = datetime.fromisoformat(form["start"]).astimezone(tz)  # back in the named zone
            event = await io_call(events.register, uid, form["name"], start, value)
            await write_profile(context, uid, form=None)
            prep = await io_call(_prep_of, events, uid, event.id)
            await message.reply_html(text(
                "registered", name=event.name, when=fmt(event.start(), tz), tz=event.tz,
                prep=f"on {fmt(prep, tz)}" if prep else "", reflect=f"on {fmt(events.reflect_time(event), tz)}",
            ))
            return
    except (TimeParseError, EventError) as exc:
        await message.reply_text(str(exc))
        return
    await write_profile(context, uid, form=form)
    await ask_form_step(message, context, uid, form)


def _prep_of(events: EventBook, uid: str, event_id: str) -> datetime | None:
    job = next((j for j in events.scheduler.jobs(uid) if j.id == f"prep:{event_id}" and j.status == "pending"), None)
    return job.due if job else None


async def on_form_text(update: Update, context: ContextTypes.DEFAULT_TYPE, profile: dict[str, Any]) -> bool:
    """Route typed text to a form or reflection in progress (as ``profile`` records it); False if
    there is none."""
    uid = user_key(update)
    form = profile.get("form")
    if form and form.get("kind") == "assign":
        from bot.telegram.coach import on_form_text as coach_form_text

        return await coach_form_text(update, context, form)
    if form:
        await form_input(update, context, uid, update.effective_message.text)
        return True
    if profile.get("reflection"):
        await reflection_input(update, context, uid, update.effective_message.text)
        return True
    return False


async def cancel_forms(context: ContextTypes.DEFAULT_TYPE, uid: str) -> bool:
    profile = await io_read(context, profile_of, context, uid)
    if profile.get("form") or profile.get("reflection"):
        await write_profile(context, uid, form=None, reflection=None)
        return True
    return False


# -- /events ----------------------------------------------------------------------------------


async def events_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    uid = user_key(update)
    events = book(context)
    upcoming = await io_call(events.upcoming, uid)
    waiting = [e for e in await io_call(events.awaiting_reflection, uid) if e not in upcoming]
    if not upcoming and not waiting:
        await update.effective_message.reply_html(text("events_empty"))
        return
    lines, buttons = [], []
    if upcoming:
        lines.append(text("events_head"))
        for e in upcoming:
            lines.append(text("event_line", when=fmt(e.start(), parse_timezone(e.tz)), name=e.name, hope=e.hope))
            buttons.append([InlineKeyboardButton(label("cancel_event", name=e.name[:40]), callback_data=f"ev:cancel:{e.id}")])
    if waiting:
        lines.append(text("awaiting_head"))
        for e in waiting:
            lines.append(text("event_line", when=fmt(e.start(), parse_timezone(e.tz)), name=e.name, hope=""))
            buttons.append([InlineKeyboardButton(label("reflect_on", name=e.name[:40]), callback_data=f"rf:start:{e.id}")])
    await update.effective_message.reply_html("\n".join(lines), reply_markup=InlineKeyboardMarkup(buttons))


# -- /debrief: the reflection -----------------------------------------------------------------


async def debrief_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    uid = user_key(update)
    waiting = await io_call(book(context).awaiting_reflection, uid)
    if len(waiting) == 1:
        await start_reflection(update.effective_message, context, uid, waiting[0].id)
    elif waiting:
        buttons = [[InlineKeyboardButton(label("reflect_on", name=e.name[:40]), callback_data=f"rf:start:{e.id}")]
                   for e in waiting[-8:]]
        await update.effective_message.reply_html(text("debrief_pick"), reply_markup=InlineKeyboardMarkup(buttons))
    else:
        await write_profile(context, uid, form={"kind": "adhoc", "step": "adhoc"})
        await update.effective_message.reply_html(text("debrief_none"))


async def start_reflection(message, context: ContextTypes.DEFAULT_TYPE, uid: str, event_id: str) -> bool:
    event = await io_call(book(context).get, uid, event_id)
    if event is None or event.status != "upcoming" or event.reflection is not None:
        return False
    reflection = Reflection(event.id, event.name)
    await write_profile(context, uid, reflection=reflection.to_dict(), form=None)
    await ask_reflection(message, reflection)
    return True


async def ask_reflection(message, reflection: Reflection) -> None:
    step, question = reflection.question()
    if step == "balance":
        choices = wording("reflection.toml")["balance_choices"]
        markup = InlineKeyboardMarkup([[InlineKeyboardButton(v, callback_data=f"rf:bal:{k}")] for k, v in choices.items()]
                                      + [[InlineKeyboardButton(label("skip"), callback_data="rf:skip")]])
    else:
        markup = _skip_markup("rf:skip")
    await message.reply_html(question, reply_markup=markup)


async def reflection_input(update: Update, context: ContextTypes.DEFAULT_TYPE, uid: str, value: str | None) -> None:
    """An answer (or a skip when ``value`` is None) to the current reflection question."""
    message = update.effective_message
    profile = await io_read(context, profile_of, context, uid)
    data = profile.get("reflection")
    if not data:
        return
    reflection = Reflection.from_dict(data)
    if value is None:
        reflection.skip()
    else:
        reflection.answer(value)
    if not reflection.done:
        await write_profile(context, uid, reflection=reflection.to_dict())
        await ask_reflection(message, reflection)
        return
    try:
        result = await io_call(book(context).finish_reflection, uid, reflection)
    except EventError as exc:
        await message.reply_text(str(exc))
        result = None
    await write_profile(context, uid, reflection=None)
    if result is not None:
        await message.reply_html(text("reflection_result", name=reflection.event_name, r=result))
        if reflection.people:
            await message.reply_html(text("reflection_saved"))


# -- /contacts --------------------------------------------------------------------------------


async def contacts_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    uid = user_key(update)
    events = book(context)
    contacts = await io_call(events.contacts, uid)
    if not contacts:
        await update.effective_message.reply_html(text("contacts_empty"))
        return
    tz = await io_call(events.timezone_of, uid)
    lines = [text("contacts_head")]
    for c in contacts[:30]:
        lines.append(text("contact_line", c=c, due=fmt(datetime.fromisoformat(c.followup_due), tz or parse_timezone("UTC"))))
    await update.effective_message.reply_html("\n".join(lines))


# -- buttons ----------------------------------------------------------------------------------


async def on_event_button(update: Update, context: ContextTypes.DEFAULT_TYPE, area: str, action: str, arg: str) -> bool:
    """Handle ev:/rf:/ct: buttons; returns False when the data is not ours or no longer valid."""
    query = update.callback_query
    uid = user_key(update)
    events = book(context)
    profile = await io_read(context, profile_of, context, uid)
    message = query.message
    if area == "ev" and action in ("tz", "when", "hope"):
        form = profile.get("form")
        if not form or form.get("kind") != "event" or form.get("step") != action:
            return False
        await query.answer()
        await form_input(update, context, uid, "" if arg == "skip" else arg)
        return True
    if area == "ev" and action == "cancel":
        event = await io_call(events.cancel, uid, arg)
        if event is None:
            return False
        await query.answer()
        await message.reply_html(text("cancelled", name=event.name))
        return True
    if area == "rf" and action == "start":
        event = await io_call(events.get, uid, arg)
        if event is None or event.status != "upcoming" or event.reflection is not None:
            return False
        await query.answer()
        await start_reflection(message, context, uid, arg)
        return True
    if area == "rf" and action == "later":
        await query.answer()
        return True
    if area == "rf" and action in ("skip", "bal"):
        reflection = profile.get("reflection")
        if not reflection or (action == "bal" and (reflection.get("step") != "balance" or arg not in ("them", "even", "me"))):
            return False
        await query.answer()
        await reflection_input(update, context, uid, None if action == "skip" else arg)
        return True
    if area == "ct" and action in ("done", "snooze", "drop"):
        contact = await io_call(events.contact_action, uid, arg, action)
        if contact is None:
            return False
        await query.answer()
        name = contact.name
        if action == "snooze":
            tz = await io_call(events.timezone_of, uid)
            when = fmt(datetime.fromisoformat(contact.followup_due), tz or parse_timezone("UTC"))
            await message.reply_html(text("contact_snoozed", name=name, when=f"on {when}"))
        else:
            await message.reply_html(text("contact_done" if action == "done" else "contact_dropped", name=name))
        return True
    return False


# -- scheduled delivery -----------------------------------------------------------------------


async def deliver(app: Application, job: Job) -> None:
    """Send one scheduled prompt; silently skip ones whose subject is gone or settled."""
    if not job.user_id.startswith("tg-"):
        return
    chat_id = int(job.user_id[3:])
    events: EventBook = app.bot_data["events"]
    try:
        if job.kind in ("prep", "reflect"):
            event = await asyncio.to_thread(events.get, job.user_id, job.ref)
            if event is None or event.status != "upcoming" or event.reflection is not None:
                return
            tz = parse_timezone(event.tz)
            if job.kind == "prep" and events.now() >= event.start():
                return  # missed while we were down: prep after the event helps nobody
            if job.kind == "prep":
                questions = wording("events.toml")["prep_questions"]
                seed = zlib.crc32(event.id.encode())
                picks = [questions[0], questions[1 + seed % 3], questions[4 + seed % 2]]
                scenario = events.matching_scenario(event)
                markup = InlineKeyboardMarkup([[InlineKeyboardButton(label("practice", title=scenario.title[:40]),
                                                                     callback_data=f"p:pick:{scenario.id}")]])
                await app.bot.send_message(chat_id, text("prep", name=event.name, when=fmt(event.start(), tz),
                                                         questions=picks, hope=event.hope),
                                           parse_mode=ParseMode.HTML, reply_markup=markup)
            else:
                markup = InlineKeyboardMarkup([[InlineKeyboardButton(label("start_reflection"), callback_data=f"rf:start:{event.id}"),
                                                InlineKeyboardButton(label("not_now"), callback_data="rf:later")]])
                await app.bot.send_message(chat_id, text("reflect_prompt", name=event.name),
                                           parse_mode=ParseMode.HTML, reply_markup=markup)
        elif job.kind == "reminder":
            contact = await asyncio.to_thread(events.contact, job.user_id, job.ref)
            if contact is None or contact.status != "active":
                return
            markup = InlineKeyboardMarkup([[
                InlineKeyboardButton(label("done"), callback_data=f"ct:done:{contact.id}"),
                InlineKeyboardButton(label("snooze"), callback_data=f"ct:snooze:{contact.id}"),
                InlineKeyboardButton(label("drop"), callback_data=f"ct:drop:{contact.id}"),
            ]])
            await app.bot.send_message(chat_id, text("reminder", name=contact.name, event=contact.event_name,
                                                     suggestion=events.suggestion(contact)),
                                       parse_mode=ParseMode.HTML, reply_markup=markup)
        else:
            hook = app.bot_data.get("job_handlers", {}).get(job.kind)
            if hook is not None:
                await hook(app, job)
    except Forbidden as exc:
        raise PermanentDeliveryError(str(exc)) from exc
    except BadRequest as exc:
        if "chat not found" in str(exc).lower():
            raise PermanentDeliveryError(str(exc)) from exc
        raise


async def run_scheduled(app: Application) -> int:
    """Deliver everything that is due. Called by the JobQueue tick, and by tests with a fake clock."""
    return await app.bot_data["events"].scheduler.run_due(lambda job: deliver(app, job))


async def scheduler_tick(context: ContextTypes.DEFAULT_TYPE) -> None:
    await run_scheduled(context.application)

"""Telegram handlers for coaches and trainees: /coach, invites, /coaches, /assign, /roster,
/scenarios and scenario uploads, plus assignment reminders and completion reports.

Every button re-checks authorization through :class:`bot.coaching.Coaching`; callback data only
ever names the caller's own links (opaque ids), never another user's Telegram id.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from datetime import datetime, timezone
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Update
from telegram.constants import ParseMode
from telegram.ext import Application, ContextTypes

from bot.coaching import CONSENTS, Assignment, Coaching, CoachingError
from bot.progress import roster_chart_png
from bot.scenarios import MAX_FILE_BYTES, ScenarioError
from bot.schedule import Job
from bot.telegram.common import io_call, profile_of, user_key, write_profile
from bot.telegram.formatting import split_message
from bot.templates import render_html_string, wording
from bot.timeparse import TimeParseError, parse_timezone, parse_when

log = logging.getLogger(__name__)
PROFILE = "profile"
TARGETS = (50, 60, 70, 80)
ATTEMPTS = (1, 2, 3, 5)
CONSENT_WORDS = {"scores": "scores only", "transcripts": "scores and transcripts"}


def coaching(context: ContextTypes.DEFAULT_TYPE | Application) -> Coaching:
    return context.bot_data["coaching"]


def text(key: str, /, **ctx: Any) -> str:
    return render_html_string(wording("coach.toml")["text"][key], **ctx)


def label(key: str, /, **ctx: Any) -> str:
    return render_html_string(wording("coach.toml")["buttons"][key], **ctx)


def _when(iso: str, tz) -> str:
    return f"{datetime.fromisoformat(iso).astimezone(tz):%a %d %b %H:%M}"


def _tz(context: ContextTypes.DEFAULT_TYPE, uid: str):
    name = profile_of(context, uid).get("tz")
    return parse_timezone(name) if name else timezone.utc


def display_name(update: Update) -> str:
    user = update.effective_user
    name = user.full_name if user else "Someone"
    return f"{name} (@{user.username})" if user and user.username else name


def _has_id_args(context: ContextTypes.DEFAULT_TYPE) -> bool:
    return any(re.fullmatch(r"(tg-)?-?\d{3,}", a) for a in (context.args or []))


# -- becoming a coach, invites ------------------------------------------------------------------


async def coach_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    uid = user_key(update)
    await io_call(coaching(context).become_coach, uid, display_name(update))
    await send_invite(update.effective_message, context, uid)


async def send_invite(message, context: ContextTypes.DEFAULT_TYPE, uid: str) -> None:
    co = coaching(context)
    payload, expires = await io_call(co.create_invite, uid)
    link = f"https://t.me/{context.bot.username}?start={payload}"
    markup = InlineKeyboardMarkup([[InlineKeyboardButton(label("new_invite"), callback_data="co:inv"),
                                    InlineKeyboardButton(label("revoke"), callback_data="co:rev")]])
    profile = await io_call(co.coach_profile, uid)
    await message.reply_html(text("coach_intro", name=profile["name"], link=link,
                                  expires=_when(expires.isoformat(), await io_call(_tz, context, uid))),
                             reply_markup=markup, disable_web_page_preview=True)


async def start_with_invite(update: Update, context: ContextTypes.DEFAULT_TYPE, payload: str) -> None:
    """``/start <payload>`` from an invite link: show who invites and what they would see."""
    uid = user_key(update)
    try:
        invite = await io_call(coaching(context).open_invite, payload)
    except CoachingError as exc:
        await update.effective_message.reply_html(text("invite_invalid", reason=str(exc)))
        return
    await write_profile(context, uid, pending_invite=payload)
    markup = InlineKeyboardMarkup([
        [InlineKeyboardButton(label("consent_scores"), callback_data="ci:scores")],
        [InlineKeyboardButton(label("consent_transcripts"), callback_data="ci:transcripts")],
        [InlineKeyboardButton(label("decline"), callback_data="ci:no")],
    ])
    await update.effective_message.reply_html(text("invite_offer", coach=invite["coach_name"]), reply_markup=markup)


# -- trainees' side -----------------------------------------------------------------------------


async def coaches_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    uid = user_key(update)
    links = await io_call(coaching(context).coaches, uid)
    if not links:
        await update.effective_message.reply_html(text("coaches_empty"))
        return
    lines = [text("coaches_head")] + [text("coach_line", name=link["coach_name"], since=link["since"][:10],
                                            consent=CONSENT_WORDS[link["consent"]]) for link in links]
    buttons = [[InlineKeyboardButton(label("leave", name=link["coach_name"][:30]), callback_data=f"cl:{link['link_id']}")]
               for link in links]
    await update.effective_message.reply_html("\n".join(lines), reply_markup=InlineKeyboardMarkup(buttons))


async def coach_gate(update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | None:
    """The caller's id if they are a coach and typed no ids as arguments; else answer and None."""
    uid = user_key(update)
    if not await io_call(coaching(context).is_coach, uid):
        await update.effective_message.reply_html(text("not_coach"))
        return None
    if _has_id_args(context):
        await update.effective_message.reply_html(text("no_ids"))
        return None
    return uid


# -- /assign ------------------------------------------------------------------------------------


async def assign_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    uid = await coach_gate(update, context)
    if uid is None:
        return
    co = coaching(context)
    trainees = await io_call(co.trainees, uid)
    if not trainees:
        await update.effective_message.reply_html(text("no_trainees"))
        return
    await write_profile(context, uid, form={"kind": "assign", "step": "who"})
    rows = [[InlineKeyboardButton(t["name"][:40], callback_data=f"as:who:{t['link_id']}")] for t in trainees]
    rows.append([InlineKeyboardButton(label("all"), callback_data="as:who:all")])
    await update.effective_message.reply_html(text("assign_who"), reply_markup=InlineKeyboardMarkup(rows))


async def assign_step(update: Update, context: ContextTypes.DEFAULT_TYPE, uid: str, step: str, value: str) -> bool:
    """One answer to the /assign form (button or typed); False if it does not fit the form."""
    co = coaching(context)
    message = update.effective_message
    form = (await io_call(profile_of, context, uid)).get("form") or {}
    if form.get("kind") != "assign" or form.get("step") != step:
        return False
    if step == "who":
        trainees = {t["link_id"] for t in await io_call(co.trainees, uid)}
        chosen = sorted(trainees) if value == "all" else [value]
        if not chosen or not set(chosen) <= trainees:
            return False
        form.update(step="scenario", who=chosen)
        scenarios = [*co.library.all(), *await io_call(co.own_scenarios, uid)]
        rows = [[InlineKeyboardButton(s.title[:50], callback_data=f"as:scenario:{s.id}")] for s in scenarios]
        ask = text("assign_scenario"), InlineKeyboardMarkup(rows)
    elif step == "scenario":
        if await io_call(co.scenario, uid, value) is None:
            return False
        form.update(step="due", scenario=value)
        buttons = [InlineKeyboardButton(p, callback_data=f"as:due:{p}") for p in ("in 3 days", "in 7 days", "in 14 days")]
        ask = text("assign_due"), InlineKeyboardMarkup([buttons])
    elif step == "due":
        tz = await io_call(_tz, context, uid)
        try:
            due = parse_when(value, co.now().astimezone(tz))
        except TimeParseError as exc:
            await message.reply_text(str(exc))
            return True
        if due <= co.now():
            await message.reply_text("That is in the past. When is it due?")
            return True
        form.update(step="target", due=due.isoformat())
        buttons = [InlineKeyboardButton(str(t), callback_data=f"as:target:{t}") for t in TARGETS]
        ask = text("assign_target"), InlineKeyboardMarkup([buttons])
    elif step in ("target", "attempts"):
        lo, hi = (0, 100) if step == "target" else (1, 20)
        if not value.strip().isdigit() or not lo <= int(value) <= hi:
            await message.reply_html(text("assign_bad_number", lo=lo, hi=hi))
            return True
        if step == "target":
            form.update(step="attempts", target=int(value))
            buttons = [InlineKeyboardButton(str(a), callback_data=f"as:attempts:{a}") for a in ATTEMPTS]
            ask = text("assign_attempts"), InlineKeyboardMarkup([buttons])
        else:
            await write_profile(context, uid, form=None)
            await finish_assign(update, context, uid, form, int(value))
            return True
    # Saved before the next question goes out: an answer tapped at once must find the form at this step.
    await write_profile(context, uid, form=form)
    await message.reply_html(ask[0], reply_markup=ask[1])
    return True


async def finish_assign(update: Update, context: ContextTypes.DEFAULT_TYPE, uid: str, form: dict[str, Any],
                        attempts: int) -> None:
    co = coaching(context)
    try:
        created = await io_call(co.assign, uid, form["who"], form["scenario"], datetime.fromisoformat(form["due"]),
                                form["target"], attempts)
    except CoachingError as exc:
        await update.effective_message.reply_text(str(exc))
        return
    tz = await io_call(_tz, context, uid)
    first = created[0]
    await update.effective_message.reply_html(text(
        "assigned", title=first.scenario_title, names=", ".join(a.trainee_name for a in created),
        due=_when(first.due_at, tz), target=first.target, attempts=attempts))
    coach_name = (await io_call(co.coach_profile, uid))["name"]
    for a in created:
        await notify_trainee(context.application, a, "trainee_assigned", coach_name)


async def notify_trainee(app: Application, a: Assignment, key: str, coach_name: str) -> None:
    store = app.bot_data["coaching"].store
    tz_name = (store.get(a.trainee, PROFILE, PROFILE) or {}).get("tz")
    tz = parse_timezone(tz_name) if tz_name else timezone.utc
    markup = InlineKeyboardMarkup([[InlineKeyboardButton(label("start"), callback_data=f"p:pick:{a.scenario_id}")]])
    await app.bot.send_message(int(a.trainee[3:]), text(key, coach=coach_name, title=a.scenario_title,
                                                        due=_when(a.due_at, tz), target=a.target,
                                                        attempts=a.max_attempts, best=a.best),
                               parse_mode=ParseMode.HTML, reply_markup=markup)


async def report_attempt(context: ContextTypes.DEFAULT_TYPE, uid: str, scenario_id: str, score: int) -> None:
    """After a practice session ends: count it for assignments, and tell coaches about completions."""
    co = coaching(context)
    for a in await io_call(co.record_attempt, uid, scenario_id, score):
        await context.bot.send_message(int(a.coach[3:]), text("coach_report", a=a), parse_mode=ParseMode.HTML)


async def deliver_assignment_job(app: Application, job: Job) -> None:
    """Scheduled reminder before the due date, and the overdue notice after it."""
    co: Coaching = app.bot_data["coaching"]
    a = co.assignment_for_trainee(job.user_id, job.ref)
    if a is None or a.status != "pending":
        return
    coach = co.coach_profile(a.coach)
    if coach is None:
        return
    await notify_trainee(app, a, "trainee_reminder" if job.kind == "assign_reminder" else "trainee_overdue", coach["name"])


# -- /roster ------------------------------------------------------------------------------------


async def roster_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    uid = await coach_gate(update, context)
    if uid is None:
        return
    co = coaching(context)
    message = update.effective_message
    rows = await io_call(co.roster, uid)
    if not rows:
        await message.reply_html(text("no_trainees"))
        return
    body = "\n".join([text("roster_head", n=len(rows))] + [text("roster_line", r=r) for r in rows])
    buttons = [[InlineKeyboardButton(label("transcript", name=r.name[:30]), callback_data=f"co:tx:{r.link_id}")]
               for r in rows if r.consent == "transcripts" and r.sessions]
    parts = split_message(body)
    for i, part in enumerate(parts):
        await message.reply_html(part, reply_markup=InlineKeyboardMarkup(buttons) if buttons and i == len(parts) - 1 else None)
    png = await io_call(roster_chart_png, [(r.name, r.average, r.last) for r in rows])
    await message.reply_photo(InputFile(io.BytesIO(png), filename="roster.png"), caption=text("roster_caption"))
    await message.reply_document(InputFile(io.BytesIO(roster_csv(rows, co.now())), filename="roster.csv"))


def roster_csv(rows, now: datetime) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trainee", "consent", "sessions", "last_score", "average_score", "trend_per_session",
                     "pending", "done", "overdue", "assignment", "due", "target", "best", "attempts", "status"])
    for r in rows:
        base = [_csv_safe(r.name), r.consent, r.sessions, r.last, r.average, r.trend, r.pending, r.done, r.overdue]
        if not r.assignments:
            writer.writerow(base + [""] * 6)
        for a in r.assignments:
            writer.writerow(base + [_csv_safe(a.scenario_title), a.due_at, a.target, a.best,
                                    f"{len(a.scores)}/{a.max_attempts}", a.state(now)])
    return out.getvalue().encode("utf-8")


def _csv_safe(value: str) -> str:
    """Spreadsheets run cells starting with = + - @ as formulas; names are user-provided."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


# -- coach-authored scenarios ---------------------------------------------------------------------


async def scenarios_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    uid = await coach_gate(update, context)
    if uid is None:
        return
    co = coaching(context)
    own = await io_call(co.own_scenarios, uid)
    if not own:
        await update.effective_message.reply_html(text("scenarios_empty"))
        return
    lines = [text("scenarios_head")] + [f"• {s.title} ({s.id}, {s.difficulty})" for s in own]
    buttons = [[InlineKeyboardButton(label("remove", id=s.id), callback_data=f"cs:rm:{s.id}")] for s in own]
    await update.effective_message.reply_html(render_html_string("{{ head | safe }}\n{{ rest }}", head=lines[0],
                                                                 rest="\n".join(lines[1:])),
                                              reply_markup=InlineKeyboardMarkup(buttons))


async def on_document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> bool:
    """A coach sending a .toml document adds a scenario; False if this isn't a coach's upload."""
    uid = user_key(update)
    co = coaching(context)
    doc = update.effective_message.document
    if doc is None or not await io_call(co.is_coach, uid):
        return False
    message = update.effective_message
    name = doc.file_name or "scenario.toml"
    if not name.lower().endswith(".toml"):
        await message.reply_html(text("scenario_not_toml"))
        return True
    if (doc.file_size or 0) > MAX_FILE_BYTES:
        await message.reply_html(text("document_too_big"))
        return True
    file = await doc.get_file()
    data = bytes(await file.download_as_bytearray())
    try:
        scenario = await io_call(co.add_scenario, uid, name, data)
    except ScenarioError as exc:
        await message.reply_html(text("scenario_invalid", problems=exc.problems[:15]))
        return True
    except CoachingError as exc:
        await message.reply_text(str(exc))
        return True
    await message.reply_html(text("scenario_added", title=scenario.title, id=scenario.id))
    return True


# -- buttons ------------------------------------------------------------------------------------


async def on_coach_button(update: Update, context: ContextTypes.DEFAULT_TYPE, parts: list[str]) -> bool:
    """co:/ci:/cl:/as:/cs: buttons. False means expired, forged or not allowed: nothing happens."""
    query = update.callback_query
    uid = user_key(update)
    co = coaching(context)
    message = query.message
    area = parts[0]
    if area == "co" and parts[1:] == ["inv"] and await io_call(co.is_coach, uid):
        await query.answer()
        await send_invite(message, context, uid)
        return True
    if area == "co" and parts[1:] == ["rev"] and await io_call(co.is_coach, uid):
        await query.answer()
        n = await io_call(co.revoke_invites, uid)
        await message.reply_html(text("invite_revoked", n=n))
        return True
    if area == "co" and len(parts) == 3 and parts[1] == "tx":
        try:
            sessions = await io_call(co.transcripts, uid, parts[2])
        except CoachingError:
            return False
        await query.answer()
        for s in sessions:
            scenario = co.library.get(s["scenario_id"])
            body = text("transcript", name=s["name"], title=scenario.title if scenario else s["scenario_id"],
                        score=(s.get("result") or {}).get("focus_score", 0), turns=s["turns"])
            for part in split_message(body):
                await message.reply_html(part)
        return True
    if area == "ci" and len(parts) == 2:
        payload = (await io_call(profile_of, context, uid)).get("pending_invite")
        if not payload:
            return False
        await write_profile(context, uid, pending_invite=None)
        await query.answer()
        if parts[1] not in CONSENTS:
            await message.reply_html(text("invite_declined"))
            return True
        name = update.effective_user.first_name if update.effective_user else "A trainee"
        try:
            coach = await io_call(co.accept_invite, payload, uid, name, parts[1])
        except CoachingError as exc:
            await message.reply_html(text("invite_invalid", reason=str(exc)))
            return True
        coach_name = (await io_call(co.coach_profile, coach))["name"]
        await message.reply_html(text("invite_accepted", coach=coach_name, consent=CONSENT_WORDS[parts[1]]))
        await context.bot.send_message(int(coach[3:]), text("coach_new_trainee", name=name,
                                                            consent=CONSENT_WORDS[parts[1]]), parse_mode=ParseMode.HTML)
        return True
    if area == "cl" and len(parts) == 2:
        link = next((c for c in await io_call(co.coaches, uid) if c["link_id"] == parts[1]), None)
        if link is None or not await io_call(co.leave, uid, link["coach"]):
            return False
        await query.answer()
        await message.reply_html(text("left_coach", name=link["coach_name"]))
        name = update.effective_user.first_name if update.effective_user else "A trainee"
        await context.bot.send_message(int(link["coach"][3:]), text("coach_trainee_left", name=name),
                                       parse_mode=ParseMode.HTML)
        return True
    if area == "as" and len(parts) == 3:
        if not await assign_step(update, context, uid, parts[1], parts[2]):
            return False
        await query.answer()
        return True
    if area == "cs" and len(parts) == 3 and parts[1] == "rm":
        if not await io_call(co.remove_scenario, uid, parts[2]):
            return False
        await query.answer()
        await message.reply_html(text("scenario_removed", id=parts[2]))
        return True
    return False


async def on_form_text(update: Update, context: ContextTypes.DEFAULT_TYPE, form: dict[str, Any]) -> bool:
    if form.get("kind") != "assign":
        return False
    uid = user_key(update)
    value = update.effective_message.text or ""
    if not await assign_step(update, context, uid, form["step"], value.strip()):
        await update.effective_message.reply_text("Please use the buttons above, or /cancel.")
    return True


async def on_forget(context: ContextTypes.DEFAULT_TYPE, uid: str) -> None:
    """Before a user's data is deleted: unlink them from coaches and trainees, telling only that."""
    co = coaching(context)
    for coach, name in await io_call(co.forget_trainee, uid):
        await _quiet_send(context, coach, text("coach_trainee_left", name=name))
    profile = await io_call(co.coach_profile, uid)
    if profile is not None:
        await io_call(co.revoke_invites, uid)
        for trainee in await io_call(co.forget_coach, uid):
            await _quiet_send(context, trainee, text("coach_closed", name=profile["name"]))


async def _quiet_send(context: ContextTypes.DEFAULT_TYPE, uid: str, body: str) -> None:
    try:
        await context.bot.send_message(int(uid[3:]), body, parse_mode=ParseMode.HTML)
    except Exception:  # the other person may have blocked the bot; the deletion goes on
        log.warning("could not notify %s", uid)

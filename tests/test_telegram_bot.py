"""The Telegram bot end to end: a real PTB Application (built by ``build_application``, as
``netcoach run`` does) long-polling a local fake Bot API server over real HTTP, with simulated
users typing and pressing buttons. Store files are real TinyDB files in a temp dir.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import pytest
from telegram.ext import Application

from bot.config import Config
from bot.persona import OfflinePersona
from bot.scenarios import ScenarioLibrary
from bot.session import PracticeEngine, all_sessions
from bot.store import TinyDBStore
from bot.telegram.app import build_application, start_polling, stop_polling
from tests.conftest import TOKEN, running_bot
from tests.fakes import FakeBotAPI

CURIOUS = [
    "Hi! How are you finding the meetup so far?",
    "What are you working on at the moment?",
    "Interesting, how did you end up doing that?",
    "What's been the most surprising part of it?",
    "I know someone who solved something similar, happy to introduce you if it helps.",
    "Could we grab a coffee in a couple of weeks? I'd love to hear how it goes.",
]
PITCHY = [
    "Hi, I'm Sam, I run a cloud consultancy and we cut data platform costs by 40%.",
    "Are you happy with your current vendor? Who signs off on tooling budgets?",
]


async def start_practice(user, scenario_title: str):
    """/practice, press the scenario; returns the persona's opening message."""
    user.send_text("/practice")
    menu = await user.next_reply()
    assert "Pick a situation" in menu.text
    user.press(menu, button_text=next(t for t in menu.button_texts if scenario_title in t))
    intro = await user.wait_for(lambda r: r.edited)
    assert scenario_title in intro.text and "Your goal:" in intro.text
    return await user.next_reply()


async def chat(user, lines: list[str]) -> list:
    replies = []
    for line in lines:
        user.send_text(line)
        replies.append(await user.next_reply())
    return replies


async def end_and_debrief(user, last_reply) -> str:
    user.press(last_reply, button_text="🏁 End & debrief")
    parts = []
    while True:
        reply = await user.next_reply()
        parts.append(reply.text)
        if reply.button_texts:  # the last part carries the "practise again" buttons
            return "\n".join(parts)


def focus_score(debrief: str) -> int:
    return int(re.search(r"Focus score: (\d+)/100", debrief).group(1))


async def test_start_registers_commands_and_onboards(server: FakeBotAPI, bot: Application) -> None:
    commands = {c["command"] for c in next(iter(server.commands_by_scope.values()))}
    assert {"start", "practice", "hint", "history", "progress", "help", "cancel", "export", "forget", "end"} <= commands

    ana = server.user(first_name="Ana <3")
    ana.send_text("/start")
    welcome = await ana.next_reply()
    assert "Hi Ana <3!" in welcome.text  # escaped on the way out, shown literally
    assert welcome.text.count("\n") >= 3
    ask = await ana.next_reply()
    assert "networking goal" in ask.text and ask.button_texts == ["Skip"]
    ana.send_text("meet other founders & investors <here>")
    saved = await ana.next_reply()
    assert "meet other founders & investors <here>" in saved.text
    ana.send_text("/start")
    back = await ana.next_reply()
    assert "Welcome back" in back.text and "meet other founders" in back.text


async def test_curious_user_outscores_pitching_user(server: FakeBotAPI, bot: Application) -> None:
    curious, pitcher = server.user(first_name="Cleo"), server.user(first_name="Pete")

    opening = await start_practice(curious, "Data engineering meetup")
    assert opening.button_texts == ["💡 Hint", "🏁 End & debrief"]
    replies = await chat(curious, CURIOUS)
    assert all(r.text.startswith("Priya: ") for r in replies)
    assert curious.chat_actions == []  # the offline persona answers at once: no "typing…" flash
    good = await end_and_debrief(curious, replies[-1])

    opening = await start_practice(pitcher, "Data engineering meetup")
    replies = await chat(pitcher, PITCHY)
    bad = await end_and_debrief(pitcher, replies[-1])

    assert focus_score(good) >= 70 and "(connector)" in good
    assert focus_score(bad) < 35 and "(pitcher)" in bad
    assert "Instead of:" in bad and "Try:" in bad
    for line in CURIOUS[:3]:
        assert line in good  # the user's own words are quoted


class SlowPersona:
    """The offline persona taking its time, as an LLM would."""

    async def reply(self, scenario, state, history, user_text, reading):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.8)
        return await OfflinePersona(seed="slow").reply(scenario, state, history, user_text, reading)


async def test_typing_shows_while_a_slow_persona_thinks(server: FakeBotAPI, data_dir: Path) -> None:
    config = Config(data_dir=data_dir, telegram_token=server.token, telegram_base_url=server.base_url)
    engine = PracticeEngine(TinyDBStore(data_dir), ScenarioLibrary.from_dir(config.scenarios_dir),
                            persona=SlowPersona())
    app = build_application(config, engine=engine)
    await start_polling(app, poll_timeout=1)
    try:
        user = server.user()
        await start_practice(user, "Data engineering meetup")
        reply = await chat(user, CURIOUS[:1])
        assert reply[0].text.startswith("Priya: ")
        assert user.chat_actions == ["typing"]  # shown once while waiting, not after the answer
    finally:
        await stop_polling(app)


async def test_sustained_pitching_ends_with_the_persona_leaving(server: FakeBotAPI, bot: Application) -> None:
    user = server.user()
    await start_practice(user, "Founders' demo night")
    user.send_text("Hi! We're raising a seed round, can I send you our deck?")
    await user.next_reply()
    user.send_text("Our product saves 30% on cloud bills, who decides on investments at your fund?")
    leaving = await user.next_reply()
    assert leaving.text.startswith("Ingrid: ")
    note = await user.next_reply()
    assert "has left the conversation" in note.text
    debrief = await user.wait_for(lambda r: "Focus score" in (r.text or ""))
    assert "excused themselves" in debrief.text


async def test_hint_command_and_button(server: FakeBotAPI, bot: Application) -> None:
    user = server.user()
    opening = await start_practice(user, "Chamber of Commerce breakfast")
    user.send_text("/hint")
    hint = await user.next_reply()
    assert hint.text.startswith("💡") and "Rosa" in hint.text
    user.press(opening, button_text="💡 Hint")
    assert (await user.next_reply()).text.startswith("💡")


async def test_picking_another_scenario_sets_the_running_one_aside(server: FakeBotAPI, bot: Application,
                                                                    data_dir: Path) -> None:
    """A user who starts something else mid-role-play is told which conversation was set aside,
    the new persona takes over, and the old one is kept (as abandoned) rather than lost."""
    user = server.user()
    first = await start_practice(user, "Chamber of Commerce breakfast")
    await chat(user, ["What brings you here this morning?"])
    user.send_text("/practice")
    menu = await user.next_reply()
    user.press(menu, button_text=next(t for t in menu.button_texts if "Data engineering meetup" in t))
    await user.wait_for(lambda r: r.edited)
    aside = await user.next_reply()
    assert aside.text == "(Your unfinished role-play with Rosa was set aside.)"
    opening = await user.next_reply()
    assert opening.button_texts == first.button_texts and opening.text != first.text
    reply = (await chat(user, ["How did you get into that?"]))[0]
    assert "Rosa" not in reply.text
    engine: PracticeEngine = bot.bot_data["engine"]
    kept = sorted((s["scenario_id"], s["status"]) for s in all_sessions(engine.store, f"tg-{user.id}"))
    assert kept == [("chamber-breakfast", "abandoned"), ("tech-meetup", "active")]


async def test_history_progress_and_export(server: FakeBotAPI, bot: Application, data_dir: Path) -> None:
    user = server.user()
    user.send_text("/progress")
    assert "No finished sessions yet" in (await user.next_reply()).text

    for lines in (PITCHY, CURIOUS[:3]):
        await start_practice(user, "Data engineering meetup")
        replies = await chat(user, lines)
        await end_and_debrief(user, replies[-1])

    user.send_text("/history")
    history = await user.next_reply()
    assert history.text.count("Data engineering meetup") >= 2
    user.press(history, button_text=history.button_texts[0])
    assert "Focus score" in (await user.next_reply()).text

    user.send_text("/progress")
    photo = await user.next_reply()
    assert photo.photo is not None and photo.photo.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert "2 sessions" in photo.caption and "average of last 5" in photo.caption

    user.send_text("/export")
    doc = await user.next_reply()
    assert doc.document is not None and doc.document.filename == "netcoach-export.json"
    exported = json.loads(doc.document.content)
    sessions = exported["data"]["sessions"]
    assert len(sessions) == 2 and {s["status"] for s in sessions} == {"ended"}
    assert CURIOUS[0] in json.dumps(exported, ensure_ascii=False)


async def test_forget_deletes_the_users_file_after_confirmation(server: FakeBotAPI, bot: Application,
                                                               data_dir: Path) -> None:
    user, other = server.user(), server.user()
    for u in (user, other):
        u.send_text("/start")
        await u.next_reply()
        await u.next_reply()
    path = data_dir / "users" / f"tg-{user.id}.json"
    assert path.exists()
    await start_practice(user, "Data engineering meetup")
    await end_and_debrief(user, (await chat(user, CURIOUS[:1]))[-1])
    archive = data_dir / "archive" / f"tg-{user.id}.json"
    assert archive.exists()  # the finished session

    user.send_text("/forget")
    confirm = await user.next_reply()
    assert "your 1 practice session," in confirm.text
    user.press(confirm, button_text="No, keep my data")
    assert "Nothing was deleted" in (await user.next_reply()).text
    assert path.exists()

    user.send_text("/forget")
    confirm = await user.next_reply()
    query = user.press(confirm, button_text="Yes, delete everything")
    assert "deleted" in (await user.next_reply()).text
    await user.callback_answer(query)
    assert not path.exists() and not archive.exists()
    assert (data_dir / "users" / f"tg-{other.id}.json").exists()

    stale = user.press_data(confirm.message_id, confirm.reply_markup["inline_keyboard"][0][0]["callback_data"])
    answer = await user.callback_answer(stale)
    assert "expired" in answer.get("text", "")


async def test_non_text_and_odd_text_change_nothing(server: FakeBotAPI, bot: Application, data_dir: Path) -> None:
    user = server.user()
    await start_practice(user, "Chamber of Commerce breakfast")
    path = data_dir / "users" / f"tg-{user.id}.json"
    before = path.read_bytes()
    for send in (user.send_sticker, user.send_photo, user.send_voice, user.send_location):
        send()
        reply = await user.next_reply()
        assert "only read text" in reply.text
    assert path.read_bytes() == before

    user.send_text("/nonsense")
    assert "don't know that command" in (await user.next_reply()).text

    html = "<b>bold</b> & <script>alert(1)</script> *stars* _under_ `tick` [link](x)"
    user.send_text(html)
    assert (await user.next_reply()).text.startswith("Rosa: ")
    long_text = ("Tell me more about how you got started. " * 120)[:4096]
    user.send_text(long_text)
    assert (await user.next_reply()).text.startswith("Rosa: ")
    user.send_text("🙂🙂🙂")
    assert (await user.next_reply()).text.startswith("Rosa: ")

    user.send_text("/end")
    debrief = await user.wait_for(lambda r: "Focus score" in (r.text or ""))
    full = debrief.text
    assert "<b>bold</b> & <script>" in full  # shown literally, not as markup
    assert all(len(r.content) <= 4096 for r in [debrief])


async def test_text_outside_a_roleplay_gets_a_pointer(server: FakeBotAPI, bot: Application) -> None:
    user = server.user()
    user.send_text("hello?")
    assert "/practice" in (await user.next_reply()).text


async def test_group_chats_get_a_polite_redirect(server: FakeBotAPI, bot: Application) -> None:
    user = server.user()
    user.send_in_group("/practice", chat_id=-100123)
    reply = await user.next_reply(chat_id=-100123)
    assert "private chat" in reply.text


async def test_forged_and_unknown_buttons_say_expired(server: FakeBotAPI, bot: Application) -> None:
    user = server.user()
    user.send_text("/practice")
    menu = await user.next_reply()
    for data in ["p:pick:no-such-scenario", "s:end:20200101000000-abcdef", "zzz", "p:list:impossible",
                 "h:show:../../etc", "f:yes:guess", "x" * 64, "p:pick:tech-meetup:extra"]:
        answer = await user.callback_answer(user.press_data(menu.message_id, data))
        assert "expired" in answer.get("text", ""), data
    # the difficulty filter works and keeps the menu usable
    user.press(menu, button_text="Hard")
    edited = await user.next_reply()
    assert edited.edited and "(hard)" in edited.text
    assert all("🔴" in t for t in edited.button_texts[4:])


async def test_buttons_survive_a_restart_and_expire_after_the_session(server: FakeBotAPI, data_dir: Path) -> None:
    user = server.user()
    async with running_bot(server, data_dir):
        opening = await start_practice(user, "University alumni reception")
        replies = await chat(user, ["Hello! What brings you back tonight?"])
    # a brand-new Application on the same data dir: the role-play and its buttons still work
    async with running_bot(server, data_dir):
        user.send_text("How did you get into that?")
        reply = await user.next_reply()
        assert reply.text.startswith("Colm: ")
        debrief = await end_and_debrief(user, opening)  # a button from before the restart
        assert "Hello! What brings you back tonight?" in debrief
        stale = user.press(replies[-1], button_text="🏁 End & debrief")
        answer = await user.callback_answer(stale)
        assert "expired" in answer["text"]


async def test_two_users_practise_at_once_without_crosstalk(server: FakeBotAPI, bot: Application) -> None:
    a, b = server.user(first_name="A"), server.user(first_name="B")
    await asyncio.gather(start_practice(a, "Data engineering meetup"),
                         start_practice(b, "Chamber of Commerce breakfast"))
    ra, rb = await asyncio.gather(chat(a, CURIOUS[:3]), chat(b, PITCHY))
    assert all(r.text.startswith("Priya: ") for r in ra)
    assert all(r.text.startswith("Rosa: ") for r in rb)
    da, db = await asyncio.gather(end_and_debrief(a, ra[-1]), end_and_debrief(b, rb[-1]))
    assert CURIOUS[0] in da and CURIOUS[0] not in db
    assert PITCHY[0] in db and PITCHY[0] not in da


async def test_storage_failure_is_reported_without_leaking(server: FakeBotAPI, bot: Application, data_dir: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    user = server.user()
    (data_dir / "users").mkdir(exist_ok=True)
    (data_dir / "users" / f"tg-{user.id}.json").write_text("{not json")  # a damaged file
    caplog.set_level(logging.ERROR)
    user.send_text("/practice")
    reply = await user.next_reply()
    assert "storage" in reply.text and "Traceback" not in reply.text
    other = server.user()
    other.send_text("/practice")  # everyone else carries on
    assert "Pick a situation" in (await other.next_reply()).text
    assert (data_dir / "users" / f"tg-{user.id}.json").read_text() == "{not json"
    assert any("update" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)
    assert TOKEN not in caplog.text

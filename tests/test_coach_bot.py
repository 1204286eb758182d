"""Coaches end to end over the fake Bot API: invites and consent, assignments, reminders, the
roster, coach-authored scenarios, and the authorization attacks a hostile user would try.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path

from telegram.ext import Application

from bot.config import SCENARIOS_DIR
from bot.telegram.events import run_scheduled
from tests.conftest import T0, Clock
from tests.fakes import FakeBotAPI
from tests.test_telegram_bot import CURIOUS, chat, end_and_debrief

LINK = re.compile(r"https://t\.me/netcoach_test_bot\?start=([A-Za-z0-9_-]+)")


async def invite_link(coach) -> tuple[str, object]:
    coach.send_text("/coach")
    reply = await coach.next_reply()
    payload = LINK.search(reply.text).group(1)
    assert len(payload) <= 64
    return payload, reply


async def join(trainee, payload: str, consent: str) -> str:
    trainee.send_text(f"/start {payload}")
    offer = await trainee.next_reply()
    if "invites you" not in offer.text:
        return offer.text
    trainee.press(offer, button_text=consent)
    return (await trainee.next_reply()).text


async def test_invite_consent_and_single_use(server: FakeBotAPI, bot: Application, clock: Clock) -> None:
    coach = server.user(first_name="Carla", username="coachcarla")
    ana, ben, cat = server.user(first_name="Ana"), server.user(first_name="Ben"), server.user(first_name="Cat")
    payload, intro = await invite_link(coach)
    assert "expires" in intro.text

    ana.send_text(f"/start {payload}")
    offer = await ana.next_reply()
    assert "Carla (@coachcarla)" in offer.text and "transcripts" in offer.text
    ana.press(offer, button_text="Share scores only")
    assert "You're now a trainee of" in (await ana.next_reply()).text
    assert "Ana" in (await coach.next_reply()).text

    assert "not valid" in await join(ben, payload, "Share scores only")  # reused
    new_payload, new_intro = await invite_link(coach)
    assert new_payload != payload
    assert "scores and transcripts" in await join(ben, new_payload, "Share scores and transcripts")
    await coach.next_reply()

    third, third_intro = await invite_link(coach)
    coach.press(third_intro, button_text="🚫 Revoke open invites")
    assert "Revoked 1" in (await coach.next_reply()).text
    assert "not valid" in await join(cat, third, "Share scores only")

    expiring, _ = await invite_link(coach)
    clock.set(T0 + timedelta(days=8))
    assert "not valid" in await join(cat, expiring, "Share scores only")
    assert "not valid" in await join(cat, "c" + "A" * 32, "Share scores only")  # guessed

    declined, _ = await invite_link(coach)
    cat.send_text(f"/start {declined}")
    offer = await cat.next_reply()
    cat.press(offer, button_text="Decline")
    assert "nothing was shared" in (await cat.next_reply()).text

    ana.send_text("/coaches")
    listing = await ana.next_reply()
    assert "Carla" in listing.text and "scores only" in listing.text


async def make_team(server: FakeBotAPI):
    coach = server.user(first_name="Carla")
    ana, ben = server.user(first_name="Ana"), server.user(first_name="Ben")
    for trainee, consent in ((ana, "Share scores only"), (ben, "Share scores and transcripts")):
        payload, _ = await invite_link(coach)
        await join(trainee, payload, consent)
        await coach.next_reply()
    return coach, ana, ben


async def assign(coach, who: str, scenario: str, due: str, target: str, attempts: str) -> str:
    coach.send_text("/assign")
    step = await coach.next_reply()
    coach.press(step, button_text=who)
    step = await coach.next_reply()
    coach.press(step, button_text=scenario)
    await coach.next_reply()
    coach.send_text(due)
    step = await coach.next_reply()
    coach.press(step, button_text=target)
    step = await coach.next_reply()
    coach.press(step, button_text=attempts)
    return (await coach.next_reply()).text


async def test_assignment_completion_reminder_overdue_and_roster(server: FakeBotAPI, bot: Application,
                                                                 clock: Clock) -> None:
    coach, ana, ben = await make_team(server)
    done = await assign(coach, "Ana", "Data engineering meetup", "in 3 days", "70", "2")
    assert "Assigned" in done and "Ana" in done and "target 70" in done
    note = await ana.next_reply()
    assert "Carla" in note.text and "Data engineering meetup" in note.text
    ana.press(note, button_text="▶️ Start now")
    await ana.wait_for(lambda r: r.edited)
    await ana.next_reply()
    replies = await chat(ana, CURIOUS)
    debrief = await end_and_debrief(ana, replies[-1])
    assert "Focus score" in debrief
    report = await coach.next_reply()
    assert report.text.startswith("✅") and "Ana" in report.text and "target 70" in report.text
    assert "1/2 attempt" in report.text

    await assign(coach, "Ben", "University alumni reception", "in 3 days", "80", "3")
    await ben.next_reply()
    clock.set(T0 + timedelta(days=2, hours=1))  # 24 h before the due date
    await run_scheduled(bot)
    reminder = await ben.next_reply()
    assert "Reminder" in reminder.text and "University alumni reception" in reminder.text
    clock.set(T0 + timedelta(days=3, minutes=1))
    await run_scheduled(bot)
    assert "overdue" in (await ben.next_reply()).text
    await run_scheduled(bot)
    await ben.assert_no_reply()

    coach.send_text("/roster")
    roster = await coach.next_reply()
    assert "Ana" in roster.text and "Ben" in roster.text
    assert re.search(r"Ben.*\n.*1 overdue", roster.text)
    assert re.search(r"Ana.*\n.*1 done", roster.text)
    chart = await coach.next_reply()
    assert chart.photo is not None and chart.photo.content.startswith(b"\x89PNG")
    doc = await coach.next_reply()
    rows = list(csv.DictReader(io.StringIO(doc.document.content.decode())))
    by_name = {r["trainee"]: r for r in rows}
    assert by_name["Ana"]["status"] == "done" and by_name["Ben"]["status"] == "overdue"
    assert int(by_name["Ana"]["last_score"]) >= 70


async def test_transcripts_only_with_consent(server: FakeBotAPI, bot: Application) -> None:
    coach, ana, ben = await make_team(server)
    for trainee in (ana, ben):
        trainee.send_text("/practice")
        menu = await trainee.next_reply()
        trainee.press(menu, button_text="🟢 Data engineering meetup")
        await trainee.wait_for(lambda r: r.edited)
        await trainee.next_reply()
        replies = await chat(trainee, ["What are you working on these days, secretly?"])
        await end_and_debrief(trainee, replies[-1])
    coach.send_text("/roster")
    roster = await coach.next_reply()
    assert roster.button_texts == ["📄 Ben: latest transcript"]
    coach.press(roster, button_text="📄 Ben: latest transcript")
    transcript = await coach.wait_for(lambda r: "secretly" in (r.text or ""))
    assert "Ben" in transcript.text
    # Ana's link id, forged into the same button: refused
    ana_link = next(k for k in bot.bot_data["engine"].store.all(f"tg-{coach.id}", "trainees") if k["name"] == "Ana")
    query = coach.press_data(roster.message_id, f"co:tx:{ana_link['link_id']}")
    assert "expired" in (await coach.callback_answer(query))["text"]


async def test_authorization_attacks_are_refused_revealing_nothing(server: FakeBotAPI, bot: Application) -> None:
    coach, ana, ben = await make_team(server)
    rival = server.user(first_name="Rex")
    await invite_link(rival)
    store = bot.bot_data["engine"].store
    ana_link = next(k for k in store.all(f"tg-{coach.id}", "trainees") if k["name"] == "Ana")["link_id"]
    menu_id = (await _any_message(rival)).message_id

    for data in (f"co:tx:{ana_link}", f"as:who:{ana_link}", "as:who:all", f"cl:{ana_link}", "ci:scores",
                 "cs:rm:chamber-breakfast", f"co:tx:{ana_link}:x"):
        answer = await rival.callback_answer(rival.press_data(menu_id, data))
        assert answer["text"] == "This menu has expired.", data

    rival.send_text(f"/roster {ana.id}")
    assert "don't look people up by id" in (await rival.next_reply()).text
    rival.send_text(f"/assign tg-{ana.id}")
    assert "don't look people up by id" in (await rival.next_reply()).text
    rival.send_text("/roster")
    assert "no trainees" in (await rival.next_reply()).text
    ana.send_text("/roster")  # a trainee is not a coach
    assert "for coaches" in (await ana.next_reply()).text

    # the rival starts a real /assign and forges the first coach's trainee into it
    store.put(f"tg-{rival.id}", "trainees", "fake", {"trainee": f"tg-{ana.id}", "name": "Ana", "consent": "transcripts",
                                                   "since": "2026-01-01", "link_id": "fake"})
    rival.send_text("/assign")
    step = await rival.next_reply()
    assert "no trainees" in step.text  # the planted half-link is not confirmed by Ana's side
    assert "Ana" not in step.text


async def _any_message(user):
    user.send_text("/help")
    return await user.next_reply()


async def test_coach_scenarios_upload_valid_and_invalid(server: FakeBotAPI, bot: Application) -> None:
    coach, ana, ben = await make_team(server)
    source = (SCENARIOS_DIR / "tech-meetup.toml").read_text()
    custom = source.replace('id = "tech-meetup"', 'id = "sales-kickoff"').replace(
        'title = "Data engineering meetup"', 'title = "Sales kickoff dinner"')
    coach.send_document("sales-kickoff.toml", custom.encode())
    added = await coach.next_reply()
    assert "Added <b>Sales kickoff dinner</b>" in added.source_text

    broken = custom.replace('difficulty = "easy"', 'difficulty = "extreme"').replace("\nopening_line", "\n#x", 1)
    coach.send_document("broken.toml", broken.encode())
    problems = await coach.next_reply()
    assert "broken.toml: difficulty: must be one of easy, medium, hard" in problems.text
    assert "persona.opening_line: missing (required)" in problems.text
    coach.send_document("notes.txt", b"hello")
    assert ".toml" in (await coach.next_reply()).text

    ana.send_text("/practice")  # the coach's trainees see it...
    menu = await ana.next_reply()
    assert any("Sales kickoff dinner" in b for b in menu.button_texts)
    stranger = server.user()
    stranger.send_text("/practice")  # ...nobody else does, and can't start it by forging the button
    menu = await stranger.next_reply()
    assert not any("Sales kickoff" in b for b in menu.button_texts)
    answer = await stranger.callback_answer(stranger.press_data(menu.message_id, "p:pick:sales-kickoff"))
    assert "expired" in answer["text"]
    stranger.send_document("sales-kickoff.toml", custom.encode())  # not a coach: just a document
    assert "only read text" in (await stranger.next_reply()).text

    ana.press(await _menu(ana), button_text="🟢 Sales kickoff dinner")
    intro = await ana.wait_for(lambda r: r.edited)
    assert "Sales kickoff dinner" in intro.text

    coach.send_text("/scenarios")
    listing = await coach.next_reply()
    coach.press(listing, button_text="🗑 Remove sales-kickoff")
    assert "Removed" in (await coach.next_reply()).text


async def _menu(user):
    user.send_text("/practice")
    return await user.next_reply()


async def test_trainee_forget_and_leave(server: FakeBotAPI, bot: Application, data_dir: Path) -> None:
    coach, ana, ben = await make_team(server)
    await assign(coach, "Everyone", "Data engineering meetup", "in 3 days", "70", "2")
    await ana.next_reply()
    await ben.next_reply()

    ana.send_text("/forget")
    confirm = await ana.next_reply()
    ana.press(confirm, button_text="Yes, delete everything")
    await ana.next_reply()
    left = await coach.next_reply()
    assert left.text == "Ana left your roster."
    assert not (data_dir / "users" / f"tg-{ana.id}.json").exists()

    ben.send_text("/coaches")
    listing = await ben.next_reply()
    ben.press(listing, button_text=listing.button_texts[0])
    assert "You left" in (await ben.next_reply()).text
    assert "Ben left your roster." == (await coach.next_reply()).text

    coach.send_text("/roster")
    assert "no trainees" in (await coach.next_reply()).text

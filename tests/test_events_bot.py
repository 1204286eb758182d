"""Real events end to end over the fake Bot API, with time controlled by the test.

The bot's clock is a :class:`Clock` the test moves forward; scheduled prompts are delivered by
``run_scheduled`` (the same function the JobQueue tick calls), so nothing waits in real time.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from telegram.ext import Application

from bot.telegram.events import run_scheduled
from tests.conftest import T0, Clock, running_bot
from tests.fakes import FakeBotAPI


async def register(user, zone: str, name: str, when: str, hope: str | None = None, tz_known: bool = False):
    """Walk the /event form; returns the confirmation text."""
    user.send_text(f"/event {name}")
    if not tz_known:
        ask_tz = await user.next_reply()
        assert "time zone" in ask_tz.text
        if zone in ask_tz.button_texts:
            user.press(ask_tz, button_text=zone)
        else:
            user.send_text(zone)
        assert "Time zone set" in (await user.next_reply()).text
    ask_when = await user.next_reply()
    assert "When does" in ask_when.text and name in ask_when.text
    user.send_text(when)
    ask_hope = await user.next_reply()
    assert "hope" in ask_hope.text
    if hope is None:
        user.press(ask_hope, button_text="Skip")
    else:
        user.send_text(hope)
    done = await user.next_reply()
    assert "Registered" in done.text, done.text
    return done.text


async def deliver_at(app: Application, clock: Clock, when: datetime) -> None:
    clock.set(when)
    await run_scheduled(app)


async def test_registration_in_several_formats_and_zones(server: FakeBotAPI, bot: Application) -> None:
    berlin, ny, offset = server.user(), server.user(), server.user()
    text = await register(berlin, "Europe/Berlin", "Founders breakfast", "tomorrow 08:00")
    assert "Mon 23 Nov 08:00 (Europe/Berlin)" in text
    assert "prep on Sun 22 Nov 19:00" in text and "reflect on Mon 23 Nov 11:00" in text

    text = await register(ny, "America/New_York", "Tech meetup", "Fri 8am", hope="meet data people")
    assert "Fri 27 Nov 08:00 (America/New_York)" in text

    text = await register(offset, "UTC+2", "Alumni night", "2026-12-03 19:00")
    assert "Thu 03 Dec 19:00 (UTC+02:00)" in text

    # the zone is remembered; errors are clear and keep the form open
    berlin.send_text("/event Late one")
    ask_when = await berlin.next_reply()
    assert "When does" in ask_when.text
    assert any("Tomorrow" in b for b in ask_when.button_texts)
    berlin.send_text("yesterday 10:00")
    assert "in the past" in (await berlin.next_reply()).text
    berlin.send_text("whenever")
    assert "couldn't read" in (await berlin.next_reply()).text
    berlin.send_text("/cancel")
    assert "stopped" in (await berlin.next_reply()).text.lower()

    berlin.send_text("/events")
    listing = await berlin.next_reply()
    assert "Founders breakfast" in listing.text and "Late one" not in listing.text
    berlin.press(listing, button_text=listing.button_texts[0])
    assert "Cancelled" in (await berlin.next_reply()).text
    berlin.send_text("/events")
    assert "No upcoming events" in (await berlin.next_reply()).text


async def test_prep_and_reflection_arrive_at_the_right_moments(server: FakeBotAPI, bot: Application,
                                                                clock: Clock) -> None:
    user = server.user()
    await register(user, "Europe/Berlin", "Data meetup", "tomorrow 18:30", hope="learn about data hiring")
    # prep: the evening before at 19:00 Berlin = 18:00 UTC
    await deliver_at(bot, clock, datetime(2026, 11, 22, 17, 59, tzinfo=timezone.utc))
    await user.assert_no_reply()
    await deliver_at(bot, clock, datetime(2026, 11, 22, 18, 0, tzinfo=timezone.utc))
    prep = await user.next_reply()
    assert "Data meetup" in prep.text and prep.text.count("•") == 3
    assert "learn about data hiring" in prep.text
    assert prep.button_texts and prep.button_texts[0].startswith("🎯 Practise")
    user.press(prep, button_text=prep.button_texts[0])  # the practice offer works
    await user.wait_for(lambda r: r.edited)
    await user.next_reply()
    user.send_text("/cancel")
    await user.next_reply()

    # reflection: 1 h after the end (18:30 + 2 h + 1 h Berlin = 20:30 UTC)
    await deliver_at(bot, clock, datetime(2026, 11, 23, 20, 29, tzinfo=timezone.utc))
    await user.assert_no_reply()
    await deliver_at(bot, clock, datetime(2026, 11, 23, 20, 30, tzinfo=timezone.utc))
    prompt = await user.next_reply()
    assert "How did <b>Data meetup</b> go?" in prompt.source_text
    await deliver_at(bot, clock, datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc))
    await user.assert_no_reply()  # never twice


async def test_restart_between_registration_and_prompt_delivers_exactly_once(server: FakeBotAPI, data_dir: Path,
                                                                               clock: Clock) -> None:
    user = server.user()
    async with running_bot(server, data_dir, clock):
        await register(user, "Europe/London", "Breakfast club", "tomorrow 08:00")
    async with running_bot(server, data_dir, clock) as app:  # restarted: JobQueue is empty again
        await deliver_at(app, clock, datetime(2026, 11, 22, 19, 0, tzinfo=timezone.utc))
        prep = await user.next_reply()
        assert "Breakfast club" in prep.text
        await run_scheduled(app)
    async with running_bot(server, data_dir, clock) as app:  # and again: nothing repeats
        await run_scheduled(app)
        await user.assert_no_reply()
    preps = [c for c in server.calls if c.method == "sendMessage" and "Breakfast club" in str(c.params.get("text"))
             and "questions worth asking" in str(c.params.get("text"))]
    assert len(preps) == 1


async def test_a_window_missed_while_down_is_delivered_once_late(server: FakeBotAPI, data_dir: Path,
                                                                  clock: Clock) -> None:
    user = server.user()
    async with running_bot(server, data_dir, clock):
        await register(user, "Europe/London", "Conference", "tomorrow 09:00")
    clock.set(T0 + timedelta(days=3))  # the bot was down through the prep and the reflection
    async with running_bot(server, data_dir, clock) as app:
        await run_scheduled(app)
        late = await user.next_reply()
        assert "How did" in late.text and "go?" in late.text  # the reflection, late
        await run_scheduled(app)
        await user.assert_no_reply()  # once; and no prep for an event that is over


async def test_reflection_contacts_and_reminders(server: FakeBotAPI, bot: Application, clock: Clock) -> None:
    user = server.user()
    await register(user, "Europe/Berlin", "Chamber mixer", "today 18:00")
    await deliver_at(bot, clock, datetime(2026, 11, 22, 20, 0, tzinfo=timezone.utc))
    prompt = await user.wait_for(lambda r: "How did" in (r.text or ""))
    user.press(prompt, button_text="📝 Reflect now")
    assert "Who did you meet?" in (await user.next_reply()).text
    for answer, expect in [
        ("Sam (data lead at Acme), Priya", "learn about Sam"),
        ("Sam is hiring a data engineer and struggling to find one. She loves sailing.", "learn about Priya"),
        ("Priya is into marathon running and explained how she grew her agency.", "agree with Sam"),
        ("coffee next Tuesday", "agree with Priya"),
        ("none", "offer or give"),
        ("I offered to introduce Sam to a recruiter friend", "talk more about yourself"),
    ]:
        user.send_text(answer)
        question = await user.next_reply()
        assert expect in question.text, question.text
    user.press(question, button_text="Mostly about them")
    result = await user.next_reply()
    score = int(re.search(r"Score: (\d+)/100", result.text).group(1))
    assert score >= 60 and "Sam" in result.text
    assert "contacts" in (await user.next_reply()).text

    user.send_text("/contacts")
    contacts = await user.next_reply()
    assert "Sam (data lead at Acme)" in contacts.text and "Priya" in contacts.text
    assert "Tue 24 Nov 10:00" in contacts.text  # Sam: the agreed "next Tuesday"
    assert "Wed 25 Nov 10:00" in contacts.text  # Priya: the default, three days later

    # Sam's reminder on the agreed day, grounded in what was learned
    await deliver_at(bot, clock, datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc))
    reminder = await user.next_reply()
    assert "Sam" in reminder.text and "hiring a data engineer" in reminder.text
    assert reminder.button_texts == ["✅ Done", "⏰ Snooze 3 days", "🗑 Drop"]
    user.press(reminder, button_text="⏰ Snooze 3 days")
    assert "remind you about" in (await user.next_reply()).text
    await deliver_at(bot, clock, datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc))
    priya = await user.next_reply()
    assert "Priya" in priya.text and "marathon" in priya.text
    user.press(priya, button_text="🗑 Drop")
    assert "Dropped" in (await user.next_reply()).text
    await deliver_at(bot, clock, datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc))
    again = await user.next_reply()
    assert "Sam" in again.text
    user.press(again, button_text="✅ Done")
    assert "Nice work" in (await user.next_reply()).text
    stale = user.press(reminder, button_text="✅ Done")
    assert "expired" in (await user.callback_answer(stale))["text"]
    await deliver_at(bot, clock, datetime(2026, 12, 30, 9, 0, tzinfo=timezone.utc))
    await user.assert_no_reply()


async def test_debrief_anytime_and_listener_beats_talker(server: FakeBotAPI, bot: Application) -> None:
    async def debrief(user, answers: list[str], balance: str) -> int:
        user.send_text("/debrief")
        assert "Which event" in (await user.next_reply()).text
        user.send_text("Trade show")
        await user.next_reply()
        for answer in answers:
            user.send_text(answer)
            await user.next_reply()
        question = user.chat_id
        last = server.messages(question)[-1]
        user.press(last, button_text=balance)
        result = await user.wait_for(lambda r: "Score:" in (r.text or ""))
        return int(re.search(r"Score: (\d+)/100", result.text).group(1))

    listener = await debrief(server.user(), [
        "Ana",
        "Ana is struggling to hire engineers and loves climbing; she explained how her team ships weekly.",
        "lunch next Friday",
        "I offered to connect her with a recruiter I trust",
    ], "Mostly about them")
    talker = await debrief(server.user(), [
        "Ben",
        "Not much. I told him all about our product and pricing.",
        "He'll call me if he needs us",
        "My card and a 10% discount",
    ], "Mostly about me")
    assert listener >= 70 > 35 > talker

"""A corpus of bad, odd and hostile input, run end to end against one real bot.

One PTB ``Application`` (built by ``build_application``, as ``netcoach run`` does) long-polls the
fake Bot API server for the whole module; every case uses fresh simulated users, so cases do not
depend on each other. For every case:

* the bot answers clearly (the reply text is asserted) or ignores the input by design (no reply
  within a grace period; the case says why);
* no handler failed: nothing was logged at ERROR (the error handler logs "update ... failed") and
  no Bot API call was rejected (the fake server parses HTML like Telegram, so unescaped user text
  in a reply would be a 400 here, even where the bot suppresses the error);
* the bot sent nothing beyond what the case expects;
* every store file in the data directory still parses as JSON, and no temp file is left behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from telegram.ext import Application

from bot.config import Config
from bot.session import all_sessions
from bot.store import TinyDBStore
from bot.telegram.app import build_application, start_polling, stop_polling
from tests.fakes import FakeBotAPI, FakeUser, Reply
from tests.fakes.bot_api import make_png

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "4343:BAD-input-token"
BOT_USERNAME = "netcoach_test_bot"
SCENARIO = "Chamber of Commerce breakfast"
PERSONA = "Rosa: "
POINTER = "You're not in a role-play right now"
EMPTY = "looks empty"
TEXT_ONLY = "only read text"
UNKNOWN = "don't know that command"
GROUP = "private chat"
EXPIRED = "expired"
QUIET = 0.3  # seconds of silence that count as "ignored" (then the bot must also be idle)


@dataclass
class Bot:
    server: FakeBotAPI
    app: Application
    data_dir: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bot]:
    data_dir = tmp_path_factory.mktemp("bad-input-data")
    async with FakeBotAPI(token=TOKEN, bot_username=BOT_USERNAME) as server:
        app = build_application(Config(data_dir=data_dir, telegram_token=server.token,
                                       telegram_base_url=server.base_url))
        await start_polling(app, poll_timeout=1)
        try:
            yield Bot(server, app, data_dir)
        finally:
            await stop_polling(app)


# -- helpers ----------------------------------------------------------------------------------------


def user_file(bot: Bot, user: FakeUser) -> Path:
    return bot.data_dir / "users" / f"tg-{user.id}.json"


def stored(bot: Bot, user: FakeUser) -> dict[str, Any]:
    return json.loads(user_file(bot, user).read_text(encoding="utf-8"))


def stored_sessions(bot: Bot, user: FakeUser) -> list[dict[str, Any]]:
    """Every session kept for the user, in progress or over, oldest first."""
    return sorted(all_sessions(TinyDBStore(bot.data_dir), f"tg-{user.id}"), key=lambda s: (s["started_at"], s["id"]))


def session_turns(bot: Bot, user: FakeUser) -> list[dict[str, Any]]:
    sessions = list(stored(bot, user).get("sessions", {}).values())
    active = [s for s in sessions if s["status"] == "active"]
    return active[-1]["turns"] if active else []


async def reply_to(user: FakeUser, contains: str, timeout: float = 5.0) -> Reply:
    reply = await user.next_reply(timeout=timeout)
    assert contains in (reply.content or ""), f"expected {contains!r} in {reply!r}"
    return reply


async def start_roleplay(user: FakeUser) -> Reply:
    """/practice, pick the breakfast scenario; returns the persona's opening message."""
    user.send_text("/practice")
    menu = await reply_to(user, "Pick a situation")
    user.press(menu, button_text=next(t for t in menu.button_texts if SCENARIO in t))
    await user.wait_for(lambda r: r.edited)
    return await reply_to(user, PERSONA)


async def set_goal_via_start(user: FakeUser, goal: str) -> Reply:
    user.send_text("/start")
    await reply_to(user, "netcoach")
    await reply_to(user, "networking goal")
    user.send_text(goal)
    return await reply_to(user, "Got it, your goal:")


def raw_message(bot: Bot, user: FakeUser, fields: dict[str, Any], group: int | None = None) -> None:
    """Any kind of message the fake has no helper for (audio, dice, poll...), in the user's private
    chat or in a group, recorded by the fake server like its own helpers do."""
    server = bot.server
    chat = server._group_chat(group, "Group") if group is not None else server._chats[user.chat_id]
    server._user_message(user, chat, fields)


async def roleplay_then(bot: Bot, user: FakeUser, act: Callable[[], Any], expect: str | None) -> None:
    """In a role-play: do ``act``; expect a reply containing ``expect`` (or silence if None), and
    the role-play itself unchanged (no turn recorded)."""
    await start_roleplay(user)
    before = user_file(bot, user).read_bytes()
    act()
    if expect is None:
        await user.assert_no_reply(QUIET)
    else:
        await reply_to(user, expect)
    await bot.server.wait_idle(quiet=0.05)
    assert user_file(bot, user).read_bytes() == before, "the role-play changed"


async def roleplay_turn(bot: Bot, user: FakeUser, text: str) -> Reply:
    """In a role-play, ``text`` is a normal turn: the persona answers and the turn is stored verbatim."""
    await start_roleplay(user)
    user.send_text(text)
    reply = await reply_to(user, PERSONA)
    await bot.server.wait_idle(quiet=0.05)
    turns = session_turns(bot, user)
    assert turns[-2]["role"] == "user" and turns[-2]["text"] == text.strip()
    return reply


# -- the corpus -------------------------------------------------------------------------------------

Case = Callable[[Bot, FakeUser], Awaitable[None]]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        assert name not in CASES
        CASES[name] = fn
        return fn

    return register


def simple(name: str, text: str, expect: str | None, roleplay: bool = False) -> None:
    """A one-message case: send ``text`` (idle, or during a role-play) and expect ``expect``."""

    async def run(bot: Bot, user: FakeUser) -> None:
        if roleplay:
            await start_roleplay(user)
        user.send_text(text)
        if expect is None:
            await user.assert_no_reply(QUIET)
        else:
            await reply_to(user, expect)

    CASES[name] = run


# Empty and whitespace text. (Telegram never delivers an empty text; if it did, PTB sees no text
# and it gets the same answer as a sticker.)
simple("empty-text", "", TEXT_ONLY)
simple("whitespace-idle", "   \n\t  ", EMPTY)


@case("whitespace-in-roleplay")
async def _(bot: Bot, user: FakeUser) -> None:
    await roleplay_then(bot, user, lambda: user.send_text(" \n \t "), EMPTY)


@case("zero-width-only-in-roleplay")
async def _(bot: Bot, user: FakeUser) -> None:
    await roleplay_then(bot, user, lambda: user.send_text("\u200b\u200c\u200d\u2060\ufeff"), EMPTY)


@case("direction-marks-only-as-goal")
async def _(bot: Bot, user: FakeUser) -> None:
    user.send_text("/start")
    await reply_to(user, "netcoach")
    await reply_to(user, "networking goal")
    user.send_text("\u200f\u200e\u202b\u202c")
    await reply_to(user, EMPTY)
    user.send_text("meet people in fintech")  # still waiting for a real goal
    await reply_to(user, "meet people in fintech")


@case("zero-width-inside-words")
async def _(bot: Bot, user: FakeUser) -> None:
    await roleplay_turn(bot, user, "How\u200b did\u200d you get\u2060 started with the bakery?")


# Long text.
@case("4096-chars-in-roleplay")
async def _(bot: Bot, user: FakeUser) -> None:
    await roleplay_turn(bot, user, ("What got you into baking in the first place? " * 100)[:4096])


@case("4096-ampersands-then-debrief")
async def _(bot: Bot, user: FakeUser) -> None:
    await roleplay_turn(bot, user, "&" * 4096)  # 20 KB once HTML-escaped, no place to split
    user.send_text("/end")
    debrief = await user.wait_for(lambda r: "Focus score" in (r.text or ""))
    assert "&&&&" in debrief.text  # quoted literally (and shortened)


simple("4096-chars-idle", "x " * 2048, POINTER)
simple("over-4096-chars-in-roleplay", "word " * 1100, "too long", roleplay=True)


@case("500-char-word-in-roleplay")
async def _(bot: Bot, user: FakeUser) -> None:
    await roleplay_turn(bot, user, "Supercalifragilistic" * 25)


@case("500-char-word-as-goal")
async def _(bot: Bot, user: FakeUser) -> None:
    saved = await set_goal_via_start(user, "w" * 500)
    assert "w" * 200 in saved.text and "w" * 201 not in saved.text  # goals are kept short


# Right-to-left, emoji, metacharacters.
@case("rtl-arabic-in-roleplay")
async def _(bot: Bot, user: FakeUser) -> None:
    await roleplay_turn(bot, user, "مرحبا! كيف بدأت العمل في هذا المخبز؟")


@case("rtl-override-in-roleplay")
async def _(bot: Bot, user: FakeUser) -> None:
    await roleplay_turn(bot, user, "\u202eHow did you start?\u202c And what's next?")


@case("rtl-hebrew-as-goal")
async def _(bot: Bot, user: FakeUser) -> None:
    saved = await set_goal_via_start(user, "לפגוש מייסדים אחרים")
    assert "לפגוש מייסדים אחרים" in saved.text


@case("emoji-only-in-roleplay")
async def _(bot: Bot, user: FakeUser) -> None:
    await roleplay_turn(bot, user, "🙂🎉👋🏽👨‍👩‍👧‍👦🇩🇪")


@case("emoji-only-as-goal")
async def _(bot: Bot, user: FakeUser) -> None:
    saved = await set_goal_via_start(user, "🚀🤝🌍")
    assert "🚀🤝🌍" in saved.text


@case("html-in-roleplay")
async def _(bot: Bot, user: FakeUser) -> None:
    await roleplay_turn(bot, user, "<b>bold</b> <script>alert(1)</script> <a href='x'>x</a> &amp; &lt; &#0; &")


@case("html-as-goal")
async def _(bot: Bot, user: FakeUser) -> None:
    goal = "<i>meet</i> <b>investors</b> & </code> &amp; &#x110000;"
    saved = await set_goal_via_start(user, goal)
    assert goal in saved.text  # shown literally, not as markup
    assert not saved.entities or all(e["type"] == "italic" for e in saved.entities)


@case("markdownv2-in-roleplay")
async def _(bot: Bot, user: FakeUser) -> None:
    await roleplay_turn(bot, user, r"_*[]()~`>#+-=|{}.!\ *bold* __under__ ||spoiler|| [x](tg://user?id=1)")


@case("markdownv2-as-goal")
async def _(bot: Bot, user: FakeUser) -> None:
    goal = r"*grow* _my_ [network](http://x.y) `now`!"
    saved = await set_goal_via_start(user, goal)
    assert goal in saved.text


@case("control-characters-in-roleplay")
async def _(bot: Bot, user: FakeUser) -> None:
    await roleplay_turn(bot, user, "Hello\x07 there\x1b[31m, how\x00 are you?")


@case("hostile-lines-then-debrief")
async def _(bot: Bot, user: FakeUser) -> None:
    await start_roleplay(user)
    for line in ["<script>alert('x')</script> how did you start?", r"*What* _brings_ you [here](x)?",
                 "مرحبا كيف حالك؟", "x" * 500]:
        user.send_text(line)
        await reply_to(user, PERSONA)
    user.send_text("/end")
    parts = [await user.wait_for(lambda r: "Focus score" in (r.text or ""))]
    while not parts[-1].button_texts:
        parts.append(await user.next_reply())
    debrief = "\n".join(p.text for p in parts)
    assert "<script>alert('x')</script>" in debrief and "*What* _brings_ you" in debrief


# Commands with junk arguments, unknown commands.
simple("start-junk-payload", "/start ../../etc/passwd <b>&", "invite")
simple("practice-junk", "/practice ; rm -rf / <i>", "Pick a situation")
simple("hint-junk-idle", "/hint %s%n%x", "Start one with /practice")
simple("end-junk-idle", "/end now please", "No role-play is running")
simple("history-junk", "/history -1 DROP TABLE", "No finished sessions yet")
simple("progress-junk", "/progress ' OR 1=1 --", "No finished sessions yet")
simple("cancel-junk", "/cancel everything!!!", "Nothing to cancel")
simple("help-junk", "/help me <please>", "/practice")
simple("event-junk-1000-chars", "/event " + "<junk> & " * 110, "time zone")
simple("events-junk", "/events 🙂🙂", "No upcoming events")
simple("contacts-junk", "/contacts \u202e\u200b", "No contacts yet")
simple("assign-ids-junk", "/assign 123456789 tg-42", "coaches")
simple("roster-junk", "/roster 99999 <b>", "coaches")
simple("scenarios-junk", "/scenarios ../../", "coaches")
simple("export-junk", "/export --all users", "All your netcoach data")
simple("forget-junk", "/forget everyone", "deletes")
simple("hint-junk-in-roleplay", "/hint ???", "💡", roleplay=True)
simple("unknown-command", "/nonsense", UNKNOWN)
simple("unknown-command-with-our-name", f"/nonsense@{BOT_USERNAME} arg", UNKNOWN)
simple("command-for-another-bot", "/start@some_other_bot", UNKNOWN)
simple("very-long-command", "/" + "a" * 64, UNKNOWN)
simple("unknown-command-in-roleplay", "/teleport", UNKNOWN, roleplay=True)


@case("debrief-junk")
async def _(bot: Bot, user: FakeUser) -> None:
    user.send_text("/debrief </b> & <")
    reply = await user.next_reply()
    assert "event" in reply.text.lower()


# Buttons: forged, stale, oversized callback data.
FORGED = {
    "forged-pick-path": "p:pick:../../etc/passwd",
    "forged-list": "p:list:<script>",
    "forged-end-unknown-session": "s:end:20200101000000-abcdef",
    "forged-history": "h:show:../../../root",
    "forged-forget-guess": "f:yes:AAAAAAAAAAAA",
    "forged-event-tz": "ev:tz:Mars/Olympus_Mons",
    "forged-contact": "ct:done:nope",
    "forged-coach": "co:rev:1:2:3",
    "forged-consent": "ci:transcripts",
    "forged-empty": "",
    "forged-colons": ":::::::",
    "forged-unicode": "💥" * 16,
    "oversized-1000-bytes": "p:pick:" + "x" * 1000,
}


def forged(name: str, data: str) -> None:
    async def run(bot: Bot, user: FakeUser) -> None:
        user.send_text("/practice")
        menu = await reply_to(user, "Pick a situation")
        answer = await user.callback_answer(user.press_data(menu.message_id, data))
        assert EXPIRED in (answer.get("text") or ""), answer  # on the button only: no new message

    CASES[name] = run


for _name, _data in FORGED.items():
    forged(_name, _data)


@case("forged-end-of-someone-elses-session")
async def _(bot: Bot, user: FakeUser) -> None:
    victim = bot.server.user(first_name="Victim")
    await start_roleplay(victim)
    session_id = next(iter(stored(bot, victim)["sessions"].values()))["id"]
    before = user_file(bot, victim).read_bytes()
    await start_roleplay(user)
    for data in (f"s:end:{session_id}", f"s:hint:{session_id}", f"h:show:{session_id}"):
        answer = await user.callback_answer(user.press_data(1, data))
        assert EXPIRED in (answer.get("text") or "")
    await user.assert_no_reply(QUIET)
    assert user_file(bot, victim).read_bytes() == before  # untouched
    assert victim.pending_replies() == []


@case("button-on-deleted-message")
async def _(bot: Bot, user: FakeUser) -> None:
    user.press_data(987_654, "m:practice")  # Telegram sends an InaccessibleMessage
    await reply_to(user, "Pick a situation")


@case("double-tap-end")
async def _(bot: Bot, user: FakeUser) -> None:
    opening = await start_roleplay(user)
    first = user.press(opening, button_text="🏁 End & debrief")
    second = user.press(opening, button_text="🏁 End & debrief")
    await user.wait_for(lambda r: "Focus score" in (r.text or ""))
    for query in (first, second):
        await user.callback_answer(query)  # both taps are answered (the spinner stops)...
    await bot.server.wait_idle(quiet=0.1)
    assert not any("Focus score" in (r.text or "") or "No role-play" in (r.text or "")
                   for r in user.pending_replies())  # ...but there is one debrief and no complaint
    ended = [s for s in stored_sessions(bot, user) if s["status"] == "ended"]
    assert len(ended) == 1


# Edited messages: a role-play only moves forward, so edits are ignored by design.
@case("edited-roleplay-turn-ignored")
async def _(bot: Bot, user: FakeUser) -> None:
    await start_roleplay(user)
    sent = user.send_text("How long have you been coming to these breakfasts?")
    await reply_to(user, PERSONA)
    await bot.server.wait_idle(quiet=0.05)
    before = user_file(bot, user).read_bytes()
    user.edit_text(sent, "Buy my product!")
    await user.assert_no_reply(QUIET)
    assert user_file(bot, user).read_bytes() == before


@case("edited-command-ignored")
async def _(bot: Bot, user: FakeUser) -> None:
    sent = user.send_text("/help")
    await reply_to(user, "/practice")
    user.edit_text(sent, "/forget")
    await user.assert_no_reply(QUIET)


# Groups and channels.
@case("group-text")
async def _(bot: Bot, user: FakeUser) -> None:
    user.send_in_group("hello everyone <b>", chat_id=-100555)
    reply = await user.next_reply(chat_id=-100555)
    assert GROUP in reply.text
    assert not (bot.data_dir / "users" / f"tg-{user.id}.json").exists()  # nothing stored


@case("group-command")
async def _(bot: Bot, user: FakeUser) -> None:
    user.send_in_group(f"/practice@{BOT_USERNAME}", chat_id=-555)
    assert GROUP in (await user.next_reply(chat_id=-555)).text


@case("group-sticker")
async def _(bot: Bot, user: FakeUser) -> None:
    raw_message(bot, user, {"sticker": {"file_id": "stk", "file_unique_id": "stk", "type": "regular",
                                        "width": 512, "height": 512, "is_animated": False, "is_video": False}},
                group=-100777)
    assert GROUP in (await user.next_reply(chat_id=-100777)).text


@case("channel-post-ignored")
async def _(bot: Bot, user: FakeUser) -> None:
    # The bot coaches people in private chats; a channel has no person to answer.
    bot.server.channel_post(chat_id=-100888, text="/practice")
    await bot.server.wait_idle(quiet=QUIET)
    assert bot.server.messages(-100888) == []


@case("edited-channel-post-ignored")
async def _(bot: Bot, user: FakeUser) -> None:
    chat = {"id": -100889, "type": "channel", "title": "Channel"}
    bot.server.enqueue_update("edited_channel_post", {"message_id": 1, "sender_chat": chat, "chat": chat,
                                                      "date": int(time.time()), "edit_date": int(time.time()),
                                                      "text": "/start"})
    await bot.server.wait_idle(quiet=QUIET)
    assert bot.server.messages(-100889) == []


@case("added-to-group-ignored")
async def _(bot: Bot, user: FakeUser) -> None:
    # my_chat_member: nothing to say; the first message in the group gets the redirect.
    chat = {"id": -100999, "type": "supergroup", "title": "G"}
    member = lambda status: {"user": bot.server.bot_user, "status": status}  # noqa: E731
    bot.server.enqueue_update("my_chat_member", {"chat": chat, "from": user.user, "date": int(time.time()),
                                                 "old_chat_member": member("left"),
                                                 "new_chat_member": member("member")})
    await bot.server.wait_idle(quiet=QUIET)
    assert bot.server.messages(-100999) == []


# Every kind of non-text media, sent during a role-play: a clear "text only" answer, nothing changes.
def file_fields(kind: str, **extra: Any) -> dict[str, Any]:
    return {"file_id": f"{kind}-id", "file_unique_id": f"{kind}-uid", **extra}


MEDIA: dict[str, Callable[[Bot, FakeUser], Any]] = {
    "sticker": lambda b, u: u.send_sticker(),
    "photo": lambda b, u: u.send_photo(make_png(8, 8)),
    "photo-with-caption": lambda b, u: u.send_photo(make_png(8, 8), caption="<b>my card</b> call me!"),
    "voice": lambda b, u: u.send_voice(),
    "video": lambda b, u: u.send_video(),
    "document": lambda b, u: u.send_document("notes.txt", b"hello"),
    "toml-document-from-non-coach": lambda b, u: u.send_document("scenario.toml", b"id = 'x'"),
    "location": lambda b, u: u.send_location(),
    "contact": lambda b, u: u.send_contact(),
    "audio": lambda b, u: raw_message(b, u, {"audio": file_fields("audio", duration=3)}),
    "animation": lambda b, u: raw_message(b, u, {
        "animation": file_fields("gif", width=1, height=1, duration=1),
        "document": file_fields("gif")}),
    "video-note": lambda b, u: raw_message(b, u, {"video_note": file_fields("vn", length=240, duration=2)}),
    "dice": lambda b, u: raw_message(b, u, {"dice": {"emoji": "🎲", "value": 6}}),
    "poll": lambda b, u: raw_message(b, u, {"poll": {
        "id": "1", "question": "?", "options": [{"text": "a", "voter_count": 0, "persistent_id": "a"},
                                                {"text": "b", "voter_count": 0, "persistent_id": "b"}],
        "total_voter_count": 0, "is_closed": False, "is_anonymous": True, "type": "regular",
        "allows_multiple_answers": False, "allows_revoting": True, "members_only": False}}),
    "venue": lambda b, u: raw_message(b, u, {"venue": {
        "location": {"latitude": 1.0, "longitude": 2.0}, "title": "<Cafe>", "address": "1 & 2 St"}}),
}


def media(kind: str, send: Callable[[Bot, FakeUser], Any]) -> None:
    async def run(bot: Bot, user: FakeUser) -> None:
        await roleplay_then(bot, user, lambda: send(bot, user), TEXT_ONLY)

    CASES[f"media-{kind}"] = run


for _kind, _send in MEDIA.items():
    media(_kind, _send)


@case("garbage-toml-from-a-coach")
async def _(bot: Bot, user: FakeUser) -> None:
    user.send_text("/coach")
    await reply_to(user, "invite link")
    user.send_document("evil.toml", b"\x00\xff<script>& [[[ = = =\n" * 50)
    reply = await reply_to(user, "problems")
    assert "<script>" not in reply.source_text  # problems are escaped


# Floods: 30 messages in one second from one user.
@case("30-messages-in-a-second-in-roleplay")
async def _(bot: Bot, user: FakeUser) -> None:
    await start_roleplay(user)
    lines = [f"Question {i}: what do you like most about mornings like this?" for i in range(30)]
    for line in lines:
        user.send_text(line)
        await asyncio.sleep(1 / 30)
    await bot.server.wait_until(lambda: len(user.pending_replies()) >= 30, timeout=20, what="30 answers")
    await bot.server.wait_idle(quiet=0.1)
    replies = [await user.next_reply() for _ in list(user.pending_replies())]
    # Each message is answered: by the persona, or -- if this persona tires of the same question
    # (personas are seeded per session) -- with their goodbye and the debrief, and after that with
    # the pointer to /practice.
    ok = (PERSONA, "has left the conversation", "Focus score", POINTER, "Use /end")
    assert all(any(k in (r.text or "") for k in ok) for r in replies), replies
    sessions = stored_sessions(bot, user)
    said = [t["text"] for t in sessions[-1]["turns"] if t["role"] == "user"]
    assert said == lines[:len(said)] and said  # in order, none doubled or reordered


@case("30-messages-in-a-second-idle")
async def _(bot: Bot, user: FakeUser) -> None:
    for i in range(30):
        user.send_text(f"hello {i}?")
        await asyncio.sleep(1 / 30)
    replies = [await user.next_reply(timeout=15) for _ in range(30)]
    assert all(POINTER in r.text for r in replies)


# -- the test ---------------------------------------------------------------------------------------


def check_store(data_dir: Path) -> None:
    for path in data_dir.rglob("*.tmp"):
        raise AssertionError(f"temp file left behind: {path}")
    for path in data_dir.rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))  # raises on a damaged file


async def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
async def test_bad_input(name: str, bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    server = bot.server
    mark = server.call_mark()
    user = server.user(first_name=f"Case {name[:20]}")
    await CASES[name](bot, user)
    await server.wait_idle(quiet=0.1)
    assert user.pending_replies() == [], f"unexpected extra replies: {user.pending_replies()}"
    failed = [c for c in server.calls[mark:] if c.status not in (None, 200)]
    assert not failed, "Bot API calls rejected:\n" + "\n".join(c.describe() for c in failed)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, "errors logged:\n" + "\n".join(r.getMessage() for r in errors)
    check_store(bot.data_dir)

"""End-to-end tests of the fake Bot API server with a real PTB Application.

Why: every later netcoach e2e test and the load benchmark trust this fake. These tests drive
it through python-telegram-bot exactly as the bot will (real HTTP on 127.0.0.1, long polling)
and pin down the Telegram behaviour the bot must cope with: entity-parse errors, flood
control, dropped connections, stale callback queries, file up/download.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import time
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import httpx
import pytest
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeAllPrivateChats,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MenuButtonCommands,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.error import BadRequest, Conflict, InvalidToken, NetworkError, RetryAfter, TimedOut
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.fakes import FakeBotAPI
from tests.fakes.bot_api import make_png, parse_html, parse_markdown_v2

# PTB 22.2+ warns inside RetryAfter.__init__ about int vs timedelta; not our concern here.
pytestmark = pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning")

App: TypeAlias = "Application[Any, Any, Any, Any, Any, Any]"

TOKEN = "123:ABC"
POLL_TIMEOUT = 1  # long-poll seconds: small, so shutdown and retries stay fast

# --------------------------------------------------------------------------------------
# The tiny bot under test
# --------------------------------------------------------------------------------------


def keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Yes", callback_data="yes"),
                InlineKeyboardButton("No", callback_data="no"),
            ],
            [InlineKeyboardButton("Docs", url="https://example.org/docs")],
        ]
    )


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_user and update.effective_message
    payload = " ".join(context.args or []) or "-"
    await update.effective_message.reply_text(
        f"Welcome, <b>{update.effective_user.first_name}</b>! payload={payload}",
        parse_mode="HTML",
        reply_markup=keyboard(),
    )


async def html(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Sends user text as HTML *without escaping* -- the classic bug."""
    assert update.effective_message and update.effective_message.text
    raw = update.effective_message.text.split(" ", 1)[1]
    await update.effective_message.reply_text(raw, parse_mode="HTML")


async def photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message
    await update.effective_message.reply_photo(
        make_png(64, 32), caption="Your <i>chart</i>", parse_mode="HTML"
    )


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    msg = update.effective_message
    assert msg and msg.text is not None
    await context.bot.send_chat_action(msg.chat_id, "typing")
    await msg.reply_text(msg.text)


async def edited(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.edited_message
    await context.bot.send_message(update.edited_message.chat_id, f"edited: {update.edited_message.text}")


async def document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    msg = update.effective_message
    assert msg and msg.document
    file = await msg.document.get_file()
    data = bytes(await file.download_as_bytearray())
    first = data.decode().splitlines()[0]
    await msg.reply_text(f"{msg.document.file_name}: {len(data)} bytes, first line {first!r}")


async def describe(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    msg = update.effective_message
    assert msg
    kinds = ("sticker", "voice", "location", "contact", "photo", "video")
    kind = next((k for k in kinds if getattr(msg, k)), "something")
    await msg.reply_text(f"got {kind}")


async def channel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.channel_post
    await context.bot.send_message(update.channel_post.chat_id, f"seen: {update.channel_post.text}")


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    assert query
    await query.answer(f"You pressed {query.data}")
    await query.edit_message_text(f"You chose {query.data}")


def build_app(server: FakeBotAPI, token: str = TOKEN, **request_kwargs: Any) -> App:
    builder = ApplicationBuilder().token(token).base_url(server.base_url).base_file_url(server.base_file_url)
    if request_kwargs.get("read_timeout") is not None:
        builder = builder.read_timeout(request_kwargs["read_timeout"])
    app = builder.build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("html", html))
    app.add_handler(CommandHandler("photo", photo))
    app.add_handler(MessageHandler(filters.UpdateType.EDITED_MESSAGE & filters.TEXT, edited))
    app.add_handler(MessageHandler(filters.UpdateType.CHANNEL_POST, channel))
    app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & filters.TEXT & ~filters.COMMAND, echo))
    app.add_handler(MessageHandler(filters.Document.ALL, document))
    app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & ~filters.TEXT, describe))
    app.add_handler(CallbackQueryHandler(button))

    errors: list[BaseException] = []

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert context.error is not None
        errors.append(context.error)

    app.add_error_handler(on_error)
    app.bot_data["errors"] = errors
    return app


def retry_seconds(exc: RetryAfter) -> float:
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


# --------------------------------------------------------------------------------------
# Fixtures (no conftest: another engineer owns it)
# --------------------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI(token=TOKEN, bot_username="netcoach_test_bot") as srv:
        yield srv


@pytest.fixture
async def app(server: FakeBotAPI) -> AsyncIterator[App]:
    application = build_app(server)
    await application.initialize()
    await application.start()
    assert application.updater is not None
    await application.updater.start_polling(poll_interval=0, timeout=POLL_TIMEOUT)
    try:
        yield application
    finally:
        await application.updater.stop()
        await application.stop()
        await application.shutdown()


def errors_of(app: App) -> list[BaseException]:
    return app.bot_data["errors"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------
# Conversations through PTB
# --------------------------------------------------------------------------------------


async def test_echo_round_trip(server: FakeBotAPI, app: App) -> None:
    alice = server.user(first_name="Alice", username="alice")
    update = await alice.send_text("hello there")
    reply = await alice.next_reply(timeout=5)

    assert reply.text == "hello there"
    assert not reply.edited and reply.method == "sendMessage"
    assert reply.raw["from"]["username"] == "netcoach_test_bot"
    assert reply.raw["chat"]["id"] == alice.id
    assert reply.message_id > update["message"]["message_id"]  # ids are per chat, shared
    assert alice.chat_actions == ["typing"]
    assert [m.text for m in server.messages(alice.id)] == ["hello there"]
    send = server.calls_to("sendMessage")[-1]
    assert send.params["chat_id"] == alice.id and send.ok


async def test_command_with_payload_and_inline_keyboard(server: FakeBotAPI, app: App) -> None:
    bob = server.user(first_name="Bob")
    update = bob.send_text("/start ref_42")
    assert update["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]

    reply = await bob.next_reply()
    assert reply.text == "Welcome, Bob! payload=ref_42"  # tags parsed away, like Telegram
    assert reply.source_text == "Welcome, <b>Bob</b>! payload=ref_42"
    assert reply.entities == [{"type": "bold", "offset": 9, "length": 3}]
    assert reply.parse_mode == "HTML"
    assert reply.button_texts == ["Yes", "No", "Docs"]
    assert reply.button("No")["callback_data"] == "no"


async def test_button_press_answers_and_edits(server: FakeBotAPI, app: App) -> None:
    carol = server.user(first_name="Carol")
    carol.send_command("start")
    menu = await carol.next_reply()

    press = carol.press(menu, button_text="Yes")
    answer = await carol.callback_answer(press)
    assert answer["text"] == "You pressed yes"
    edit = await carol.next_reply()
    assert edit.edited and edit.method == "editMessageText"
    assert edit.message_id == menu.message_id and edit.text == "You chose yes"
    # Editing without reply_markup removes the inline keyboard, as on Telegram.
    assert edit.reply_markup is None
    state = server.messages(carol.id)[0]
    assert state.edited and state.text == "You chose yes" and state.history[0]["text"].startswith("Welcome")

    with pytest.raises(AssertionError, match="no inline keyboard"):
        carol.press(menu, button_text="Yes")  # presses act on the *current* keyboard: gone now

    # A forged press with the same data: the bot's identical edit is rejected by "Telegram".
    forged = carol.press_data(menu.message_id, "yes")
    await carol.callback_answer(forged)
    await server.wait_idle()
    assert any(
        isinstance(e, BadRequest) and "message is not modified" in str(e).lower() for e in errors_of(app)
    )

    # Answering the same query twice is an error (stale / already answered).
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await app.bot.answer_callback_query(press["callback_query"]["id"])
    with pytest.raises(BadRequest, match="(?i)query ID is invalid"):
        await app.bot.answer_callback_query("42")


async def test_press_url_button_is_rejected(server: FakeBotAPI, app: App) -> None:
    dave = server.user(first_name="Dave")
    dave.send_text("/start")
    menu = await dave.next_reply()
    with pytest.raises(AssertionError, match="url button"):
        dave.press(menu, button_text="Docs")
    with pytest.raises(AssertionError, match="say which button"):
        dave.press(menu)


async def test_offset_confirms_updates_no_duplicates(server: FakeBotAPI, app: App) -> None:
    erin = server.user(first_name="Erin")
    sent = [erin.send_text(f"msg {i}") for i in range(40)]
    replies = [await erin.next_reply() for _ in sent]
    assert [r.text for r in replies] == [f"msg {i}" for i in range(40)]

    await server.wait_idle()
    delivered = [u["update_id"] for c in server.calls_to("getUpdates") if c.ok for u in c.result]
    assert sorted(delivered) == [u.update_id for u in sent]  # each exactly once
    assert server.pending_updates == 0  # all confirmed by the follow-up offset
    assert len(server.messages(erin.id)) == 40


async def test_html_parse_error_surfaces_as_bad_request(server: FakeBotAPI, app: App) -> None:
    frank = server.user(first_name="Frank")
    frank.send_text("/html <b>unclosed")
    frank.send_text("/html 1 < 2")
    frank.send_text("/html Q&A")
    frank.send_text("/html <b>fine</b> &amp; <a href='https://x.org'>link</a>")
    ok = await frank.next_reply()
    await server.wait_idle()

    assert ok.text == "fine & link"
    assert [e["type"] for e in ok.entities] == ["bold", "text_link"]
    # PTB capitalises the description: "Can't parse entities: can't find end tag ..."
    bad = [str(e).lower() for e in errors_of(app) if isinstance(e, BadRequest)]
    assert len(bad) == 3, bad
    assert all(text.startswith("can't parse entities: ") for text in bad)
    assert any('find end tag corresponding to start tag "b"' in text for text in bad)
    assert any('unsupported start tag "" at byte offset 2' in text for text in bad)
    assert any("unsupported html entity" in text for text in bad)
    assert len(server.messages(frank.id)) == 1  # rejected messages are never delivered


async def test_429_is_reported_as_retry_after_and_not_delivered(server: FakeBotAPI, app: App) -> None:
    gina = server.user(first_name="Gina")
    server.fail_next("sendMessage", kind="429", retry_after=7)
    gina.send_text("first")
    await server.wait_idle()

    retry = [e for e in errors_of(app) if isinstance(e, RetryAfter)]
    assert len(retry) == 1 and retry_seconds(retry[0]) == 7
    failed = server.calls_to("sendMessage")[-1]
    assert failed.status == 429 and failed.fault == "429"
    assert server.messages(gina.id) == []  # the failed send was not delivered

    gina.send_text("second")
    assert (await gina.next_reply()).text == "second"


async def test_500_and_html_502_become_network_errors(server: FakeBotAPI, app: App) -> None:
    hank = server.user(first_name="Hank")
    server.fail_next("sendMessage", kind="500")
    server.fail_next("sendMessage", kind="502")
    hank.send_text("one")
    hank.send_text("two")
    hank.send_text("three")
    assert (await hank.next_reply()).text == "three"
    await server.wait_idle()
    network = [str(e) for e in errors_of(app) if isinstance(e, NetworkError)]
    assert any("Internal Server Error" in t for t in network)
    assert any("Bad Gateway" in t for t in network)
    assert [c.status for c in server.calls_to("sendMessage")] == [500, 502, 200]


async def test_dropped_get_updates_connection_does_not_stop_polling(server: FakeBotAPI, app: App) -> None:
    ivy = server.user(first_name="Ivy")
    server.fail_next("getUpdates", kind="drop")
    # Wake the parked poll so the next getUpdates is the one that gets dropped.
    ivy.send_text("before")
    assert (await ivy.next_reply()).text == "before"
    ivy.send_text("after the drop")
    assert (await ivy.next_reply(timeout=8)).text == "after the drop"
    assert any(c.fault == "drop" for c in server.calls_to("getUpdates"))
    assert app.updater is not None and app.updater.running


async def test_timeout_fault_times_out_client_and_delivers_nothing(server: FakeBotAPI, app: App) -> None:
    jack = server.user(first_name="Jack")
    server.fail_next("sendMessage", kind="timeout", delay=3)
    started = time.monotonic()
    with pytest.raises(TimedOut):
        await app.bot.send_message(jack.id, "slow", read_timeout=0.3)
    assert time.monotonic() - started < 2
    await server.wait_idle()
    assert server.messages(jack.id) == []
    # No parked sleep survives the client giving up.
    assert server.calls_to("sendMessage")[-1].finished is not None


async def test_photo_upload_bytes_are_inspectable(server: FakeBotAPI, app: App) -> None:
    kate = server.user(first_name="Kate")
    kate.send_command("photo")
    reply = await kate.next_reply()
    assert reply.method == "sendPhoto" and reply.media_type == "photo"
    assert reply.photo is not None and reply.photo.content is not None
    assert reply.photo.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert (reply.photo.width, reply.photo.height) == (64, 32)
    assert reply.caption == "Your chart" and reply.entities == [{"type": "italic", "offset": 5, "length": 5}]
    assert reply.raw["photo"][-1]["width"] == 64
    upload = server.calls_to("sendPhoto")[-1]
    assert upload.files["photo"].data == reply.photo.content


async def test_document_download_via_get_file(server: FakeBotAPI, app: App) -> None:
    leo = server.user(first_name="Leo")
    leo.send_document("notes.txt", b"line one\nline two\n", "text/plain")
    reply = await leo.next_reply()
    assert reply.text == "notes.txt: 18 bytes, first line 'line one'"
    assert [c.method for c in server.calls if c.method in ("getFile", "downloadFile")] == [
        "getFile",
        "downloadFile",
    ]

    async with httpx.AsyncClient() as client:
        path = server.calls_to("getFile")[-1].result["file_path"]
        wrong = await client.get(f"{server.base_file_url}999:NOPE/{path}")
        assert wrong.status_code == 401


async def test_two_users_do_not_see_each_others_replies(server: FakeBotAPI, app: App) -> None:
    mia, ned = server.user(first_name="Mia"), server.user(first_name="Ned")
    for i in range(5):
        mia.send_text(f"mia {i}")
        ned.send_text(f"ned {i}")
    mia_replies = [(await mia.next_reply()).text for _ in range(5)]
    ned_replies = [(await ned.next_reply()).text for _ in range(5)]
    assert mia_replies == [f"mia {i}" for i in range(5)]
    assert ned_replies == [f"ned {i}" for i in range(5)]
    await mia.assert_no_reply(wait=0.2)
    assert all(m.chat_id == ned.id for m in server.messages(ned.id))


async def test_other_update_kinds_reach_the_bot(server: FakeBotAPI, app: App) -> None:
    olga = server.user(first_name="Olga")
    for send, kind in (
        (olga.send_sticker, "sticker"),
        (olga.send_voice, "voice"),
        (olga.send_location, "location"),
        (olga.send_contact, "contact"),
        (olga.send_photo, "photo"),
        (olga.send_video, "video"),
    ):
        send()
        assert (await olga.next_reply()).text == f"got {kind}"

    original = olga.send_text("typo")
    await olga.next_reply()
    olga.edit_text(original["message"]["message_id"], "fixed")
    assert (await olga.next_reply()).text == "edited: fixed"

    group = olga.send_in_group("hi group", chat_id=-1001111111111)
    assert group["message"]["chat"]["type"] == "supergroup"
    in_group = await olga.next_reply(chat_id=-1001111111111)
    assert in_group.text == "hi group" and in_group.chat_id == -1001111111111

    server.channel_post(-1002222222222, "news")
    await server.wait_idle()
    assert [m.text for m in server.messages(-1002222222222)] == ["seen: news"]


async def test_wait_for_skips_until_match_and_timeout_reports_calls(server: FakeBotAPI, app: App) -> None:
    pam = server.user(first_name="Pam")
    for text in ("a", "b", "target", "c"):
        pam.send_text(text)
    hit = await pam.wait_for(lambda r: r.text == "target")
    assert hit.text == "target"
    assert (await pam.next_reply()).text == "c"
    with pytest.raises(AssertionError, match=r"(?s)Timed out after 0.2s.*sendMessage"):
        await pam.next_reply(timeout=0.2)


async def test_wrong_token_is_invalid_token_at_initialize(server: FakeBotAPI) -> None:
    bad = build_app(server, token="999:WRONG")
    with pytest.raises(InvalidToken):
        await bad.initialize()
    assert server.calls[-1].status == 401


# --------------------------------------------------------------------------------------
# Direct Bot API behaviour (no polling needed)
# --------------------------------------------------------------------------------------


@pytest.fixture
async def bot_app(server: FakeBotAPI) -> AsyncIterator[App]:
    application = build_app(server)
    await application.initialize()
    try:
        yield application
    finally:
        await application.shutdown()


async def test_settings_methods(server: FakeBotAPI, bot_app: App) -> None:
    bot = bot_app.bot
    assert bot.username == "netcoach_test_bot" and bot.id == 123
    commands = [BotCommand("start", "Start"), BotCommand("practice", "Practise a pitch")]
    assert await bot.set_my_commands(commands, scope=BotCommandScopeAllPrivateChats())
    assert [c.command for c in await bot.get_my_commands(scope=BotCommandScopeAllPrivateChats())] == [
        "start",
        "practice",
    ]
    assert await bot.get_my_commands() == ()  # other scope
    assert server.get_commands({"type": "all_private_chats"})[1]["description"] == "Practise a pitch"
    with pytest.raises(BadRequest, match="(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand("Bad-Name", "x")])
    assert await bot.delete_my_commands(scope=BotCommandScopeAllPrivateChats())
    assert server.get_commands({"type": "all_private_chats"}) == []

    user = server.user(user_id=555, first_name="Quinn", username="quinn")
    assert await bot.set_chat_menu_button(chat_id=555, menu_button=MenuButtonCommands())
    assert server.menu_buttons[555] == {"type": "commands"}
    chat = await bot.get_chat("@quinn")
    assert chat.id == user.id and chat.first_name == "Quinn"
    info = await bot.get_webhook_info()
    assert info.url == "" and info.pending_update_count == 0
    assert await bot.log_out() and await bot.close()


async def test_send_validation(server: FakeBotAPI, bot_app: App) -> None:
    bot = bot_app.bot
    rita = server.user(first_name="Rita")
    with pytest.raises(BadRequest, match="(?i)message is too long"):
        await bot.send_message(rita.id, "x" * 4097)
    with pytest.raises(BadRequest, match="(?i)message text is empty"):
        await bot.send_message(rita.id, "   ")
    with pytest.raises(BadRequest, match="(?i)chat not found"):
        await bot.send_message(42, "hi")
    with pytest.raises(BadRequest, match="(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(
            rita.id,
            "hi",
            reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="y" * 65)]]),
        )
    with pytest.raises(BadRequest, match="(?i)Character '.' is reserved"):
        await bot.send_message(rita.id, "Score: 9.5", parse_mode="MarkdownV2")
    msg = await bot.send_message(rita.id, "x" * 4096)
    with pytest.raises(BadRequest, match="(?i)message is not modified"):
        await bot.edit_message_text("x" * 4096, chat_id=rita.id, message_id=msg.message_id)
    with pytest.raises(BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_text("y", chat_id=rita.id, message_id=9999)
    assert await bot.delete_message(rita.id, msg.message_id)
    with pytest.raises(BadRequest, match="(?i)message to delete not found"):
        await bot.delete_message(rita.id, msg.message_id)
    with pytest.raises(BadRequest, match="(?i)wrong parameter action"):
        await bot.send_chat_action(rita.id, "dancing")
    with pytest.raises(BadRequest, match="(?i)IMAGE_PROCESS_FAILED"):
        await bot.send_photo(rita.id, b"not an image")
    doc = await bot.send_document(rita.id, b"%PDF-1.4 fake", filename="report.pdf", caption="Report")
    stored = server.last_message(rita.id)
    assert stored is not None and stored.document is not None
    assert stored.document.filename == "report.pdf" and stored.document.content == b"%PDF-1.4 fake"
    assert stored.document.mime_type == "application/pdf"
    # The bot can re-send and download its own upload by file_id.
    assert doc.document is not None
    again = await bot.send_document(rita.id, doc.document.file_id)
    assert again.document and again.document.file_id == doc.document.file_id
    assert await (await bot.get_file(doc.document.file_id)).download_as_bytearray() == b"%PDF-1.4 fake"
    rita.block()
    with pytest.raises(Exception, match="(?i)bot was blocked by the user"):
        await bot.send_message(rita.id, "hello?")


async def test_edits_keyboards_replies_and_stale_queries(server: FakeBotAPI, bot_app: App) -> None:
    bot = bot_app.bot
    server.callback_query_ttl = 0.05
    uli = server.user(first_name="Uli")
    asked = uli.send_text("what now?")
    kb = await bot.send_message(
        uli.id,
        "Pick",
        reply_markup=ReplyKeyboardMarkup([["Practice", "Stats"]]),
        reply_to_message_id=asked["message"]["message_id"],
    )
    assert kb.reply_to_message is not None and kb.reply_to_message.text == "what now?"
    assert kb.reply_markup is None  # Telegram echoes only inline keyboards
    assert uli.current_keyboard == [["Practice", "Stats"]]
    await bot.send_message(uli.id, "ok", reply_markup=ReplyKeyboardRemove())
    assert uli.current_keyboard is None

    menu = await bot.send_message(uli.id, "Menu", reply_markup=keyboard())
    await bot.edit_message_reply_markup(
        uli.id,
        menu.message_id,
        reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data="go")]]),
    )
    with pytest.raises(BadRequest, match="(?i)message is not modified"):
        await bot.edit_message_reply_markup(
            uli.id,
            menu.message_id,
            reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data="go")]]),
        )
    press = uli.press(server.messages(uli.id)[-1])  # the only callback button: "Go"
    assert press["callback_query"]["data"] == "go"
    await asyncio.sleep(0.1)
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query(press["callback_query"]["id"])

    pic = await bot.send_photo(uli.id, make_png(8, 8), caption="v1")
    await bot.edit_message_caption(uli.id, pic.message_id, caption="<b>v2</b>", parse_mode="HTML")
    last = server.last_message(uli.id)
    assert last is not None and last.caption == "v2" and last.entities[0]["type"] == "bold"
    with pytest.raises(BadRequest, match="(?i)no text in the message"):
        await bot.edit_message_text("text", chat_id=uli.id, message_id=pic.message_id)

    mark = server.call_mark()
    assert await bot.delete_messages(uli.id, [asked["message"]["message_id"], pic.message_id])
    call = await server.wait_for_call("deleteMessages", since=mark)
    assert call.ok and [m.message_id for m in server.messages(uli.id, include_deleted=True) if m.deleted] == [
        pic.message_id
    ]
    forged = uli.press_data(pic.message_id, "anything")  # deleted message -> InaccessibleMessage
    assert forged["callback_query"]["message"]["date"] == 0
    events = [(r.method, r.edited) for r in uli.replies]
    assert events == [
        ("sendMessage", False),
        ("sendMessage", False),
        ("sendMessage", False),
        ("editMessageReplyMarkup", True),
        ("sendPhoto", False),
        ("editMessageCaption", True),
    ]


async def test_fail_rate_is_reproducible(server: FakeBotAPI, bot_app: App) -> None:
    sam = server.user(first_name="Sam")

    async def pattern() -> list[bool]:
        server.fail_rate("sendMessage", "500", 0.5, seed=7)
        outcome = []
        for i in range(20):
            try:
                await bot_app.bot.send_message(sam.id, f"m{i}")
                outcome.append(True)
            except NetworkError:
                outcome.append(False)
        return outcome

    first, second = await pattern(), await pattern()
    assert first == second and 0 < first.count(False) < 20
    server.fail_rate("sendMessage", "500", 0)
    assert len(server.messages(sam.id)) == first.count(True) * 2


async def test_flood_limits(server: FakeBotAPI, bot_app: App) -> None:
    tom = server.user(first_name="Tom")
    server.set_flood_limits(global_per_second=None, per_chat_per_second=1.0, burst=2)
    await bot_app.bot.send_message(tom.id, "1")
    await bot_app.bot.send_message(tom.id, "2")
    with pytest.raises(RetryAfter) as info:
        await bot_app.bot.send_message(tom.id, "3")
    assert retry_seconds(info.value) >= 1


# --------------------------------------------------------------------------------------
# Raw protocol (what PTB does not exercise on its own)
# --------------------------------------------------------------------------------------


async def test_raw_protocol_long_poll_conflict_and_errors(server: FakeBotAPI) -> None:
    api = f"{server.base_url}{TOKEN}"
    async with httpx.AsyncClient(timeout=5) as client:
        unknown = await client.post(f"{api}/sendTelepathy")
        assert unknown.status_code == 404
        assert unknown.json() == {
            "ok": False,
            "error_code": 404,
            "description": "Not Found: method not found",
        }
        assert (await client.get(f"{api}/GETME")).json()["result"]["username"] == "netcoach_test_bot"
        wrong = await client.get(f"{server.base_url}123:XYZ/getMe")
        assert wrong.status_code == 401 and wrong.json()["description"] == "Unauthorized"

        # Long poll: waits for timeout when empty, returns at once when an update arrives.
        started = time.monotonic()
        empty = await client.post(f"{api}/getUpdates", json={"timeout": 0.3})
        assert empty.json() == {"ok": True, "result": []} and time.monotonic() - started >= 0.29
        uma = server.user(first_name="Uma")
        poll = asyncio.create_task(client.post(f"{api}/getUpdates", data={"timeout": "5"}))
        await server.wait_until(lambda: server.is_polling)
        started = time.monotonic()
        uma.send_text("ping")
        got = (await poll).json()["result"]
        assert time.monotonic() - started < 1 and got[0]["message"]["text"] == "ping"

        # A second getUpdates terminates the one in flight with 409.
        first = asyncio.create_task(
            client.post(f"{api}/getUpdates", json={"offset": got[0]["update_id"] + 1, "timeout": 5})
        )
        await server.wait_until(lambda: server.is_polling)
        second = await client.post(f"{api}/getUpdates", json={"timeout": 0})
        assert second.json()["ok"] is True
        conflict = (await first).json()
        assert conflict["error_code"] == 409 and "terminated by other getUpdates" in conflict["description"]

        # limit, negative offset, allowed_updates.
        for i in range(5):
            uma.send_text(f"n{i}")
        batch = (await client.post(f"{api}/getUpdates", json={"limit": 2})).json()["result"]
        assert [u["message"]["text"] for u in batch] == ["n0", "n1"]
        tail = (await client.post(f"{api}/getUpdates", json={"offset": -1})).json()["result"]
        assert [u["message"]["text"] for u in tail] == ["n4"]
        await client.post(
            f"{api}/getUpdates",
            json={"offset": tail[0]["update_id"] + 1, "allowed_updates": ["callback_query"]},
        )
        uma.send_text("filtered out")
        assert server.pending_updates == 0 and server.dropped_updates[-1]["message"]["text"] == "filtered out"

        # With a webhook set, getUpdates is a 409 like on Telegram.
        assert (await client.post(f"{api}/setWebhook", json={"url": "https://example.org/hook"})).json()["ok"]
        assert (await client.post(f"{api}/getUpdates")).status_code == 409
        assert (await client.post(f"{api}/deleteWebhook")).json()["result"] is True


async def test_second_poller_conflict_surfaces_in_ptb(server: FakeBotAPI, bot_app: App) -> None:
    # Two bot instances with the same token: the older long poll gets 409 Conflict.
    async with Bot(TOKEN, base_url=server.base_url) as other:
        parked = asyncio.create_task(bot_app.bot.get_updates(timeout=5))
        await server.wait_until(lambda: server.is_polling)
        assert await other.get_updates(timeout=0) == ()
        with pytest.raises(Conflict):
            await parked


def test_html_parser_units() -> None:
    assert parse_html("<b>bold <i>both</i></b>") == (
        "bold both",
        [{"type": "bold", "offset": 0, "length": 9}, {"type": "italic", "offset": 5, "length": 4}],
    )
    text, entities = parse_html('<pre><code class="language-python">x = 1</code></pre>')
    assert text == "x = 1" and entities == [{"type": "pre", "offset": 0, "length": 5, "language": "python"}]
    text, entities = parse_html(
        '😀 <span class="tg-spoiler">s</span> &lt;&#33;&gt; <tg-spoiler>x</tg-spoiler>'
    )
    assert text == "😀 s <!> x"
    assert entities[0] == {"type": "spoiler", "offset": 3, "length": 1}  # UTF-16 offsets
    assert parse_html("<blockquote expandable>q</blockquote>")[1][0]["type"] == "expandable_blockquote"
    for bad, message in (
        ("<b>x</i>", 'expected "</b>", found "</i>"'),
        ("<br>", 'Unsupported start tag "br"'),
        ("<span>x</span>", 'must have class "tg-spoiler"'),
        ("x</b>", "Unexpected end tag"),
        ("a & b", "Unsupported HTML entity"),
        ("<b", "Unclosed start tag"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_html(bad)
    assert parse_html("a & b", strict_ampersand=False)[0] == "a & b"
    assert parse_markdown_v2(r"*bold* _it_ __u__ \. [link](https://x.org/a\)b)")[1] == [
        {"type": "bold", "offset": 0, "length": 4},
        {"type": "italic", "offset": 5, "length": 2},
        {"type": "underline", "offset": 8, "length": 1},
        {"type": "text_link", "offset": 12, "length": 4, "url": "https://x.org/a)b"},
    ]


async def test_webhook_delivery_is_in_order_with_the_secret_and_retried_until_taken(server: FakeBotAPI) -> None:
    """What webhook tests rely on: updates POSTed one at a time, in order, carrying the secret
    token; a failed answer holds the queue and is retried, like Telegram."""
    from aiohttp import web

    seen: list[tuple[str, str | None, int]] = []
    answers = iter([500, 200, 200])

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        status = next(answers)
        seen.append((body["message"]["text"], request.headers.get("X-Telegram-Bot-Api-Secret-Token"), status))
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with httpx.AsyncClient() as client:
            api = f"{server.base_url}{TOKEN}"
            ok = (await client.post(f"{api}/setWebhook", json={"url": "https://example.org/hook", "secret_token": "s"})).json()
            assert ok["ok"]
        server.deliver_webhooks_to(f"http://127.0.0.1:{port}/hook", max_connections=1)
        user = server.user()
        user.send_text("first")
        user.send_text("second")
        await server.wait_until(lambda: server.pending_updates == 0, timeout=5, what="both updates taken")
    finally:
        await runner.cleanup()
    assert seen == [("first", "s", 500), ("first", "s", 200), ("second", "s", 200)]
    assert [status for _, status in server.webhook_attempts] == [500, 200, 200]

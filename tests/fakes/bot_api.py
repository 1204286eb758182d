"""A fake Telegram Bot API server for end-to-end tests and load benchmarks.

Why: the bot under test is a real python-telegram-bot ``Application`` that talks HTTP. Mocking
``Bot`` methods would skip the request encoding, the error mapping (``BadRequest``,
``RetryAfter``, ``NetworkError`` ...), long polling and offset handling -- exactly where
real bots break. This server speaks the Bot API over real HTTP on 127.0.0.1, validates
requests the way Telegram does (HTML/MarkdownV2 entity parsing, text limits, "message is not
modified", stale callback queries ...), simulates users and lets tests inject faults.

It is asyncio-native (aiohttp) and runs in the same event loop as the bot under test. All
bookkeeping is O(1) per update / per call, so a benchmark can drive 1000 simulated users.

Usage::

    from telegram.ext import ApplicationBuilder
    from tests.fakes import FakeBotAPI

    async def test_echo() -> None:
        async with FakeBotAPI(token="123:ABC", bot_username="netcoach_test_bot") as server:
            app = (
                ApplicationBuilder()
                .token(server.token)
                .base_url(server.base_url)
                .base_file_url(server.base_file_url)
                .build()
            )
            ...  # add handlers
            await app.initialize()
            await app.start()
            await app.updater.start_polling(poll_interval=0, timeout=1)
            try:
                alice = server.user(first_name="Alice", username="alice")
                alice.send_text("/start hello")
                reply = await alice.next_reply(timeout=5)
                assert "Welcome" in reply.text
                alice.press(reply, button_text="Next")          # callback_query update
                edit = await alice.next_reply()                  # the bot's editMessageText
                assert edit.edited
                server.fail_next("sendMessage", kind="429", retry_after=1)
            finally:
                await app.updater.stop()
                await app.stop()
                await app.shutdown()

Main objects: :class:`FakeBotAPI` (the server), :class:`FakeUser` (a simulated user, from
``server.user(...)``), :class:`Reply` (an event "the bot sent/edited a message", from
``user.next_reply()``), :class:`BotMessage` (live state of a bot message, from
``server.messages(chat_id)``), :class:`CallRecord` (one API request, in ``server.calls``) and
:class:`StoredFile` (uploaded or user-sent file).

Deliberate differences from Telegram (documented so nobody is surprised):

* A bare ``&`` in HTML text that is not an entity is rejected (Telegram keeps it literally);
  pass ``strict_html=False`` to get Telegram's lenient behaviour.
* ``setWebhook`` is stored and makes ``getUpdates`` fail with 409 like Telegram. Updates are
  POSTed to the webhook only once a test says where its HTTPS URL really lands
  (:meth:`FakeBotAPI.deliver_webhooks_to`, the part a TLS proxy plays in production); up to 40
  at once like Telegram (or one at a time, in order), and a non-2xx answer or a failed
  connection is retried after ``webhook_retry_delay`` until the bot takes the update.
* ``allowed_updates`` filters updates when they are *created* (Telegram: "doesn't affect
  updates created before the call"); filtered updates are kept in ``server.dropped_updates``.
* A second ``getUpdates`` while one is in flight terminates the *older* one with 409
  ("Conflict: terminated by other getUpdates request"), as Telegram does; this also keeps
  PTB's shutdown clean when an abandoned long poll is still parked on the server.
* Files sent by URL are not fetched (tests never leave 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import itertools
import json
import logging
import math
import mimetypes
import random
import re
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Generator, Iterable
from http import HTTPStatus
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.web_request import FileField

from tests.fakes.entities import (
    EntityParseError,
    detect_user_entities,
    parse_formatted,
    parse_html,
    parse_markdown,
    parse_markdown_v2,
    strip_text,
    utf16_len,
)

__all__ = [
    "FakeBotAPI",
    "FakeUser",
    "Reply",
    "BotMessage",
    "CallRecord",
    "StoredFile",
    "UploadPart",
    "UpdateDict",
    "ApiError",
    "EntityParseError",
    "parse_html",
    "parse_markdown_v2",
    "parse_markdown",
    "utf16_len",
    "make_png",
]

_log = logging.getLogger(__name__)

# ======================================================================================
# Data model
# ======================================================================================


class ApiError(Exception):
    """A Bot API error response; raised inside method handlers, turned into JSON."""

    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


_NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
_QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"
_CONFLICT_POLL = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
)
_CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first"
)
_HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
    "</body>\r\n</html>\r\n"
)


class UpdateDict(dict):  # type: ignore[type-arg]
    """A Bot API ``Update`` as a plain dict, returned by the simulated-user methods.

    Why awaitable: the update is enqueued synchronously, but test authors naturally write
    ``await user.send_text("hi")``; both that and the plain call work and return the dict.
    """

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, UpdateDict]:
        return self
        yield  # pragma: no cover - makes this a generator

    @property
    def update_id(self) -> int:
        return int(self["update_id"])

    @property
    def kind(self) -> str:
        """The update type, e.g. ``"message"`` or ``"callback_query"``."""
        return next(str(k) for k in self if k != "update_id")

    @property
    def payload(self) -> dict[str, Any]:
        """The inner object (the Message, CallbackQuery, ...)."""
        return self[self.kind]  # type: ignore[no-any-return]


@dataclasses.dataclass(slots=True)
class UploadPart:
    """One file part of a multipart request, exactly as the bot uploaded it."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclasses.dataclass(eq=False)
class StoredFile:
    """A file known to the server: uploaded by the bot, sent by a user or registered by a test.

    ``content`` holds the raw bytes so tests can check e.g. a PNG signature; it is ``None``
    for files the bot sent by URL (never fetched).
    """

    file_id: str
    file_unique_id: str
    kind: str
    content: bytes | None
    filename: str | None = None
    mime_type: str | None = None
    file_path: str | None = None
    url: str | None = None
    width: int | None = None
    height: int | None = None
    duration: int | None = None

    @property
    def file_size(self) -> int | None:
        return None if self.content is None else len(self.content)

    def base_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"file_id": self.file_id, "file_unique_id": self.file_unique_id}
        if self.content is not None:
            data["file_size"] = len(self.content)
        return data


@dataclasses.dataclass(eq=False)
class CallRecord:
    """One HTTP request the bot made. ``time``/``finished`` are ``time.monotonic()`` values."""

    method: str
    params: dict[str, Any]
    time: float
    files: dict[str, UploadPart] = dataclasses.field(default_factory=dict)
    http_method: str = "POST"
    status: int | None = None
    result: Any = None
    error: str | None = None
    fault: str | None = None
    finished: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else self.finished - self.time

    def describe(self) -> str:
        """One line for assertion messages."""
        shown = {
            k: (v if not isinstance(v, str) or len(v) < 60 else v[:57] + "...")
            for k, v in self.params.items()
        }
        if self.files:
            shown["<files>"] = {k: f"{len(p.data)} bytes" for k, p in self.files.items()}
        if self.status is not None:
            outcome = f"-> {self.status}" + (f" {self.error}" if self.error else "")
        else:
            outcome = f"-> no response ({self.error})" if self.error else "in flight"
        if self.fault:
            outcome += f" [fault:{self.fault}]"
        if self.method == "getUpdates" and isinstance(self.result, list):
            outcome += f" ({len(self.result)} updates)"
        return f"{self.method}({shown}) {outcome}"


class _MarkupMixin:
    """Helpers shared by :class:`BotMessage` and :class:`Reply` for keyboards."""

    reply_markup: dict[str, Any] | None

    @property
    def inline_keyboard(self) -> list[list[dict[str, Any]]]:
        """Rows of inline buttons (empty if none)."""
        if not self.reply_markup:
            return []
        return list(self.reply_markup.get("inline_keyboard") or [])

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """All inline buttons, flattened."""
        return [b for row in self.inline_keyboard for b in row]

    @property
    def button_texts(self) -> list[str]:
        return [str(b.get("text", "")) for b in self.buttons]

    @property
    def keyboard(self) -> list[list[str]] | None:
        """Texts of a ReplyKeyboardMarkup (custom keyboard), if this message set one."""
        if not self.reply_markup or "keyboard" not in self.reply_markup:
            return None
        return [
            [b if isinstance(b, str) else str(b.get("text", "")) for b in row]
            for row in self.reply_markup["keyboard"]
        ]

    def button(self, text: str | None = None, *, callback_data: str | None = None) -> dict[str, Any]:
        """Find an inline button by text and/or callback_data; AssertionError if absent."""
        for b in self.buttons:
            if (text is None or b.get("text") == text) and (
                callback_data is None or b.get("callback_data") == callback_data
            ):
                return b
        raise AssertionError(
            f"no inline button with text={text!r} callback_data={callback_data!r}; "
            f"buttons are {[(b.get('text'), b.get('callback_data')) for b in self.buttons]}"
        )


@dataclasses.dataclass(eq=False)
class BotMessage(_MarkupMixin):
    """Live state of a message the bot sent (updated in place by edits and deletion).

    ``source_text`` is the text exactly as the bot sent it (with HTML tags), ``text`` the
    text Telegram would display (tags parsed away) and ``entities`` the parsed formatting.
    """

    chat_id: int
    message_id: int
    method: str
    date: int
    text: str | None = None
    entities: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    caption: str | None = None
    parse_mode: str | None = None
    source_text: str | None = None
    reply_markup: dict[str, Any] | None = None
    media_type: str | None = None
    file: StoredFile | None = None
    json: dict[str, Any] = dataclasses.field(default_factory=dict)
    edited: bool = False
    edit_count: int = 0
    deleted: bool = False
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def content(self) -> str:
        """Text or caption, whichever the message has ("" if none)."""
        return self.text if self.text is not None else (self.caption or "")

    @property
    def photo(self) -> StoredFile | None:
        return self.file if self.media_type == "photo" else None

    @property
    def document(self) -> StoredFile | None:
        return self.file if self.media_type == "document" else None

    def __repr__(self) -> str:
        flags = "".join(f" {f}" for f in ("edited", "deleted") if getattr(self, f))
        return f"<BotMessage {self.chat_id}/{self.message_id} {self.method} {self.content[:50]!r}{flags}>"


@dataclasses.dataclass(frozen=True, eq=False)
class Reply(_MarkupMixin):
    """Snapshot event: "the bot sent or edited a message in this chat" (see ``next_reply``).

    ``edited`` is True for editMessageText/Caption/ReplyMarkup. ``message`` is the live
    :class:`BotMessage`; the other fields are the state right after this call.
    """

    message: BotMessage
    method: str
    edited: bool
    text: str | None
    entities: list[dict[str, Any]]
    caption: str | None
    parse_mode: str | None
    source_text: str | None
    reply_markup: dict[str, Any] | None
    raw: dict[str, Any]
    time: float

    @property
    def chat_id(self) -> int:
        return self.message.chat_id

    @property
    def message_id(self) -> int:
        return self.message.message_id

    @property
    def media_type(self) -> str | None:
        return self.message.media_type

    @property
    def file(self) -> StoredFile | None:
        return self.message.file

    @property
    def photo(self) -> StoredFile | None:
        return self.message.photo

    @property
    def document(self) -> StoredFile | None:
        return self.message.document

    @property
    def content(self) -> str:
        return self.text if self.text is not None else (self.caption or "")

    def __repr__(self) -> str:
        kind = "edit" if self.edited else "new"
        return f"<Reply {kind} {self.method} {self.chat_id}/{self.message_id} {self.content[:60]!r}>"


@dataclasses.dataclass(slots=True)
class _Fault:
    kind: str
    retry_after: int
    delay: float
    description: str | None


@dataclasses.dataclass(slots=True)
class _RateFault:
    fault: _Fault
    probability: float
    rng: random.Random


@dataclasses.dataclass(slots=True)
class _CallbackState:
    query_id: str
    user_id: int
    chat_id: int | None
    message_id: int | None
    data: str | None
    created: float
    answered: bool = False
    answer: dict[str, Any] | None = None


class _Bucket:
    """Token bucket for the optional flood-control simulation."""

    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = time.monotonic()

    def take(self, now: float) -> float:
        """Consume one token; return 0 on success or the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class _Chat:
    """Per-chat state. Message ids are per chat and shared by user and bot messages."""

    __slots__ = (
        "id",
        "type",
        "info",
        "next_message_id",
        "bot_messages",
        "user_messages",
        "events",
        "waiters",
        "chat_actions",
        "user",
    )

    def __init__(self, chat_id: int, info: dict[str, Any]) -> None:
        self.id = chat_id
        self.type: str = info["type"]
        self.info = info
        self.next_message_id = 1
        self.bot_messages: dict[int, BotMessage] = {}
        self.user_messages: dict[int, dict[str, Any]] = {}
        self.events: list[Reply] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.chat_actions: list[str] = []
        self.user: FakeUser | None = None

    def take_message_id(self) -> int:
        mid = self.next_message_id
        self.next_message_id += 1
        return mid

    def wake(self) -> None:
        if self.waiters:
            for fut in self.waiters:
                if not fut.done():
                    fut.set_result(None)
            self.waiters.clear()


# ======================================================================================
# Parameter decoding
# ======================================================================================

# PTB sends form fields whose non-string values are JSON-encoded; strings are sent raw. We
# decode by parameter name, like Telegram does with its typed parameters.
_JSON_PARAMS = frozenset(
    {
        "reply_markup",
        "entities",
        "caption_entities",
        "allowed_updates",
        "commands",
        "scope",
        "menu_button",
        "link_preview_options",
        "reply_parameters",
        "media",
        "message_ids",
        "results",
        "reaction",
    }
)
_INT_PARAMS = frozenset(
    {
        "message_id",
        "offset",
        "limit",
        "reply_to_message_id",
        "message_thread_id",
        "cache_time",
        "max_connections",
        "duration",
        "width",
        "height",
        "length",
        "user_id",
        "from_chat_id",
    }
)
_FLOAT_PARAMS = frozenset({"timeout", "latitude", "longitude"})
_BOOL_PARAMS = frozenset(
    {
        "disable_notification",
        "protect_content",
        "drop_pending_updates",
        "show_alert",
        "disable_web_page_preview",
        "allow_sending_without_reply",
        "has_spoiler",
        "show_caption_above_media",
        "disable_content_type_detection",
        "supports_streaming",
        "allow_paid_broadcast",
    }
)


def _coerce(name: str, value: Any) -> Any:
    if name in _JSON_PARAMS:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise _bad(f"can't parse {name} JSON object") from None
        return value
    if name in _INT_PARAMS:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, (int, float)):
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise _bad(f"invalid {name} specified") from None
        return value
    if name in _FLOAT_PARAMS:
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise _bad(f"invalid {name} specified") from None
        return value
    if name in _BOOL_PARAMS:
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1")
        return bool(value)
    if name == "chat_id":
        if isinstance(value, str):
            stripped = value.strip()
            try:
                return int(stripped)
            except ValueError:
                return stripped
        return value
    return value


# ======================================================================================
# Media helpers
# ======================================================================================

_MEDIA_METHODS: dict[str, tuple[str, str]] = {
    "sendphoto": ("sendPhoto", "photo"),
    "senddocument": ("sendDocument", "document"),
    "sendaudio": ("sendAudio", "audio"),
    "sendvoice": ("sendVoice", "voice"),
    "sendvideo": ("sendVideo", "video"),
    "sendanimation": ("sendAnimation", "animation"),
    "sendsticker": ("sendSticker", "sticker"),
    "sendvideonote": ("sendVideoNote", "video_note"),
}
_FILE_FOLDERS = {
    "photo": "photos",
    "document": "documents",
    "audio": "music",
    "voice": "voice",
    "video": "videos",
    "animation": "animations",
    "sticker": "stickers",
    "video_note": "video_notes",
}
_DEFAULT_EXT = {
    "photo": ".jpg",
    "voice": ".oga",
    "audio": ".mp3",
    "video": ".mp4",
    "animation": ".mp4",
    "sticker": ".webp",
    "video_note": ".mp4",
}
_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_DEFAULT_ALLOWED = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
_INLINE_BUTTON_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
_FLOOD_METHODS = frozenset(
    {
        "sendMessage",
        "editMessageText",
        "editMessageCaption",
        "editMessageReplyMarkup",
        *(canonical for canonical, _ in _MEDIA_METHODS.values()),
    }
)
_FAULT_KINDS = frozenset({"429", "500", "502", "drop", "timeout"})
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width/height of PNG, GIF, JPEG or WebP bytes; None if not a recognised image."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return int(w), int(h)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return 512, 512
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(w), int(h)
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            (seg_len,) = struct.unpack(">H", data[i + 2 : i + 4])
            i += 2 + seg_len
        return 1, 1
    return None


_PNG_CACHE: dict[tuple[int, int, tuple[int, int, int]], bytes] = {}


def make_png(width: int = 320, height: int = 240, rgb: tuple[int, int, int] = (30, 144, 255)) -> bytes:
    """A valid solid-colour PNG; cached because load tests send many photos."""
    key = (width, height, rgb)
    if key in _PNG_CACHE:
        return _PNG_CACHE[key]
    row = b"\x00" + bytes(rgb) * width
    raw = zlib.compress(row * height, 6)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
        )

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )
    if len(_PNG_CACHE) < 64:
        _PNG_CACHE[key] = png
    return png


# ======================================================================================
# Simulated user
# ======================================================================================


class FakeUser:
    """A simulated Telegram user; its methods enqueue updates for the bot.

    Every ``send_*`` / ``press*`` / ``edit_text`` method enqueues synchronously and returns
    the :class:`UpdateDict`, which is also awaitable (``await user.send_text("hi")`` works).
    Reply-waiting methods are coroutines driven by asyncio futures, not sleep loops.
    """

    def __init__(self, server: FakeBotAPI, user: dict[str, Any], chat: _Chat) -> None:
        self.server = server
        self.user = user
        self.id: int = user["id"]
        self.first_name: str = user["first_name"]
        self.username: str | None = user.get("username")
        self.language_code: str | None = user.get("language_code")
        self.chat_id: int = chat.id
        self.blocked = False
        self._chat = chat
        self._cursors: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"<FakeUser {self.id} {self.first_name!r} @{self.username}>"

    # -- state ---------------------------------------------------------------------------

    def block(self) -> None:
        """Simulate the user blocking the bot: sends to this chat fail with 403 Forbidden."""
        self.blocked = True

    def unblock(self) -> None:
        self.blocked = False

    @property
    def chat_actions(self) -> list[str]:
        """Actions from sendChatAction to this user's private chat, in order."""
        return self._chat.chat_actions

    @property
    def replies(self) -> list[Reply]:
        """Every reply event in the private chat so far (consumed or not)."""
        return list(self._chat.events)

    @property
    def messages(self) -> list[BotMessage]:
        """Current state of the bot's (non-deleted) messages in the private chat."""
        return self.server.messages(self.chat_id)

    def pending_replies(self, chat_id: int | None = None) -> list[Reply]:
        """Reply events not yet consumed by next_reply/wait_for."""
        cid = self.chat_id if chat_id is None else chat_id
        chat = self.server._chats.get(cid)
        if chat is None:
            return []
        return chat.events[self._cursors.get(cid, 0) :]

    @property
    def current_keyboard(self) -> list[list[str]] | None:
        """The custom reply keyboard the user currently sees (None if none/removed)."""
        for ev in reversed(self._chat.events):
            if ev.edited or not ev.reply_markup:
                continue
            if "keyboard" in ev.reply_markup:
                return ev.keyboard
            if "remove_keyboard" in ev.reply_markup:
                return None
        return None

    # -- sending ---------------------------------------------------------------------------

    def send_text(self, text: str, *, reply_to: int | BotMessage | Reply | None = None) -> UpdateDict:
        """Send a text message in the private chat (commands get a bot_command entity)."""
        return self.server._user_message(self, self._chat, _text_fields(text), reply_to=reply_to)

    def send_command(self, command: str, payload: str = "") -> UpdateDict:
        """Shortcut for ``send_text("/command payload")``."""
        text = "/" + command.lstrip("/")
        return self.send_text(f"{text} {payload}" if payload else text)

    def send_in_group(
        self, text: str, chat_id: int = -1001234567890, *, title: str = "Test Group"
    ) -> UpdateDict:
        """Send a text message from this user in a group (supergroup if id starts with -100)."""
        chat = self.server._group_chat(chat_id, title)
        return self.server._user_message(self, chat, _text_fields(text))

    def send_sticker(self, emoji: str = "👍", content: bytes | None = None) -> UpdateDict:
        stored = self.server.register_file(
            content if content is not None else b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(24),
            kind="sticker",
            mime_type="image/webp",
            width=512,
            height=512,
        )
        sticker = {
            **stored.base_json(),
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
        }
        return self.server._user_message(self, self._chat, {"sticker": sticker})

    def send_photo(
        self,
        content: bytes | None = None,
        *,
        caption: str | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> UpdateDict:
        """Send a photo (default: a generated PNG); registered so getFile + download work."""
        if content is None:
            content = make_png(width or 320, height or 240)
        size = _image_size(content) or (width or 320, height or 240)
        w, h = width or size[0], height or size[1]
        mime = "image/jpeg" if content[:2] == b"\xff\xd8" else "image/png"
        full = self.server.register_file(content, kind="photo", mime_type=mime, width=w, height=h)
        scale = min(1.0, 90 / max(w, h, 1))
        tw, th = max(1, round(w * scale)), max(1, round(h * scale))
        thumb = self.server.register_file(content, kind="photo", mime_type=mime, width=tw, height=th)
        fields: dict[str, Any] = {
            "photo": [
                {**thumb.base_json(), "width": tw, "height": th},
                {**full.base_json(), "width": w, "height": h},
            ]
        }
        _add_caption(fields, caption)
        return self.server._user_message(self, self._chat, fields)

    def send_voice(self, content: bytes | None = None, *, duration: int = 2) -> UpdateDict:
        content = content if content is not None else b"OggS\x00\x02" + bytes(58)
        stored = self.server.register_file(content, kind="voice", mime_type="audio/ogg", duration=duration)
        voice = {**stored.base_json(), "duration": duration, "mime_type": "audio/ogg"}
        return self.server._user_message(self, self._chat, {"voice": voice})

    def send_video(
        self,
        content: bytes | None = None,
        *,
        duration: int = 3,
        width: int = 640,
        height: int = 360,
        caption: str | None = None,
    ) -> UpdateDict:
        content = content if content is not None else b"\x00\x00\x00\x18ftypmp42" + bytes(52)
        stored = self.server.register_file(
            content, kind="video", mime_type="video/mp4", width=width, height=height, duration=duration
        )
        video = {
            **stored.base_json(),
            "width": width,
            "height": height,
            "duration": duration,
            "mime_type": "video/mp4",
        }
        fields: dict[str, Any] = {"video": video}
        _add_caption(fields, caption)
        return self.server._user_message(self, self._chat, fields)

    def send_document(
        self,
        filename: str = "document.txt",
        content: bytes = b"hello from a fake user\n",
        mime_type: str | None = None,
        *,
        caption: str | None = None,
    ) -> UpdateDict:
        """Send a file; it is registered so the bot's getFile + download return ``content``."""
        mime = mime_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        stored = self.server.register_file(content, kind="document", filename=filename, mime_type=mime)
        document = {**stored.base_json(), "file_name": filename, "mime_type": mime}
        fields: dict[str, Any] = {"document": document}
        _add_caption(fields, caption)
        return self.server._user_message(self, self._chat, fields)

    def send_location(self, latitude: float = 52.5200, longitude: float = 13.4050) -> UpdateDict:
        return self.server._user_message(
            self, self._chat, {"location": {"latitude": latitude, "longitude": longitude}}
        )

    def send_contact(
        self,
        phone_number: str = "+15555550123",
        first_name: str | None = None,
        *,
        last_name: str | None = None,
        user_id: int | None = None,
    ) -> UpdateDict:
        """Share a contact (by default the user's own, as the "share my number" button does)."""
        contact: dict[str, Any] = {
            "phone_number": phone_number,
            "first_name": first_name or self.first_name,
            "user_id": self.id if user_id is None and first_name is None else user_id,
        }
        if last_name:
            contact["last_name"] = last_name
        if contact["user_id"] is None:
            del contact["user_id"]
        return self.server._user_message(self, self._chat, {"contact": contact})

    def edit_text(self, message_id: int | dict[str, Any], new_text: str) -> UpdateDict:
        """Edit one of this user's earlier text messages -> ``edited_message`` update."""
        if isinstance(message_id, dict):
            message_id = int((message_id.get("message") or message_id)["message_id"])
        return self.server._user_edit(self, self._chat, message_id, new_text)

    # -- buttons ---------------------------------------------------------------------------

    def press(
        self,
        message: BotMessage | Reply | dict[str, Any] | int,
        button_text: str | None = None,
        callback_data: str | None = None,
    ) -> UpdateDict:
        """Press an inline button of a bot message -> ``callback_query`` update.

        ``message`` is a Reply/BotMessage, a Message dict, or a message id in this user's
        private chat. The button is looked up in the message's *current* keyboard (after
        edits), by text and/or callback_data; with neither, the message must have exactly
        one callback button.
        """
        chat_id, message_id = self._message_ref(message)
        chat = self.server._chats.get(chat_id)
        bm = chat.bot_messages.get(message_id) if chat else None
        if bm is None:
            raise AssertionError(f"press(): chat {chat_id} has no bot message {message_id}")
        if bm.deleted:
            raise AssertionError(f"press(): message {chat_id}/{message_id} was deleted by the bot")
        buttons = bm.buttons
        if not buttons:
            raise AssertionError(f"press(): message {chat_id}/{message_id} has no inline keyboard: {bm!r}")
        if button_text is None and callback_data is None:
            candidates = [b for b in buttons if "callback_data" in b]
            if len(candidates) != 1:
                raise AssertionError(
                    f"press(): say which button; message has {bm.button_texts} (current state)"
                )
            button = candidates[0]
        else:
            button = bm.button(button_text, callback_data=callback_data)
        if "callback_data" not in button:
            kind = next((k for k in _INLINE_BUTTON_ACTIONS if k in button), "unknown")
            raise AssertionError(
                f"press(): button {button.get('text')!r} is a {kind} button, not a callback button"
            )
        assert chat is not None
        return self.server._callback_query(self, chat, bm.json, str(button["callback_data"]))

    def press_data(self, message_id: int, data: str, *, chat_id: int | None = None) -> UpdateDict:
        """Send a callback_query with arbitrary (possibly forged or stale) callback_data."""
        cid = self.chat_id if chat_id is None else chat_id
        chat = self.server._chats.get(cid) or self._chat
        bm = chat.bot_messages.get(message_id)
        if bm is not None and not bm.deleted:
            message = bm.json
        else:  # InaccessibleMessage, as Telegram sends for deleted/unknown messages
            message = {"chat": chat.info, "message_id": message_id, "date": 0}
        return self.server._callback_query(self, chat, message, data)

    @staticmethod
    def _message_ref(message: BotMessage | Reply | dict[str, Any] | int) -> tuple[int, int]:
        if isinstance(message, (BotMessage, Reply)):
            return message.chat_id, message.message_id
        if isinstance(message, dict):
            msg = message.get("message", message) if "update_id" in message else message
            return int(msg["chat"]["id"]), int(msg["message_id"])
        raise TypeError("use press_data(message_id, data) for bare ids")

    # -- waiting ---------------------------------------------------------------------------

    async def next_reply(self, timeout: float = 5.0, *, chat_id: int | None = None) -> Reply:
        """The next bot message/edit in this user's chat not yet consumed.

        Counts sendMessage, send<Media> and editMessageText/Caption/ReplyMarkup. Raises
        AssertionError listing the recent API calls if nothing arrives in ``timeout``.
        """
        return await self.wait_for(lambda _r: True, timeout, chat_id=chat_id, _what="a reply")

    async def wait_for(
        self,
        predicate: Callable[[Reply], bool],
        timeout: float = 5.0,
        *,
        chat_id: int | None = None,
        _what: str = "a reply matching the predicate",
    ) -> Reply:
        """Consume replies in order until ``predicate(reply)`` is true; return that reply.

        Non-matching replies are consumed (skipped) too, so a later next_reply() continues
        after the match.
        """
        cid = self.chat_id if chat_id is None else chat_id
        chat = self.server._chats.get(cid)
        if chat is None:
            raise AssertionError(f"chat {cid} is unknown to the fake server")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        skipped: list[Reply] = []
        while True:
            cursor = self._cursors.get(cid, 0)
            events = chat.events
            while cursor < len(events):
                ev = events[cursor]
                cursor += 1
                if predicate(ev):
                    self._cursors[cid] = cursor
                    return ev
                skipped.append(ev)
            self._cursors[cid] = cursor
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    self.server._timeout_report(f"{_what} in chat {cid}", timeout, cid, skipped)
                )
            fut: asyncio.Future[None] = loop.create_future()
            chat.waiters.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                pass
            finally:
                if not fut.done():
                    fut.cancel()
                if fut in chat.waiters:
                    chat.waiters.remove(fut)

    async def assert_no_reply(self, wait: float = 0.3, *, chat_id: int | None = None) -> None:
        """Wait ``wait`` seconds and fail if the bot sends/edits anything in the chat."""
        try:
            reply = await self.next_reply(timeout=wait, chat_id=chat_id)
        except AssertionError:
            return
        raise AssertionError(f"expected no reply, got {reply!r}")

    async def callback_answer(
        self, query: UpdateDict | dict[str, Any] | str, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Wait until the bot answers this callback query; return the answer parameters."""
        if isinstance(query, dict):
            query_id = str(query["callback_query"]["id"] if "callback_query" in query else query["id"])
        else:
            query_id = str(query)
        state = self.server._callbacks.get(query_id)
        if state is None:
            raise AssertionError(f"unknown callback query {query_id}")
        await self.server.wait_until(
            lambda: state.answered, timeout, f"answerCallbackQuery for query {query_id}"
        )
        assert state.answer is not None
        return state.answer


def _text_fields(text: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"text": text}
    entities = detect_user_entities(text)
    if entities:
        fields["entities"] = entities
    return fields


def _add_caption(fields: dict[str, Any], caption: str | None) -> None:
    if caption:
        fields["caption"] = caption
        entities = detect_user_entities(caption)
        if entities:
            fields["caption_entities"] = entities


# ======================================================================================
# The server
# ======================================================================================

Handler = Callable[[dict[str, Any], dict[str, UploadPart], CallRecord], Any]


class FakeBotAPI:
    """Fake Telegram Bot API server (aiohttp) for PTB end-to-end tests and benchmarks.

    Construct, then ``await start()`` (or ``async with``). Point PTB at ``base_url`` and
    ``base_file_url``. Create users with :meth:`user`, inspect ``calls`` / :meth:`messages`,
    inject faults with :meth:`fail_next` / :meth:`fail_rate`.
    """

    def __init__(
        self,
        token: str = "123:ABC",
        bot_username: str = "netcoach_test_bot",
        *,
        bot_first_name: str = "NetCoach Test Bot",
        host: str = "127.0.0.1",
        port: int = 0,
        strict_html: bool = True,
        callback_query_ttl: float | None = None,
        max_recorded_calls: int | None = None,
        max_poll_timeout: float = 50.0,
    ) -> None:
        """``callback_query_ttl``: seconds after which answerCallbackQuery fails as "too
        old" (Telegram: ~15 s; None disables). ``max_recorded_calls``: cap ``calls`` for long
        benchmarks (older records are discarded)."""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fake Bot API only binds to loopback")
        self.token = token
        self.bot_username = bot_username
        prefix = token.split(":", 1)[0]
        self.bot_id = int(prefix) if prefix.isdigit() else 123
        self.bot_user: dict[str, Any] = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        self.host = host
        self.port: int = port
        self.strict_html = strict_html
        self.callback_query_ttl = callback_query_ttl
        self.max_recorded_calls = max_recorded_calls
        self.max_poll_timeout = max_poll_timeout

        # Recorded traffic
        self.calls: list[CallRecord] = []
        self._trimmed_calls = 0
        self.dropped_updates: list[UpdateDict] = []
        self.faults_triggered: dict[str, int] = {}

        # Updates / long polling
        self._updates: deque[UpdateDict] = deque()
        self._next_update_id = 100_000_001
        self._last_enqueued_id = self._next_update_id - 1
        self._delivered_upto = self._last_enqueued_id
        self._poll: asyncio.Future[str] | None = None
        self._allowed_updates: frozenset[str] | None = None
        self.updates_enqueued = 0
        self.updates_delivered = 0

        # Chats, users, files, callback queries
        self._chats: dict[int, _Chat] = {}
        self._chats_by_username: dict[str, _Chat] = {}
        self._users: dict[int, FakeUser] = {}
        self._next_user_id = 10_000_001
        self._files: dict[str, StoredFile] = {}
        self._files_by_path: dict[str, StoredFile] = {}
        self._file_counter = itertools.count(1)
        self._callbacks: dict[str, _CallbackState] = {}
        self._callback_counter = itertools.count(1)
        self.messages_sent = 0

        # Bot settings
        self.webhook: dict[str, Any] | None = None
        self.commands_by_scope: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        self.menu_buttons: dict[int | None, dict[str, Any]] = {}
        self.bot_settings: dict[str, dict[str, str]] = {}

        # Faults and flood control
        self._fault_queues: dict[str, deque[_Fault]] = {}
        self._fault_rates: dict[str, _RateFault] = {}
        self._flood_global: _Bucket | None = None
        self._flood_chat_rate: float | None = None
        self._flood_burst = 1.0
        self._flood_chats: dict[Any, _Bucket] = {}

        # Activity tracking for wait_idle / wait_until
        self._inflight = 0
        self._busy_seq = 0
        self._last_busy = time.monotonic()
        self._activity_waiters: list[asyncio.Future[None]] = []

        # Webhook delivery (see deliver_webhooks_to)
        self._webhook_target: str | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._webhook_wake: asyncio.Event | None = None
        self.webhook_retry_delay = 0.05
        self.webhook_attempts: list[tuple[int, int | str]] = []  # (update_id, HTTP status or error) per POST

        self._closing = False
        self._stopping: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, tuple[str, Handler]] = {}
        self._register_builtin_methods()

    # ------------------------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Pass to ``ApplicationBuilder().base_url``; PTB appends the token."""
        return f"http://{self.host}:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        """Pass to ``ApplicationBuilder().base_file_url``."""
        return f"http://{self.host}:{self.port}/file/bot"

    async def start(self) -> FakeBotAPI:
        """Bind 127.0.0.1 on a free port (or ``port``) and start serving."""
        if self._runner is not None:
            return self
        self._closing = False
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: a client that disconnects (PTB timeout, cancelled long poll)
        # cancels its handler, so parked polls and "timeout" faults never pile up.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=4096)
        await site.start()
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1])
        _log.debug("fake Bot API listening on %s", self.base_url)
        return self

    async def stop(self) -> None:
        """Stop serving; parked long polls return at once."""
        if self._runner is None:
            return
        self._closing = True
        self._wake_poller("closing")
        if self._stopping is not None:
            self._stopping.set()  # ends fault-injection sleeps at once
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._webhook_task
            self._webhook_task = None
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> FakeBotAPI:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------------------------
    # Simulated users and other update sources
    # ------------------------------------------------------------------------------------

    def user(
        self,
        user_id: int | None = None,
        first_name: str = "Test",
        username: str | None = None,
        language_code: str | None = "en",
        *,
        last_name: str | None = None,
    ) -> FakeUser:
        """Create (or fetch, if the id exists) a simulated user with a private chat."""
        if user_id is None:
            while self._next_user_id in self._users:
                self._next_user_id += 1
            user_id = self._next_user_id
            self._next_user_id += 1
        existing = self._users.get(user_id)
        if existing is not None:
            return existing
        udict: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        info: dict[str, Any] = {"id": user_id, "type": "private", "first_name": first_name}
        if last_name:
            udict["last_name"] = info["last_name"] = last_name
        if username:
            udict["username"] = info["username"] = username
        if language_code:
            udict["language_code"] = language_code
        chat = self._chats.get(user_id) or _Chat(user_id, info)
        self._chats[user_id] = chat
        if username:
            self._chats_by_username[username.lower()] = chat
        fake = FakeUser(self, udict, chat)
        chat.user = fake
        self._users[user_id] = fake
        return fake

    @property
    def users(self) -> list[FakeUser]:
        return list(self._users.values())

    def channel_post(
        self, chat_id: int = -1009876543210, text: str = "channel post", *, title: str = "Test Channel"
    ) -> UpdateDict:
        """A post in a channel where the bot is admin -> ``channel_post`` update."""
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = _Chat(chat_id, {"id": chat_id, "type": "channel", "title": title})
            self._chats[chat_id] = chat
        mid = chat.take_message_id()
        msg: dict[str, Any] = {
            "message_id": mid,
            "sender_chat": chat.info,
            "chat": chat.info,
            "date": int(time.time()),
            **_text_fields(text),
        }
        chat.user_messages[mid] = msg
        return self._enqueue("channel_post", msg)

    def enqueue_update(self, kind: str, payload: dict[str, Any]) -> UpdateDict:
        """Enqueue an arbitrary update type (e.g. ``my_chat_member``, ``poll_answer``)."""
        return self._enqueue(kind, payload)

    def _group_chat(self, chat_id: int, title: str) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            ctype = "supergroup" if str(chat_id).startswith("-100") else "group"
            chat = _Chat(chat_id, {"id": chat_id, "type": ctype, "title": title})
            self._chats[chat_id] = chat
        return chat

    def _user_message(
        self,
        user: FakeUser,
        chat: _Chat,
        fields: dict[str, Any],
        *,
        reply_to: int | BotMessage | Reply | None = None,
    ) -> UpdateDict:
        mid = chat.take_message_id()
        msg: dict[str, Any] = {
            "message_id": mid,
            "from": user.user,
            "chat": chat.info,
            "date": int(time.time()),
        }
        if reply_to is not None:
            target_id = reply_to if isinstance(reply_to, int) else reply_to.message_id
            target = self._message_json(chat, target_id)
            if target is None:
                raise AssertionError(f"reply_to: no message {target_id} in chat {chat.id}")
            msg["reply_to_message"] = target
        msg.update(fields)
        chat.user_messages[mid] = msg
        return self._enqueue("message", msg)

    def _user_edit(self, user: FakeUser, chat: _Chat, message_id: int, new_text: str) -> UpdateDict:
        old = chat.user_messages.get(message_id)
        if old is None or old.get("from", {}).get("id") != user.id:
            raise AssertionError(f"edit_text(): {user!r} has no message {message_id} in chat {chat.id}")
        if "text" not in old:
            raise AssertionError("edit_text(): only text messages can be edited this way")
        msg = {k: v for k, v in old.items() if k not in ("text", "entities")}
        msg.update(_text_fields(new_text))
        msg["edit_date"] = int(time.time())
        chat.user_messages[message_id] = msg
        return self._enqueue("edited_message", msg)

    def _callback_query(self, user: FakeUser, chat: _Chat, message: dict[str, Any], data: str) -> UpdateDict:
        query_id = str(4_000_000_000_000_000_000 + next(self._callback_counter))
        self._callbacks[query_id] = _CallbackState(
            query_id=query_id,
            user_id=user.id,
            chat_id=chat.id,
            message_id=message.get("message_id"),
            data=data,
            created=time.monotonic(),
        )
        query = {
            "id": query_id,
            "from": user.user,
            "message": message,
            "chat_instance": str(abs(chat.id) * 7919 % 10**18 + 10**17),
            "data": data,
        }
        return self._enqueue("callback_query", query)

    def _enqueue(self, kind: str, payload: dict[str, Any]) -> UpdateDict:
        update = UpdateDict(update_id=self._next_update_id)
        update[kind] = payload
        self._next_update_id += 1
        allowed = self._allowed_updates if self._allowed_updates is not None else _DEFAULT_ALLOWED
        if kind not in allowed:
            self.dropped_updates.append(update)
            return update
        self._updates.append(update)
        self._last_enqueued_id = update.update_id
        self.updates_enqueued += 1
        self._mark_busy()
        self._wake_poller("update")
        self._touch()
        return update

    def _wake_poller(self, reason: str) -> None:
        poll = self._poll
        if poll is not None and not poll.done():
            poll.set_result(reason)
        if self._webhook_wake is not None:
            self._webhook_wake.set()

    # ------------------------------------------------------------------------------------
    # Webhook delivery
    # ------------------------------------------------------------------------------------

    def deliver_webhooks_to(self, url: str, max_connections: int = 40) -> None:
        """POST updates to ``url`` (plain HTTP on loopback) while a webhook is set: the public
        HTTPS URL given to ``setWebhook`` is assumed to land there. Like Telegram, up to
        ``max_connections`` updates are in flight at once (1 keeps them strictly in order), and an
        update stays pending until the bot answers it with a 2xx."""
        if not url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
            raise ValueError("webhooks are only delivered to loopback")
        self._webhook_target = url
        if self._webhook_task is None:
            self._webhook_wake = asyncio.Event()
            self._webhook_task = asyncio.create_task(self._push_webhooks(max(1, max_connections)))
        self._webhook_wake.set()

    async def _push_webhooks(self, connections: int) -> None:
        from aiohttp import ClientSession, ClientTimeout

        claimed: set[int] = set()

        async def worker(session: ClientSession) -> None:
            assert self._webhook_wake is not None
            while not self._closing:
                update = None
                if self.webhook and self._webhook_target:
                    update = next((u for u in self._updates if u.update_id not in claimed), None)
                if update is None:
                    self._webhook_wake.clear()
                    await self._webhook_wake.wait()
                    continue
                claimed.add(update.update_id)
                try:
                    taken = await self._post_update(session, update)
                finally:
                    claimed.discard(update.update_id)
                if taken:
                    with contextlib.suppress(ValueError):
                        self._updates.remove(update)
                    self.updates_delivered += 1
                    self._delivered_upto = self._updates[0].update_id - 1 if self._updates else self._last_enqueued_id
                    self._touch()
                else:
                    await asyncio.sleep(self.webhook_retry_delay)

        async with ClientSession(timeout=ClientTimeout(total=120)) as session:
            await asyncio.gather(*(worker(session) for _ in range(connections)))

    async def _post_update(self, session: Any, update: UpdateDict) -> bool:
        """One delivery attempt, recorded in ``webhook_attempts``; True if the bot took the update."""
        from aiohttp import ClientError

        assert self.webhook is not None and self._webhook_target is not None
        headers = {}
        if self.webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = str(self.webhook["secret_token"])
        status: int | str
        self._inflight += 1
        try:
            async with session.post(self._webhook_target, json=dict(update), headers=headers) as resp:
                status = resp.status
        except (ClientError, asyncio.TimeoutError) as exc:
            status = type(exc).__name__
        finally:
            self._inflight -= 1
            self._mark_busy()
        self.webhook_attempts.append((update.update_id, status))
        self._touch()
        return isinstance(status, int) and 200 <= status < 300

    # ------------------------------------------------------------------------------------
    # Inspection
    # ------------------------------------------------------------------------------------

    def messages(self, chat_id: int, *, include_deleted: bool = False) -> list[BotMessage]:
        """The bot's messages in a chat, in send order, with their current (edited) state."""
        chat = self._chats.get(chat_id)
        if chat is None:
            return []
        return [m for m in chat.bot_messages.values() if include_deleted or not m.deleted]

    def last_message(self, chat_id: int) -> BotMessage | None:
        msgs = self.messages(chat_id)
        return msgs[-1] if msgs else None

    def chat_actions(self, chat_id: int) -> list[str]:
        chat = self._chats.get(chat_id)
        return chat.chat_actions if chat else []

    def calls_to(self, method: str) -> list[CallRecord]:
        """Recorded calls of one method (case-insensitive name)."""
        low = method.lower()
        return [c for c in self.calls if c.method.lower() == low]

    def call_mark(self) -> int:
        """A position in the call log, for ``wait_for_call(since=...)``."""
        return self._trimmed_calls + len(self.calls)

    def file(self, file_id: str) -> StoredFile | None:
        return self._files.get(file_id)

    def callback_answer(self, query_id: str) -> dict[str, Any] | None:
        """The bot's answerCallbackQuery parameters for a query, or None if unanswered."""
        state = self._callbacks.get(str(query_id))
        return state.answer if state else None

    def get_commands(
        self, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[dict[str, Any]]:
        """Commands the bot set with setMyCommands for a scope/language (default scope)."""
        return list(self.commands_by_scope.get(_scope_key(scope, language_code), []))

    @property
    def is_polling(self) -> bool:
        """True while a getUpdates long poll is parked on the server waiting for updates."""
        return self._poll is not None and not self._poll.done()

    @property
    def pending_updates(self) -> int:
        """Updates not yet confirmed by the bot (via a later getUpdates offset)."""
        return len(self._updates)

    def stats(self) -> dict[str, int]:
        return {
            "calls": self.call_mark(),
            "updates_enqueued": self.updates_enqueued,
            "updates_delivered": self.updates_delivered,
            "updates_pending": len(self._updates),
            "messages_sent": self.messages_sent,
            "faults_triggered": sum(self.faults_triggered.values()),
        }

    def format_calls(self, last: int = 15) -> str:
        """The last ``last`` calls, one per line (used in timeout assertion messages)."""
        recent = self.calls[-last:]
        if not recent:
            return "  (the bot made no API calls)"
        base = recent[0].time
        return "\n".join(f"  +{c.time - base:6.3f}s {c.describe()}" for c in recent)

    def register_file(
        self,
        content: bytes | None,
        *,
        kind: str = "document",
        filename: str | None = None,
        mime_type: str | None = None,
        width: int | None = None,
        height: int | None = None,
        duration: int | None = None,
        url: str | None = None,
    ) -> StoredFile:
        """Make bytes known under a fresh file_id so getFile + the download route serve them."""
        n = next(self._file_counter)
        if filename and "." in filename:
            ext = "." + filename.rsplit(".", 1)[1]
        else:
            ext = (mimetypes.guess_extension(mime_type) if mime_type else None) or _DEFAULT_EXT.get(kind, "")
        stored = StoredFile(
            file_id=f"FAKE-{kind}-{n:08d}",
            file_unique_id=f"U{n:08d}",
            kind=kind,
            content=content,
            filename=filename,
            mime_type=mime_type,
            file_path=f"{_FILE_FOLDERS.get(kind, 'documents')}/file_{n}{ext}",
            url=url,
            width=width,
            height=height,
            duration=duration,
        )
        self._files[stored.file_id] = stored
        assert stored.file_path is not None
        self._files_by_path[stored.file_path] = stored
        return stored

    # ------------------------------------------------------------------------------------
    # Waiting
    # ------------------------------------------------------------------------------------

    def _touch(self) -> None:
        if self._activity_waiters:
            for fut in self._activity_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._activity_waiters.clear()

    def _mark_busy(self) -> None:
        self._busy_seq += 1
        self._last_busy = time.monotonic()

    async def _wait_activity(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._activity_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, max(0.0, timeout))
        except TimeoutError:
            pass
        finally:
            if not fut.done():
                fut.cancel()
            if fut in self._activity_waiters:
                self._activity_waiters.remove(fut)

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
    ) -> None:
        """Re-check ``predicate`` whenever the bot makes a call or an update is queued."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(self._timeout_report(what, timeout))
            await self._wait_activity(remaining)

    async def wait_for_call(
        self,
        method: str,
        timeout: float = 5.0,
        *,
        since: int = 0,
        where: Callable[[CallRecord], bool] | None = None,
    ) -> CallRecord:
        """The first *finished* call to ``method`` at/after position ``since`` (see call_mark)."""
        low = method.lower()
        found: list[CallRecord] = []

        def check() -> bool:
            start = max(0, since - self._trimmed_calls)
            for rec in itertools.islice(self.calls, start, None):
                if rec.method.lower() == low and rec.finished is not None and (where is None or where(rec)):
                    found.append(rec)
                    return True
            return False

        await self.wait_until(check, timeout, f"a {method} call")
        return found[0]

    async def wait_idle(self, quiet: float = 0.1, timeout: float = 10.0) -> None:
        """Wait until every queued update was fetched, no call is in flight and the bot made
        no call (other than empty long polls) for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            busy = self._inflight > 0 or self._delivered_upto < self._last_enqueued_id
            if not busy:
                idle_for = now - self._last_busy
                if idle_for >= quiet:
                    # Settle: give already-scheduled tasks (a CPU-bound bot) a few loop turns
                    # to reach the server before declaring idleness.
                    seq = self._busy_seq
                    for _ in range(5):
                        await asyncio.sleep(0)
                    if seq == self._busy_seq:
                        return
                    continue
                wait = quiet - idle_for
            else:
                wait = deadline - now
            if now >= deadline:
                state = (
                    f"in-flight calls={self._inflight}, undelivered updates="
                    f"{self._last_enqueued_id - self._delivered_upto}"
                )
                raise AssertionError(self._timeout_report(f"the bot to go idle ({state})", timeout))
            await self._wait_activity(min(wait, deadline - now))

    def _timeout_report(
        self, what: str, timeout: float, chat_id: int | None = None, skipped: Iterable[Reply] = ()
    ) -> str:
        lines = [f"Timed out after {timeout}s waiting for {what}."]
        skipped = list(skipped)
        if skipped:
            lines.append(f"Replies seen but not matching: {skipped}")
        if chat_id is not None:
            chat = self._chats.get(chat_id)
            if chat is not None:
                lines.append(f"Replies already in chat {chat_id}: {len(chat.events)}")
        undelivered = self._last_enqueued_id - self._delivered_upto
        lines.append(
            f"Updates queued: {self.updates_enqueued}, delivered: {self.updates_delivered}, "
            f"never fetched: {undelivered}" + (" (is the bot polling?)" if undelivered else "")
        )
        if self.dropped_updates:
            lines.append(f"Updates dropped by allowed_updates: {len(self.dropped_updates)}")
        lines.append("Recent Bot API calls:")
        lines.append(self.format_calls())
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------
    # Fault injection and flood control
    # ------------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        count: int = 1,
        kind: str = "429",
        retry_after: int = 1,
        *,
        delay: float = 10.0,
        description: str | None = None,
    ) -> None:
        """Make the next ``count`` calls of ``method`` fail (faults queue up in order).

        kinds: "429" (Too Many Requests + parameters.retry_after), "500" (JSON Internal
        Server Error), "502" (nginx HTML page, not JSON), "drop" (connection closed without
        a response), "timeout" (the request is held ``delay`` seconds -- default 10, longer
        than PTB's 5 s read timeout -- then processed normally, unless the client gave up,
        which cancels it: nothing is delivered), or any other HTTP status like "403"
        with ``description``. ``method`` "*" matches every method except getUpdates.
        Failed calls have no effect: a failed sendMessage delivers nothing.
        """
        fault = self._make_fault(kind, retry_after, delay, description)
        queue = self._fault_queues.setdefault(method.lower(), deque())
        queue.extend(fault for _ in range(count))

    def fail_rate(
        self,
        method: str,
        kind: str,
        probability: float,
        seed: int | None = None,
        *,
        retry_after: int = 1,
        delay: float = 10.0,
        description: str | None = None,
    ) -> None:
        """Fail each call of ``method`` with ``probability`` (seeded RNG for reproducible
        load tests). ``probability=0`` removes the rule."""
        key = method.lower()
        if probability <= 0:
            self._fault_rates.pop(key, None)
            return
        self._fault_rates[key] = _RateFault(
            self._make_fault(kind, retry_after, delay, description),
            min(1.0, probability),
            random.Random(seed),
        )

    def clear_faults(self) -> None:
        self._fault_queues.clear()
        self._fault_rates.clear()

    def set_flood_limits(
        self,
        *,
        global_per_second: float | None = 30.0,
        per_chat_per_second: float | None = 1.0,
        burst: int = 3,
    ) -> None:
        """Simulate Telegram flood control on sending/editing methods: token buckets, 429 with
        retry_after when exceeded. Off by default; pass None to disable a limit."""
        self._flood_global = (
            _Bucket(global_per_second, max(float(burst), global_per_second)) if global_per_second else None
        )
        self._flood_chat_rate = per_chat_per_second
        self._flood_burst = float(burst)
        self._flood_chats.clear()

    @staticmethod
    def _make_fault(kind: str, retry_after: int, delay: float, description: str | None) -> _Fault:
        kind = str(kind)
        if kind not in _FAULT_KINDS and not (kind.isdigit() and 400 <= int(kind) <= 599):
            raise ValueError(
                f"unknown fault kind {kind!r}; use one of {sorted(_FAULT_KINDS)} or an HTTP status"
            )
        return _Fault(kind, int(retry_after), float(delay), description)

    def _pick_fault(self, canonical: str) -> _Fault | None:
        low = canonical.lower()
        queue = self._fault_queues.get(low)
        if queue:
            return queue.popleft()
        if low != "getupdates":
            queue = self._fault_queues.get("*")
            if queue:
                return queue.popleft()
        rate = self._fault_rates.get(low) or (self._fault_rates.get("*") if low != "getupdates" else None)
        if rate is not None and rate.rng.random() < rate.probability:
            return rate.fault
        return None

    async def _apply_fault(
        self, fault: _Fault, request: web.Request, rec: CallRecord
    ) -> web.StreamResponse | None:
        rec.fault = fault.kind
        self.faults_triggered[fault.kind] = self.faults_triggered.get(fault.kind, 0) + 1
        kind = fault.kind
        if kind == "429":
            raise ApiError(
                429, f"Too Many Requests: retry after {fault.retry_after}", {"retry_after": fault.retry_after}
            )
        if kind == "500":
            raise ApiError(500, fault.description or "Internal Server Error")
        if kind == "502":
            rec.status = 502
            rec.error = "Bad Gateway (HTML body)"
            return web.Response(status=502, text=_HTML_502, content_type="text/html")
        if kind == "drop":
            rec.error = "connection dropped (fault injection)"
            transport = request.transport
            if transport is not None:
                transport.abort()
            # handler_cancellation cancels us as soon as aiohttp sees the lost connection.
            await self._fault_sleep(5.0)
            raise ConnectionResetError("dropped")
        if kind == "timeout":
            await self._fault_sleep(fault.delay)
            return None
        status = int(kind)
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        raise ApiError(status, fault.description or phrase)

    async def _fault_sleep(self, seconds: float) -> None:
        """Sleep that ends early when the server stops (so stop() never waits on faults)."""
        if self._stopping is None or self._stopping.is_set():
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _check_flood(self, canonical: str, params: dict[str, Any]) -> None:
        if canonical not in _FLOOD_METHODS or (self._flood_global is None and self._flood_chat_rate is None):
            return
        now = time.monotonic()
        wait = 0.0
        if self._flood_chat_rate:
            key = params.get("chat_id")
            bucket = self._flood_chats.get(key)
            if bucket is None:
                bucket = self._flood_chats[key] = _Bucket(self._flood_chat_rate, self._flood_burst)
            wait = bucket.take(now)
        if not wait and self._flood_global is not None:
            wait = self._flood_global.take(now)
        if wait:
            retry = max(1, math.ceil(wait))
            raise ApiError(429, f"Too Many Requests: retry after {retry}", {"retry_after": retry})

    # ------------------------------------------------------------------------------------
    # HTTP plumbing
    # ------------------------------------------------------------------------------------

    @staticmethod
    def _json(status: int, payload: Any) -> web.Response:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return web.Response(body=body, status=status, content_type="application/json")

    def _record(self, rec: CallRecord) -> None:
        self.calls.append(rec)
        cap = self.max_recorded_calls
        if cap is not None and len(self.calls) > 2 * cap:
            drop = len(self.calls) - cap
            del self.calls[:drop]
            self._trimmed_calls += drop

    def register_method(self, name: str, handler: Handler) -> None:
        """Add/override a Bot API method: ``handler(params, files, record)`` returns the
        result (may be a coroutine) or raises :class:`ApiError`."""
        self._methods[name.lower()] = (name, handler)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/file/bot"):
            return await self._serve_file(request, path[len("/file/bot") :])
        if not path.startswith("/bot"):
            return self._json(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        token, sep, method = path[4:].partition("/")
        if token != self.token:
            self._record(
                CallRecord(
                    method or "?",
                    {},
                    time.monotonic(),
                    http_method=request.method,
                    status=401,
                    error="Unauthorized",
                    finished=time.monotonic(),
                )
            )
            return self._json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        spec = self._methods.get(method.lower()) if sep and method and "/" not in method else None
        if spec is None:
            self._record(
                CallRecord(
                    method or "?",
                    {},
                    time.monotonic(),
                    http_method=request.method,
                    status=404,
                    error="method not found",
                    finished=time.monotonic(),
                )
            )
            return self._json(
                404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
            )
        canonical, handler = spec
        polling = canonical == "getUpdates"
        rec = CallRecord(canonical, {}, time.monotonic(), http_method=request.method)
        self._record(rec)
        if not polling:
            self._inflight += 1
            self._mark_busy()
        self._touch()
        try:
            rec.params, rec.files = await self._read_params(request)
            fault = self._pick_fault(canonical)
            if fault is not None:
                response = await self._apply_fault(fault, request, rec)
                if response is not None:
                    return response
            self._check_flood(canonical, rec.params)
            result = handler(rec.params, rec.files, rec)
            if inspect.isawaitable(result):
                result = await result
            rec.status = 200
            rec.result = result
            return self._json(200, {"ok": True, "result": result})
        except ApiError as exc:
            rec.status = exc.status
            rec.error = exc.description
            return self._json(exc.status, exc.payload())
        except asyncio.CancelledError:
            rec.error = rec.error or "client disconnected before the response"
            raise
        except ConnectionResetError:
            raise
        except Exception as exc:  # a bug in the fake: make it loud, not a hang
            _log.exception("fake Bot API crashed handling %s", canonical)
            rec.status = 500
            rec.error = f"fake server error: {exc!r}"
            return self._json(
                500, {"ok": False, "error_code": 500, "description": f"Internal Server Error: {exc!r}"}
            )
        finally:
            rec.finished = time.monotonic()
            if not polling:
                self._inflight -= 1
                self._mark_busy()
            elif rec.result:
                self._mark_busy()
            self._touch()

    async def _read_params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, UploadPart]]:
        raw: dict[str, Any] = dict(request.query)
        files: dict[str, UploadPart] = {}
        if request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise _bad("can't parse JSON object") from None
                if not isinstance(body, dict):
                    raise _bad("JSON object expected")
                raw.update(body)
            elif ctype.startswith("multipart/"):
                reader = await request.multipart()
                while True:
                    part = await reader.next()
                    if part is None:
                        break
                    if not isinstance(part, BodyPartReader):
                        continue  # nested multipart: not used by the Bot API
                    name = part.name or ""
                    if part.filename is not None:
                        data = await part.read(decode=False)
                        files[name] = UploadPart(
                            name, part.filename, part.headers.get("Content-Type"), bytes(data)
                        )
                    else:
                        raw[name] = await part.text()
            else:
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, str):
                        raw[key] = value
                    elif isinstance(value, FileField):  # not possible in urlencoded; keep robust
                        files[key] = UploadPart(key, value.filename, value.content_type, value.file.read())
        return {k: _coerce(k, v) for k, v in raw.items()}, files

    async def _serve_file(self, request: web.Request, rest: str) -> web.StreamResponse:
        token, _, file_path = rest.partition("/")
        rec = CallRecord(
            "downloadFile", {"file_path": file_path}, time.monotonic(), http_method=request.method
        )
        self._record(rec)
        self._inflight += 1
        self._mark_busy()
        try:
            if token != self.token:
                rec.status, rec.error = 401, "Unauthorized"
                return self._json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            fault = self._pick_fault("downloadFile")
            if fault is not None:
                try:
                    response = await self._apply_fault(fault, request, rec)
                except ApiError as exc:
                    rec.status, rec.error = exc.status, exc.description
                    return self._json(exc.status, exc.payload())
                if response is not None:
                    return response
            stored = self._files_by_path.get(file_path)
            if stored is None or stored.content is None:
                rec.status, rec.error = 404, "Not Found"
                return self._json(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            rec.status = 200
            rec.result = len(stored.content)
            return web.Response(
                body=stored.content, content_type=stored.mime_type or "application/octet-stream"
            )
        finally:
            rec.finished = time.monotonic()
            self._inflight -= 1
            self._mark_busy()
            self._touch()

    # ------------------------------------------------------------------------------------
    # Method implementations
    # ------------------------------------------------------------------------------------

    def _register_builtin_methods(self) -> None:
        simple: dict[str, Handler] = {
            "getMe": self._m_get_me,
            "logOut": lambda p, f, r: True,
            "close": lambda p, f, r: True,
            "deleteWebhook": self._m_delete_webhook,
            "setWebhook": self._m_set_webhook,
            "getWebhookInfo": self._m_get_webhook_info,
            "getUpdates": self._m_get_updates,
            "sendMessage": self._m_send_message,
            "editMessageText": self._m_edit_message_text,
            "editMessageCaption": self._m_edit_message_caption,
            "editMessageReplyMarkup": self._m_edit_message_reply_markup,
            "deleteMessage": self._m_delete_message,
            "deleteMessages": self._m_delete_messages,
            "answerCallbackQuery": self._m_answer_callback_query,
            "sendChatAction": self._m_send_chat_action,
            "setMyCommands": self._m_set_my_commands,
            "getMyCommands": self._m_get_my_commands,
            "deleteMyCommands": self._m_delete_my_commands,
            "getFile": self._m_get_file,
            "getChat": self._m_get_chat,
            "setChatMenuButton": self._m_set_chat_menu_button,
            "getChatMenuButton": self._m_get_chat_menu_button,
        }
        for name, handler in simple.items():
            self.register_method(name, handler)
        for canonical, field in _MEDIA_METHODS.values():
            self.register_method(canonical, functools.partial(self._m_send_media, canonical, field))
        for setting, key in (
            ("Description", "description"),
            ("ShortDescription", "short_description"),
            ("Name", "name"),
        ):
            self.register_method(f"setMy{setting}", functools.partial(self._m_set_setting, key))
            self.register_method(f"getMy{setting}", functools.partial(self._m_get_setting, key))

    # -- helpers ---------------------------------------------------------------------------

    def _resolve_chat(self, params: dict[str, Any], *, sending: bool = True) -> _Chat:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise _bad("chat_id is empty")
        chat: _Chat | None
        if isinstance(raw, str):
            chat = self._chats_by_username.get(raw.lstrip("@").lower()) if raw.startswith("@") else None
        else:
            chat = self._chats.get(int(raw))
        if chat is None:
            raise _bad("chat not found")
        if sending and chat.user is not None and chat.user.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat

    def _message_json(self, chat: _Chat, message_id: int) -> dict[str, Any] | None:
        bm = chat.bot_messages.get(message_id)
        if bm is not None:
            return None if bm.deleted else bm.json
        return chat.user_messages.get(message_id)

    def _format(
        self, raw: Any, parse_mode: Any, entities: Any, *, caption: bool
    ) -> tuple[str, list[dict[str, Any]]]:
        text = "" if raw is None else str(raw)
        if entities not in (None, [], ""):
            if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
                raise _bad("can't parse entities JSON object")
            total = utf16_len(text)
            for e in entities:
                off, length = e.get("offset"), e.get("length")
                if (
                    not isinstance(off, int)
                    or not isinstance(length, int)
                    or off < 0
                    or length <= 0
                    or off + length > total
                ):
                    raise _bad(f"can't parse entities: entity {e} is out of the text range")
            ents = sorted(entities, key=lambda e: (e["offset"], -e["length"]))
        elif parse_mode:
            try:
                text, ents = parse_formatted(text, str(parse_mode), strict_ampersand=self.strict_html)
            except EntityParseError as exc:
                raise _bad(f"can't parse entities: {exc}") from None
            except ValueError:
                raise _bad("unsupported parse_mode") from None
        else:
            ents = []
        text, ents = strip_text(text, ents)
        if caption:
            if len(text) > 1024:
                raise _bad("message caption is too long")
        else:
            if not text:
                raise _bad("message text is empty")
            if len(text) > 4096:
                raise _bad("message is too long")
        return text, ents

    @staticmethod
    def _validate_markup(markup: Any) -> dict[str, Any] | None:
        if markup is None or markup == "":
            return None
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in markup:
            rows = markup["inline_keyboard"]
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise _bad('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays')
            count = 0
            for row in rows:
                for button in row:
                    count += 1
                    if not isinstance(button, dict):
                        raise _bad(
                            "can't parse inline keyboard button: InlineKeyboardButton must be an Object"
                        )
                    if not str(button.get("text", "")):
                        raise _bad("can't parse inline keyboard button: Text must be non-empty")
                    actions = [k for k in _INLINE_BUTTON_ACTIONS if k in button]
                    if not actions:
                        raise _bad("text buttons are unallowed in the inline keyboard")
                    if "callback_data" in button:
                        data = button["callback_data"]
                        if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= 64:
                            raise _bad("BUTTON_DATA_INVALID")
                    if "url" in button and not str(button["url"]).strip():
                        raise _bad("BUTTON_URL_INVALID")
            if count > 100:
                raise _bad("reply markup is too long")
            return markup
        if "keyboard" in markup:
            rows = markup["keyboard"]
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise _bad('field "keyboard" of the ReplyKeyboardMarkup must be an Array of Arrays')
            for row in rows:
                for button in row:
                    text = (
                        button
                        if isinstance(button, str)
                        else (button.get("text") if isinstance(button, dict) else None)
                    )
                    if not text:
                        raise _bad("keyboard button text must be non-empty")
            return markup
        if markup.get("remove_keyboard") or markup.get("force_reply"):
            return markup
        raise _bad("can't parse reply keyboard markup JSON object")

    @staticmethod
    def _inline(markup: dict[str, Any] | None) -> dict[str, Any] | None:
        if markup and "inline_keyboard" in markup:
            return {"inline_keyboard": markup["inline_keyboard"]}
        return None

    def _reply_target(self, chat: _Chat, params: dict[str, Any]) -> dict[str, Any] | None:
        rp = params.get("reply_parameters")
        if isinstance(rp, dict) and rp.get("message_id"):
            target_id, allow = int(rp["message_id"]), bool(rp.get("allow_sending_without_reply"))
        elif params.get("reply_to_message_id"):
            target_id, allow = (
                int(params["reply_to_message_id"]),
                bool(params.get("allow_sending_without_reply")),
            )
        else:
            return None
        target = self._message_json(chat, target_id)
        if target is None:
            if allow:
                return None
            raise _bad("message to be replied not found")
        return {k: v for k, v in target.items() if k != "reply_to_message"}

    def _render(
        self, bm: BotMessage, chat: _Chat, extra: dict[str, Any], edit_date: int | None = None
    ) -> dict[str, Any]:
        js: dict[str, Any] = {
            "message_id": bm.message_id,
            "from": self.bot_user,
            "chat": chat.info,
            "date": bm.date,
        }
        if edit_date is not None:
            js["edit_date"] = edit_date
        js.update(extra)
        if bm.text is not None:
            js["text"] = bm.text
            if bm.entities:
                js["entities"] = bm.entities
        if bm.caption:
            js["caption"] = bm.caption
            if bm.entities:
                js["caption_entities"] = bm.entities
        inline = self._inline(bm.reply_markup)
        if inline:
            js["reply_markup"] = inline
        return js

    def _add_event(self, chat: _Chat, bm: BotMessage, method: str, edited: bool) -> None:
        chat.events.append(
            Reply(
                message=bm,
                method=method,
                edited=edited,
                text=bm.text,
                entities=bm.entities,
                caption=bm.caption,
                parse_mode=bm.parse_mode,
                source_text=bm.source_text,
                reply_markup=bm.reply_markup,
                raw=bm.json,
                time=time.monotonic(),
            )
        )
        chat.wake()

    def _new_message(
        self,
        chat: _Chat,
        method: str,
        params: dict[str, Any],
        *,
        text: str | None = None,
        caption: str | None = None,
        entities: list[dict[str, Any]] | None = None,
        source_text: str | None = None,
        markup: dict[str, Any] | None = None,
        media_type: str | None = None,
        file: StoredFile | None = None,
        media_json: dict[str, Any] | None = None,
        reply_to: dict[str, Any] | None = None,
    ) -> BotMessage:
        bm = BotMessage(
            chat_id=chat.id,
            message_id=chat.take_message_id(),
            method=method,
            date=int(time.time()),
            text=text,
            entities=entities or [],
            caption=caption,
            parse_mode=params.get("parse_mode"),
            source_text=source_text,
            reply_markup=markup,
            media_type=media_type,
            file=file,
        )
        extra: dict[str, Any] = dict(media_json or {})
        if reply_to is not None:
            extra["reply_to_message"] = reply_to
        bm.json = self._render(bm, chat, extra)
        chat.bot_messages[bm.message_id] = bm
        self.messages_sent += 1
        self._add_event(chat, bm, method, edited=False)
        return bm

    def _editable(self, params: dict[str, Any]) -> tuple[_Chat, BotMessage]:
        if params.get("inline_message_id"):
            raise _bad("MESSAGE_ID_INVALID")
        chat = self._resolve_chat(params)
        mid = params.get("message_id")
        if not mid:
            raise _bad("message identifier is not specified")
        bm = chat.bot_messages.get(int(mid))
        if bm is None or bm.deleted:
            if int(mid) in chat.user_messages:
                raise _bad("message can't be edited")
            raise _bad("message to edit not found")
        return chat, bm

    def _apply_edit(
        self, chat: _Chat, bm: BotMessage, method: str, markup: dict[str, Any] | None
    ) -> dict[str, Any]:
        bm.history.append(bm.json)
        if bm.reply_markup is None or "inline_keyboard" in bm.reply_markup:
            bm.reply_markup = markup  # editing without reply_markup removes the inline keyboard
        bm.edited = True
        bm.edit_count += 1
        extra = {k: v for k, v in bm.json.items() if k in _MEDIA_KEYS or k == "reply_to_message"}
        bm.json = self._render(bm, chat, extra, edit_date=int(time.time()))
        self._add_event(chat, bm, method, edited=True)
        return bm.json

    # -- methods ---------------------------------------------------------------------------

    def _m_get_me(self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> dict[str, Any]:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _m_set_webhook(self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> bool:
        url = str(p.get("url") or "")
        if not url:
            self.webhook = None
            return True
        if not url.startswith("https://"):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        self.webhook = {
            "url": url,
            "secret_token": p.get("secret_token"),
            "allowed_updates": p.get("allowed_updates"),
        }
        allowed = p.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(allowed) if allowed else None
        if p.get("drop_pending_updates"):
            self._drop_pending()
        self._wake_poller("webhook")
        return True

    def _m_delete_webhook(self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> bool:
        self.webhook = None
        if p.get("drop_pending_updates"):
            self._drop_pending()
        return True

    def _drop_pending(self) -> None:
        self._updates.clear()
        self._delivered_upto = self._last_enqueued_id

    def _m_get_webhook_info(
        self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord
    ) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook["url"] if self.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook and self.webhook.get("allowed_updates"):
            info["allowed_updates"] = self.webhook["allowed_updates"]
        return info

    async def _m_get_updates(
        self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord
    ) -> list[UpdateDict]:
        if self.webhook:
            raise ApiError(409, _CONFLICT_WEBHOOK)
        offset = p.get("offset")
        limit = min(100, max(1, int(p.get("limit") or 100)))
        timeout = min(self.max_poll_timeout, max(0.0, float(p.get("timeout") or 0)))
        allowed = p.get("allowed_updates")
        if allowed is not None:
            if not isinstance(allowed, list):
                raise _bad("can't parse allowed_updates JSON object")
            self._allowed_updates = frozenset(allowed) if allowed else None
        # A newer getUpdates terminates the one in flight (Telegram behaviour).
        self._wake_poller("conflict")
        if offset:
            self._confirm(int(offset))
        if not self._updates and timeout > 0 and not self._closing:
            fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._poll = fut
            self._touch()  # lets wait_until(lambda: server.is_polling) see the parked poll
            try:
                reason = await asyncio.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                reason = "timeout"
            finally:
                if self._poll is fut:
                    self._poll = None
            if reason == "conflict":
                raise ApiError(409, _CONFLICT_POLL)
            if reason == "webhook":
                raise ApiError(409, "Conflict: terminated by setWebhook request")
        batch = list(itertools.islice(self._updates, limit))
        if batch:
            last = batch[-1].update_id
            if last > self._delivered_upto:
                self.updates_delivered += sum(1 for u in batch if u.update_id > self._delivered_upto)
                self._delivered_upto = last
        return batch

    def _confirm(self, offset: int) -> None:
        """Forget updates the bot confirmed: ids < offset, or all but the last -offset."""
        queue = self._updates
        if offset < 0:
            while len(queue) > -offset:
                queue.popleft()
        else:
            while queue and queue[0].update_id < offset:
                queue.popleft()

    def _m_send_message(self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> dict[str, Any]:
        chat = self._resolve_chat(p)
        if p.get("text") in (None, ""):
            raise _bad("message text is empty")
        text, entities = self._format(p.get("text"), p.get("parse_mode"), p.get("entities"), caption=False)
        markup = self._validate_markup(p.get("reply_markup"))
        reply_to = self._reply_target(chat, p)
        bm = self._new_message(
            chat,
            "sendMessage",
            p,
            text=text,
            entities=entities,
            source_text=str(p["text"]),
            markup=markup,
            reply_to=reply_to,
        )
        return bm.json

    def _m_send_media(
        self, canonical: str, field: str, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord
    ) -> dict[str, Any]:
        chat = self._resolve_chat(p)
        stored = self._input_file(field, p, f)
        caption: str | None = None
        entities: list[dict[str, Any]] = []
        if field not in ("sticker", "video_note") and p.get("caption") not in (None, ""):
            caption, entities = self._format(
                p.get("caption"), p.get("parse_mode"), p.get("caption_entities"), caption=True
            )
            caption = caption or None
        markup = self._validate_markup(p.get("reply_markup"))
        reply_to = self._reply_target(chat, p)
        bm = self._new_message(
            chat,
            canonical,
            p,
            caption=caption,
            entities=entities,
            source_text=None if p.get("caption") is None else str(p["caption"]),
            markup=markup,
            media_type=field,
            file=stored,
            media_json=self._media_json(field, stored, p),
            reply_to=reply_to,
        )
        return bm.json

    def _input_file(self, field: str, p: dict[str, Any], files: dict[str, UploadPart]) -> StoredFile:
        part = files.get(field)
        value = p.get(field)
        if part is None and isinstance(value, str) and value.startswith("attach://"):
            part = files.get(value[len("attach://") :])
            if part is None:
                raise _bad("wrong file identifier/HTTP URL specified")
        if part is not None:
            if not part.data:
                raise _bad("file must be non-empty")
            width = height = None
            if field == "photo":
                size = _image_size(part.data)
                if size is None:
                    raise _bad("IMAGE_PROCESS_FAILED")
                width, height = size
            return self.register_file(
                part.data,
                kind=field,
                filename=part.filename,
                mime_type=part.content_type,
                width=width,
                height=height,
            )
        if isinstance(value, str) and value:
            known = self._files.get(value)
            if known is not None:
                return known
            if value.startswith(("http://", "https://")):
                return self.register_file(None, kind=field, url=value)
            raise _bad("wrong file identifier/HTTP URL specified")
        raise _bad(f"there is no {field} in the request")

    @staticmethod
    def _media_json(field: str, stored: StoredFile, p: dict[str, Any]) -> dict[str, Any]:
        base = stored.base_json()
        if field == "photo":
            w, h = stored.width or 800, stored.height or 600
            scale = min(1.0, 90 / max(w, h, 1))
            thumb = {
                **base,
                "file_unique_id": base["file_unique_id"] + "t",
                "width": max(1, round(w * scale)),
                "height": max(1, round(h * scale)),
            }
            return {"photo": [thumb, {**base, "width": w, "height": h}]}
        item: dict[str, Any] = dict(base)
        if stored.filename and field in ("document", "audio", "video", "animation"):
            item["file_name"] = stored.filename
        if stored.mime_type and field != "sticker":
            item["mime_type"] = stored.mime_type
        if field in ("audio", "voice", "video", "animation", "video_note"):
            item["duration"] = int(p.get("duration") or stored.duration or 1)
        if field in ("video", "animation"):
            item["width"] = int(p.get("width") or stored.width or 640)
            item["height"] = int(p.get("height") or stored.height or 360)
        if field == "video_note":
            item["length"] = int(p.get("length") or 240)
        if field == "sticker":
            item.update(
                {"type": "regular", "width": 512, "height": 512, "is_animated": False, "is_video": False}
            )
        return {field: item}

    def _m_edit_message_text(
        self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord
    ) -> dict[str, Any]:
        chat, bm = self._editable(p)
        if bm.text is None:
            raise _bad("there is no text in the message to edit")
        if p.get("text") in (None, ""):
            raise _bad("message text is empty")
        text, entities = self._format(p.get("text"), p.get("parse_mode"), p.get("entities"), caption=False)
        markup = self._validate_markup(p.get("reply_markup"))
        if markup is not None and "inline_keyboard" not in markup:
            raise _bad("inline keyboard expected")
        if (
            text == bm.text
            and entities == bm.entities
            and self._inline(markup) == self._inline(bm.reply_markup)
        ):
            raise _bad(_NOT_MODIFIED)
        bm.text, bm.entities, bm.parse_mode, bm.source_text = (
            text,
            entities,
            p.get("parse_mode"),
            str(p["text"]),
        )
        return self._apply_edit(chat, bm, "editMessageText", markup)

    def _m_edit_message_caption(
        self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord
    ) -> dict[str, Any]:
        chat, bm = self._editable(p)
        if bm.media_type is None:
            raise _bad("there is no caption in the message to edit")
        caption, entities = self._format(
            p.get("caption"), p.get("parse_mode"), p.get("caption_entities"), caption=True
        )
        markup = self._validate_markup(p.get("reply_markup"))
        if (
            (caption or None) == bm.caption
            and entities == bm.entities
            and self._inline(markup) == self._inline(bm.reply_markup)
        ):
            raise _bad(_NOT_MODIFIED)
        bm.caption, bm.entities, bm.parse_mode = caption or None, entities, p.get("parse_mode")
        bm.source_text = None if p.get("caption") is None else str(p["caption"])
        return self._apply_edit(chat, bm, "editMessageCaption", markup)

    def _m_edit_message_reply_markup(
        self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord
    ) -> dict[str, Any]:
        chat, bm = self._editable(p)
        markup = self._validate_markup(p.get("reply_markup"))
        if markup is not None and "inline_keyboard" not in markup:
            raise _bad("inline keyboard expected")
        if self._inline(markup) == self._inline(bm.reply_markup):
            raise _bad(_NOT_MODIFIED)
        return self._apply_edit(chat, bm, "editMessageReplyMarkup", markup)

    def _m_delete_message(self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> bool:
        chat = self._resolve_chat(p, sending=False)
        if not p.get("message_id"):
            raise _bad("message identifier is not specified")
        if not self._delete(chat, int(p["message_id"])):
            raise _bad("message to delete not found")
        return True

    def _m_delete_messages(self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> bool:
        chat = self._resolve_chat(p, sending=False)
        ids = p.get("message_ids")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
            raise _bad("message_ids must be a non-empty array of at most 100 ids")
        for mid in ids:
            self._delete(chat, int(mid))
        return True

    @staticmethod
    def _delete(chat: _Chat, mid: int) -> bool:
        bm = chat.bot_messages.get(mid)
        if bm is not None:
            if bm.deleted:
                return False
            bm.deleted = True
            return True
        return chat.user_messages.pop(mid, None) is not None

    def _m_answer_callback_query(self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> bool:
        state = self._callbacks.get(str(p.get("callback_query_id") or ""))
        too_old = (
            state is not None
            and self.callback_query_ttl is not None
            and time.monotonic() - state.created > self.callback_query_ttl
        )
        if state is None or state.answered or too_old:
            raise _bad(_QUERY_TOO_OLD)
        text = p.get("text")
        if text is not None and len(str(text)) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        state.answered = True
        state.answer = {
            "text": text,
            "show_alert": bool(p.get("show_alert", False)),
            "url": p.get("url"),
            "cache_time": p.get("cache_time"),
        }
        return True

    def _m_send_chat_action(self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> bool:
        chat = self._resolve_chat(p)
        action = p.get("action")
        if action not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        chat.chat_actions.append(str(action))
        return True

    def _m_set_my_commands(self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> bool:
        commands = p.get("commands")
        if not isinstance(commands, list):
            raise _bad("can't parse commands JSON object")
        if len(commands) > 100:
            raise _bad("too many commands specified")
        cleaned: list[dict[str, Any]] = []
        for cmd in commands:
            if not isinstance(cmd, dict):
                raise _bad("can't parse BotCommand JSON object")
            name = str(cmd.get("command", ""))
            description = str(cmd.get("description", ""))
            if not _COMMAND_RE.fullmatch(name):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(description.strip()) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": name, "description": description})
        self.commands_by_scope[_scope_key(p.get("scope"), str(p.get("language_code") or ""))] = cleaned
        return True

    def _m_get_my_commands(
        self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord
    ) -> list[dict[str, Any]]:
        return list(
            self.commands_by_scope.get(_scope_key(p.get("scope"), str(p.get("language_code") or "")), [])
        )

    def _m_delete_my_commands(self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> bool:
        self.commands_by_scope.pop(_scope_key(p.get("scope"), str(p.get("language_code") or "")), None)
        return True

    def _m_get_file(self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> dict[str, Any]:
        stored = self._files.get(str(p.get("file_id") or ""))
        if stored is None:
            raise _bad("invalid file_id")
        if stored.content is not None and len(stored.content) > 20 * 1024 * 1024:
            raise _bad("file is too big")
        return {**stored.base_json(), "file_path": stored.file_path}

    def _m_get_chat(self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> dict[str, Any]:
        chat = self._resolve_chat(p, sending=False)
        return {
            **chat.info,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    def _m_set_chat_menu_button(self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> bool:
        chat_id = None
        if p.get("chat_id") not in (None, ""):
            chat_id = self._resolve_chat(p, sending=False).id
        button = p.get("menu_button") or {"type": "default"}
        if not isinstance(button, dict) or button.get("type") not in ("default", "commands", "web_app"):
            raise _bad("can't parse menu button JSON object")
        if button["type"] == "web_app" and not (
            button.get("text") and isinstance(button.get("web_app"), dict)
        ):
            raise _bad("can't parse menu button JSON object")
        self.menu_buttons[chat_id] = button
        return True

    def _m_get_chat_menu_button(
        self, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord
    ) -> dict[str, Any]:
        chat_id = None
        if p.get("chat_id") not in (None, ""):
            chat_id = self._resolve_chat(p, sending=False).id
        return self.menu_buttons.get(chat_id) or self.menu_buttons.get(None) or {"type": "commands"}

    def _m_set_setting(self, key: str, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord) -> bool:
        self.bot_settings.setdefault(key, {})[str(p.get("language_code") or "")] = str(p.get(key) or "")
        return True

    def _m_get_setting(
        self, key: str, p: dict[str, Any], f: dict[str, UploadPart], r: CallRecord
    ) -> dict[str, str]:
        value = self.bot_settings.get(key, {}).get(str(p.get("language_code") or ""), "")
        if key == "name" and not value:
            value = str(self.bot_user["first_name"])
        return {key: value}


_MEDIA_KEYS = frozenset(field for _, field in _MEDIA_METHODS.values())


def _scope_key(scope: Any, language_code: str) -> tuple[Any, ...]:
    if scope in (None, ""):
        scope = {"type": "default"}
    if not isinstance(scope, dict):
        raise _bad("can't parse BotCommandScope JSON object")
    stype = scope.get("type")
    if stype not in (
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    ):
        raise _bad("can't parse BotCommandScope JSON object")
    if stype in ("chat", "chat_administrators", "chat_member") and scope.get("chat_id") in (None, ""):
        raise _bad("can't parse BotCommandScope JSON object")
    if stype == "chat_member" and not scope.get("user_id"):
        raise _bad("can't parse BotCommandScope JSON object")
    return (stype, scope.get("chat_id"), scope.get("user_id"), language_code)

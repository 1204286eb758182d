"""Build and run the Telegram application. ``netcoach run`` and the end-to-end tests use the same
:func:`build_application`, so what is tested is what runs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from telegram import Bot, BotCommand, Update
from telegram.error import BadRequest, NetworkError, TimedOut
from telegram.request import HTTPXRequest
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.coaching import Coaching, ScenarioCatalog
from bot.config import Config
from bot.events import EventBook
from bot.llm import llm_options
from bot.scenarios import ScenarioLibrary
from bot.schedule import Scheduler, utcnow
from bot.session import PracticeEngine
from bot.store import TinyDBStore
from bot.telegram import account
from bot.telegram import coach as co
from bot.telegram import events as ev
from bot.telegram import handlers as h
from bot.telegram.formatting import command_descriptions

log = logging.getLogger(__name__)


class RedactSecrets(logging.Filter):
    """Replace the bot token anywhere in a log record (httpx and PTB log request URLs)."""

    def __init__(self, *secrets: str | None):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if any(s in message for s in self.secrets):
            for s in self.secrets:
                message = message.replace(s, "<redacted>")
            record.msg, record.args = message, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if any(s in text for s in self.secrets):
                for s in self.secrets:
                    text = text.replace(s, "<redacted>")
                record.exc_info, record.exc_text = None, text
        return True


def install_redaction(*secrets: str | None) -> None:
    """Attach :class:`RedactSecrets` (bot token, LLM API key) to every root handler, and quieten httpx's
    per-request lines (httpx2 is the openai SDK's copy)."""
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    redactor = RedactSecrets(*secrets)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in root.handlers:
        handler.addFilter(redactor)


SEND_RATE_ENV = "NETCOACH_MAX_SEND_RATE"
DEFAULT_SEND_RATE = 30.0  # Telegram's documented ceiling, about 30 messages per second per bot


class ResilientRateLimiter(AIORateLimiter):
    """PTB's :class:`AIORateLimiter` (Telegram's flood limits; waits and retries after a 429), plus
    retries for requests that failed before Telegram acted on them: a 5xx answer (JSON, or a
    proxy's HTML page) or a connection dropped without a response.

    Without this a transient Bot API error loses the reply although the user's turn is already
    saved: they would see "something went wrong" instead of the persona's answer. Bad requests,
    403s and timeouts (the message may already be out: retrying could send it twice) are not
    retried. getUpdates never passes through a rate limiter; PTB's updater retries it itself.
    """

    def __init__(self, *args: object, network_retries: int = 3, backoff: float = 0.5, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.network_retries = network_retries
        self.backoff = backoff

    async def process_request(self, callback, args, kwargs, endpoint, data, rate_limit_args):  # type: ignore[no-untyped-def]
        delay = self.backoff
        attempt = 0
        while True:
            try:
                return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
            except (BadRequest, TimedOut):
                raise
            except NetworkError as exc:
                if attempt >= self.network_retries:
                    raise
                attempt += 1
                log.warning("%s failed (%s); retry %d of %d in %.1f s", endpoint, exc, attempt,
                            self.network_retries, delay)
                await asyncio.sleep(delay)
                delay *= 2


class TolerantUpdatesRequest(HTTPXRequest):
    """The getUpdates connection, made safe against one update PTB cannot parse.

    PTB parses a whole batch of updates at once; one it cannot read (a field from a newer Bot API
    with an unexpected shape, say) fails the batch, and the updater fetches the same batch again,
    forever: every user behind it waits. Here each update is checked on its own first and an
    unreadable one is replaced by its bare ``update_id``: the offset moves past it, no handler
    matches it, and a warning names only its id (never its content, which is a user's text).
    """

    def __init__(self) -> None:
        super().__init__(connection_pool_size=1)  # what PTB's builder uses for getUpdates

    async def post(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = await super().post(*args, **kwargs)
        if isinstance(result, list):
            result = [_readable_update(item) for item in result]
        return result


def _readable_update(item: object) -> object:
    """The update itself, or only its ``update_id`` if PTB cannot parse it (warned by id)."""
    if not isinstance(item, dict) or not isinstance(item.get("update_id"), int):
        return item  # not an update at all: let PTB report the malformed answer
    try:
        Update.de_json(item, None)
    except Exception as exc:
        return _bare(item, exc)
    return item


def parse_update(item: dict, bot: Bot) -> Update:
    """An update we hold on its own (a webhook POST), parsed once; one PTB cannot parse becomes
    its bare ``update_id``, which no handler matches (warned by id)."""
    try:
        return Update.de_json(item, bot)
    except Exception as exc:
        return Update.de_json(_bare(item, exc), bot)


def _bare(item: dict, exc: Exception) -> dict:
    log.warning("skipping update %s: it cannot be parsed (%s)", item["update_id"], type(exc).__name__)
    return {"update_id": item["update_id"]}


def send_rate_from_env(env: dict[str, str] | None = None) -> float:
    """Requests per second the bot allows itself (``NETCOACH_MAX_SEND_RATE``; 0 = no limiter, for
    benchmarks or a Bot API server without flood limits)."""
    raw = (os.environ if env is None else env).get(SEND_RATE_ENV, "").strip()
    if not raw:
        return DEFAULT_SEND_RATE
    try:
        return max(0.0, float(raw))
    except ValueError:
        log.warning("%s=%r is not a number; using %s", SEND_RATE_ENV, raw, DEFAULT_SEND_RATE)
        return DEFAULT_SEND_RATE


def file_url_for(base_url: str) -> str:
    """``http://host/bot`` -> ``http://host/file/bot`` (how the Bot API lays out file downloads)."""
    return re.sub(r"/bot$", "/file/bot", base_url.rstrip("/"))


def make_engine(config: Config) -> PracticeEngine:
    return PracticeEngine(TinyDBStore(config.data_dir), ScenarioLibrary.from_dir(config.scenarios_dir),
                          **llm_options(config.llm))


async def post_init(app: Application) -> None:
    """Register the command menu, and rebuild the prompt schedule from the store (the JobQueue
    keeps nothing across restarts; anything missed while we were down is due now)."""
    await app.bot.set_my_commands([BotCommand(name, text) for name, text in command_descriptions().items()])
    scheduler: Scheduler = app.bot_data["events"].scheduler
    pending = await asyncio.to_thread(scheduler.load, lambda uid: uid.startswith("tg-"))
    log.info("schedule loaded: %d pending prompt(s)", pending)
    await asyncio.to_thread(warm_up, app.bot_data["engine"])


async def post_init_settled(app: Application) -> None:
    """:func:`post_init`, then the heap settles: what ``netcoach run`` uses."""
    await post_init(app)
    settle_heap()


def settle_heap() -> None:
    """Move everything built at start-up (modules, scenarios, the scorer's tables) out of the
    garbage collector's sight. It lives as long as the bot, yet every full collection walked all
    of it (about 70,000 objects, 45 ms) on the event loop, in some user's turn. Only for a process
    that runs one bot for its whole life: frozen objects that later die in a cycle are never freed."""
    gc.collect()
    gc.freeze()


def warm_up(engine: PracticeEngine) -> None:
    """Load the offline scorer and compile its matchers before taking updates: it builds its tables
    on first use (about half a second of CPU) and compiles a word's matchers on first sight (about a
    millisecond each), which would otherwise run on the event loop inside the first users' turns and
    hold up every other user meanwhile."""
    try:
        compiled = engine.scorer.prepare()
        log.debug("scorer ready: %d matcher(s) compiled", compiled)
    except Exception:  # never let a warm-up stop the bot; the first turn will pay instead
        log.debug("scorer warm-up failed", exc_info=True)


async def post_shutdown(app: Application) -> None:
    """Close the LLM client's connections (it is shared by persona, judge and hints)."""
    engine: PracticeEngine = app.bot_data["engine"]
    client = getattr(engine.persona, "client", None)
    if client is not None:
        await client.aclose()


def build_application(
    config: Config, engine: PracticeEngine | None = None, clock: Callable[[], datetime] = utcnow,
    send_rate: float = DEFAULT_SEND_RATE, settle: bool = False,
) -> Application:
    """The whole bot. ``clock`` drives scheduled prompts (tests pass a controllable one);
    ``send_rate`` caps requests per second to Telegram (0: no cap); ``settle``: freeze the
    start-up heap after the warm-up (see :func:`settle_heap`)."""
    if not config.telegram_token:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    builder = (
        ApplicationBuilder()
        .token(config.telegram_token)
        .rate_limiter(ResilientRateLimiter(overall_max_rate=send_rate, max_retries=3))
        .get_updates_request(TolerantUpdatesRequest())
        .concurrent_updates(True)  # users run in parallel; the engine serialises each user's turns
        .post_init(post_init_settled if settle else post_init)
        .post_shutdown(post_shutdown)
    )
    if config.telegram_base_url:
        builder = builder.base_url(config.telegram_base_url).base_file_url(file_url_for(config.telegram_base_url))
    app = builder.build()
    engine = engine or make_engine(config)
    app.bot_data["engine"] = engine
    scheduler = Scheduler(engine.store, clock)
    if not isinstance(engine.library, ScenarioCatalog):  # coach-authored scenarios resolve by id too
        engine.library = ScenarioCatalog(engine.library, engine.store)
    builtins = engine.library.base
    app.bot_data["events"] = EventBook(engine.store, scheduler, builtins, engine.scorer, config.timing)
    app.bot_data["coaching"] = Coaching(engine.store, builtins, scheduler)
    app.bot_data["job_handlers"] = {"assign_reminder": co.deliver_assignment_job, "assign_due": co.deliver_assignment_job}
    register_handlers(app)
    if app.job_queue is not None:
        app.job_queue.run_repeating(ev.scheduler_tick, interval=config.tick_seconds, first=1.0, name="prompts")
    return app


def register_handlers(app: Application) -> None:
    private = filters.ChatType.PRIVATE
    # Groups and channels first: the bot coaches one person at a time.
    app.add_handler(MessageHandler(filters.ChatType.GROUPS & filters.UpdateType.MESSAGE, h.on_group))
    for name, fn in {
        "start": h.start,
        "help": h.help_command,
        "practice": h.practice,
        "hint": h.hint,
        "end": h.end,
        "cancel": h.cancel,
        "history": h.history,
        "progress": h.progress,
        "export": account.export,
        "forget": account.forget,
        "event": ev.event_command,
        "events": ev.events_command,
        "debrief": ev.debrief_command,
        "contacts": ev.contacts_command,
        "coach": co.coach_command,
        "coaches": co.coaches_command,
        "assign": co.assign_command,
        "roster": co.roster_command,
        "scenarios": co.scenarios_command,
    }.items():
        app.add_handler(CommandHandler(name, fn, filters=private & filters.UpdateType.MESSAGE))
    app.add_handler(CallbackQueryHandler(h.on_button))
    private_messages = private & filters.UpdateType.MESSAGE
    app.add_handler(MessageHandler(private_messages & filters.COMMAND, h.unknown_command))
    app.add_handler(MessageHandler(private_messages & filters.TEXT, h.on_text))
    app.add_handler(MessageHandler(private_messages, h.on_non_text))
    # Edited messages and channel posts are ignored by design: a role-play moves forward only.
    app.add_error_handler(h.on_error)


@dataclass(frozen=True)
class WebhookOptions:
    url: str  # public HTTPS URL Telegram calls
    listen: str = "0.0.0.0"
    port: int = 8443
    secret_token: str | None = None  # Telegram sends it back in X-Telegram-Bot-Api-Secret-Token


def run_bot(config: Config, webhook: WebhookOptions | None = None) -> None:
    """Run until interrupted: long polling by default, or a webhook server."""
    install_redaction(config.telegram_token, config.llm.api_key, webhook.secret_token if webhook else None)
    app = build_application(config, send_rate=send_rate_from_env(), settle=True)
    log.info("netcoach bot starting (%s)", "webhook" if webhook else "long polling")
    if webhook is None:
        app.run_polling(allowed_updates=Update.ALL_TYPES, drop_pending_updates=False)
    else:
        from bot.telegram.webhook import serve_webhook

        asyncio.run(serve_webhook(app, webhook))


async def start_polling(app: Application, poll_timeout: float = 10.0) -> None:
    """Start the way ``run_polling`` does, inside an event loop that is already running
    (tests, benchmarks, or an embedding host)."""
    await app.initialize()
    if app.post_init is not None:
        await app.post_init(app)
    await app.start()
    await app.updater.start_polling(poll_interval=0.0, timeout=poll_timeout, allowed_updates=Update.ALL_TYPES)


async def stop_polling(app: Application) -> None:
    if app.updater is not None and app.updater.running:
        await app.updater.stop()
    if app.running:
        await app.stop()
    await app.shutdown()

"""Build and run the Telegram application. ``netcoach run`` and the end-to-end tests use the same
:func:`build_application`, so what is tested is what runs.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from telegram import BotCommand, Update
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


def install_redaction(token: str | None) -> None:
    """Attach :class:`RedactSecrets` to every root handler, and quieten httpx's per-request lines."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    redactor = RedactSecrets(token)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in root.handlers:
        handler.addFilter(redactor)


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


def build_application(
    config: Config, engine: PracticeEngine | None = None, clock: Callable[[], datetime] = utcnow
) -> Application:
    """The whole bot. ``clock`` drives scheduled prompts (tests pass a controllable one)."""
    if not config.telegram_token:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    builder = (
        ApplicationBuilder()
        .token(config.telegram_token)
        .rate_limiter(AIORateLimiter(max_retries=3))
        .concurrent_updates(True)  # users run in parallel; the engine serialises each user's turns
        .post_init(post_init)
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
        "export": h.export,
        "forget": h.forget,
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
    install_redaction(config.telegram_token)
    app = build_application(config)
    log.info("netcoach bot starting (%s)", "webhook" if webhook else "long polling")
    if webhook is None:
        app.run_polling(allowed_updates=Update.ALL_TYPES, drop_pending_updates=False)
    else:
        path = "telegram"
        app.run_webhook(
            listen=webhook.listen,
            port=webhook.port,
            url_path=path,
            webhook_url=f"{webhook.url.rstrip('/')}/{path}",
            secret_token=webhook.secret_token,
            allowed_updates=Update.ALL_TYPES,
        )


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

#!/usr/bin/env python3
"""A minimal python-telegram-bot echo bot: the reference ``bench/load.py`` compares netcoach with.

It is built like netcoach's bot (``bot/telegram/app.py``): long polling, concurrent updates and
PTB's ``AIORateLimiter`` with the same send rate (``NETCOACH_MAX_SEND_RATE``), and it answers every
update with one HTML message. So its figures are what the stack itself costs (PTB, HTTP, the
fake Bot API server, the harness), and the difference to netcoach is netcoach's own work.

    TELEGRAM_BOT_TOKEN=... TELEGRAM_API_BASE_URL=http://127.0.0.1:PORT/bot python bench/echo_bot.py
"""

from __future__ import annotations

import html
import logging
import os

from telegram import Update
from telegram.ext import AIORateLimiter, ApplicationBuilder, CallbackQueryHandler, ContextTypes, MessageHandler, filters


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_html(f"<b>echo</b>: {html.escape(update.effective_message.text)}")


async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.callback_query.answer()
    await update.effective_message.reply_html("<b>pressed</b>")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rate = float(os.environ.get("NETCOACH_MAX_SEND_RATE", "30"))
    app = (
        ApplicationBuilder()
        .token(os.environ["TELEGRAM_BOT_TOKEN"])
        .base_url(os.environ["TELEGRAM_API_BASE_URL"])
        .rate_limiter(AIORateLimiter(overall_max_rate=rate, max_retries=3))
        .concurrent_updates(True)
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT, echo))
    app.add_handler(CallbackQueryHandler(pressed))
    if os.environ.get("ECHO_WEBHOOK_PORT"):  # bench/load.py --webhook: PTB's own webhook server
        app.run_webhook(listen="127.0.0.1", port=int(os.environ["ECHO_WEBHOOK_PORT"]), url_path="telegram",
                        webhook_url=os.environ["ECHO_WEBHOOK_URL"] + "/telegram", allowed_updates=Update.ALL_TYPES)
    else:
        app.run_polling(allowed_updates=Update.ALL_TYPES, drop_pending_updates=False)


if __name__ == "__main__":
    main()

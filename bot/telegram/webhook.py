"""Webhook mode: Telegram POSTs each update to us instead of the bot polling for it.

Why our own small server rather than PTB's ``run_webhook``: PTB's answers an update it cannot
parse (a field from a newer Bot API with an unexpected shape, say) with 400 and logs the whole
update, a user's text, at CRITICAL; Telegram then delivers it again and again while the updates
behind it wait. Here, as on the polling path (:class:`bot.telegram.app.TolerantUpdatesRequest`),
such an update is acknowledged and skipped, and the log names only its id. And PTB's answers 200
as soon as an update is queued, so one in hand when the process dies is lost; ours answers once
the update is handled, and Telegram delivers it again after a restart. Otherwise it is what PTB's
documented custom-webhook setup does: the same ``Application``, on tornado (which PTB's
``webhooks`` extra installs).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
from collections import OrderedDict
from dataclasses import dataclass

import tornado.httpserver
import tornado.netutil
import tornado.web
from telegram import Update
from telegram.ext import Application

from bot.telegram.app import WebhookOptions, parse_update

log = logging.getLogger(__name__)

PATH = "telegram"  # the webhook URL is <public url>/telegram
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 1024 * 1024  # an update is a few kB; anything near this is not from Telegram


class _UpdateHandler(tornado.web.RequestHandler):
    """One POST = one update, answered 200 once it has been handled (not merely queued): an update
    in hand when the process dies gets no answer, so Telegram delivers it again after the restart.
    Telegram keeps up to 40 such requests open at once, so users still run in parallel."""

    def initialize(self, app: Application, secret: str | None, seen: "_Seen") -> None:
        self.app = app
        self.secret = secret
        self.seen = seen

    async def post(self) -> None:
        if self.secret is not None and not hmac.compare_digest(
            self.request.headers.get(SECRET_HEADER, "").encode(), self.secret.encode()
        ):
            log.warning("webhook: refused a request without the right secret token (from %s)", self.request.remote_ip)
            raise tornado.web.HTTPError(403)
        try:
            data = json.loads(self.request.body)
        except ValueError:
            raise tornado.web.HTTPError(400, reason="not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            raise tornado.web.HTTPError(400, reason="not an update")
        if not self.seen.claim(data["update_id"]):
            return  # Telegram gave up waiting and sent it again while (or after) we handled it: taken
        update = parse_update(data, self.app.bot)
        self.app.bot.insert_callback_data(update)  # a no-op unless arbitrary callback data is on
        await self.app.process_update(update)  # handler errors go to the error handler, not here


class _Seen:
    """The update ids this process has taken, the latest ``keep`` of them. Telegram sends an
    update again if our answer is slow to come (a long LLM call) or is lost; handling it twice
    would repeat a role-play turn."""

    def __init__(self, keep: int = 10_000):
        self.keep = keep
        self._ids: OrderedDict[int, None] = OrderedDict()

    def claim(self, update_id: int) -> bool:
        """True the first time an id is seen."""
        if update_id in self._ids:
            return False
        self._ids[update_id] = None
        if len(self._ids) > self.keep:
            self._ids.popitem(last=False)
        return True


@dataclass
class WebhookServer:
    http: tornado.httpserver.HTTPServer
    port: int  # the port actually bound (``WebhookOptions.port`` may be 0 in tests)


def webhook_url(options: WebhookOptions) -> str:
    return f"{options.url.rstrip('/')}/{PATH}"


async def start_webhook(app: Application, options: WebhookOptions) -> WebhookServer:
    """Start the bot and its HTTP server, then tell Telegram where to send updates (last, so
    the first one finds us listening)."""
    await app.initialize()
    if app.post_init is not None:
        await app.post_init(app)
    web_app = tornado.web.Application([(rf"/{PATH}/?", _UpdateHandler,
                                        {"app": app, "secret": options.secret_token, "seen": _Seen()})])
    http = tornado.httpserver.HTTPServer(web_app, max_body_size=MAX_BODY)
    sockets = tornado.netutil.bind_sockets(options.port, options.listen)
    http.add_sockets(sockets)
    await app.start()
    await app.bot.set_webhook(url=webhook_url(options), allowed_updates=Update.ALL_TYPES,
                              secret_token=options.secret_token)
    return WebhookServer(http, sockets[0].getsockname()[1])


async def stop_webhook(app: Application, server: WebhookServer) -> None:
    """Stop taking updates, finish the ones taken, shut down. The webhook stays registered:
    Telegram keeps what arrives meanwhile and delivers it when we are back."""
    server.http.stop()
    await server.http.close_all_connections()
    if app.running:
        await app.stop()
    if app.post_stop is not None:
        await app.post_stop(app)
    await app.shutdown()
    if app.post_shutdown is not None:
        await app.post_shutdown(app)


async def serve_webhook(app: Application, options: WebhookOptions) -> None:
    """``netcoach run --webhook-url``: serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await start_webhook(app, options)
    log.info("webhook: listening on %s:%d, registered as %s", options.listen, server.port, webhook_url(options))
    try:
        await stop.wait()
    finally:
        await stop_webhook(app, server)

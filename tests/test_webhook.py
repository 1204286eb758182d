"""Webhook mode (``netcoach run --webhook-url``) end to end: the fake Bot API POSTs updates to the
bot's own webhook server on 127.0.0.1, as Telegram would through a TLS proxy."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from bot.config import Config
from bot.session import all_sessions
from bot.store import TinyDBStore
from bot.telegram.app import WebhookOptions, build_application
from bot.telegram.webhook import SECRET_HEADER, start_webhook, stop_webhook
from tests.conftest import ROOT, TOKEN, Clock, assert_skipped_quietly, enqueue_unparsable
from tests.fakes import FakeBotAPI
from tests.fakes.openai_stub import OpenAIStub, StubReply

SECRET = "hook-secret-never-logged"
PUBLIC = "https://netcoach.example.org/bot/"


@asynccontextmanager
async def webhook_bot(server: FakeBotAPI, data_dir: Path, secret: str | None = SECRET) -> AsyncIterator[str]:
    """The bot in webhook mode; yields the local URL Telegram's POSTs land on."""
    config = Config(data_dir=data_dir, telegram_token=server.token, telegram_base_url=server.base_url)
    app = build_application(replace(config, tick_seconds=3600), clock=Clock())
    hook = await start_webhook(app, WebhookOptions(PUBLIC, "127.0.0.1", 0, secret))
    local = f"http://127.0.0.1:{hook.port}/telegram"
    server.deliver_webhooks_to(local)
    try:
        yield local
    finally:
        await stop_webhook(app, hook)


async def test_users_practise_through_the_webhook(data_dir: Path) -> None:
    async with FakeBotAPI(token=TOKEN) as server, webhook_bot(server, data_dir):
        assert server.webhook["url"] == "https://netcoach.example.org/bot/telegram"
        assert server.webhook["secret_token"] == SECRET
        user = server.user(first_name="Ada")
        user.send_text("/practice")
        menu = await user.next_reply(timeout=10)
        user.press(menu, button_text=menu.button_texts[-1])
        opening = await user.wait_for(lambda r: "End" in " ".join(r.button_texts), timeout=10)
        user.send_text("What got you into this line of work?")
        answer = await user.wait_for(lambda r: r.message_id > opening.message_id and not r.edited, timeout=10)
        assert answer.button_texts == opening.button_texts  # the persona answered, the session goes on
        await server.wait_until(lambda: server.pending_updates == 0, timeout=10, what="the updates taken")
        assert {status for _, status in server.webhook_attempts} == {200}


async def test_requests_without_the_secret_are_refused_and_change_nothing(data_dir: Path) -> None:
    async with FakeBotAPI(token=TOKEN) as server, webhook_bot(server, data_dir) as local:
        user = server.user()
        forged = {"update_id": 1, "message": {"message_id": 1, "date": 1_700_000_000, "text": "/start",
                                               "chat": {"id": user.id, "type": "private"},
                                               "from": {"id": user.id, "is_bot": False, "first_name": "Eve"},
                                               "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}}
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {SECRET_HEADER: "guess"}):
                async with http.post(local, json=forged, headers=headers) as resp:
                    assert resp.status == 403
            async with http.post(local, data=b"not json", headers={SECRET_HEADER: SECRET}) as resp:
                assert resp.status == 400
        user.send_text("/help")  # a real update still gets through, and only it is answered
        reply = await user.next_reply(timeout=10)
        assert "/practice" in reply.text
        assert len(user.replies) == 1
        assert not (data_dir / "users").exists() or not any((data_dir / "users").iterdir())


async def test_an_update_the_bot_cannot_parse_is_acknowledged_and_skipped(
        data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """PTB's own webhook server answers 400 and Telegram redelivers the update forever, holding up
    the ones behind it; ours acknowledges it, logs its id only, and goes on."""
    caplog.set_level(logging.WARNING)
    async with FakeBotAPI(token=TOKEN) as server, webhook_bot(server, data_dir):
        user = server.user()
        bad = enqueue_unparsable(server, user)
        user.send_text("/help")
        reply = await user.next_reply(timeout=10)
        assert "/practice" in reply.text
        await server.wait_until(lambda: server.pending_updates == 0, timeout=10, what="the updates taken")
        assert [status for uid, status in server.webhook_attempts if uid == bad["update_id"]] == [200]  # once
    assert_skipped_quietly(caplog.records, bad)


async def test_an_update_sent_again_is_not_handled_twice(data_dir: Path) -> None:
    """Telegram sends an update again when our answer is slow or lost; a role-play turn must not
    be repeated (the persona would answer the same line twice)."""
    async with FakeBotAPI(token=TOKEN) as server, webhook_bot(server, data_dir) as local:
        user = server.user()
        update = user.send_text("/help")
        await user.next_reply(timeout=10)
        await server.wait_until(lambda: server.pending_updates == 0, timeout=10, what="the update taken")
        async with aiohttp.ClientSession() as http:
            async with http.post(local, json=dict(update), headers={SECRET_HEADER: SECRET}) as resp:
                assert resp.status == 200  # taken, so Telegram stops sending it...
        await server.wait_idle(quiet=0.3)
        assert len(user.replies) == 1  # ...and answered once


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_netcoach_run_with_a_webhook_url_serves_and_stops_cleanly(data_dir: Path) -> None:
    """The real command: ``netcoach run --webhook-url`` registers the webhook with the secret from
    the environment, answers, and exits 0 on SIGTERM without printing the secret or the token."""
    port = free_port()
    async with FakeBotAPI(token=TOKEN) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "OPENAI_", "NETCOACH_"))}
        env.update(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE_URL=server.base_url, NETCOACH_DATA_DIR=str(data_dir),
                   NETCOACH_LLM="off", NETCOACH_WEBHOOK_SECRET=SECRET, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, "-m", "bot", "run", "--webhook-url", PUBLIC,
                                 "--listen", "127.0.0.1", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            await server.wait_until(lambda: server.webhook is not None or proc.poll() is not None, timeout=60,
                                    what="the bot to set its webhook")
            assert proc.poll() is None
            server.deliver_webhooks_to(f"http://127.0.0.1:{port}/telegram")
            user = server.user()
            user.send_text("/start")
            welcome = await user.next_reply(timeout=15)
            assert "networking sparring partner" in welcome.text
            await server.wait_idle(quiet=0.3, timeout=15)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.to_thread(proc.communicate, timeout=30)  # the fake must keep serving
    log = out.decode()
    assert proc.returncode == 0, log
    assert " ERROR " not in log and "Traceback" not in log, log
    assert SECRET not in log and TOKEN not in log


async def test_a_message_in_hand_when_the_bot_is_killed_is_answered_after_the_restart(data_dir: Path) -> None:
    """kill -9 while a role-play turn is being handled (the LLM persona is slow to answer): the
    webhook request never got its answer, so Telegram delivers the update again, and the restarted
    bot answers it, once. (Answering 200 on receipt, as PTB's webhook server does, loses it.)"""
    port = free_port()
    line = "What got you into this line of work?"
    with OpenAIStub() as stub:
        stub.default = StubReply.slow(60, then=StubReply.text("Too slow, never sent."))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "OPENAI_", "NETCOACH_"))}
        env.update(TELEGRAM_BOT_TOKEN=TOKEN, NETCOACH_DATA_DIR=str(data_dir), OPENAI_API_KEY="test-key",
                   OPENAI_BASE_URL=stub.url, NETCOACH_MODEL="stub-model", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "bot", "run", "--webhook-url", PUBLIC, "--listen", "127.0.0.1", "--port", str(port)]
        async with FakeBotAPI(token=TOKEN) as server:
            env["TELEGRAM_API_BASE_URL"] = server.base_url

            async def start_bot() -> subprocess.Popen[bytes]:
                server.webhook = None
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                await server.wait_until(lambda: server.webhook is not None or proc.poll() is not None, timeout=60,
                                        what="the bot to set its webhook")
                assert proc.poll() is None
                return proc

            proc = await start_bot()
            try:
                server.deliver_webhooks_to(f"http://127.0.0.1:{port}/telegram")
                user = server.user()
                user.send_text("/practice")
                menu = await user.next_reply(timeout=15)
                user.press(menu, button_text=next(t for t in menu.button_texts if "Data engineering meetup" in t))
                opening = await user.wait_for(lambda r: not r.edited and "End" in " ".join(r.button_texts), 15)
                user.send_text(line)
                await server.wait_until(lambda: any(line in " ".join(r.user_messages) for r in stub.chat_requests),
                                        timeout=15, what="the persona to be asked")
                proc.kill()  # the update is in hand: handled by nobody, answered to nobody
                await asyncio.to_thread(proc.wait, 10)
                assert server.pending_updates == 1

                stub.default = StubReply.text("Honestly? A lucky internship.")
                proc = await start_bot()
                answer = await user.wait_for(lambda r: r.message_id > opening.message_id and not r.edited, 30)
                assert answer.text == "Priya: Honestly? A lucky internship."
                await server.wait_until(lambda: server.pending_updates == 0, timeout=15, what="the update taken")
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 30)
    said = [t["text"] for s in all_sessions(TinyDBStore(data_dir), f"tg-{user.id}") for t in s["turns"] if t["role"] == "user"]
    assert said == [line]  # handled once: the turn is neither lost nor doubled

"""Shared fixtures: real scenario files, real TinyDB files in a temp dir, the real offline scorer."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator

import pytest

from bot.config import SCENARIOS_DIR
from bot.scenarios import ScenarioLibrary
from bot.store import TinyDBStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def library() -> ScenarioLibrary:
    return ScenarioLibrary.from_dir(SCENARIOS_DIR)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def store(data_dir: Path) -> TinyDBStore:
    return TinyDBStore(data_dir)


@pytest.fixture
def engine(store: TinyDBStore, library: ScenarioLibrary):
    from bot.session import PracticeEngine

    return PracticeEngine(store, library)


def run_netcoach(*args: str, stdin: str = "", data_dir: Path | None = None, env: dict[str, str] | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process, as a user would (``python -m bot``)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "OPENAI_", "NETCOACH_"))}
    if data_dir is not None:
        full_env["NETCOACH_DATA_DIR"] = str(data_dir)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin, capture_output=True, text=True, cwd=ROOT, env=full_env, timeout=timeout,
    )


# -- Telegram end to end: the real Application against the fake Bot API server ----------------

TOKEN = "4242:TEST-token-never-real"
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)  # a Sunday; 11:00 in Berlin


class Clock:
    """The bot's clock for scheduled prompts, moved by the test (no real waiting)."""

    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when


@asynccontextmanager
async def running_bot(server, data_dir: Path, clock: Clock | None = None, **config) -> AsyncIterator:
    """The bot exactly as ``netcoach run`` builds it, long-polling ``server``. Scheduled prompts
    fire only when the test calls ``run_scheduled`` (the periodic tick is an hour away)."""
    from bot.config import Config
    from bot.telegram.app import build_application, start_polling, stop_polling

    base = Config(data_dir=data_dir, telegram_token=server.token, telegram_base_url=server.base_url)
    app = build_application(replace(base, **{"tick_seconds": 3600, **config}), clock=clock or Clock())
    await start_polling(app, poll_timeout=1)
    try:
        yield app
    finally:
        await stop_polling(app)


PRIVATE_TEXT = "yesterday, private text"


def enqueue_unparsable(server, user):
    """An update PTB cannot read (a message whose ``date`` is not a number), carrying text that
    must never reach a log."""
    return server.enqueue_update("message", {"message_id": 999, "date": PRIVATE_TEXT,
                                             "chat": {"id": user.id, "type": "private"}, "text": "hi"})


def assert_skipped_quietly(records, update) -> None:
    """The bot logged that it skipped ``update`` by id, and nothing of its content."""
    logged = "\n".join(r.getMessage() for r in records)
    assert f"skipping update {update['update_id']}" in logged
    assert PRIVATE_TEXT not in logged


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def server() -> AsyncIterator:
    from tests.fakes import FakeBotAPI

    async with FakeBotAPI(token=TOKEN, bot_username="netcoach_test_bot") as s:
        yield s


@pytest.fixture
async def bot(server, data_dir: Path, clock: Clock) -> AsyncIterator:
    async with running_bot(server, data_dir, clock) as app:
        yield app

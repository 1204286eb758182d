"""Faults end to end: the bot killed with SIGKILL under load, a misbehaving Bot API, a broken disk.

* Crash: ``python -m bot run`` (exactly what ``netcoach run`` starts) runs as a child process
  against the fake Bot API server and is killed with SIGKILL while users are mid-session and
  messages are in flight, then started again on the same data directory.
* Bot API faults: the fake server answers 429 with ``retry_after``, 500, a 502 HTML page, or drops
  the connection, on ``getUpdates`` and on ``sendMessage``; a real in-process bot must keep running
  and every user must get their reply, once.
* Disk: a full or read-only data directory (``ENOSPC`` / ``EROFS`` injected where the store creates,
  syncs or renames its temp file; as root, permissions cannot make a folder read-only) and a data
  directory whose ``users`` folder is a plain file: a clear log line, a clear message to the user,
  and nobody's file damaged.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import subprocess
import sys
import tempfile
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator

import pytest
from telegram.ext import Application

from bot.config import Config
from bot.events import EVENTS, Event
from bot.schedule import Scheduler
from bot.store import TinyDBStore
from bot.telegram.app import build_application, start_polling, stop_polling
from tests.conftest import assert_skipped_quietly, enqueue_unparsable
from tests.fakes import FakeBotAPI, FakeUser, Reply

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "5151:FAULT-test-token"
CURIOUS = [
    "Hi! How are you finding the meetup so far?",
    "What are you working on at the moment?",
    "Interesting, how did you end up doing that?",
    "What's been the most surprising part of it?",
    "What would make tonight worthwhile for you?",
    "How did your team get started with that?",
]
SCENARIOS = ["Data engineering meetup", "Chamber of Commerce breakfast", "University alumni reception"]


# -- helpers ----------------------------------------------------------------------------------------


async def start_roleplay(user: FakeUser, title: str, timeout: float = 10.0) -> Reply:
    """/practice and pick ``title``; returns the persona's opening line."""
    user.send_text("/practice")
    menu = await user.wait_for(lambda r: "Pick a situation" in (r.text or ""), timeout)
    user.press(menu, button_text=next(t for t in menu.button_texts if title in t))
    await user.wait_for(lambda r: r.edited, timeout)
    return await user.wait_for(lambda r: not r.edited and ":" in (r.text or ""), timeout)


def persona_of(reply: Reply) -> str:
    return reply.text.split(":", 1)[0]


async def turn(user: FakeUser, text: str, timeout: float = 10.0) -> Reply:
    user.send_text(text)
    return await user.next_reply(timeout)


async def end_and_debrief(user: FakeUser, timeout: float = 10.0) -> str:
    user.send_text("/end")
    parts = [await user.wait_for(lambda r: "Focus score" in (r.text or ""), timeout)]
    while not parts[-1].button_texts:
        parts.append(await user.next_reply(timeout))
    return "\n".join(p.text for p in parts)


def store_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.rglob("*.json"))


def assert_store_intact(data_dir: Path) -> None:
    """Every store file parses as JSON (a torn write would not)."""
    files = store_files(data_dir)
    assert files, "no store files at all"
    for path in files:
        json.loads(path.read_text(encoding="utf-8"))


def leftover_temp_files(data_dir: Path) -> list[str]:
    return [p.name for p in data_dir.rglob("*.tmp")]


# -- (a) SIGKILL under load, restart ----------------------------------------------------------------


class BotProcess:
    """``python -m bot run`` against the fake server, as ``netcoach run`` starts it."""

    def __init__(self, server: FakeBotAPI, data_dir: Path, log_path: Path):
        self.server, self.data_dir, self.log_path = server, data_dir, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "OPENAI_", "NETCOACH_"))}
        env.update(TELEGRAM_BOT_TOKEN=self.server.token, TELEGRAM_API_BASE_URL=self.server.base_url,
                   NETCOACH_DATA_DIR=str(self.data_dir), NETCOACH_LLM="off", NETCOACH_TICK_SECONDS="0.5",
                   PYTHONUNBUFFERED="1")
        mark = self.server.call_mark()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "bot", "run"], cwd=ROOT, env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        # Up when it polls: post_init (commands, schedule) is done by then.
        await self.server.wait_until(
            lambda: self.proc.poll() is not None or any(
                c.method == "getUpdates" for c in self.server.calls[mark:]),
            timeout=60, what="the bot process to start polling")
        assert self.proc.poll() is None, f"the bot exited: {self.log_path.read_text()[-2000:]}"

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no shutdown code runs
        await asyncio.to_thread(self.proc.wait, 10)
        # The dead process's parked long poll ends once the server sees the connection close.
        await self.server.wait_until(lambda: not self.server.is_polling, timeout=10, what="the dead poll to end")

    async def stop(self) -> None:
        """SIGTERM, as a service manager would; the fake server must keep serving meanwhile."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 5)


async def test_kill_9_under_load_then_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log_path = tmp_path / "bot.log"
    async with FakeBotAPI(token=TOKEN) as server:
        bot = BotProcess(server, data_dir, log_path)
        try:
            await bot.start()
            finishers = [server.user(first_name=f"Done{i}") for i in range(3)]
            resumers = [server.user(first_name=f"Mid{i}") for i in range(4)]
            loaders = [server.user(first_name=f"Load{i}") for i in range(10)]

            async def finish(user: FakeUser, i: int) -> str:
                await start_roleplay(user, SCENARIOS[i % 3])
                for line in CURIOUS[:2]:
                    await turn(user, line)
                return await end_and_debrief(user)

            async def half(user: FakeUser, i: int) -> str:
                opening = await start_roleplay(user, SCENARIOS[i % 3])
                for line in CURIOUS[:2]:
                    reply = await turn(user, line)
                    assert persona_of(reply) == persona_of(opening)
                return persona_of(opening)

            debriefs = await asyncio.gather(*(finish(u, i) for i, u in enumerate(finishers)))
            assert all("Focus score" in d for d in debriefs)
            mid = await asyncio.gather(*(half(u, i) for i, u in enumerate(resumers)))
            loader_openings = dict(zip((u.id for u in loaders), await asyncio.gather(
                *(start_roleplay(u, SCENARIOS[i % 3]) for i, u in enumerate(loaders)))))

            # Load: every loader fires three turns without waiting; kill as soon as the first replies
            # are coming back, i.e. with turns being scored, saved and answered.
            mark = server.call_mark()
            for user in loaders:
                for line in CURIOUS[2:5]:
                    user.send_text(line)
            await server.wait_until(
                lambda: sum(c.method == "sendMessage" for c in server.calls[mark:]) >= 3, timeout=20,
                what="the load to be under way")
            await bot.kill9()

            # Nothing torn: every store file parses; the finished sessions are all there.
            assert_store_intact(data_dir)
            store = TinyDBStore(data_dir)
            for user in finishers:
                assert store.all(f"tg-{user.id}", "sessions") == []  # nothing left in progress...
                sessions = store.all(f"tg-{user.id}", "sessions_archive")
                assert [s["status"] for s in sessions] == ["ended"]  # ...and the finished one kept
            active_before = {u.id: next(s["id"] for s in store.all(f"tg-{u.id}", "sessions") if s["status"] == "active")
                             for u in loaders}

            # While the bot is down, a reflection prompt falls due (its event ended two hours ago).
            planner = resumers[0]
            uid = f"tg-{planner.id}"
            now = datetime.now(timezone.utc)
            event = Event(id="crash-evt", name="Crash Test Meetup", tz="UTC",
                          starts_at=(now - timedelta(hours=4)).isoformat(timespec="seconds"),
                          ends_at=(now - timedelta(hours=2)).isoformat(timespec="seconds"))
            store.put(uid, EVENTS, event.id, event.to_dict())
            Scheduler(store).schedule(uid, "reflect", event.id, now - timedelta(hours=1))

            await bot.start()
            prompt = await planner.wait_for(lambda r: "Crash Test Meetup" in (r.text or ""), timeout=15)
            assert "reflect" in prompt.text

            # In-progress role-plays resume: the next message continues the same conversation.
            for user, persona in zip(resumers, mid):
                reply = await turn(user, CURIOUS[3])
                assert persona_of(reply) == persona, reply
                debrief = await end_and_debrief(user)
                for line in CURIOUS[:2] + CURIOUS[3:4]:
                    assert line in debrief  # turns from before and after the crash
            # Loaders' turns in flight at the kill may be lost (PTB had already fetched them: the
            # user sees no answer and says it again), but their role-plays are intact and carry on.
            for user in loaders:
                user.send_text(CURIOUS[5])
            await server.wait_idle(quiet=0.2, timeout=20)
            for user in loaders:
                after = [s for s in store.all(f"tg-{user.id}", "sessions") if s["status"] == "active"]
                assert [s["id"] for s in after] == [active_before[user.id]]  # the same role-play
                said = [t["text"] for t in after[0]["turns"] if t["role"] == "user"]
                assert said[-1] == CURIOUS[5] and set(said) <= set(CURIOUS[2:6])
                assert user.replies[-1].text.startswith(persona_of(loader_openings[user.id]))
            # Finished sessions are still in everyone's history.
            for user in finishers:
                user.send_text("/history")
                history = await user.wait_for(lambda r: "Your practice sessions" in (r.text or ""), 10)
                assert "/100" in history.text

            # Crash again (the prompt went out in the run before) and restart: it must not come again.
            await bot.kill9()
            await bot.start()
            await asyncio.sleep(2.0)  # the prompt tick runs every 0.5 s: several ticks
            planner.send_text("/help")
            await planner.wait_for(lambda r: "/practice" in (r.text or ""), timeout=10)  # alive and answering
            prompts = [m for m in server.messages(planner.chat_id) if "Crash Test Meetup" in (m.text or "")]
            assert len(prompts) == 1
            assert_store_intact(data_dir)
        finally:
            await bot.stop()
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log and " failed: " not in log, log[-3000:]


# -- (b) a misbehaving Bot API ----------------------------------------------------------------------


@asynccontextmanager
async def running_bot(server: FakeBotAPI, data_dir: Path) -> AsyncIterator[Application]:
    config = Config(data_dir=data_dir, telegram_token=server.token, telegram_base_url=server.base_url)
    app = build_application(config)
    await start_polling(app, poll_timeout=1)
    try:
        yield app
    finally:
        await stop_polling(app)


@pytest.mark.parametrize("method", ["getUpdates", "sendMessage"])
@pytest.mark.parametrize("kind", ["429", "500", "502", "drop"])
async def test_bot_api_faults_delay_but_never_lose_a_reply(method: str, kind: str, data_dir: Path) -> None:
    async with FakeBotAPI(token=TOKEN) as server, running_bot(server, data_dir):
        users = [server.user(first_name=f"U{i}") for i in range(4)]
        openings = await asyncio.gather(*(start_roleplay(u, SCENARIOS[i % 3]) for i, u in enumerate(users)))
        await server.wait_idle(quiet=0.05)

        # Two faults in a row (the bot must retry past both), while all four users are talking.
        server.fail_next(method, count=2, kind=kind, retry_after=1)
        if method == "getUpdates":  # let the poll parked right now end: the faults hit the next ones
            await server.wait_until(lambda: server.faults_triggered.get(kind, 0) >= 1, timeout=5)
        for user in users:
            user.send_text(CURIOUS[1])
        replies = await asyncio.gather(*(u.next_reply(timeout=20) for u in users))
        for reply, opening in zip(replies, openings):
            assert persona_of(reply) == persona_of(opening)  # the persona's answer, not an apology
        assert server.faults_triggered.get(kind, 0) == 2

        # Exactly one answer each, and the bot carries on normally.
        await server.wait_idle(quiet=0.2)
        assert all(u.pending_replies() == [] for u in users)
        for user, opening in zip(users, openings):
            reply = await turn(user, CURIOUS[2])
            assert persona_of(reply) == persona_of(opening)


async def test_random_faults_on_every_method_during_whole_sessions(data_dir: Path) -> None:
    """5% of all calls fail (500 on sends, dropped connections on polls) while eight users practise."""
    async with FakeBotAPI(token=TOKEN) as server, running_bot(server, data_dir):
        server.fail_rate("*", "500", 0.05, seed=7)
        server.fail_rate("getUpdates", "drop", 0.05, seed=8)

        async def session(user: FakeUser, i: int) -> str:
            await start_roleplay(user, SCENARIOS[i % 3], timeout=30)
            for line in CURIOUS[:4]:
                reply = await turn(user, line, timeout=30)
                assert ":" in reply.text
            return await end_and_debrief(user, timeout=30)

        debriefs = await asyncio.gather(*(session(server.user(), i) for i in range(8)))
        assert all(CURIOUS[0] in d for d in debriefs)
        assert sum(server.faults_triggered.values()) > 0
        server.clear_faults()


# -- (c) a full or read-only disk -------------------------------------------------------------------


def _inject(monkeypatch: pytest.MonkeyPatch, data_dir: Path, where: str, code: int) -> None:
    """Make the store's writes under ``data_dir`` fail with ``code`` at ``where``; nothing else."""
    inside = str(data_dir)
    err = OSError(code, os.strerror(code))
    if where == "mkstemp":
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, **kwargs):  # type: ignore[no-untyped-def]
            if str(kwargs.get("dir", "")).startswith(inside):
                raise err
            return real_mkstemp(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    elif where == "fsync":
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(inside):
                raise err
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
            if str(dst).startswith(inside):
                raise err
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("where,code", [("mkstemp", errno.ENOSPC), ("fsync", errno.ENOSPC), ("replace", errno.EROFS)],
                         ids=["disk-full-on-create", "disk-full-on-sync", "read-only-on-rename"])
async def test_disk_full_or_read_only(where: str, code: int, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    async with FakeBotAPI(token=TOKEN) as server, running_bot(server, data_dir):
        alice, bob = server.user(first_name="Alice"), server.user(first_name="Bob")
        opening = await start_roleplay(alice, SCENARIOS[0])
        await turn(alice, CURIOUS[0])
        await start_roleplay(bob, SCENARIOS[1])
        await turn(bob, CURIOUS[0])
        await server.wait_idle(quiet=0.05)
        files = {u: data_dir / "users" / f"tg-{u.id}.json" for u in (alice, bob)}
        before = {u: p.read_bytes() for u, p in files.items()}

        caplog.set_level(logging.ERROR)
        _inject(monkeypatch, data_dir, where, code)
        sorry = await turn(alice, CURIOUS[1])
        assert "couldn't save that" in sorry.text and "storage" in sorry.text
        assert "Traceback" not in sorry.text and str(data_dir) not in sorry.text
        logged = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
        assert any("StoreError" in m and os.strerror(code) in m and f"tg-{alice.id}.json" in m for m in logged), logged
        await server.wait_idle(quiet=0.05)
        assert {u: p.read_bytes() for u, p in files.items()} == before  # nobody's file changed
        assert leftover_temp_files(data_dir) == []

        monkeypatch.undo()  # space again: the same role-play carries on where it was
        reply = await turn(alice, CURIOUS[1])
        assert persona_of(reply) == persona_of(opening)
        debrief = await end_and_debrief(alice)
        assert CURIOUS[0] in debrief and CURIOUS[1] in debrief
        assert files[bob].read_bytes() == before[bob]
        assert_store_intact(data_dir)


async def test_users_folder_blocked_by_a_file(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A real broken data directory (no injection): ``users`` is a plain file."""
    (data_dir / "users").write_text("not a folder")
    caplog.set_level(logging.ERROR)
    async with FakeBotAPI(token=TOKEN) as server, running_bot(server, data_dir):
        user = server.user()
        user.send_text("/practice")
        menu = await user.next_reply()
        user.press(menu, button_text=next(t for t in menu.button_texts if SCENARIOS[0] in t))
        sorry = await user.wait_for(lambda r: "storage" in (r.text or ""), timeout=5)
        assert "couldn't save that" in sorry.text
        user.send_text("/start")  # reading still works, saving the goal question does not
        await user.wait_for(lambda r: "couldn't save that" in (r.text or ""), timeout=5)
    logged = [r.getMessage() for r in caplog.records]
    assert any("StoreError: cannot create" in m and str(data_dir / "users") in m for m in logged), logged
    assert (data_dir / "users").read_text() == "not a folder"


async def test_archive_folder_unusable_when_a_session_ends(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Ending a role-play writes the archive first, then the user's own file. With the archive
    folder unusable (here a plain file stands in its way: no injection) the end fails cleanly:
    the user is told, the role-play is still running and still theirs, and once the folder can be
    made the same role-play ends with every turn in the debrief and in /history."""
    (data_dir / "archive").write_text("not a folder")
    caplog.set_level(logging.ERROR)
    async with FakeBotAPI(token=TOKEN) as server, running_bot(server, data_dir):
        alice = server.user(first_name="Alice")
        opening = await start_roleplay(alice, SCENARIOS[0])
        await turn(alice, CURIOUS[0])
        alice.send_text("/end")
        sorry = await alice.wait_for(lambda r: "storage" in (r.text or ""), timeout=10)
        assert "couldn't save that" in sorry.text
        reply = await turn(alice, CURIOUS[1])  # still in the same conversation
        assert persona_of(reply) == persona_of(opening)

        (data_dir / "archive").unlink()  # the operator clears the way
        debrief = await end_and_debrief(alice)
        assert CURIOUS[0] in debrief and CURIOUS[1] in debrief
        alice.send_text("/history")
        history = await alice.wait_for(lambda r: "Your practice sessions" in (r.text or ""), timeout=10)
        assert history.text.count("/100") == 1
    logged = [r.getMessage() for r in caplog.records]
    assert any("StoreError: cannot create" in m and str(data_dir / "archive") in m for m in logged), logged
    assert_store_intact(data_dir)


async def test_an_unparsable_update_is_skipped_not_retried_forever(data_dir: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """One update PTB cannot read (here a message whose ``date`` is not a number) must not block
    the updates behind it: PTB alone would fetch the same batch again and again."""
    caplog.set_level(logging.WARNING)
    async with FakeBotAPI(token=TOKEN) as server, running_bot(server, data_dir):
        user = server.user()
        bad = enqueue_unparsable(server, user)
        user.send_text("/help")
        reply = await user.next_reply(timeout=10)
        assert "/practice" in reply.text
        assert server.pending_updates == 0
    assert_skipped_quietly(caplog.records, bad)  # a user's content never reaches the log

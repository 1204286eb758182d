"""The ``Store`` protocol as a contract, checked against two backends.

``TinyDBStore`` is what runs; ``MemoryStore`` below is a second, independent implementation of
the same protocol. Both must pass every test here, and the practice engine and the Telegram bot
must work on either without a line of their code changing: that is the seam a PostgreSQL backend
would plug into (docs/scaling.md), and these tests are what it would have to pass.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import pytest

from bot.config import Config
from bot.scenarios import ScenarioLibrary
from bot.session import PracticeEngine
from bot.store import USER_ID_RE, Store, TinyDBStore
from bot.telegram.app import build_application, start_polling, stop_polling
from tests.fakes import FakeBotAPI


class MemoryStore:
    """Records in a dict, one lock per user; values are copied in and out like a real database."""

    def __init__(self) -> None:
        self._users: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def _lock(self, user_id: str) -> threading.Lock:
        if not USER_ID_RE.match(user_id):
            raise ValueError(f"invalid user id {user_id!r}")
        with self._guard:
            return self._locks[user_id]

    @staticmethod
    def _copy(record: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(record))  # only JSON survives, as in any database

    def get(self, user_id: str, table: str, key: str) -> dict[str, Any] | None:
        with self._lock(user_id):
            row = self._users.get(user_id, {}).get(table, {}).get(key)
            return self._copy(row) if row is not None else None

    def put(self, user_id: str, table: str, key: str, record: dict[str, Any]) -> None:
        with self._lock(user_id):
            self._users.setdefault(user_id, {}).setdefault(table, {})[key] = self._copy(record)

    def update(self, user_id: str, table: str, key: str,
               change: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> dict[str, Any] | None:
        return self.update_many(user_id, {(table, key): change})[(table, key)]

    def update_many(self, user_id: str, changes: dict[tuple[str, str], Callable]) -> dict[tuple[str, str], Any]:
        with self._lock(user_id):
            tables = self._users.setdefault(user_id, {})
            staged = {name: dict(rows) for name, rows in tables.items()}  # applied only if every change succeeds
            results = {}
            for (table, key), change in changes.items():
                rows = staged.setdefault(table, {})
                old = rows.get(key)
                new = change(self._copy(old) if old is not None else None)
                if new is None:
                    rows.pop(key, None)
                else:
                    rows[key] = self._copy(new)
                results[(table, key)] = new
            self._users[user_id] = staged
            return results

    def all(self, user_id: str, table: str) -> list[dict[str, Any]]:
        with self._lock(user_id):
            return [self._copy(r) for r in self._users.get(user_id, {}).get(table, {}).values()]

    def delete(self, user_id: str, table: str, key: str) -> bool:
        with self._lock(user_id):
            return self._users.get(user_id, {}).get(table, {}).pop(key, None) is not None

    def export_user(self, user_id: str) -> dict[str, Any]:
        with self._lock(user_id):
            tables = self._users.get(user_id, {})
            return {name: [self._copy(r) for r in rows.values()] for name, rows in sorted(tables.items()) if rows}

    def delete_user(self, user_id: str) -> bool:
        with self._lock(user_id):
            return self._users.pop(user_id, None) is not None

    def user_ids(self) -> list[str]:
        with self._guard:
            return sorted(uid for uid, tables in self._users.items() if tables)


@pytest.fixture(params=["tinydb", "memory"])
def backend(request: pytest.FixtureRequest, data_dir: Path) -> Store:
    return TinyDBStore(data_dir) if request.param == "tinydb" else MemoryStore()


def test_both_backends_implement_the_protocol(backend: Store) -> None:
    for name in ("get", "put", "update", "update_many", "all", "delete", "export_user", "delete_user", "user_ids"):
        assert callable(getattr(backend, name)), name


def test_round_trip_upsert_and_missing(backend: Store) -> None:
    record = {"text": "héllo 👋 <b>& \u202e", "n": 1, "nested": {"list": [1, None, True]}}
    backend.put("tg-1", "sessions", "s1", record)
    assert backend.get("tg-1", "sessions", "s1") == record
    backend.put("tg-1", "sessions", "s1", {"n": 2})  # upsert replaces
    assert backend.all("tg-1", "sessions") == [{"n": 2}]
    assert backend.get("tg-1", "sessions", "nope") is None
    assert backend.get("tg-2", "sessions", "s1") is None
    assert backend.all("tg-2", "sessions") == []


def test_records_are_copies(backend: Store) -> None:
    record = {"turns": ["a"]}
    backend.put("u1", "t", "k", record)
    record["turns"].append("changed after put")
    got = backend.get("u1", "t", "k")
    got["turns"].append("changed after get")
    assert backend.get("u1", "t", "k") == {"turns": ["a"]}


def test_update_is_read_modify_write_and_none_deletes(backend: Store) -> None:
    seen = []
    backend.update("u1", "t", "k", lambda r: seen.append(r) or {"n": 1})
    backend.update("u1", "t", "k", lambda r: seen.append(r) or {"n": r["n"] + 1})
    assert seen == [None, {"n": 1}] and backend.get("u1", "t", "k") == {"n": 2}
    assert backend.update("u1", "t", "k", lambda r: None) is None
    assert backend.get("u1", "t", "k") is None
    assert backend.delete("u1", "t", "k") is False
    backend.put("u1", "t", "k", {"x": 1})
    assert backend.delete("u1", "t", "k") is True


def test_update_many_applies_all_changes_or_none(backend: Store) -> None:
    backend.put("u1", "profile", "profile", {"goal": "listen more", "active_session": "s1"})
    backend.put("u1", "sessions", "s1", {"status": "active"})

    def boom(_old: dict[str, Any] | None) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        backend.update_many("u1", {("sessions", "s1"): lambda r: {**r, "status": "ended"},
                                   ("profile", "profile"): boom})
    assert backend.get("u1", "sessions", "s1") == {"status": "active"}  # the first change was not kept either

    got = backend.update_many("u1", {("sessions", "s1"): lambda r: {**r, "status": "ended"},
                                     ("sessions", "s2"): lambda r: {"status": "active"},
                                     ("profile", "profile"): lambda p: {**p, "active_session": "s2"}})
    assert got[("profile", "profile")] == {"goal": "listen more", "active_session": "s2"}
    assert [r["status"] for r in backend.all("u1", "sessions")] == ["ended", "active"]
    assert backend.get("u1", "profile", "profile")["active_session"] == "s2"


def test_concurrent_updates_lose_nothing(backend: Store) -> None:
    def bump() -> None:
        for _ in range(50):
            backend.update("u1", "counter", "c", lambda r: {"n": (r or {"n": 0})["n"] + 1})

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.get("u1", "counter", "c") == {"n": 200}


def test_users_are_separate_and_export_delete(backend: Store) -> None:
    backend.put("u1", "sessions", "s1", {"score": 1})
    backend.put("u1", "profile", "profile", {"goal": "g"})
    backend.put("u2", "sessions", "s1", {"score": 2})
    assert backend.user_ids() == ["u1", "u2"]
    assert backend.export_user("u1") == {"profile": [{"goal": "g"}], "sessions": [{"score": 1}]}
    assert backend.delete_user("u1") is True and backend.delete_user("u1") is False
    assert backend.export_user("u1") == {} and backend.get("u1", "profile", "profile") is None
    assert backend.user_ids() == ["u2"] and backend.get("u2", "sessions", "s1") == {"score": 2}


def test_user_ids_are_validated(backend: Store) -> None:
    for bad in ["../etc", "a/b", "", "x" * 65]:
        with pytest.raises(ValueError):
            backend.put(bad, "t", "k", {})


async def test_the_engine_runs_unchanged_on_either_backend(backend: Store, library: ScenarioLibrary) -> None:
    engine = PracticeEngine(backend, library)
    session = await engine.start("u1", "tech-meetup")
    result = await engine.say("u1", "Hi! What are you working on at the moment?")
    assert result.reply
    assert engine.active("u1").id == session.id  # a second engine on the same store would see it too
    ended, debrief = await engine.end("u1")
    assert ended.status == "ended" and 0 <= debrief.focus_score <= 100
    assert [s.id for s in engine.history("u1")] == [session.id]


async def test_the_telegram_bot_runs_on_the_second_backend(library: ScenarioLibrary, data_dir: Path) -> None:
    store = MemoryStore()
    async with FakeBotAPI(token="6161:CONTRACT-token") as server:
        config = Config(data_dir=data_dir, telegram_token=server.token, telegram_base_url=server.base_url)
        app = build_application(config, engine=PracticeEngine(store, library))
        await start_polling(app, poll_timeout=1)
        try:
            user = server.user()
            user.send_text("/practice")
            menu = await user.next_reply()
            user.press(menu, button_text=next(t for t in menu.button_texts if "Data engineering meetup" in t))
            await user.wait_for(lambda r: r.edited)
            opening = await user.next_reply()
            user.send_text("How did you get into data engineering?")
            assert (await user.next_reply()).text.startswith("Priya: ")
            user.press(opening, button_text="🏁 End & debrief")
            debrief = await user.wait_for(lambda r: "Focus score" in (r.text or ""))
            assert "How did you get into data engineering?" in debrief.text
        finally:
            await stop_polling(app)
    assert store.all(f"tg-{user.id}", "sessions") == []
    assert [s["status"] for s in store.all(f"tg-{user.id}", "sessions_archive")] == ["ended"]
    assert not (data_dir / "users").exists()  # nothing touched the TinyDB folder

"""The per-user TinyDB store: atomic writes, per-user files and locks, export and delete."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.store import SCHEMA_VERSION, StoreError, TinyDBStore
from tests.conftest import ROOT


def test_round_trip_and_one_file_per_user(store: TinyDBStore, data_dir: Path) -> None:
    store.put("tg-1", "sessions", "s1", {"score": 80, "text": "héllo 👋 <b>&"})
    store.put("tg-2", "sessions", "s1", {"score": 20})
    assert store.get("tg-1", "sessions", "s1") == {"score": 80, "text": "héllo 👋 <b>&"}
    assert store.get("tg-2", "sessions", "s1") == {"score": 20}
    assert store.get("tg-3", "sessions", "s1") is None
    assert sorted(p.name for p in (data_dir / "users").glob("*.json")) == ["tg-1.json", "tg-2.json"]
    assert store.user_ids() == ["tg-1", "tg-2"]


def test_file_carries_a_schema_version(store: TinyDBStore, data_dir: Path) -> None:
    store.put("u1", "profile", "profile", {"goal": "meet people"})
    raw = json.loads((data_dir / "users" / "u1.json").read_text())
    assert raw["_meta"]["1"]["schema_version"] == SCHEMA_VERSION


def test_newer_schema_is_refused_not_overwritten(store: TinyDBStore, data_dir: Path) -> None:
    store.put("u1", "profile", "profile", {"goal": "x"})
    path = data_dir / "users" / "u1.json"
    raw = json.loads(path.read_text())
    raw["_meta"]["1"]["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(raw))
    with pytest.raises(StoreError, match="newer netcoach"):
        store.put("u1", "profile", "profile", {"goal": "y"})
    assert json.loads(path.read_text()) == raw


def test_upsert_update_delete(store: TinyDBStore) -> None:
    store.put("u1", "t", "a", {"n": 1})
    store.put("u1", "t", "a", {"n": 2})
    assert store.all("u1", "t") == [{"n": 2}]
    store.update("u1", "t", "a", lambda r: {"n": (r or {})["n"] + 1})
    assert store.get("u1", "t", "a") == {"n": 3}
    store.update("u1", "t", "a", lambda r: None)
    assert store.get("u1", "t", "a") is None
    assert store.delete("u1", "t", "missing") is False


def test_export_and_delete_user(store: TinyDBStore, data_dir: Path) -> None:
    store.put("u1", "sessions", "s1", {"score": 1})
    store.put("u1", "profile", "profile", {"goal": "g"})
    store.put("u2", "sessions", "s1", {"score": 2})
    exported = store.export_user("u1")
    assert exported == {"profile": [{"goal": "g"}], "sessions": [{"score": 1}]}
    assert store.delete_user("u1") is True
    assert not (data_dir / "users" / "u1.json").exists()
    assert store.export_user("u1") == {}
    assert store.get("u2", "sessions", "s1") == {"score": 2}
    assert store.delete_user("u1") is False


def test_archive_tables_live_in_their_own_file_and_go_with_the_user(store: TinyDBStore, data_dir: Path) -> None:
    """``*_archive`` tables (finished sessions) are kept apart so the everyday file stays small;
    reads, export and delete treat the two files as one user."""
    store.put("u1", "profile", "profile", {"goal": "g"})
    store.put("u1", "sessions_archive", "s1", {"score": 1})
    assert "sessions_archive" not in json.loads((data_dir / "users" / "u1.json").read_text())
    assert json.loads((data_dir / "archive" / "u1.json").read_text())["sessions_archive"]
    assert store.get("u1", "sessions_archive", "s1") == {"score": 1}
    assert store.export_user("u1") == {"profile": [{"goal": "g"}], "sessions_archive": [{"score": 1}]}
    # one operation writes one file, so it cannot span both and stay all-or-nothing
    with pytest.raises(ValueError, match="archive"):
        store.update_many("u1", {("profile", "profile"): lambda p: {}, ("sessions_archive", "s2"): lambda r: {"n": 2}})
    assert store.get("u1", "profile", "profile") == {"goal": "g"} and store.get("u1", "sessions_archive", "s2") is None
    assert store.delete_user("u1") is True
    assert list(data_dir.rglob("u1.*")) == [] and store.export_user("u1") == {}


def test_rejects_path_tricks_in_user_ids(store: TinyDBStore) -> None:
    for bad in ["../etc", "a/b", "", "x" * 65, "tg 1"]:
        with pytest.raises(ValueError):
            store.put(bad, "t", "k", {})


def test_failed_write_leaves_previous_file_valid(store: TinyDBStore, data_dir: Path, monkeypatch) -> None:
    store.put("u1", "sessions", "s1", {"turns": ["first"]})
    path = data_dir / "users" / "u1.json"
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StoreError, match="No space left"):
        store.put("u1", "sessions", "s1", {"turns": ["first", "second"]})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert store.get("u1", "sessions", "s1") == {"turns": ["first"]}
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"] == []


def test_one_operation_writes_the_file_once(store: TinyDBStore, data_dir: Path, monkeypatch) -> None:
    """A new user's first record, or several records changed together, cost one durable write
    (each one is an fsync: the slowest thing a turn does)."""
    replaced: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append(str(dst)), real_replace(src, dst))[1])
    store.put("u1", "sessions", "s1", {"n": 1})  # also stamps the schema version of the new file
    store.update_many("u1", {("sessions", "s1"): lambda r: {"n": 2}, ("sessions", "s2"): lambda r: {"n": 1},
                             ("profile", "profile"): lambda p: {"active_session": "s2"}})
    assert len(replaced) == 2
    doc = json.loads((data_dir / "users" / "u1.json").read_text())
    assert doc["_meta"]["1"]["schema_version"] == SCHEMA_VERSION and len(doc["sessions"]) == 2


def test_reads_do_not_wait_for_a_writer(store: TinyDBStore, data_dir: Path) -> None:
    """Files are replaced whole, so a reader needs no lock: while a slow write holds the user's
    locks, reads still answer at once, with the last committed data."""
    store.put("u1", "profile", "profile", {"goal": "ask more"})
    inside, release = threading.Event(), threading.Event()

    def slow(profile):
        inside.set()
        release.wait(10)
        return {**profile, "goal": "listen more"}

    writer = threading.Thread(target=store.update, args=("u1", "profile", "profile", slow))
    writer.start()
    try:
        assert inside.wait(10)
        got: list = []
        reader = threading.Thread(target=lambda: got.append(store.get("u1", "profile", "profile")))
        reader.start()
        reader.join(5)
        assert got == [{"goal": "ask more"}]
    finally:
        release.set()
        writer.join(10)
    assert store.get("u1", "profile", "profile") == {"goal": "listen more"}


async def test_async_write_matches_the_blocking_one(store: TinyDBStore, data_dir: Path, monkeypatch) -> None:
    """``aupdate_many`` (what the bot uses) stores the same records, in one durable write, and a
    change that raises leaves the file exactly as it was."""
    replaced: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append(str(dst)), real_replace(src, dst))[1])
    got = await store.aupdate_many("u1", {("sessions", "s1"): lambda r: {"text": "héllo <b>&"},
                                          ("profile", "profile"): lambda p: {"active_session": "s1"}})
    assert got == {("sessions", "s1"): {"text": "héllo <b>&"}, ("profile", "profile"): {"active_session": "s1"}}
    assert len(replaced) == 1
    assert store.get("u1", "sessions", "s1") == {"text": "héllo <b>&"}
    path = data_dir / "users" / "u1.json"
    before = path.read_bytes()

    def boom(_record):
        raise ValueError("bad change")

    with pytest.raises(ValueError):
        await store.aupdate_many("u1", {("profile", "profile"): lambda p: {**p, "goal": "x"}, ("sessions", "s1"): boom})
    assert path.read_bytes() == before and len(replaced) == 1
    await store.aupdate_many("u1", {("profile", "profile"): lambda p: {**p, "goal": "x"}})  # not left locked
    assert store.get("u1", "profile", "profile") == {"active_session": "s1", "goal": "x"}


@pytest.mark.parametrize("holder", ["thread", "other process"])
async def test_async_write_waits_for_a_locked_user_without_blocking_others(
    store: TinyDBStore, data_dir: Path, holder: str
) -> None:
    """While another thread (or process: the file lock) holds a user's lock, an async write for
    that user waits off the event loop: other users' writes still complete, and neither change
    to the locked user is lost."""
    import fcntl

    store.put("u1", "profile", "profile", {"n": 0})
    release = threading.Event()
    if holder == "thread":
        inside = threading.Event()

        def slow(profile):
            inside.set()
            release.wait(10)
            return {**profile, "n": profile["n"] + 1, "first": True}

        blocker = threading.Thread(target=store.update, args=("u1", "profile", "profile", slow))
        blocker.start()
        assert inside.wait(10)
    else:
        fd = os.open(data_dir / "users" / "u1.lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a separate open file: the same as another process's lock

        def unlock_later():
            release.wait(10)
            os.close(fd)

        blocker = threading.Thread(target=unlock_later)
        blocker.start()
    try:
        waiting = asyncio.create_task(
            store.aupdate_many("u1", {("profile", "profile"): lambda p: {**p, "n": p["n"] + 1}}))
        await asyncio.wait_for(store.aupdate_many("u2", {("t", "k"): lambda r: {"ok": True}}), 10)
        assert store.get("u2", "t", "k") == {"ok": True}
        assert not waiting.done()
    finally:
        release.set()
    await asyncio.wait_for(waiting, 10)
    blocker.join(10)
    expected = {"n": 2, "first": True} if holder == "thread" else {"n": 1}
    assert store.get("u1", "profile", "profile") == expected


async def test_cancelled_async_write_still_finishes_and_unlocks(store: TinyDBStore, data_dir: Path) -> None:
    """A handler cancelled while its write is on the disk (shutdown, say): the write completes
    and the user is not left locked."""
    ran = []
    task = asyncio.create_task(store.aupdate_many("u1", {("t", "k"): lambda r: ran.append(1) or {"v": 1}}))
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.wait_for(store.aupdate_many("u1", {("t", "k2"): lambda r: {"v": 2}}), 10)
    assert ran == [1]  # the change ran before the cancel, so its write was handed over: it must land
    assert store.get("u1", "t", "k") == {"v": 1}
    assert store.get("u1", "t", "k2") == {"v": 2}
    json.loads((data_dir / "users" / "u1.json").read_text())


def test_corrupt_file_is_reported_and_left_alone(store: TinyDBStore, data_dir: Path) -> None:
    store.put("u1", "t", "k", {"a": 1})
    path = data_dir / "users" / "u1.json"
    path.write_text('{"t": {"1": ')
    with pytest.raises(StoreError, match="not valid JSON"):
        store.get("u1", "t", "k")
    assert path.read_text() == '{"t": {"1": '
    store.put("u2", "t", "k", {"b": 2})  # other users are unaffected
    assert store.get("u2", "t", "k") == {"b": 2}


def test_read_only_data_dir_gives_a_clear_error(store: TinyDBStore, data_dir: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permissions; simulate a read-only folder with a file where the folder should be
        bad = TinyDBStore(data_dir / "blocked")
        (data_dir / "blocked").write_text("not a folder")
        with pytest.raises(StoreError, match="cannot create"):
            bad.put("u1", "t", "k", {"a": 1})
    else:
        store.put("u1", "t", "k", {"a": 1})
        (data_dir / "users").chmod(0o500)
        try:
            with pytest.raises(StoreError, match="cannot write"):
                store.put("u1", "t", "k", {"a": 2})
        finally:
            (data_dir / "users").chmod(0o700)
        assert store.get("u1", "t", "k") == {"a": 1}


WRITER = """
import sys
from bot.store import TinyDBStore
store = TinyDBStore(sys.argv[1])
i = 0
while True:
    i += 1
    store.put("victim", "sessions", "s", {"i": i, "pad": "x" * 20000})
    if i == 3:
        print("ready", flush=True)
"""


def test_kill_minus_nine_mid_write_never_corrupts(data_dir: Path) -> None:
    """A real crash: kill -9 a process that writes in a loop; the file must always parse."""
    for attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 * (attempt + 1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        path = data_dir / "users" / "victim.json"
        record = TinyDBStore(data_dir).get("victim", "sessions", "s")
        assert record is not None and record["i"] >= 3
        json.loads(path.read_text())

"""Per-user storage: the small interface the engine needs, and its TinyDB adapter.

Each user has one JSON file under the data directory, so one user's traffic never waits for
another's and a damaged file can only ever affect one person. Files are written whole or not at
all (:mod:`bot.durable`: temp file, fsync, ``os.replace``), never in place as TinyDB's own storage does.

Writers are serialised per user: a ``threading.Lock`` inside the process and an ``flock`` on a
sidecar lock file across processes (the terminal and the bot may share a data directory). Changes
made inside one operation are buffered and written once, so ``update_many`` is all-or-nothing.

Readers take no lock at all: a file is only ever replaced whole (``os.replace``), so a reader sees
the old or the new version, never a mix. That keeps a read to one small page-cache read (about
0.1 ms), cheap enough to run on the event loop (``inline_reads``; see :func:`read_call`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, TypeVar

from tinydb import Query, TinyDB
from tinydb.table import Document, Table

from bot.durable import AtomicJSONStorage, StagedWrite, StoreError, finish_write, stage_write

try:  # POSIX only; elsewhere the in-process lock still applies.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 1
INLINE_MAX_BYTES = 64 * 1024  # larger files are read, changed and written in a worker thread
USER_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


Change = Callable[[dict[str, Any] | None], dict[str, Any] | None]
"""Gets the current record (None if absent), returns the new one (None deletes it)."""

T = TypeVar("T")


ARCHIVE_SUFFIX = "_archive"


def is_archive(table: str) -> bool:
    """Tables named ``*_archive`` hold records that grow without bound and are rarely read
    (finished sessions). A backend may keep them apart from the user's other records so that the
    everyday reads and writes stay small; one :meth:`Store.update_many` then may not mix the two."""
    return table.endswith(ARCHIVE_SUFFIX)


class Store(Protocol):
    """Records grouped by user and table, each record keyed by a string.

    Kept this small on purpose: a second backend (e.g. PostgreSQL) only has to implement these.
    """

    def get(self, user_id: str, table: str, key: str) -> dict[str, Any] | None: ...

    def put(self, user_id: str, table: str, key: str, record: dict[str, Any]) -> None: ...

    def all(self, user_id: str, table: str) -> list[dict[str, Any]]: ...

    def delete(self, user_id: str, table: str, key: str) -> bool: ...

    def update(
        self, user_id: str, table: str, key: str, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]
    ) -> dict[str, Any] | None: ...

    def update_many(self, user_id: str, changes: Mapping[tuple[str, str], Change]) -> dict[tuple[str, str], Any]:
        """Several read-modify-writes of one user's records, applied together or not at all."""
        ...

    def export_user(self, user_id: str) -> dict[str, Any]: ...

    def delete_user(self, user_id: str) -> bool: ...

    def user_ids(self) -> list[str]: ...


_BUSY: Any = -1  # _lock_file: somebody else holds the lock (never a real descriptor)


class TinyDBStore:
    """One TinyDB file per user, ``<data_dir>/users/<user_id>.json``, and a second one for the
    user's archive tables (:func:`is_archive`), ``<data_dir>/archive/<user_id>.json``.

    Why two: every turn rewrites the file it changes, and a reply waits for that. With finished
    sessions in the same file, a user with 300 of them (about 800 kB) paid 75 ms per turn and
    29 ms per profile read, on the event loop; the everyday file now stays the size of one
    session whatever the history."""

    inline_reads = True  # reads are lock-free reads of small local files: see the module docstring

    def __init__(self, data_dir: str | os.PathLike[str]):
        self.data_dir = Path(data_dir)
        self.users_dir = self.data_dir / "users"
        self.archive_dir = self.data_dir / "archive"
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------

    def _path(self, user_id: str, table: str = "") -> Path:
        if not USER_ID_RE.match(user_id):
            raise ValueError(f"invalid user id {user_id!r}")
        return (self.archive_dir if is_archive(table) else self.users_dir) / f"{user_id}.json"

    def _path_for(self, user_id: str, changes: Mapping[tuple[str, str], Change]) -> Path:
        """The one file ``changes`` touch (one operation is atomic because it writes one file)."""
        kinds = {is_archive(table) for table, _ in changes}
        if len(kinds) > 1:
            raise ValueError("one update_many cannot mix archive tables with the others")
        return self._path(user_id, next(iter(changes))[0] if changes else "")

    def _lock(self, user_id: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(user_id)
            if lock is None:
                lock = self._locks[user_id] = threading.Lock()
            return lock

    @contextlib.contextmanager
    def _open(self, path: Path, user_id: str, create: bool) -> Iterator[TinyDB | None]:
        """Hold the user's locks and yield the database at ``path`` (None if absent and not creating)."""
        with self._lock(user_id):
            if not create and not path.exists():
                yield None
                return
            self._make_dir(path.parent)
            with self._file_lock(path), self._database(path) as db:
                yield db
                db.storage.commit()  # not reached if the operation raised: nothing is written

    @contextlib.contextmanager
    def _database(self, path: Path) -> Iterator[TinyDB]:
        """The database of one locked operation, its schema checked; closed (changes not committed
        are dropped) on the way out."""
        db = TinyDB(path, storage=AtomicJSONStorage)
        try:
            self._check_schema(db, path)
            yield db
        finally:
            db.close()

    @staticmethod
    def _make_dir(folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {folder}: {exc.strerror}") from None

    def _snapshot(self, user_id: str, table: str = "") -> TinyDB:
        """The database holding ``table`` as it is on disk now, for reading only (no locks: see the
        module docstring). A user without a file reads as an empty database."""
        path = self._path(user_id, table)
        db = TinyDB(path, storage=AtomicJSONStorage)
        raw = db.storage.read() or {}
        version = raw.get("_meta", {}).get("1", {}).get("schema_version", 0)  # what _check_schema reads, minus TinyDB's overhead
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path.name} was written by a newer netcoach (schema {version}); upgrade netcoach")
        return db

    @contextlib.contextmanager
    def _file_lock(self, path: Path) -> Iterator[None]:
        fd = self._lock_file(path, wait=True)
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)

    @staticmethod
    def _lock_file(path: Path, wait: bool) -> int | None:
        """Take the cross-process lock on ``path``: its open descriptor (closing it unlocks), None if
        there is nothing to lock with (no ``fcntl``, or a read-only folder: reads still work, a write
        then fails with a clear StoreError), or ``_BUSY`` if ``wait`` is False and someone holds it."""
        if fcntl is None:
            return None
        try:
            fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return _BUSY
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _check_schema(db: TinyDB, path: Path) -> None:
        meta = db.table("_meta")
        row = meta.get(doc_id=1)
        if row is None:
            if len(db.tables()) <= 1:  # brand-new file: stamp it
                meta.insert({"schema_version": SCHEMA_VERSION})
            return
        version = row.get("schema_version", 0)
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path.name} was written by a newer netcoach (schema {version}); upgrade netcoach")
        # Future migrations go here, one step per version, each followed by a version bump.

    # -- the Store interface ------------------------------------------------------------------

    def get(self, user_id: str, table: str, key: str) -> dict[str, Any] | None:
        row = self._snapshot(user_id, table).table(table).get(Query()._key == key)
        return _strip(row) if row is not None else None

    def put(self, user_id: str, table: str, key: str, record: dict[str, Any]) -> None:
        with self._open(self._path(user_id, table), user_id, create=True) as db:
            assert db is not None
            _replace(db.table(table), key, record)

    def update(self, user_id: str, table: str, key: str, change: Change) -> dict[str, Any] | None:
        """Read-modify-write one record under the user's lock; ``change`` returning None deletes it."""
        return self.update_many(user_id, {(table, key): change})[(table, key)]

    def update_many(self, user_id: str, changes: Mapping[tuple[str, str], Change]) -> dict[tuple[str, str], Any]:
        """Apply every change under one lock and write the file once: all of them or, if one
        raises, none."""
        with self._open(self._path_for(user_id, changes), user_id, create=True) as db:
            assert db is not None
            return _apply(db, changes)

    async def aupdate_many(self, user_id: str, changes: Mapping[tuple[str, str], Change]) -> dict[tuple[str, str], Any]:
        """:meth:`update_many` for the event loop: the same locks, result and atomic write, but only
        the slow file system calls (fsync, rename) run in a worker thread.

        Why: a worker thread that runs Python (parsing, TinyDB, JSON) holds the GIL, and the event
        loop waits for it after every socket call: in the load benchmark that made each ``send``
        nine times slower. Reading, changing, serialising one small file and writing it to the page
        cache take a fraction of a millisecond, so they run inline; the thread only waits on the
        disk, with the GIL released.
        If another thread or process holds the user's lock, the whole operation goes to a thread
        as :meth:`update_many` (the loop never blocks on a lock); so does the write of a file too
        big to handle in a fraction of a millisecond (a long archive: 30 ms at 300 sessions), where
        holding the loop that long would cost more than sharing the GIL with a thread."""
        path = self._path_for(user_id, changes)
        lock = self._lock(user_id)
        if _size(path) > INLINE_MAX_BYTES or not lock.acquire(blocking=False):
            return await asyncio.to_thread(self.update_many, user_id, changes)
        fd: int | None = None
        try:
            self._make_dir(path.parent)
            fd = self._lock_file(path, wait=False)
            if fd != _BUSY:
                with self._database(path) as db:
                    results = _apply(db, changes)
                    payload = db.storage.payload()
                staged = stage_write(path, payload) if payload is not None else None
        except BaseException:
            _unlock(fd, lock)
            raise
        if fd == _BUSY:  # another process is writing this user: wait for it in a thread
            lock.release()
            return await asyncio.to_thread(self.update_many, user_id, changes)
        # The thread makes the write durable, then unlocks. Shielded: if our caller is cancelled
        # meanwhile, the write still finishes and the locks are still released (a queued job
        # cancelled before it ran would keep the user locked forever).
        loop = asyncio.get_running_loop()
        await asyncio.shield(loop.run_in_executor(None, _finish_and_unlock, staged, fd, lock))
        return results

    def all(self, user_id: str, table: str) -> list[dict[str, Any]]:
        return [_strip(r) for r in self._snapshot(user_id, table).table(table).all()]

    def delete(self, user_id: str, table: str, key: str) -> bool:
        with self._open(self._path(user_id, table), user_id, create=False) as db:
            if db is None:
                return False
            return bool(db.table(table).remove(Query()._key == key))

    def export_user(self, user_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for db in (self._snapshot(user_id), self._snapshot(user_id, ARCHIVE_SUFFIX)):
            out.update({name: [_strip(r) for r in db.table(name).all()] for name in db.tables() if not name.startswith("_")})
        return dict(sorted(out.items()))

    def delete_user(self, user_id: str) -> bool:
        """Delete both of the user's files (the archive first: a crash half-way leaves a user who
        still exists, never an archive nobody can reach)."""
        deleted = False
        with self._lock(user_id):
            for path in (self._path(user_id, ARCHIVE_SUFFIX), self._path(user_id)):
                with self._file_lock(path):
                    try:
                        path.unlink()
                        deleted = True
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        raise StoreError(f"cannot delete {path.name}: {exc.strerror}") from None
                with contextlib.suppress(OSError):
                    path.with_suffix(".lock").unlink()
        return deleted

    def user_ids(self) -> list[str]:
        if not self.users_dir.is_dir():
            return []
        return sorted(p.stem for p in self.users_dir.glob("*.json"))


def _replace(tbl: Table, key: str, record: dict[str, Any], row: Document | None = None) -> None:
    """Store ``record`` under ``key``, replacing the old record whole. (TinyDB's ``upsert`` merges
    into the old document, so a field the new record no longer has would silently live on.) An
    existing record keeps its place, so ``all`` keeps insertion order."""
    fields = {**record, "_key": key}
    if row is None:
        row = tbl.get(Query()._key == key)
    if row is None:
        tbl.insert(fields)
        return

    def overwrite(doc: dict[str, Any]) -> None:
        doc.clear()
        doc.update(fields)

    tbl.update(overwrite, doc_ids=[row.doc_id])


def _apply(db: TinyDB, changes: Mapping[tuple[str, str], Change]) -> dict[tuple[str, str], Any]:
    """Run each read-modify-write of ``changes`` on ``db`` (the caller holds the locks and commits)."""
    results: dict[tuple[str, str], Any] = {}
    for (table, key), change in changes.items():
        tbl = db.table(table)
        row = tbl.get(Query()._key == key)
        new = change(_strip(row) if row is not None else None)
        if new is None:
            if row is not None:
                tbl.remove(doc_ids=[row.doc_id])
        else:
            _replace(tbl, key, new, row)
        results[(table, key)] = new
    return results


def _finish_and_unlock(staged: StagedWrite | None, fd: int | None, lock: threading.Lock) -> None:
    try:
        if staged is not None:
            finish_write(staged)
    finally:
        _unlock(fd, lock)


def _unlock(fd: int | None, lock: threading.Lock) -> None:
    """Release what ``aupdate_many`` took: the file lock's descriptor (if any) and the thread lock."""
    if fd is not None and fd != _BUSY:
        os.close(fd)
    lock.release()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "_key"}


async def read_call(store: Any, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a read-only call on ``store`` from async code: inline when the backend's reads never
    wait (``inline_reads``), in a worker thread otherwise (a network database, say).

    Why inline: a hop to a worker thread costs 1-5 ms once the event loop is busy (the worker
    must win the GIL back from it), far more than a TinyDB read itself (about 0.1 ms).
    Writes always go to a thread: they fsync (see :func:`write_many`).
    """
    if getattr(store, "inline_reads", False):
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


async def write_many(store: Any, user_id: str, changes: Mapping[tuple[str, str], Change]) -> dict[tuple[str, str], Any]:
    """``store.update_many`` from async code without holding up the event loop: the backend's own
    ``aupdate_many`` if it has one (TinyDB: only the disk work leaves the loop), else a worker thread."""
    native = getattr(store, "aupdate_many", None)
    if native is not None:
        return await native(user_id, changes)
    return await asyncio.to_thread(store.update_many, user_id, changes)

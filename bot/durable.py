"""Durable files: a whole new version or the old one, never half of each.

TinyDB's own ``JSONStorage`` rewrites a file in place, so a crash mid-write leaves half a file.
Here every write goes to a temp file in the same folder, is fsynced, ``os.replace``\\ d over the old
file, and the folder is fsynced: readers see the old or the new version, and a version the user was
told about survives a power cut. :mod:`bot.store` builds the per-user store on this.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from tinydb.storages import Storage


class StoreError(RuntimeError):
    """The store cannot do what was asked (unreadable file, disk full, read-only folder...)."""


_UNREAD = object()


class AtomicJSONStorage(Storage):
    """TinyDB storage that never leaves a half-written file behind.

    One instance serves one store operation, opened and closed while the user's locks are held,
    so nobody else can change the file meanwhile: the document is parsed once and then kept, and
    the operation's changes are written once, by :meth:`commit`. (TinyDB reads its storage afresh
    for every table access and writes after every change: several parses and fsyncs of the same
    file per operation otherwise.)
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._data: Any = _UNREAD
        self._dirty = False

    def read(self) -> dict[str, Any] | None:
        if self._data is _UNREAD:
            self._data = self._load()
        return self._data

    def _load(self) -> dict[str, Any] | None:
        try:
            raw = self.path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # no file yet (or no users folder): nothing stored
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self.path.name}: {exc.strerror}") from None
        if not raw.strip():
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            raise StoreError(f"{self.path.name} is not valid JSON; left untouched for inspection") from None
        if not isinstance(data, dict):
            raise StoreError(f"{self.path.name} does not hold a TinyDB document")
        return data

    def write(self, data: dict[str, Any]) -> None:
        # Buffered: TinyDB writes after every table operation; the store commits once per operation.
        self._data = data
        self._dirty = True

    def payload(self) -> bytes | None:
        """The file's new content, or None if the operation changed nothing."""
        if not self._dirty:
            return None
        return json.dumps(self._data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def commit(self) -> None:
        payload = self.payload()
        if payload is not None:
            atomic_write_bytes(self.path, payload)
            self._dirty = False

    def close(self) -> None:
        self._data = _UNREAD  # uncommitted changes (an operation that failed half-way) are dropped
        self._dirty = False


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that readers see either the old or the new file, never a mix."""
    finish_write(stage_write(path, payload))


class StagedWrite(NamedTuple):
    """A temp file holding a file's next content, written but not yet durable or in place."""

    path: Path
    tmp_name: str
    fd: int


def stage_write(path: Path, payload: bytes) -> StagedWrite:
    """The quick half of an atomic write: create the temp file beside ``path`` and fill it (this
    only touches the page cache)."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        _discard(fd, tmp_name)
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return StagedWrite(path, tmp_name, fd)


def finish_write(staged: StagedWrite) -> None:
    """The slow half, nothing but system calls (so a worker thread doing it barely needs the GIL):
    fsync the temp file, rename it over the old one, fsync the folder."""
    path, tmp_name, fd = staged
    try:
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp_name, path)
        tmp_name = ""
        _fsync_dir(path.parent)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        _discard(fd, tmp_name)


def _discard(fd: int, tmp_name: str) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    if tmp_name:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

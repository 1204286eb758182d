"""Scheduled prompts (event prep, post-event reflection, keep-in-touch reminders) kept in the store.

PTB's JobQueue forgets everything on restart, so the schedule lives in each user's store file
and an in-memory heap is rebuilt from it at start-up. A prompt fires from :meth:`Scheduler.run_due`
only after it is *claimed*: an atomic read-modify-write under the user's lock that flips it from
``pending`` to ``sent``. Two ticks, or two processes, can never both claim it, so a prompt is
never delivered twice; a missed window (the bot was down) is simply due, and goes out late, once.
If delivery fails the claim is released and retried with a back-off.

The one gap left is a crash between claim and delivery: that prompt is lost rather than
duplicated. We prefer that for reminders nobody asked to get twice.
"""

from __future__ import annotations

import heapq
import logging
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from bot.store import Store

SCHEDULE = "schedule"
MAX_ATTEMPTS = 5

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Job:
    id: str  # "<kind>:<ref>", so rescheduling the same thing replaces it instead of duplicating
    user_id: str
    kind: str  # prep | reflect | reminder | ...
    ref: str  # the event / contact / assignment it is about
    due_at: str  # ISO 8601, UTC
    status: str = "pending"  # pending | sent | cancelled | failed
    sent_at: str | None = None
    attempts: int = 0

    @property
    def due(self) -> datetime:
        return datetime.fromisoformat(self.due_at)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PermanentDeliveryError(Exception):
    """Delivery can never succeed (the user blocked the bot, the chat is gone): don't retry."""


class Scheduler:
    def __init__(self, store: Store, clock: Callable[[], datetime] = utcnow):
        self.store = store
        self.clock = clock
        self._heap: list[tuple[float, str, str]] = []  # (due timestamp, user id, job id)
        self._guard = threading.Lock()

    # -- writing ------------------------------------------------------------------------------

    def schedule(self, user_id: str, kind: str, ref: str, due: datetime, again: bool = False) -> Job:
        """Create or move the job for (kind, ref). Replaces a pending one; a sent one stays sent
        unless ``again`` (e.g. a snoozed reminder that should fire once more)."""
        job = Job(f"{kind}:{ref}", user_id, kind, ref, due.astimezone(timezone.utc).isoformat(timespec="seconds"))

        def change(existing: dict[str, Any] | None) -> dict[str, Any]:
            if existing and existing.get("status") == "sent" and not again:
                return existing
            return job.to_dict()

        stored = Job(**self.store.update(user_id, SCHEDULE, job.id, change))
        if stored.status == "pending":
            self._push(stored)
        return stored

    def cancel(self, user_id: str, kind: str, ref: str) -> None:
        def change(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            if existing is None or existing.get("status") != "pending":
                return existing
            return {**existing, "status": "cancelled"}

        self.store.update(user_id, SCHEDULE, f"{kind}:{ref}", change)

    def jobs(self, user_id: str) -> list[Job]:
        return [Job(**d) for d in self.store.all(user_id, SCHEDULE)]

    # -- the in-memory index --------------------------------------------------------------------

    def _push(self, job: Job) -> None:
        with self._guard:
            heapq.heappush(self._heap, (job.due.timestamp(), job.user_id, job.id))

    def load(self, user_filter: Callable[[str], bool] = lambda uid: True) -> int:
        """Rebuild the index from the store (at start-up); returns how many jobs are pending."""
        entries = []
        for uid in self.store.user_ids():
            if not user_filter(uid):
                continue
            for data in self.store.all(uid, SCHEDULE):
                if data.get("status") == "pending":
                    job = Job(**data)
                    entries.append((job.due.timestamp(), job.user_id, job.id))
        with self._guard:
            self._heap = entries
            heapq.heapify(self._heap)
        return len(entries)

    def next_due(self) -> datetime | None:
        with self._guard:
            return datetime.fromtimestamp(self._heap[0][0], timezone.utc) if self._heap else None

    def _pop_due(self, now: datetime) -> list[tuple[str, str]]:
        due = []
        with self._guard:
            while self._heap and self._heap[0][0] <= now.timestamp():
                _, uid, job_id = heapq.heappop(self._heap)
                due.append((uid, job_id))
        return list(dict.fromkeys(due))  # a job moved twice sits in the heap twice

    # -- firing ---------------------------------------------------------------------------------

    def claim(self, user_id: str, job_id: str, now: datetime) -> Job | None:
        """Atomically mark a due, pending job as sent; None if it is not ours to send."""
        claimed: list[Job] = []

        def change(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            if existing is None or existing.get("status") != "pending":
                return existing
            job = Job(**existing)
            if job.due > now:
                return existing  # moved later since it was indexed
            job.status, job.sent_at = "sent", now.isoformat(timespec="seconds")
            claimed.append(job)
            return job.to_dict()

        self.store.update(user_id, SCHEDULE, job_id, change)
        return claimed[0] if claimed else None

    def release(self, job: Job, permanent: bool = False) -> None:
        """Delivery failed: put the job back with a back-off, or give up."""
        now = self.clock()

        def change(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            if existing is None:
                return None
            retry = Job(**existing)
            retry.attempts += 1
            if permanent or retry.attempts >= MAX_ATTEMPTS:
                retry.status = "failed"
            else:
                retry.status, retry.sent_at = "pending", None
                retry.due_at = (now + timedelta(minutes=2 ** retry.attempts)).isoformat(timespec="seconds")
            return retry.to_dict()

        stored = self.store.update(job.user_id, SCHEDULE, job.id, change)
        if stored and stored["status"] == "pending":
            self._push(Job(**stored))

    async def run_due(self, deliver: Callable[[Job], Awaitable[None]]) -> int:
        """Deliver every job that is due now; returns how many were delivered."""
        now = self.clock()
        delivered = 0
        for uid, job_id in self._pop_due(now):
            try:
                job = self.claim(uid, job_id, now)
            except Exception:  # a damaged user file must not stop everyone else's prompts
                log.exception("could not claim scheduled job %s for %s", job_id, uid)
                continue
            if job is None:
                continue
            try:
                await deliver(job)
                delivered += 1
            except PermanentDeliveryError as exc:
                log.warning("giving up on %s for %s: %s", job.id, uid, exc)
                self.release(job, permanent=True)
            except Exception:
                log.exception("delivery of %s for %s failed; will retry", job.id, uid)
                self.release(job)
        return delivered

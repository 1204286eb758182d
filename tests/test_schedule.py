"""Scheduled prompts live in the store and fire exactly once, late if need be."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

from bot.schedule import PermanentDeliveryError, Scheduler
from bot.store import TinyDBStore

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_fires_once_when_due(store: TinyDBStore) -> None:
    clock = Clock(T0)
    scheduler = Scheduler(store, clock)
    scheduler.schedule("u1", "prep", "e1", T0 + timedelta(hours=1))
    sent = []

    async def deliver(job):
        sent.append(job.id)

    assert await scheduler.run_due(deliver) == 0
    clock.now = T0 + timedelta(hours=1)
    assert await scheduler.run_due(deliver) == 1
    assert await scheduler.run_due(deliver) == 0
    assert sent == ["prep:e1"]
    assert scheduler.jobs("u1")[0].status == "sent"


async def test_a_restart_rebuilds_the_schedule_and_never_repeats(store: TinyDBStore, data_dir) -> None:
    clock = Clock(T0)
    Scheduler(store, clock).schedule("u1", "reflect", "e1", T0 + timedelta(minutes=5))
    clock.now = T0 + timedelta(days=2)  # the bot was down through the window
    sent = []

    async def deliver(job):
        sent.append(job.id)

    for _ in range(3):  # three restarts
        fresh = Scheduler(TinyDBStore(data_dir), clock)
        fresh.load()
        await fresh.run_due(deliver)
    assert sent == ["reflect:e1"]


async def test_rescheduling_and_cancelling(store: TinyDBStore) -> None:
    clock = Clock(T0)
    scheduler = Scheduler(store, clock)
    scheduler.schedule("u1", "reminder", "c1", T0 + timedelta(minutes=1))
    scheduler.schedule("u1", "reminder", "c1", T0 + timedelta(days=1))  # moved later
    scheduler.schedule("u1", "prep", "e9", T0 + timedelta(minutes=1))
    scheduler.cancel("u1", "prep", "e9")
    sent = []

    async def deliver(job):
        sent.append(job.id)

    clock.now = T0 + timedelta(hours=1)
    assert await scheduler.run_due(deliver) == 0
    clock.now = T0 + timedelta(days=1)
    assert await scheduler.run_due(deliver) == 1
    assert sent == ["reminder:c1"]


async def test_failed_delivery_is_retried_then_given_up(store: TinyDBStore) -> None:
    clock = Clock(T0)
    scheduler = Scheduler(store, clock)
    scheduler.schedule("u1", "prep", "e1", T0)
    scheduler.schedule("u2", "prep", "e2", T0)
    calls = {"u1": 0, "u2": 0}

    async def deliver(job):
        calls[job.user_id] += 1
        if job.user_id == "u1" and calls["u1"] == 1:
            raise ConnectionError("telegram down")
        if job.user_id == "u2":
            raise PermanentDeliveryError("bot was blocked")

    assert await scheduler.run_due(deliver) == 0
    clock.now = T0 + timedelta(minutes=1)
    assert await scheduler.run_due(deliver) == 0  # back-off not over yet
    clock.now = T0 + timedelta(minutes=3)
    assert await scheduler.run_due(deliver) == 1
    assert calls == {"u1": 2, "u2": 1}
    assert scheduler.jobs("u2")[0].status == "failed"


def test_two_claimers_never_both_win(store: TinyDBStore) -> None:
    clock = Clock(T0)
    Scheduler(store, clock).schedule("u1", "prep", "e1", T0)
    wins = []

    def claim() -> None:
        job = Scheduler(store, clock).claim("u1", "prep:e1", T0)
        if job is not None:
            wins.append(job)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


async def test_a_damaged_user_file_does_not_block_others(store: TinyDBStore, data_dir) -> None:
    clock = Clock(T0)
    scheduler = Scheduler(store, clock)
    scheduler.schedule("bad", "prep", "e1", T0)
    scheduler.schedule("good", "prep", "e2", T0)
    (data_dir / "users" / "bad.json").write_text("{broken")
    sent = []

    async def deliver(job):
        sent.append(job.user_id)

    await scheduler.run_due(deliver)
    assert sent == ["good"]
    assert asyncio.iscoroutinefunction(deliver)

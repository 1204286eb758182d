#!/usr/bin/env python3
"""Store benchmark: latency of one store operation with 10, 1,000 and 10,000 users on disk.

    python bench/store_bench.py                        # 10, 1000, 10000 users
    python bench/store_bench.py --users 100000 --ops 500

For each size, a fresh data directory (in the system temp dir) gets N user files first: one real
user file is made by a real practice session (offline engine: one finished session with five
turns and one in progress), then copied under N user ids. Then, on users picked at random:

* reads: ``get`` of the profile (what every message does first) and ``all`` of the sessions
  (/history, /progress);
* writes: ``update`` of the profile (read-modify-write under the user's lock) and ``put`` of a
  session record (every role-play turn); each write is a temp file, fsync, rename and a
  directory fsync, as in production;
* the same mix from ``--threads`` threads at once (6 = the bot's default worker threads on 2
  cores): operations per second, and p95 latency under contention. Per-user locking means this
  should scale, not queue behind one lock;
* isolation: while one user's lock is held for a second, the slowest of 100 operations on other
  users (a lock serialising all users would make it about a second);
* start-up: ``user_ids()`` and ``Scheduler.load()`` (the bot rebuilds its prompt schedule by
  reading every user file once at start).

Then the other dimension, one user's history (``--history``, default 0, 30, 100, 300 finished
sessions): the engine's whole role-play turn (scoring, persona, the durable write) and the
profile read, for a user with that many finished sessions. Finished sessions live in the user's
archive file, so neither should grow with the history.

Figures are wall-clock milliseconds per operation (p50 / p95 / p99). The user files have just been
written, so reads come from the page cache: this measures the store, not a cold disk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.config import SCENARIOS_DIR  # noqa: E402
from bot.scenarios import ScenarioLibrary  # noqa: E402
from bot.schedule import Scheduler  # noqa: E402
from bot.session import PracticeEngine, all_sessions  # noqa: E402
from bot.store import TinyDBStore  # noqa: E402

TEMPLATE_ID = "tg-900000001"
LINES = [
    "Hi! How are you finding it so far?",
    "What are you working on at the moment?",
    "Interesting, how did you end up doing that?",
    "What's been the most surprising part of it?",
    "What would make today worthwhile for you?",
]


def template_user(workdir: Path) -> tuple[bytes, bytes]:
    """A realistic user's files (everyday file, archive), written by the real engine."""
    store = TinyDBStore(workdir / "template")
    engine = PracticeEngine(store, ScenarioLibrary.from_dir(SCENARIOS_DIR))

    async def play() -> None:
        await engine.start(TEMPLATE_ID, "tech-meetup")
        for line in LINES:
            await engine.say(TEMPLATE_ID, line)
        await engine.end(TEMPLATE_ID)
        await engine.start(TEMPLATE_ID, "chamber-breakfast")
        for line in LINES[:3]:
            await engine.say(TEMPLATE_ID, line)

    asyncio.run(play())
    return tuple((workdir / "template" / folder / f"{TEMPLATE_ID}.json").read_bytes()  # type: ignore[return-value]
                 for folder in ("users", "archive"))


def populate(data_dir: Path, template: tuple[bytes, bytes], n: int) -> list[str]:
    ids = [f"tg-{100000000 + i}" for i in range(n)]
    marker = TEMPLATE_ID.encode()
    for folder, content in zip(("users", "archive"), template):
        (data_dir / folder).mkdir(parents=True)
        for uid in ids:  # setup only: plain writes, no fsync
            (data_dir / folder / f"{uid}.json").write_bytes(content.replace(marker, uid.encode()))
    return ids


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else 0.0


def timed(fn, *args) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1000


def bench_size(n: int, template: tuple[bytes, bytes], args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    data_dir = workdir / f"data-{n}"
    t0 = time.perf_counter()
    ids = populate(data_dir, template, n)
    setup_s = time.perf_counter() - t0
    store = TinyDBStore(data_dir)
    rng = random.Random(n)
    session_record = next(iter(store.all(ids[0], "sessions")))
    session_id = session_record["id"]

    ops = {
        "get profile": lambda uid: store.get(uid, "profile", "profile"),
        "all sessions": lambda uid: all_sessions(store, uid),
        "update profile": lambda uid: store.update(uid, "profile", "profile",
                                                   lambda p: {**(p or {}), "seen": time.time()}),
        "put session": lambda uid: store.put(uid, "sessions", session_id, session_record),
    }
    result: dict[str, object] = {"users": n, "setup_s": round(setup_s, 2)}
    for name, op in ops.items():
        count = args.ops if name in ("get profile", "all sessions") else max(50, args.ops // 2)
        samples = [timed(op, rng.choice(ids)) for _ in range(count)]
        result[name] = (pct(samples, 50), pct(samples, 95), pct(samples, 99))

    # The same mix from several threads at once (what the bot's worker threads do).
    per_thread = max(20, args.ops // args.threads)
    latencies: list[float] = []
    lock = threading.Lock()
    names = list(ops)

    def worker(seed: int) -> None:
        local_rng = random.Random(seed)
        mine = []
        for _ in range(per_thread):
            mine.append(timed(ops[local_rng.choice(names)], local_rng.choice(ids)))
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(n * 31 + i,)) for i in range(args.threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    result["mixed threads ops/s"] = len(latencies) / elapsed
    result["mixed threads p50/p95"] = (pct(latencies, 50), pct(latencies, 95))

    # One thread doing the same mix, for comparison (how much do the threads overlap?).
    t0 = time.perf_counter()
    for _ in range(per_thread * 2):
        ops[rng.choice(names)](rng.choice(ids))
    result["mixed 1 thread ops/s"] = per_thread * 2 / (time.perf_counter() - t0)

    # Isolation: one user's lock is held for a second (a slow read-modify-write); meanwhile another
    # thread works on other users. With a lock that serialised all users it would wait a second.
    held = threading.Event()

    def slow(profile: dict | None) -> dict:
        held.set()
        time.sleep(1.0)
        return {**(profile or {}), "slow": True}

    holder = threading.Thread(target=store.update, args=(ids[0], "profile", "profile", slow))
    holder.start()
    held.wait()
    others = [timed(ops[name], rng.choice(ids[1:] or ids)) for name in names for _ in range(25)]
    holder.join()
    result["while one user locked max ms"] = max(others)

    t0 = time.perf_counter()
    store.user_ids()
    result["user_ids s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    Scheduler(store).load(lambda uid: uid.startswith("tg-"))
    result["schedule load s"] = time.perf_counter() - t0
    result["file KB"] = len(template) / 1024
    shutil.rmtree(data_dir, ignore_errors=True)
    return result


def bench_history(sizes: list[int], workdir: Path) -> None:
    """Turn and read latency for one user with a growing number of finished sessions."""
    store = TinyDBStore(workdir / "history")
    library = ScenarioLibrary.from_dir(SCENARIOS_DIR)
    engine = PracticeEngine(store, library)
    engine.scorer.prepare()
    scenarios = [s.id for s in library.all()]
    uid = "tg-history"

    async def run() -> None:
        done = 0
        print(f"{'finished sessions':>17} | {'files KB (everyday + archive)':>29} | {'turn ms p50/max':>15} | "
              f"{'end ms':>6} | {'get profile ms':>14}")
        for size in sizes:
            while done < size:
                await engine.start(uid, scenarios[done % len(scenarios)])
                for line in LINES:
                    await engine.say(uid, line)
                await engine.end(uid)
                done += 1
            kb = [(store.data_dir / folder / f"{uid}.json").stat().st_size / 1024
                  if (store.data_dir / folder / f"{uid}.json").exists() else 0.0 for folder in ("users", "archive")]
            await engine.start(uid, scenarios[0])
            turns = []
            for line in LINES:
                t0 = time.perf_counter()
                await engine.say(uid, line)
                turns.append((time.perf_counter() - t0) * 1000)
            reads = [timed(store.get, uid, "profile", "profile") for _ in range(50)]
            t0 = time.perf_counter()
            await engine.end(uid)
            end_ms = (time.perf_counter() - t0) * 1000
            done += 1
            print(f"{size:17d} | {kb[0]:12.1f} + {kb[1]:14.1f} | {pct(turns, 50):6.2f}/{max(turns):7.2f} | "
                  f"{end_ms:6.1f} | {pct(reads, 50):14.2f}", flush=True)

    asyncio.run(run())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", default="10,1000,10000", help="comma-separated user counts")
    ap.add_argument("--ops", type=int, default=1000, help="timed reads per operation kind (writes: half)")
    ap.add_argument("--threads", type=int, default=6, help="threads for the concurrent mix (default 6)")
    ap.add_argument("--history", default="0,30,100,300", help="finished sessions of one user (comma-separated; '' skips)")
    args = ap.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"machine: cpus={os.cpu_count()}, cpu_model={cpu}, python={platform.python_version()}")
    workdir = Path(tempfile.mkdtemp(prefix="netcoach-store-"))
    try:
        template = template_user(workdir)
        print(f"user files: {len(template[0]) / 1024:.1f} KB (profile, one session in progress) and "
              f"{len(template[1]) / 1024:.1f} KB (archive: one finished session); data dir on {workdir}")
        print(f"{'users':>6} | {'get profile':>17} | {'all sessions':>17} | {'update profile':>17} | "
              f"{'put session':>17} | {'mix 1 thr':>9} | {f'mix {args.threads} thr':>9} {'p95':>6} | "
              f"{'1 locked':>8} | {'user_ids':>8} {'sched.load':>10}")
        print(f"{'':>6} | {'p50/p95/p99 ms':>17} | {'p50/p95/p99 ms':>17} | {'p50/p95/p99 ms':>17} | "
              f"{'p50/p95/p99 ms':>17} | {'ops/s':>9} | {'ops/s':>9} {'ms':>6} | {'max ms':>8} | {'s':>8} {'s':>10}")
        for n in (int(x) for x in args.users.split(",")):
            r = bench_size(n, template, args, workdir)

            def f(key: str) -> str:
                return "{:5.2f}/{:5.2f}/{:5.2f}".format(*r[key])  # type: ignore[str-bytes-safe]

            print(f"{n:6d} | {f('get profile')} | {f('all sessions')} | {f('update profile')} | "
                  f"{f('put session')} | {r['mixed 1 thread ops/s']:9.0f} | {r['mixed threads ops/s']:9.0f} "
                  f"{r['mixed threads p50/p95'][1]:6.2f} | {r['while one user locked max ms']:8.2f} | "
                  f"{r['user_ids s']:8.3f} {r['schedule load s']:10.2f}",
                  flush=True)
        if args.history:
            print()
            bench_history([int(x) for x in args.history.split(",")], workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

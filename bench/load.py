#!/usr/bin/env python3
"""Load benchmark: N simulated Telegram users practising with the real bot at the same time.

    python bench/load.py                         # 10, 100 and 1000 users; netcoach and the echo bot
    python bench/load.py --users 100 --think 3   # one size
    python bench/load.py --rate 30               # with Telegram's flood limit (30 requests/s) on
    python bench/load.py --json results.json     # also write the figures as JSON

What runs: the fake Telegram Bot API server (``tests/fakes/bot_api.py``) on 127.0.0.1 in this
process, and the bot under test as a child process:

* ``netcoach``: ``python -m bot run`` -- exactly what ``netcoach run`` starts (long polling,
  ``build_application``, TinyDB files in a fresh temp data dir, offline persona and scorer) --
  with ``TELEGRAM_API_BASE_URL`` pointing at the fake server;
* ``echo``: ``bench/echo_bot.py``, a minimal PTB bot built the same way that answers every update
  with one message: the reference for what PTB + HTTP + the fake server cost by themselves.

Each simulated user runs one whole practice session, as a closed loop with think time:
/practice -> wait for the menu -> think -> press a scenario -> think -> 5 role-play turns, each
answered before the next (think in between) -> press "End & debrief". That is 8 updates per user.
The echo bot gets the same 8 updates (texts and button presses). Think times are drawn uniformly
from 0.5x-1.5x ``--think``; users start spread over one think time.

Figures per run:

* updates/s: updates sent by all users / wall time from the first update to the last reply.
  While the bot keeps up this is the offered load; once it saturates, it is its capacity.
* latency: from the moment an update is queued on the fake server to the moment the bot's
  first message (or edit) answering it reaches the server, i.e. what a user waits, minus
  Telegram's own network hops. p50 / p95 / p99 over every update of every user.
* CPU ms/update: CPU time of the bot process divided by updates (cost independent of pacing);
  with ``--steps`` also split into the event loop's thread and the worker threads (store I/O).
* cpu %: the bot's CPU time over the run, in % of one core (near 100: CPU-bound, not waiting on
  a lock); h cpu %: the same for this harness (fake server and simulated users).
* peak RSS: VmHWM of the bot process, read just before it is stopped.
* API calls/update: Bot API requests the bot made per update, getUpdates not counted (netcoach
  answers button presses and edits the menu; the echo bot sends one message per update).

Telegram allows a bot about 30 messages per second, and netcoach's rate limiter enforces that
(``NETCOACH_MAX_SEND_RATE``, default 30). By default both bots run with the limiter off, so the
figures show what the software costs; ``--rate 30`` shows the production ceiling instead.

With ``--webhook`` both bots take their updates by webhook instead (netcoach: ``netcoach run
--webhook-url``; echo: PTB's ``run_webhook``), each listening on a free port on 127.0.0.1 that the
fake server POSTs to, one update at a time, as a TLS proxy in front of the bot would receive them.

Everything is bounded: a step waits at most ``--step-timeout`` seconds; the bot is stopped with
SIGTERM (then SIGKILL) at the end of each run; only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes import FakeBotAPI, FakeUser, Reply  # noqa: E402

TOKEN = "777000:LOAD-benchmark-token"
TURNS = [
    "Hi! How are you finding it so far?",
    "What are you working on at the moment?",
    "Interesting, how did you end up doing that?",
    "What's been the most surprising part of it?",
    "What would make today worthwhile for you?",
    "How did your team get started with that?",
]
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    bot: str
    users: int
    think_s: float
    rate_limit: float
    updates: int = 0
    wall_s: float = 0.0
    updates_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    turn_p95_ms: float = 0.0  # role-play turns / echo texts only
    api_calls_per_update: float = 0.0
    cpu_ms_per_update: float = 0.0
    bot_cpu_s: float = 0.0
    bot_cpu_pct: float = 0.0  # of one core, over the run: near 100 = CPU-bound, not lock-bound
    loop_thread_cpu_s: float = 0.0  # the event loop's thread (handlers, PTB, HTTP)
    worker_threads_cpu_s: float = 0.0  # asyncio.to_thread workers (store I/O) and other threads
    harness_cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    sessions_completed: int = 0
    timeouts: int = 0
    log_errors: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    turn_latencies: list[float] = field(default_factory=list, repr=False)
    by_step: dict[str, list[float]] = field(default_factory=dict, repr=False)


# -- the bot process ------------------------------------------------------------------------------


WEBHOOK_URL = "https://load.example.org"  # what the bots register; the fake server POSTs to the local port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(kind: str, server: FakeBotAPI, data_dir: Path, rate: float, log_path: Path,
          profile: Path | None = None, webhook_port: int | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "OPENAI_", "NETCOACH_"))}
    env.update(
        TELEGRAM_BOT_TOKEN=server.token,
        TELEGRAM_API_BASE_URL=server.base_url,
        NETCOACH_DATA_DIR=str(data_dir),
        NETCOACH_LLM="off",  # offline mode: the built-in persona and scorer
        NETCOACH_MAX_SEND_RATE=str(rate),
        PYTHONUNBUFFERED="1",
    )
    cmd = ["-m", "bot", "run"] if kind == "netcoach" else [str(ROOT / "bench" / "echo_bot.py")]
    if webhook_port is not None:  # both bots serve Telegram's POSTs on 127.0.0.1:<port>/telegram
        if kind == "netcoach":
            cmd += ["--webhook-url", WEBHOOK_URL, "--listen", "127.0.0.1", "--port", str(webhook_port)]
        else:
            env.update(ECHO_WEBHOOK_URL=WEBHOOK_URL, ECHO_WEBHOOK_PORT=str(webhook_port))
    if profile is not None:  # cProfile writes the file when the bot exits (SIGTERM stops it cleanly)
        cmd = ["-m", "cProfile", "-o", str(profile), *cmd]
    cmd = [sys.executable, *cmd]
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def proc_status(pid: int, key: str) -> float:
    """A kB figure from /proc/<pid>/status (VmHWM = peak RSS), in MB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """(main thread, all other threads) CPU seconds: the event loop vs the store's worker threads."""
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK
        if task.name == str(pid):
            main += seconds
        else:
            other += seconds
    return main, other


async def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)


# -- simulated users --------------------------------------------------------------------------------


class Timeout(Exception):
    pass


class Driver:
    def __init__(self, run: Run, step_timeout: float, think: float, seed: int):
        self.run = run
        self.step_timeout = step_timeout
        self.think_s = think
        self.rng = random.Random(seed)
        self.loop = asyncio.get_running_loop()

    async def think(self) -> None:
        await asyncio.sleep(self.think_s * self.rng.uniform(0.5, 1.5))

    async def answered(self, user: FakeUser, send, step: str) -> Reply:  # type: ignore[no-untyped-def]
        """Send one update; return the bot's first message/edit after it and record the latency."""
        t0 = time.monotonic()
        send()
        self.run.updates += 1
        try:
            reply = await user.next_reply(timeout=self.step_timeout)
        except AssertionError:
            raise Timeout from None
        latency = max(0.0, reply.time - t0)
        self.run.latencies.append(latency)
        self.run.by_step.setdefault(step, []).append(latency)
        if step == "turn":
            self.run.turn_latencies.append(latency)
        return reply

    async def until(self, user: FakeUser, predicate) -> Reply:  # type: ignore[no-untyped-def]
        try:
            return await user.wait_for(predicate, timeout=self.step_timeout)
        except AssertionError:
            raise Timeout from None

    async def netcoach(self, user: FakeUser, index: int) -> None:
        await asyncio.sleep(self.rng.uniform(0, self.think_s))
        menu = await self.answered(user, lambda: user.send_text("/practice"), "menu")
        if "Pick a situation" not in (menu.text or ""):
            menu = await self.until(user, lambda r: "Pick a situation" in (r.text or ""))
        choices = [t for t in menu.button_texts if t.startswith(("🟢", "🟡"))]  # easy and medium
        await self.think()
        await self.answered(user, lambda: user.press(menu, button_text=choices[index % len(choices)]), "pick")
        last = await self.until(user, lambda r: not r.edited and bool(r.button_texts))  # the opening line
        for line in self.rng.sample(TURNS, 5):
            await self.think()
            last = await self.answered(user, lambda: user.send_text(line), "turn")
            if not last.button_texts:  # the persona left: the debrief follows by itself
                await self.until(user, lambda r: "Focus score" in (r.text or ""))
                await self.until(user, lambda r: bool(r.button_texts))
                self.run.sessions_completed += 1
                return
        await self.think()
        debrief = await self.answered(user, lambda: user.press(last, button_text="🏁 End & debrief"), "end")
        if not debrief.button_texts:  # a long debrief comes in parts; the last one has buttons
            await self.until(user, lambda r: bool(r.button_texts))
        self.run.sessions_completed += 1

    async def echo(self, user: FakeUser, index: int) -> None:
        await asyncio.sleep(self.rng.uniform(0, self.think_s))
        last = await self.answered(user, lambda: user.send_text("/practice"), "menu")
        await self.think()
        last = await self.answered(user, lambda: user.press_data(last.message_id, f"p:pick:{index}"), "pick")
        for line in self.rng.sample(TURNS, 5):
            await self.think()
            last = await self.answered(user, lambda: user.send_text(line), "turn")
        await self.think()
        await self.answered(user, lambda: user.press_data(last.message_id, "s:end"), "end")
        self.run.sessions_completed += 1

    async def user(self, kind: str, user: FakeUser, index: int) -> None:
        try:
            await (self.netcoach if kind == "netcoach" else self.echo)(user, index)
        except Timeout:
            self.run.timeouts += 1


# -- one run ----------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def run_one(kind: str, n: int, args: argparse.Namespace, workdir: Path) -> Run:
    run = Run(kind, n, args.think, args.rate)
    data_dir = workdir / f"{kind}-{n}-data"
    log_path = workdir / f"{kind}-{n}.log"
    async with FakeBotAPI(token=TOKEN, bot_username="netcoach_load_bot") as server:
        profile = Path(args.profile) / f"{kind}-{n}.prof" if args.profile else None
        port = free_port() if args.webhook else None
        proc = spawn(kind, server, data_dir, args.rate, log_path, profile, port)
        try:
            if port is None:
                await server.wait_until(lambda: proc.poll() is not None or server.is_polling, timeout=60,
                                        what="the bot to start polling")
            else:
                await server.wait_until(lambda: proc.poll() is not None or server.webhook is not None, timeout=60,
                                        what="the bot to set its webhook")
                server.deliver_webhooks_to(f"http://127.0.0.1:{port}/telegram")
            if proc.poll() is not None:
                raise SystemExit(f"{kind} bot exited at start-up:\n{log_path.read_text()[-3000:]}")
            users = [server.user(first_name=f"User{i}") for i in range(n)]
            driver = Driver(run, args.step_timeout, args.think, seed=n)
            calls0, cpu0 = server.call_mark(), proc_cpu_seconds(proc.pid)
            loop0, workers0 = proc_thread_cpu_seconds(proc.pid)
            harness0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.monotonic()
            await asyncio.gather(*(driver.user(kind, u, i) for i, u in enumerate(users)))
            await server.wait_idle(quiet=0.2, timeout=60)
            last_reply = max((u.replies[-1].time for u in users if u.replies), default=time.monotonic())
            run.wall_s = max(1e-9, last_reply - t0)
            harness1 = resource.getrusage(resource.RUSAGE_SELF)
            run.harness_cpu_s = (harness1.ru_utime + harness1.ru_stime) - (harness0.ru_utime + harness0.ru_stime)
            run.bot_cpu_s = proc_cpu_seconds(proc.pid) - cpu0
            loop1, workers1 = proc_thread_cpu_seconds(proc.pid)
            run.loop_thread_cpu_s, run.worker_threads_cpu_s = loop1 - loop0, workers1 - workers0
            window = server.calls[calls0:]
            calls = sum(1 for c in window if c.method != "getUpdates")
            run.peak_rss_mb = proc_status(proc.pid, "VmHWM")
        finally:
            await stop(proc)
    run.updates_per_s = run.updates / run.wall_s
    run.api_calls_per_update = calls / max(1, run.updates)
    run.cpu_ms_per_update = 1000 * run.bot_cpu_s / max(1, run.updates)
    run.bot_cpu_pct = 100 * run.bot_cpu_s / run.wall_s
    run.p50_ms, run.p95_ms, run.p99_ms = (1000 * pct(run.latencies, q) for q in (50, 95, 99))
    run.max_ms = 1000 * max(run.latencies, default=0.0)
    run.turn_p95_ms = 1000 * pct(run.turn_latencies, 95)
    log = log_path.read_text(errors="replace")
    run.log_errors = sum(1 for line in log.splitlines() if " ERROR " in line)
    if run.log_errors:
        print(f"  ! {run.log_errors} error line(s) in {log_path}", file=sys.stderr)
    return run


# -- reporting --------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem_kb = next((int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    import telegram

    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": cpu,
        "ram_gb": f"{mem_kb / 1024 / 1024:.1f}",
        "python": platform.python_version(),
        "ptb": telegram.__version__,
        "os": f"{platform.system()} {platform.release()}",
    }


HEADER = (f"{'bot':9} {'users':>5} {'updates':>7} {'wall s':>6} {'upd/s':>6} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'calls/u':>7} {'cpu ms/u':>8} {'cpu %':>5} {'h cpu%':>6} {'RSS MB':>6} {'done':>5} {'t/o':>4} {'err':>4}")


def row(r: Run) -> str:
    return (f"{r.bot:9} {r.users:5d} {r.updates:7d} {r.wall_s:6.1f} {r.updates_per_s:6.1f} {r.p50_ms:7.1f} "
            f"{r.p95_ms:7.1f} {r.p99_ms:7.1f} {r.max_ms:7.0f} {r.api_calls_per_update:7.2f} {r.cpu_ms_per_update:8.2f} "
            f"{r.bot_cpu_pct:5.0f} {100 * r.harness_cpu_s / r.wall_s:6.0f} {r.peak_rss_mb:6.1f} {r.sessions_completed:5d} {r.timeouts:4d} {r.log_errors:4d}")


async def main_async(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.users.split(",")]
    bots = args.bots.split(",")
    info = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print(f"think time {args.think:g} s (0.5x-1.5x), send rate limit "
          f"{'off' if not args.rate else f'{args.rate:g}/s'}; 8 updates per user; latency = update queued -> first reply; "
          f"updates by {'webhook (POSTed one at a time)' if args.webhook else 'long polling'}")
    print(HEADER, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="netcoach-load-"))
    runs: list[Run] = []
    try:
        for n in sizes:
            for _ in range(args.repeat):
                for kind in bots:
                    run = await run_one(kind, n, args, workdir)
                    runs.append(run)
                    print(row(run), flush=True)
                    if args.steps:
                        print("          p50/p95 ms by step: " + ", ".join(
                            f"{k} {1000 * pct(v, 50):.0f}/{1000 * pct(v, 95):.0f}" for k, v in run.by_step.items())
                            + f"; CPU ms/update: loop thread {1000 * run.loop_thread_cpu_s / max(1, run.updates):.1f}"
                            f", worker threads {1000 * run.worker_threads_cpu_s / max(1, run.updates):.1f}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs and data kept in {workdir}")
    if args.repeat > 1:  # the run with the median p95 of each (bot, users) stands for it
        print(f"median of {args.repeat} runs (by p95):")
        print(HEADER)
        for n in sizes:
            for kind in bots:
                same = sorted((r for r in runs if (r.bot, r.users) == (kind, n)), key=lambda r: r.p95_ms)
                print(row(same[len(same) // 2]))
    by = {}
    for n in sizes:
        for kind in bots:
            same = sorted((r for r in runs if (r.bot, r.users) == (kind, n)), key=lambda r: r.p95_ms)
            if same:
                by[(kind, n)] = same[len(same) // 2]
    for n in sizes:
        nc, echo = by.get(("netcoach", n)), by.get(("echo", n))
        if nc and echo and echo.p95_ms:
            print(f"{n} users: netcoach p95 / echo p95 = {nc.p95_ms / echo.p95_ms:.2f}x "
                  f"(turns only: {nc.turn_p95_ms / max(echo.turn_p95_ms, 1e-9):.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args),
                                               "runs": [{k: v for k, v in asdict(r).items()
                                                         if k not in ("latencies", "turn_latencies", "by_step")} for r in runs]},
                                              indent=2))
    return 1 if any(r.timeouts or r.log_errors for r in runs) else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", default="10,100,1000", help="comma-separated user counts (default 10,100,1000)")
    ap.add_argument("--bots", default="echo,netcoach", help="which bots to run (default echo,netcoach)")
    ap.add_argument("--think", type=float, default=3.0, help="mean think time between a user's steps, s (default 3)")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="NETCOACH_MAX_SEND_RATE for both bots: 0 = no flood limiter (default), 30 = as shipped")
    ap.add_argument("--repeat", type=int, default=1, help="runs per (bot, users); the median p95 is reported")
    ap.add_argument("--step-timeout", type=float, default=120.0, help="give up on a user after this long, s")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the bots' logs and data dirs")
    ap.add_argument("--profile", metavar="DIR", help="run the bots under cProfile, writing DIR/<bot>-<users>.prof")
    ap.add_argument("--steps", action="store_true", help="also print latency by step (menu, pick, turn, end)")
    ap.add_argument("--webhook", action="store_true",
                    help="deliver updates by webhook instead of long polling (both bots; `netcoach run --webhook-url`)")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())

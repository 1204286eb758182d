"""``netcoach``: the command line. With no subcommand it does the obvious thing: the Telegram bot if
TELEGRAM_BOT_TOKEN is set, otherwise a practice role-play in the terminal.

    netcoach practice [--scenario ID]      role-play in the terminal, then the debrief
    netcoach history                       past sessions with scores
    netcoach debrief                       reflect on a real event you went to
    netcoach scenarios list | check [DIR]  browse or validate scenario files
    netcoach score [FILE] [--llm]          label turns / score conversations (JSON Lines)
    netcoach doctor | usage                LLM configuration check / LLM tokens used per model
    netcoach export | forget               your data as JSON / delete it
    netcoach run                           the Telegram bot
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import Config

if TYPE_CHECKING:  # pragma: no cover
    from bot.scoring import Scorer


def _local_user(name: str | None) -> str:
    raw = name or getpass.getuser() or "me"
    return "local-" + (re.sub(r"[^A-Za-z0-9_.-]", "_", raw)[:50] or "me")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netcoach", description="Practise networking the way coaches teach it.")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("practice", help="role-play a networking conversation in the terminal")
    p.add_argument("--scenario", "-s", help="scenario id (see `netcoach scenarios list`); asks if omitted")
    p.add_argument("--new", action="store_true", help="start afresh even if a role-play is in progress")
    p.add_argument("--user", help="local profile name (default: your login name)")

    p = sub.add_parser("debrief", help="reflect on a real event you went to")
    p.add_argument("--user")

    p = sub.add_parser("history", help="list your finished practice sessions")
    p.add_argument("--user")

    p = sub.add_parser("scenarios", help="list or validate scenarios")
    ssub = p.add_subparsers(dest="action", required=True)
    ssub.add_parser("list", help="one line per scenario: id, difficulty, title")
    check = ssub.add_parser("check", help="validate every *.toml in a folder")
    check.add_argument("dir", nargs="?", help="folder to check (default: the scenario folder in use)")

    p = sub.add_parser("score", help="score turns or conversations given as JSON Lines")
    p.add_argument("file", nargs="?", help="input file (default: standard input)")
    p.add_argument("--llm", action="store_true", help="also ask the LLM judge (when configured)")

    sub.add_parser("doctor", help="show the LLM configuration (key masked) and check the endpoint")
    sub.add_parser("usage", help="LLM tokens used per model across all practice sessions")

    p = sub.add_parser("export", help="print all your data as JSON")
    p.add_argument("--user")
    p = sub.add_parser("forget", help="delete all your data")
    p.add_argument("--user")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = sub.add_parser("run", help="run the Telegram bot (needs TELEGRAM_BOT_TOKEN)")
    p.add_argument("--webhook-url", default=os.environ.get("NETCOACH_WEBHOOK_URL"),
                   help="public HTTPS base URL for webhook mode (default: long polling)")
    p.add_argument("--listen", default=os.environ.get("NETCOACH_WEBHOOK_LISTEN", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(os.environ.get("NETCOACH_WEBHOOK_PORT", "8443")))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config.from_env()
    command = args.command
    if command is None:
        command = "run" if config.telegram_token else "practice"
        args = build_parser().parse_args([command])
    try:
        return _dispatch(command, args, config)
    except KeyboardInterrupt:
        print("\nStopped.", file=sys.stderr)
        return 130


def _dispatch(command: str, args: argparse.Namespace, config: Config) -> int:
    if command == "score":
        return _score(args, config)
    if command == "doctor":
        from bot.llm.cli import doctor

        return doctor(config.llm)
    if command == "usage":
        from bot.llm.cli import usage

        return usage(config.data_dir)
    if command == "scenarios":
        return _scenarios(args, config)
    if command == "run":
        return _run_bot(args, config)

    from bot.scenarios import ScenarioError, ScenarioLibrary
    from bot.session import PracticeEngine
    from bot.store import StoreError, TinyDBStore
    from bot.terminal import Terminal

    try:
        library = ScenarioLibrary.from_dir(config.scenarios_dir)
    except ScenarioError as exc:
        print(f"Cannot load scenarios:\n{exc}", file=sys.stderr)
        return 2
    from bot.llm import llm_options

    engine = PracticeEngine(TinyDBStore(config.data_dir), library, **llm_options(config.llm))
    term = Terminal(engine, sys.stdin, sys.stdout, interactive=sys.stdin.isatty())
    user_id = _local_user(getattr(args, "user", None))
    try:
        if command == "practice":
            return asyncio.run(term.practice(user_id, args.scenario, new=args.new))
        if command == "history":
            return term.history(user_id)
        if command == "debrief":
            from bot.events import EventBook
            from bot.schedule import Scheduler

            events = EventBook(engine.store, Scheduler(engine.store), library, engine.scorer, config.timing)
            return asyncio.run(term.debrief(user_id, events))
        if command == "export":
            return term.export(user_id)
        if command == "forget":
            if not args.yes:
                answer = term.ask("Delete all your netcoach data? This cannot be undone. [y/N] ") if term.interactive else None
                if (answer or "").strip().lower() not in {"y", "yes"}:
                    print("Nothing deleted. (Use --yes to confirm without a prompt.)")
                    return 1
            deleted = engine.store.delete_user(user_id)
            print("All your data was deleted." if deleted else "There was no data to delete.")
            return 0
    except StoreError as exc:
        print(f"Storage problem: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(command)


def _scenarios(args: argparse.Namespace, config: Config) -> int:
    from bot.scenarios import check_dir

    directory = Path(args.dir) if args.action == "check" and args.dir else config.scenarios_dir
    scenarios, problems = check_dir(directory)
    for problem in problems:
        print(problem, file=sys.stderr)
    if args.action == "list":
        for s in sorted(scenarios, key=lambda s: s.id):
            print(f"{s.id}\t{s.difficulty}\t{s.title}")
    else:
        print(f"{len(scenarios)} scenario(s) OK, {len(problems)} problem(s) in {directory}")
    return 1 if problems else 0


def _score(args: argparse.Namespace, config: Config) -> int:
    from bot.scoring import default_scorer

    if args.llm and config.llm.enabled:
        from bot.llm.cli import judged_scorer

        with judged_scorer(config.llm, default_scorer()) as scorer:
            return _score_with(args, scorer)
    if args.llm:
        print("netcoach score: --llm needs OPENAI_API_KEY or OPENAI_BASE_URL (see `netcoach doctor`); scoring offline.",
              file=sys.stderr)
    return _score_with(args, default_scorer())


def _score_with(args: argparse.Namespace, scorer: Scorer) -> int:
    from bot.scoring.cli import run

    if args.file:
        try:
            with open(args.file, encoding="utf-8") as fh:
                return run(fh, sys.stdout, scorer)
        except OSError as exc:
            print(f"netcoach score: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 2
    return run(sys.stdin, sys.stdout, scorer)


def _run_bot(args: argparse.Namespace, config: Config) -> int:
    if not config.telegram_token:
        print("netcoach run: set TELEGRAM_BOT_TOKEN (from @BotFather) to run the Telegram bot.", file=sys.stderr)
        return 2
    from bot.scenarios import ScenarioError
    from bot.telegram.app import WebhookOptions, run_bot

    webhook = None
    if args.webhook_url:
        webhook = WebhookOptions(args.webhook_url, args.listen, args.port, os.environ.get("NETCOACH_WEBHOOK_SECRET"))
    try:
        run_bot(config, webhook)
    except ScenarioError as exc:
        print(f"Cannot load scenarios:\n{exc}", file=sys.stderr)
        return 2
    return 0

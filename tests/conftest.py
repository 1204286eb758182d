"""Shared fixtures: real scenario files, real TinyDB files in a temp dir, the real offline scorer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import SCENARIOS_DIR
from bot.scenarios import ScenarioLibrary
from bot.store import TinyDBStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def library() -> ScenarioLibrary:
    return ScenarioLibrary.from_dir(SCENARIOS_DIR)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def store(data_dir: Path) -> TinyDBStore:
    return TinyDBStore(data_dir)


@pytest.fixture
def engine(store: TinyDBStore, library: ScenarioLibrary) -> "PracticeEngine":
    from bot.session import PracticeEngine

    return PracticeEngine(store, library)


def run_netcoach(*args: str, stdin: str = "", data_dir: Path | None = None, env: dict[str, str] | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process, as a user would (``python -m bot``)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "OPENAI_", "NETCOACH_"))}
    if data_dir is not None:
        full_env["NETCOACH_DATA_DIR"] = str(data_dir)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin, capture_output=True, text=True, cwd=ROOT, env=full_env, timeout=timeout,
    )

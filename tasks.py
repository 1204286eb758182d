#!/usr/bin/env python3
"""Zero-setup entry point: ``python3 tasks.py run`` or ``python3 tasks.py test``.

Needs nothing but Python 3.11+. On first use it creates ``.venv`` beside this file and
installs netcoach into it (editable, with the test extras); it reinstalls only when
``pyproject.toml`` changes. Everything after the task name is passed through:

    python3 tasks.py run                      # terminal practice (or the bot if TELEGRAM_BOT_TOKEN is set)
    python3 tasks.py run scenarios list       # any netcoach subcommand
    python3 tasks.py test -k scorer           # pytest arguments
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".netcoach-installed"


def _python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _wanted_stamp() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_env() -> Path:
    """Create the virtualenv and install the project if missing or stale."""
    if sys.version_info < (3, 11):
        sys.exit(f"netcoach needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    py = _python()
    if not py.exists():
        print("netcoach: creating .venv (first run only) ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if not STAMP.exists() or STAMP.read_text() != _wanted_stamp():
        print("netcoach: installing dependencies into .venv ...", file=sys.stderr)
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", f"{ROOT}[test]"],
            check=True,
        )
        STAMP.write_text(_wanted_stamp())
    return py


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "setup"}:
        print(__doc__)
        return 2
    task, rest = argv[0], argv[1:]
    py = ensure_env()
    if task == "setup":
        return 0
    if task == "run":
        cmd = [str(py), "-m", "bot", *rest]
    else:
        cmd = [str(py), "-m", "pytest", *rest]
    os.chdir(ROOT)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

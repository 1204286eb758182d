"""netcoach installed from its wheel, away from the checkout, finds its prompts, scenarios and scorer.

The repository keeps ``prompts/`` and ``scenarios/`` at the top (data, edited as such); a wheel must
carry them and the scorer's model inside the package, or ``pip install netcoach`` would give a bot
that cannot say a word. The wheel is built offline from a copy of the sources (``--no-build-isolation``
uses the setuptools the test extras install) and installed into a bare folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "bot", "prompts", "scenarios")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, site folder the wheel was installed into)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(
            ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / name).is_dir() else {})
        )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    env = {**os.environ, "PIP_NO_INDEX": "1"}  # nothing may come from the network
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(src)],
                   check=True, env=env, capture_output=True, timeout=300)
    wheel = next((base / "dist").glob("netcoach-*.whl"))
    site = base / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, env=env, capture_output=True, timeout=300)
    return wheel, site


def netcoach(site: Path, cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``python -m bot`` with only the installed copy importable as ``bot``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETCOACH_", "OPENAI_", "TELEGRAM_"))}
    env.update(PYTHONPATH=str(site), NETCOACH_DATA_DIR=str(cwd / "data"), NETCOACH_LLM="off", PYTHONSAFEPATH="1")
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_the_wheel_carries_every_prompt_scenario_and_the_scorer_model(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"bot/_prompts/{p.name}" for p in (ROOT / "prompts").iterdir() if p.is_file()}
    expected |= {f"bot/_scenarios/{p.name}" for p in (ROOT / "scenarios").glob("*.toml")}
    expected |= {"bot/scoring/model.json", "bot/scoring/intents.toml"}
    assert expected - names == set()


def test_installed_netcoach_lists_scenarios_scores_and_practises(installed, tmp_path):
    _, site = installed
    where = subprocess.run([sys.executable, "-c", "import bot; print(bot.__file__)"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"},
                           capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(site)  # the wheel's copy, not the checkout

    listed = netcoach(site, tmp_path, "scenarios", "list")
    assert listed.returncode == 0, listed.stderr
    shipped = sorted(p.stem for p in (ROOT / "scenarios").glob("*.toml"))
    assert sorted(line.split()[0] for line in listed.stdout.splitlines() if line.strip()) == shipped

    line = {"id": 1, "context": [{"role": "partner", "text": "We just opened a second clinic."}],
            "text": "Congratulations! What made you pick that neighbourhood?"}
    scored = netcoach(site, tmp_path, "score", stdin=json.dumps(line) + "\n")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["label"] == "other_focus"

    practice = netcoach(site, tmp_path, "practice", "--scenario", shipped[0], "--user", "pkg",
                        stdin="Hi! What brought you here this morning?\n/end\n")
    assert practice.returncode == 0, practice.stderr
    assert "focus" in practice.stdout.lower()  # the debrief, rendered from the packaged templates

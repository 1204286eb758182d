"""Settings from the environment. Secrets are read here and nowhere else, and never printed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path

from bot.llm.config import LLMConfig

ROOT = Path(__file__).resolve().parent.parent


def _data_dir(name: str) -> Path:
    """A data folder kept at the top of the repository (``prompts``, ``scenarios``). An installed
    wheel carries it inside the package as ``bot/_<name>`` (see pyproject.toml); a checkout,
    editable install included, reads it where it is edited."""
    packaged = ROOT / "bot" / f"_{name}"
    return packaged if packaged.is_dir() else ROOT / name


PROMPTS_DIR = _data_dir("prompts")
SCENARIOS_DIR = _data_dir("scenarios")


@dataclass(frozen=True)
class Timing:
    """When the prompts go out (all configurable)."""

    prep_evening_at: time = time(19, 0)  # the evening before...
    prep_same_day_hours: float = 2.0  # ...or this long before, for same-day events
    default_duration_hours: float = 2.0
    reflect_after_hours: float = 1.0  # after the event's end
    reminder_default_days: int = 3  # after the event, if no date was agreed
    reminder_at: time = time(10, 0)
    snooze_days: int = 3


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "netcoach"


@dataclass(frozen=True)
class Config:
    data_dir: Path = field(default_factory=default_data_dir)
    scenarios_dir: Path = SCENARIOS_DIR
    telegram_token: str | None = field(default=None, repr=False)
    telegram_base_url: str | None = None
    timing: Timing = Timing()
    tick_seconds: float = 30.0  # how often the bot checks for due prep / reflection / reminder prompts
    llm: LLMConfig = field(default_factory=LLMConfig)  # offline unless configured (bot/llm/config.py)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Config":
        env = dict(os.environ if env is None else env)
        return cls(
            data_dir=Path(env["NETCOACH_DATA_DIR"]).expanduser() if env.get("NETCOACH_DATA_DIR") else default_data_dir(),
            scenarios_dir=Path(env["NETCOACH_SCENARIOS_DIR"]).expanduser()
            if env.get("NETCOACH_SCENARIOS_DIR")
            else SCENARIOS_DIR,
            telegram_token=env.get("TELEGRAM_BOT_TOKEN") or None,
            telegram_base_url=env.get("TELEGRAM_API_BASE_URL") or None,
            timing=Timing(
                prep_evening_at=time.fromisoformat(env.get("NETCOACH_PREP_EVENING_AT", "19:00")),
                prep_same_day_hours=float(env.get("NETCOACH_PREP_HOURS_BEFORE", "2")),
                reflect_after_hours=float(env.get("NETCOACH_REFLECT_AFTER_HOURS", "1")),
                reminder_default_days=int(env.get("NETCOACH_REMINDER_DAYS", "3")),
            ),
            tick_seconds=float(env.get("NETCOACH_TICK_SECONDS", "30")),
            llm=LLMConfig.from_env(env),
        )

"""Settings from the environment. Secrets are read here and nowhere else, and never printed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTS_DIR = ROOT / "prompts"
SCENARIOS_DIR = ROOT / "scenarios"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "netcoach"


@dataclass(frozen=True)
class Config:
    data_dir: Path = field(default_factory=default_data_dir)
    scenarios_dir: Path = SCENARIOS_DIR
    telegram_token: str | None = field(default=None, repr=False)
    telegram_base_url: str | None = None

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
        )

"""Scenarios: role-play situations kept as TOML data files, validated field by field.

Coaches write these files by hand, so every problem is reported with the file, the field and
what is wrong (``chamber.toml: persona.interests[1].keywords: must be a non-empty list of strings``),
and all problems in a file are reported at once rather than one per run.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

DIFFICULTIES = ("easy", "medium", "hard")
TOPIC_KINDS = ("interests", "insights", "issues")
MIN_TOPICS = {"interests": 3, "insights": 2, "issues": 2}
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$")
MAX_FILE_BYTES = 256 * 1024


class ScenarioError(ValueError):
    """One or more problems in scenario files; ``problems`` lists them one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Topic:
    """Something the persona cares about (interest), knows (insight) or struggles with (issue)."""

    kind: str
    topic: str
    keywords: tuple[str, ...]
    says: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.topic}"


@dataclass(frozen=True)
class Persona:
    name: str
    role: str
    company: str
    background: str
    mood: str
    openness: int
    opening_line: str
    self_intro: tuple[str, ...]
    small_talk: tuple[str, ...]
    pitch_reaction: tuple[str, ...]
    exit_line: str
    interests: tuple[Topic, ...]
    insights: tuple[Topic, ...]
    issues: tuple[Topic, ...]
    pitches: tuple[str, ...] = ()

    @property
    def first_name(self) -> str:
        return self.name.split()[0]

    def topics(self) -> tuple[Topic, ...]:
        return self.interests + self.insights + self.issues


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    setting: str
    goal: str
    difficulty: str
    persona: Persona
    tags: tuple[str, ...] = ()
    source: str = ""  # file it was loaded from, for messages

    def to_dict(self) -> dict[str, Any]:
        """Plain data, e.g. for the LLM prompt templates or an export."""
        return asdict(self)


class _Checker:
    """Collects problems for one file while reading typed fields out of a TOML table."""

    def __init__(self, filename: str):
        self.filename = filename
        self.problems: list[str] = []

    def problem(self, field: str, message: str) -> None:
        self.problems.append(f"{self.filename}: {field}: {message}")

    def text(self, table: dict, field: str, prefix: str = "", min_len: int = 1, max_len: int = 2000) -> str:
        name = prefix + field
        if field not in table:
            self.problem(name, "missing (required)")
            return ""
        value = table[field]
        if not isinstance(value, str):
            self.problem(name, f"must be a string, got {_type_name(value)}")
            return ""
        value = value.strip()
        if len(value) < min_len:
            self.problem(name, "must not be empty" if min_len == 1 else f"must be at least {min_len} characters")
        elif len(value) > max_len:
            self.problem(name, f"must be at most {max_len} characters (has {len(value)})")
        return value

    def texts(self, table: dict, field: str, prefix: str = "", min_items: int = 1, required: bool = True) -> tuple[str, ...]:
        name = prefix + field
        if field not in table:
            if required:
                self.problem(name, "missing (required)")
            return ()
        value = table[field]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(name, "must be a list of strings")
            return ()
        items = tuple(v.strip() for v in value)
        if any(not v for v in items):
            self.problem(name, "must not contain empty strings")
        if len(items) < min_items:
            self.problem(name, f"needs at least {min_items} item{'s' if min_items > 1 else ''} (has {len(items)})")
        return tuple(v for v in items if v)

    def integer(self, table: dict, field: str, prefix: str, lo: int, hi: int) -> int:
        name = prefix + field
        if field not in table:
            self.problem(name, "missing (required)")
            return lo
        value = table[field]
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(name, f"must be a whole number from {lo} to {hi}, got {_type_name(value)}")
            return lo
        if not lo <= value <= hi:
            self.problem(name, f"must be from {lo} to {hi}, got {value}")
            return max(lo, min(hi, value))
        return value

    def topics(self, persona: dict, kind: str) -> tuple[Topic, ...]:
        name = f"persona.{kind}"
        if kind not in persona:
            self.problem(name, "missing (required)")
            return ()
        raw = persona[kind]
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            self.problem(name, f"must be a list of tables ([[{name}]] with topic, keywords, says)")
            return ()
        if len(raw) < MIN_TOPICS[kind]:
            self.problem(name, f"needs at least {MIN_TOPICS[kind]} topics (has {len(raw)})")
        topics = []
        for i, table in enumerate(raw):
            prefix = f"{name}[{i}]."
            topic = self.text(table, "topic", prefix, max_len=80)
            keywords = self.texts(table, "keywords", prefix)
            says = self.texts(table, "says", prefix)
            topics.append(Topic(kind, topic, tuple(k.lower() for k in keywords), says))
        return tuple(topics)


def _type_name(value: Any) -> str:
    return {str: "a string", int: "a number", float: "a number", bool: "true/false", list: "a list", dict: "a table"}.get(
        type(value), type(value).__name__
    )


def parse_scenario(data: bytes | str, filename: str = "<scenario>") -> Scenario:
    """Parse and validate one scenario file's content. Raises :class:`ScenarioError`."""
    if isinstance(data, bytes):
        if len(data) > MAX_FILE_BYTES:
            raise ScenarioError([f"{filename}: file: too large ({len(data)} bytes; at most {MAX_FILE_BYTES})"])
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScenarioError([f"{filename}: file: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    try:
        raw = tomllib.loads(data)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError([f"{filename}: file: not valid TOML: {exc}"]) from None

    c = _Checker(filename)
    scenario_id = c.text(raw, "id")
    if scenario_id and not ID_RE.match(scenario_id):
        c.problem("id", "use 3-40 lowercase letters, digits and '-', starting and ending with a letter or digit")
    title = c.text(raw, "title", min_len=3, max_len=80)
    setting = c.text(raw, "setting")
    goal = c.text(raw, "goal")
    difficulty = c.text(raw, "difficulty")
    if difficulty and difficulty not in DIFFICULTIES:
        c.problem("difficulty", f"must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    tags = c.texts(raw, "tags", required=False)

    persona_raw = raw.get("persona")
    if not isinstance(persona_raw, dict):
        c.problem("persona", "missing (required): a [persona] table" if persona_raw is None else "must be a table ([persona])")
        persona_raw = {}
    p = "persona."
    persona = Persona(
        name=c.text(persona_raw, "name", p, max_len=80),
        role=c.text(persona_raw, "role", p, max_len=120),
        company=c.text(persona_raw, "company", p, max_len=120),
        background=c.text(persona_raw, "background", p),
        mood=c.text(persona_raw, "mood", p, max_len=120),
        openness=c.integer(persona_raw, "openness", p, 0, 100),
        opening_line=c.text(persona_raw, "opening_line", p),
        self_intro=c.texts(persona_raw, "self_intro", p),
        small_talk=c.texts(persona_raw, "small_talk", p, min_items=2),
        pitch_reaction=c.texts(persona_raw, "pitch_reaction", p, min_items=2),
        exit_line=c.text(persona_raw, "exit_line", p),
        interests=c.topics(persona_raw, "interests"),
        insights=c.topics(persona_raw, "insights"),
        issues=c.topics(persona_raw, "issues"),
        pitches=c.texts(persona_raw, "pitches", p, required=False),
    )
    if c.problems:
        raise ScenarioError(c.problems)
    return Scenario(scenario_id, title, setting, goal, difficulty, persona, tags, filename)


def load_scenario(path: Path) -> Scenario:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScenarioError([f"{path.name}: file: cannot be read ({exc.strerror})"]) from None
    return parse_scenario(data, path.name)


def check_dir(directory: Path) -> tuple[list[Scenario], list[str]]:
    """Load every ``*.toml`` in a folder; return the good scenarios and every problem found."""
    scenarios: list[Scenario] = []
    problems: list[str] = []
    if not directory.is_dir():
        return [], [f"{directory}: not a folder"]
    files = sorted(directory.glob("*.toml"))
    if not files:
        problems.append(f"{directory}: no scenario files (*.toml)")
    seen: dict[str, str] = {}
    for path in files:
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            problems.extend(exc.problems)
            continue
        if scenario.id in seen:
            problems.append(f"{path.name}: id: {scenario.id!r} is already used by {seen[scenario.id]}")
            continue
        if path.stem != scenario.id:
            problems.append(f"{path.name}: id: must match the file name ({path.stem!r}), got {scenario.id!r}")
            continue
        seen[scenario.id] = path.name
        scenarios.append(scenario)
    return scenarios, problems


class ScenarioLibrary:
    """The scenarios a user can pick from, in a stable order (difficulty, then title)."""

    def __init__(self, scenarios: Iterable[Scenario]):
        order = {d: i for i, d in enumerate(DIFFICULTIES)}
        self._by_id = {s.id: s for s in sorted(scenarios, key=lambda s: (order[s.difficulty], s.title))}

    @classmethod
    def from_dir(cls, directory: Path) -> "ScenarioLibrary":
        """Load a folder; refuse to start on any broken file so a typo never goes unnoticed."""
        scenarios, problems = check_dir(directory)
        if problems:
            raise ScenarioError(problems)
        return cls(scenarios)

    def get(self, scenario_id: str) -> Scenario | None:
        return self._by_id.get(scenario_id)

    def all(self, difficulty: str | None = None) -> list[Scenario]:
        return [s for s in self._by_id.values() if difficulty is None or s.difficulty == difficulty]

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, scenario_id: object) -> bool:
        return scenario_id in self._by_id

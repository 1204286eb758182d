"""Scenario files: the shipped library is valid, and broken files are reported precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import SCENARIOS_DIR
from bot.scenarios import ScenarioError, ScenarioLibrary, check_dir, parse_scenario
from tests.conftest import run_netcoach

REQUIRED_SETTINGS = {
    "chamber", "meetup", "conference", "association", "alumni", "virtual", "follow", "pitch",
}


def sample_text() -> str:
    """A valid scenario taken from the shipped library, to mutate in tests."""
    return (SCENARIOS_DIR / f"{sorted(p.stem for p in SCENARIOS_DIR.glob('*.toml'))[0]}.toml").read_text()


def test_shipped_library_is_valid_and_rich(library: ScenarioLibrary) -> None:
    assert len(library) >= 8
    for s in library.all():
        p = s.persona
        assert len(p.interests) >= 3 and len(p.insights) >= 2 and len(p.issues) >= 2, s.id
        assert s.difficulty in {"easy", "medium", "hard"}
    assert {s.difficulty for s in library.all()} == {"easy", "medium", "hard"}


def test_library_covers_the_required_settings(library: ScenarioLibrary) -> None:
    text = " ".join(f"{s.id} {s.title} {s.setting}".lower() for s in library.all())
    missing = {word for word in REQUIRED_SETTINGS if word not in text}
    assert not missing, f"no scenario mentions: {missing}"
    assert any(s.persona.pitches for s in library.all()), "need a scenario where the persona pitches at the user"


def test_missing_field_names_file_and_field() -> None:
    text = sample_text().replace("\nopening_line", "\n# opening_line", 1)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "broken.toml")
    assert "broken.toml: persona.opening_line: missing (required)" in err.value.problems


def test_wrong_type_is_reported_with_the_type() -> None:
    import re

    text = re.sub(r"(?m)^openness = \d+", 'openness = "very"', sample_text())
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "typed.toml")
    assert any(p.startswith("typed.toml: persona.openness: must be a whole number") for p in err.value.problems)


def test_out_of_range_and_bad_choice() -> None:
    import re

    text = re.sub(r"(?m)^openness = \d+", "openness = 140", sample_text())
    text = re.sub(r'(?m)^difficulty = ".*"', 'difficulty = "brutal"', text)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "x.toml")
    problems = "\n".join(err.value.problems)
    assert "x.toml: persona.openness: must be from 0 to 100, got 140" in problems
    assert "x.toml: difficulty: must be one of easy, medium, hard" in problems


def test_too_few_topics_and_bad_topic_fields() -> None:
    text = sample_text()
    head, _, _ = text.partition("[[persona.issues]]")
    text = head + '[[persona.issues]]\ntopic = "x"\nkeywords = "not a list"\nsays = []\n'
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "t.toml")
    problems = err.value.problems
    assert "t.toml: persona.issues: needs at least 2 topics (has 1)" in problems
    assert "t.toml: persona.issues[0].keywords: must be a list of strings" in problems
    assert "t.toml: persona.issues[0].says: needs at least 1 item (has 0)" in problems


def test_unparsable_file_reports_the_toml_error() -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario('id = "oops\ntitle = 3', "bad.toml")
    assert err.value.problems[0].startswith("bad.toml: file: not valid TOML")
    assert "line 1" in err.value.problems[0]


def test_binary_file_is_reported() -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(b"\xff\xfe\x00garbage", "bin.toml")
    assert err.value.problems[0].startswith("bin.toml: file: not UTF-8 text")


def test_check_dir_catches_duplicate_ids_and_name_mismatch(tmp_path: Path) -> None:
    text = sample_text()
    sid = parse_scenario(text).id
    (tmp_path / f"{sid}.toml").write_text(text)
    (tmp_path / "copy.toml").write_text(text)
    scenarios, problems = check_dir(tmp_path)
    assert [s.id for s in scenarios] == [sid]
    assert any(p.startswith("copy.toml: id:") for p in problems)


def test_cli_check_exit_codes(tmp_path: Path) -> None:
    ok = run_netcoach("scenarios", "check", str(SCENARIOS_DIR))
    assert ok.returncode == 0, ok.stderr
    assert "problem" in ok.stdout and "0 problem(s)" in ok.stdout

    (tmp_path / "broken.toml").write_text(sample_text().replace("\ngoal", "\n#goal", 1))
    bad = run_netcoach("scenarios", "check", str(tmp_path))
    assert bad.returncode == 1
    assert "broken.toml: goal: missing (required)" in bad.stderr


def test_cli_list_starts_each_line_with_the_id(library: ScenarioLibrary) -> None:
    result = run_netcoach("scenarios", "list")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == len(library)
    assert {line.split()[0] for line in lines} == {s.id for s in library.all()}


def test_broken_library_refuses_to_load(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("id = 1")
    with pytest.raises(ScenarioError) as err:
        ScenarioLibrary.from_dir(tmp_path)
    assert "a.toml: id: must be a string, got a number" in err.value.problems

"""The session engine: start, turns, end, history, resume after a restart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.scenarios import ScenarioLibrary
from bot.session import PracticeEngine, SessionError, export_user
from bot.store import TinyDBStore
from tests.conftest import run_netcoach


async def test_full_session_is_scored_and_kept(engine: PracticeEngine) -> None:
    session = await engine.start("u1", "alumni-reception")
    assert session.turns[0]["role"] == "partner"
    await engine.say("u1", "Hello! What brings you back to campus tonight?")
    await engine.say("u1", "How did you get into that line of work?")
    ended, debrief = await engine.end("u1")
    assert ended.status == "ended" and ended.result["focus_score"] == debrief.focus_score
    assert [t.text for t in debrief.turns] == [
        "Hello! What brings you back to campus tonight?", "How did you get into that line of work?"]
    assert engine.active("u1") is None
    assert [s.id for s in engine.history("u1")] == [session.id]
    assert engine.debrief("u1", session.id).focus_score == debrief.focus_score


async def test_commands_without_a_session_explain_what_to_do(engine: PracticeEngine) -> None:
    for call in (engine.say("nobody", "hi"), engine.end("nobody"), engine.hint("nobody")):
        with pytest.raises(SessionError, match="/practice"):
            await call
    assert await engine.cancel("nobody") is False


async def test_bad_turns_are_refused_without_losing_the_session(engine: PracticeEngine) -> None:
    await engine.start("u1", "tech-meetup")
    with pytest.raises(SessionError, match="empty"):
        await engine.say("u1", "   ")
    with pytest.raises(SessionError, match="too long"):
        await engine.say("u1", "x" * 4097)
    result = await engine.say("u1", "a" * 4096)  # exactly Telegram's limit is fine
    assert result.reply
    assert len(engine.active("u1").turns) == 3


async def test_unknown_scenario(engine: PracticeEngine) -> None:
    with pytest.raises(SessionError, match="no scenario"):
        await engine.start("u1", "../../etc/passwd")


async def test_starting_again_sets_the_old_session_aside(engine: PracticeEngine) -> None:
    first = await engine.start("u1", "tech-meetup")
    second = await engine.start("u1", "alumni-reception")
    assert engine.active("u1").id == second.id
    assert engine.get("u1", first.id).status == "abandoned"
    assert engine.history("u1") == []  # abandoned sessions are not scored history


async def test_resume_with_a_new_engine_on_the_same_store(data_dir: Path, library: ScenarioLibrary) -> None:
    first = PracticeEngine(TinyDBStore(data_dir), library)
    await first.start("u1", "chamber-breakfast")
    await first.say("u1", "What got you into this?")
    # A brand-new engine and store object: nothing carried over in memory.
    second = PracticeEngine(TinyDBStore(data_dir), library)
    session = second.active("u1")
    assert session is not None and [t["role"] for t in session.turns] == ["partner", "user", "partner"]
    await second.say("u1", "How did that go?")
    _, debrief = await second.end("u1")
    assert len(debrief.turns) == 2


async def test_hint_is_a_nudge_that_changes_with_the_conversation(engine: PracticeEngine) -> None:
    await engine.start("u1", "chamber-breakfast")
    opening = await engine.hint("u1")
    await engine.say("u1", "We sell payroll software, here's my card, call me if you need us.")
    after_pitch = await engine.hint("u1")
    assert opening != after_pitch
    assert "Rosa" in after_pitch or "Rosa" in opening
    assert engine.active("u1").hints == 2


def test_debrief_names_the_weak_line_and_a_better_one(tmp_path: Path) -> None:
    lines = "Hello!\nWho makes the purchasing decisions at your bakery?\nWhat got you into baking?\n/end\n"
    result = run_netcoach("practice", "--scenario", "chamber-breakfast", stdin=lines, data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'Instead of: "Who makes the purchasing decisions at your bakery?"' in result.stdout
    assert re.search(r'Try: +"[^"]+\?"', result.stdout)


def test_terminal_practice_end_to_end(tmp_path: Path) -> None:
    lines = [
        "Hi! How are you finding the meetup?",
        "What are you working on at the moment?",
        "Interesting, how did you end up there?",
        "/hint",
        "I could introduce you to a friend who went through the same thing, if that helps.",
        "Could we grab a coffee in a couple of weeks? I'd love to hear how it goes.",
        "/end",
    ]
    result = run_netcoach("practice", "--scenario", "tech-meetup", stdin="\n".join(lines) + "\n", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "== Data engineering meetup" in out
    assert "(hint) " in out
    score = int(re.search(r"Focus score: (\d+)/100", out).group(1))
    assert score >= 70 and "(connector)" in out
    for line in lines[:3]:
        assert f"you: {line}" in out
    assert "What you discovered about" in out and "longest stretch" in out

    history = run_netcoach("history", data_dir=tmp_path)
    assert "tech-meetup" in history.stdout and f"{score:>3}/100" in history.stdout


def test_terminal_resume_across_processes(tmp_path: Path) -> None:
    first = run_netcoach("practice", "--scenario", "alumni-reception",
                         stdin="Hello! What brings you here tonight?\n", data_dir=tmp_path)
    assert "Paused" in first.stdout
    second = run_netcoach("practice", stdin="What did you study back then?\n/end\n", data_dir=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Resuming your conversation with" in second.stdout
    assert "Hello! What brings you here tonight?" in second.stdout  # turn from the first process
    assert "What did you study back then?" in second.stdout


def test_terminal_asks_which_scenario(tmp_path: Path, library: ScenarioLibrary) -> None:
    result = run_netcoach("practice", stdin="99\nnot-a-scenario\n1\n/end\n", data_dir=tmp_path)
    assert "Which situation do you want to practise?" in result.stdout
    assert "Please type a number from 1 to" in result.stdout
    assert f"== {library.all()[0].title}" in result.stdout
    assert "Focus score: " in result.stdout


def test_terminal_export_and_forget(tmp_path: Path) -> None:
    run_netcoach("practice", "--scenario", "tech-meetup", stdin="Hi!\n/end\n", data_dir=tmp_path)
    exported = run_netcoach("export", data_dir=tmp_path)
    assert '"scenario_id": "tech-meetup"' in exported.stdout
    refused = run_netcoach("forget", data_dir=tmp_path)
    assert refused.returncode == 1 and "Nothing deleted" in refused.stdout
    done = run_netcoach("forget", "--yes", data_dir=tmp_path)
    assert "deleted" in done.stdout
    assert "No finished practice sessions" in run_netcoach("history", data_dir=tmp_path).stdout
    assert list(tmp_path.rglob("*.json")) == []  # the everyday file and the archive


# -- history kept apart: the everyday file stays small ----------------------------------------


async def practise_once(engine: PracticeEngine, user: str, scenario: str = "tech-meetup") -> str:
    session = await engine.start(user, scenario)
    await engine.say(user, "What are you working on at the moment?")
    await engine.end(user)
    return session.id


async def test_the_users_everyday_file_does_not_grow_with_their_history(engine: PracticeEngine,
                                                                       data_dir: Path) -> None:
    """Every turn rewrites the file it changes; finished sessions live in the user's archive so a
    long history never slows a turn down (it cost 75 ms per turn at 300 sessions)."""
    everyday, archive = data_dir / "users" / "u1.json", data_dir / "archive" / "u1.json"
    first = await practise_once(engine, "u1")
    await engine.start("u1", "chamber-breakfast")
    size_after_one = everyday.stat().st_size
    await engine.cancel("u1")
    ids = [first] + [await practise_once(engine, "u1") for _ in range(24)]
    await engine.start("u1", "chamber-breakfast")
    assert everyday.stat().st_size <= size_after_one * 1.2  # one session in progress, as before
    assert archive.stat().st_size > 20 * size_after_one
    assert sorted(s.id for s in engine.history("u1")) == sorted(ids)  # ...and nothing of the history is lost
    assert engine.debrief("u1", first) is not None
    exported = export_user(engine.store, "u1")
    assert sorted(s["status"] for s in exported["sessions"]) == ["abandoned", "active", *["ended"] * 25]
    assert "sessions_archive" not in exported


async def test_files_from_before_the_archive_read_the_same_and_move_over(engine: PracticeEngine,
                                                                        data_dir: Path) -> None:
    ids = [await practise_once(engine, "u1") for _ in range(2)]
    for record in engine.store.all("u1", "sessions_archive"):  # the old layout: all in one file
        engine.store.put("u1", "sessions", record["id"], record)
    (data_dir / "archive" / "u1.json").unlink()
    assert sorted(s.id for s in engine.history("u1")) == sorted(ids)
    ids.append(await practise_once(engine, "u1"))
    assert engine.store.all("u1", "sessions") == []
    assert sorted(s.id for s in engine.history("u1")) == sorted(ids)


async def test_a_crash_between_archiving_and_unpointing_loses_nothing(engine: PracticeEngine) -> None:
    """End writes the archive first, then the everyday file. Here the second write never
    happened: the session is archived and still in progress; it reads as in progress, is listed
    once, and ending it again replaces the archived copy."""
    session = await engine.start("u1", "tech-meetup")
    await engine.say("u1", "What are you working on at the moment?")
    early = engine.active("u1")
    early.status, early.result = "ended", {"focus_score": 50, "verdict": "mixed", "labels": ["other_focus"]}
    engine.store.put("u1", "sessions_archive", session.id, early.to_dict())
    assert engine.active("u1").id == session.id
    await engine.say("u1", "How did you get into that?")
    [exported] = export_user(engine.store, "u1")["sessions"]  # the newer copy, with the new turn
    assert exported["turns"][-2]["text"] == "How did you get into that?" and exported["status"] == "active"
    await engine.end("u1")
    [kept] = engine.history("u1")
    assert [t["text"] for t in kept.turns if t["role"] == "user"] == [
        "What are you working on at the moment?", "How did you get into that?"]

"""The terminal front end: practice, history and data commands over stdin/stdout.

A thin adapter over :class:`bot.session.PracticeEngine`, like the Telegram bot. It works with a
person at a terminal and with a pipe (each input line is one user turn), so it doubles as the
easiest way to script a whole role-play.
"""

from __future__ import annotations

import html
import json
import re
from typing import TYPE_CHECKING, TextIO

from bot.reflection import Reflection
from bot.templates import render_html_string, wording

if TYPE_CHECKING:
    from bot.events import EventBook

from bot.scenarios import Scenario, ScenarioLibrary
from bot.session import PracticeEngine, SessionError, export_user

def plain(text: str) -> str:
    """Our Telegram HTML wording as terminal text."""
    return html.unescape(re.sub(r"</?[a-z][^>]*>", "", text))


COMMANDS_HELP = "Commands: /hint for a nudge, /end to finish and see your debrief, /quit to stop (you can resume later)."


class Terminal:
    def __init__(self, engine: PracticeEngine, stdin: TextIO, stdout: TextIO, interactive: bool):
        self.engine = engine
        self.stdin = stdin
        self.out = stdout
        self.interactive = interactive

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def ask(self, prompt: str) -> str | None:
        """Read one line; None at end of input."""
        if self.interactive:
            self.out.write(prompt)
            self.out.flush()
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\r\n")

    # -- practice ----------------------------------------------------------------------------

    def choose_scenario(self, library: ScenarioLibrary) -> Scenario | None:
        scenarios = library.all()
        self.say("Which situation do you want to practise?")
        for i, s in enumerate(scenarios, 1):
            self.say(f"  {i:>2}. {s.title} [{s.difficulty}]  ({s.id})")
        while True:
            answer = self.ask("Number or id: ")
            if answer is None:
                return None
            answer = answer.strip()
            if answer.isdigit() and 1 <= int(answer) <= len(scenarios):
                return scenarios[int(answer) - 1]
            if answer in library:
                return library.get(answer)
            self.say(f"Please type a number from 1 to {len(scenarios)}, or a scenario id.")

    async def practice(self, user_id: str, scenario_id: str | None, new: bool = False) -> int:
        engine = self.engine
        session = engine.active(user_id)
        if session is not None and not new and scenario_id in (None, session.scenario_id):
            scenario = engine.scenario_for(session)
            self.say(f"Resuming your conversation with {scenario.persona.name} ({scenario.title}).")
            self.say(COMMANDS_HELP)
            self.say()
            last = next((t for t in reversed(session.turns) if t["role"] == "partner"), None)
            if last:
                self.say(f"{scenario.persona.first_name}: {last['text']}")
        else:
            if scenario_id is None:
                scenario = self.choose_scenario(engine.library)
                if scenario is None:
                    self.say("No scenario chosen.")
                    return 1
            else:
                scenario = engine.library.get(scenario_id)
                if scenario is None:
                    self.say(f"There is no scenario called {scenario_id!r}. Try: netcoach scenarios list")
                    return 2
            if session is not None:
                self.say("(Your unfinished role-play was set aside.)")
            session = await engine.start(user_id, scenario.id)
            self.intro(scenario)
            self.say(f"{scenario.persona.first_name}: {session.turns[0]['text']}")
        return await self.loop(user_id, scenario)

    def intro(self, scenario: Scenario) -> None:
        p = scenario.persona
        self.say(f"== {scenario.title} ({scenario.difficulty}) ==")
        self.say(scenario.setting)
        self.say(f"You are talking to {p.name}, {p.role} at {p.company}. Mood: {p.mood}.")
        self.say(f"Your goal: {scenario.goal}")
        self.say(COMMANDS_HELP)
        self.say()

    async def loop(self, user_id: str, scenario: Scenario) -> int:
        name = scenario.persona.first_name
        while True:
            line = self.ask("you> ")
            if line is None or line.strip() == "/quit":
                self.say("Paused. Run `netcoach practice` to pick up where you left off.")
                return 0
            text = line.strip()
            if not text:
                continue
            if not self.interactive:
                self.say(f"you: {text}")
            if text == "/end":
                break
            if text == "/hint":
                self.say(f"(hint) {await self.engine.hint(user_id)}")
                continue
            if text.startswith("/") and " " not in text:
                self.say(COMMANDS_HELP)
                continue
            try:
                result = await self.engine.say(user_id, text)
            except SessionError as exc:
                self.say(str(exc))
                continue
            self.say(f"{name}: {result.reply}")
            if result.left:
                self.say(f"({name} has left the conversation.)")
                break
        _, debrief = await self.engine.end(user_id)
        self.say()
        self.say(debrief.render_text())
        return 0

    # -- other commands ------------------------------------------------------------------------

    def history(self, user_id: str) -> int:
        sessions = self.engine.history(user_id)
        if not sessions:
            self.say("No finished practice sessions yet. Start one with: netcoach practice")
            return 0
        for s in sessions:
            result = s.result or {}
            title = self.engine.library.get(s.scenario_id)
            self.say(
                f"{s.started_at[:16].replace('T', ' ')}  {s.scenario_id:<28} "
                f"{result.get('focus_score', 0):>3}/100  {result.get('verdict', '?'):<9}  "
                f"{title.title if title else ''}"
            )
        return 0

    async def debrief(self, user_id: str, events: "EventBook") -> int:
        """The post-event reflection, question by question; Enter skips a question."""
        waiting = events.awaiting_reflection(user_id)
        if waiting:
            self.say("Which event do you want to reflect on?")
            for i, e in enumerate(waiting, 1):
                self.say(f"  {i}. {e.name} ({e.start():%a %d %b %H:%M})")
            self.say("  or type the name of another event you went to.")
        else:
            self.say("Which event did you go to? Type its name.")
        answer = (self.ask("Event: ") or "").strip()
        if not answer:
            self.say("No event chosen.")
            return 1
        if answer.isdigit() and 1 <= int(answer) <= len(waiting):
            event = waiting[int(answer) - 1]
        else:
            event = events.add_past(user_id, answer)
        reflection = Reflection(event.id, event.name)
        self.say("(Press Enter to skip a question.)")
        while not reflection.done:
            _, question = reflection.question()
            self.say(plain(question))
            line = self.ask("> ")
            if line is None:
                self.say("Stopped; nothing was saved.")
                return 1
            if not self.interactive:
                self.say(f"> {line}")
            if line.strip():
                reflection.answer(line)
            else:
                reflection.skip()
        result = events.finish_reflection(user_id, reflection)
        self.say()
        self.say(plain(render_html_string(wording("events.toml")["text"]["reflection_result"], name=event.name, r=result)))
        return 0

    def export(self, user_id: str) -> int:
        data = export_user(self.engine.store, user_id)
        self.say(json.dumps({"user": user_id, "data": data}, ensure_ascii=False, indent=2))
        return 0

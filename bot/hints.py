"""/hint: one coaching nudge for the conversation as it stands (a direction, never a line to recite)."""

from __future__ import annotations

from typing import Sequence

from bot.persona import PersonaState
from bot.scenarios import Scenario
from bot.scoring import OfflineScorer, Turn
from bot.templates import render_string, wording


def hint_for(scenario: Scenario, state: PersonaState, turns: Sequence[Turn], scorer: OfflineScorer) -> str:
    persona = scenario.persona
    by_key = {t.key: t for t in persona.topics()}
    current = by_key.get(state.last_topic or "")
    revealed_issue = next((t for t in persona.issues if t.key in state.revealed), None)
    ctx = {
        "name": persona.first_name,
        "topic": current.topic if current else persona.interests[0].topic,
        "issue": revealed_issue.topic if revealed_issue else "",
    }
    user_turns = [(i, t) for i, t in enumerate(turns) if t.role == "user"]
    if not user_turns:
        code = "just_started"
    else:
        i, last = user_turns[-1]
        last_label = scorer.score_turn(last.text, turns[:i]).label
        offered = any("offer_help" in scorer.intents(t.text, turns[:j]) for j, t in user_turns)
        if state.mood == "cool":
            code = "cooling"
        elif last_label == "pitch":
            code = "after_pitch"
        elif revealed_issue and not offered:
            code = "issue_revealed"
        elif state.rapport == 0:
            code = "no_questions"
        elif current is not None and not state.issues_earned:
            code = "build_on_it"
        elif not state.issues_earned:
            code = "earn_trust"
        elif any("propose_follow_up" in scorer.intents(t.text, turns[:j]) for j, t in user_turns):
            code = "going_well"
        else:
            code = "wrap_up"
    return render_string(wording("coaching.toml")["hints"][code], **ctx)

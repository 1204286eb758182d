"""Practice sessions: start a role-play, exchange turns, end it and get the debrief.

This is the coaching engine the front ends share (terminal today, Telegram next). It knows nothing
about either: it takes a user id and text, and returns text and data. Every state change is saved
to the store before the method returns, so a session survives a restart of the process.

One user's turns are handled one at a time (an ``asyncio.Lock`` per user); different users never
wait for each other.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Callable

from bot.debrief import Debrief, build_debrief
from bot.hints import hint_for
from bot.llm import usage
from bot.llm.base import Hinter, Judge, Judgement
from bot.llm.combine import combine
from bot.persona import OfflinePersona, PersonaEngine, PersonaState, Reading, update_engagement
from bot.scenarios import Scenario, ScenarioLibrary
from bot.scoring import OfflineScorer, Turn
from bot.store import Store, read_call, write_many

SESSIONS = "sessions"  # the role-play in progress (and, in files from before the archive, older ones)
ARCHIVE = "sessions_archive"  # finished and set-aside sessions: kept apart by the store (bot.store.is_archive)
PROFILE = "profile"
ACTIVE = "active_session"  # the profile field naming the role-play in progress
MAX_TURN_CHARS = 4096  # Telegram's own limit; the terminal is held to the same


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def all_sessions(store: Store, user_id: str) -> list[dict[str, Any]]:
    """Every session record of the user, archived or not, each once. A session in both places (a
    crash between the two writes of ``PracticeEngine._save_and_point``) is read from the copy with
    more turns, the archived one if they are equal: nothing the user said after the crash is lost."""
    by_id = {d["id"]: d for d in store.all(user_id, ARCHIVE)}
    for d in store.all(user_id, SESSIONS):
        kept = by_id.get(d["id"])
        if kept is None or len(d.get("turns", ())) > len(kept.get("turns", ())):
            by_id[d["id"]] = d
    return list(by_id.values())


def export_user(store: Store, user_id: str) -> dict[str, Any]:
    """Everything kept about the user, by table, with all their sessions in one ``sessions`` list
    (oldest first) wherever the store keeps them."""
    data = {k: v for k, v in store.export_user(user_id).items() if k not in (SESSIONS, ARCHIVE)}
    sessions = sorted(all_sessions(store, user_id), key=lambda d: (d.get("started_at", ""), d["id"]))
    if sessions:
        data[SESSIONS] = sessions
    return dict(sorted(data.items()))


def finished_sessions(store: Store, user_id: str) -> list[dict[str, Any]]:
    """The user's ended sessions as stored, oldest first."""
    ended = [d for d in all_sessions(store, user_id) if d.get("status") == "ended"]
    return sorted(ended, key=lambda d: (d["started_at"], d["id"]))


class SessionError(Exception):
    """Something the user asked for cannot be done right now; the message says what to do instead."""


@dataclass
class Session:
    id: str
    user_id: str
    scenario_id: str
    started_at: str
    persona: PersonaState
    turns: list[dict[str, Any]] = field(default_factory=list)  # {"role", "text", "at", "label"?}
    status: str = "active"  # active | ended | abandoned
    ended_at: str | None = None
    ended_by: str | None = None  # user | partner
    hints: int = 0
    result: dict[str, Any] | None = None  # focus_score, verdict, labels (and the LLM judgement) once ended
    usage: dict[str, dict[str, int]] = field(default_factory=dict)  # LLM tokens per model (bot/llm/usage.py)

    @property
    def active(self) -> bool:
        return self.status == "active"

    def transcript(self) -> list[Turn]:
        return [Turn(t["role"], t["text"]) for t in self.turns]

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copy cost as much CPU as scoring the turn. Turns and
        # usage are flat, so copying one level deep gives the same independent, JSON-ready record.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["persona"] = self.persona.to_dict()
        data["turns"] = [dict(t) for t in self.turns]
        data["usage"] = {model: dict(counts) for model, counts in self.usage.items()}
        data["result"] = copy.deepcopy(self.result)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Session":
        data = dict(data)
        data["persona"] = PersonaState.from_dict(data["persona"])
        return cls(**data)


@dataclass(frozen=True)
class TurnResult:
    """What came of one user turn."""

    reply: str
    left: bool  # the persona ended the conversation
    label: str
    engagement: int
    engagement_change: int
    session_id: str = ""
    partner: str = ""  # the persona's first name


class PracticeEngine:
    def __init__(
        self,
        store: Store,
        library: ScenarioLibrary,
        scorer: OfflineScorer | None = None,
        persona: PersonaEngine | None = None,
        clock: Callable[[], datetime] = utcnow,
        judge: Judge | None = None,
        hinter: Hinter | None = None,
    ):
        """``persona``, ``judge`` and ``hinter`` are the optional LLM parts (see ``bot.llm.llm_options``);
        None means the offline engine, which is also what each LLM part falls back to."""
        self.store = store
        self.library = library
        self.scorer = scorer or OfflineScorer()
        self.persona = persona
        self.clock = clock
        self.judge = judge
        self.hinter = hinter
        self._locks: dict[str, asyncio.Lock] = {}

    # -- helpers -------------------------------------------------------------------------------

    def _lock(self, user_id: str) -> asyncio.Lock:
        lock = self._locks.get(user_id)
        if lock is None:
            lock = self._locks[user_id] = asyncio.Lock()
        return lock

    def _now(self) -> str:
        return self.clock().isoformat(timespec="seconds")

    async def _write(self, user_id: str, changes: dict[tuple[str, str], Any]) -> None:
        """One atomic write of the user's file; the disk work happens off the event loop."""
        await write_many(self.store, user_id, changes)

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await read_call(self.store, fn, *args)

    def _persona_for(self, session: Session) -> PersonaEngine:
        if self.persona is None:
            return OfflinePersona(seed=session.id)
        # Engines with per-session state (the LLM persona's offline fallback) are bound to the session.
        bind = getattr(self.persona, "for_session", None)
        return bind(session.id) if callable(bind) else self.persona

    def scenario_for(self, session: Session) -> Scenario:
        scenario = self.library.get(session.scenario_id)
        if scenario is None:
            raise SessionError(f"The scenario {session.scenario_id!r} is no longer available.")
        return scenario

    async def _save(self, session: Session) -> None:
        data = session.to_dict()
        await self._write(session.user_id, {(SESSIONS, session.id): lambda _old: data})

    async def _save_and_point(self, user_id: str, done: list[Session], active: Session | None) -> None:
        """Keep the sessions that are over in the archive, then save the one in progress (if any)
        and the profile's pointer to it in one atomic write: a crash can never leave the pointer
        aiming at a session that was not saved.

        Two writes, the archive's first: a crash between them leaves a session both archived and
        still pointed at, which reads as in progress (the user carries on; ending it again
        overwrites the archived copy). Never a session in neither place."""
        hot = await self._read(self.store.all, user_id, SESSIONS)
        hot_ids = {d["id"] for d in hot}
        keep = {s.id for s in done} | ({active.id} if active else set())
        # files written before the archive kept older sessions here: they move on the way
        archived = [*(Session.from_dict(d) for d in hot if d["id"] not in keep), *done]
        if archived:
            await self._write(user_id, {(ARCHIVE, s.id): (lambda _old, data=s.to_dict(): data) for s in archived})

        def point(profile: dict[str, Any] | None) -> dict[str, Any]:
            return {**(profile or {}), ACTIVE: active.id if active else None}

        changes: dict[tuple[str, str], Any] = {(SESSIONS, s.id): (lambda _old: None) for s in archived if s.id in hot_ids}
        if active is not None:
            changes[(SESSIONS, active.id)] = lambda _old, data=active.to_dict(): data
        changes[(PROFILE, PROFILE)] = point
        await self._write(user_id, changes)

    # -- queries -------------------------------------------------------------------------------

    def active(self, user_id: str) -> Session | None:
        """The user's role-play in progress, if any (read from the store: survives restarts)."""
        profile = self.store.get(user_id, PROFILE, PROFILE) or {}
        session_id = profile.get(ACTIVE)
        if not session_id:
            return None
        session = self.get(user_id, session_id)
        return session if session and session.active else None

    def get(self, user_id: str, session_id: str) -> Session | None:
        data = self.store.get(user_id, SESSIONS, session_id) or self.store.get(user_id, ARCHIVE, session_id)
        return Session.from_dict(data) if data else None

    def history(self, user_id: str) -> list[Session]:
        """Finished sessions, oldest first."""
        return [Session.from_dict(d) for d in finished_sessions(self.store, user_id)]

    # -- commands ------------------------------------------------------------------------------

    async def start(self, user_id: str, scenario_id: str) -> Session:
        """Begin a role-play; a role-play already in progress is set aside (kept, marked abandoned)."""
        return (await self.switch_to(user_id, scenario_id))[0]

    async def switch_to(self, user_id: str, scenario_id: str) -> tuple[Session, Session | None]:
        """:meth:`start`, also returning the role-play it set aside (None if there was none), read
        under the same lock: a front end that tells the user what was set aside is never wrong."""
        scenario = self.library.get(scenario_id)
        if scenario is None:
            raise SessionError(f"There is no scenario called {scenario_id!r}.")
        async with self._lock(user_id):
            previous = await self._read(self.active, user_id)
            if previous is not None:
                previous.status = "abandoned"
                previous.ended_at = self._now()
            session = Session(
                id=f"{self.clock():%Y%m%d%H%M%S}-{secrets.token_hex(3)}",
                user_id=user_id,
                scenario_id=scenario.id,
                started_at=self._now(),
                persona=PersonaState.initial(scenario),
            )
            session.turns.append({"role": "partner", "text": scenario.persona.opening_line, "at": self._now()})
            await self._save_and_point(user_id, [previous] if previous else [], session)
            return session, previous

    async def say(self, user_id: str, text: str) -> TurnResult:
        """Feed one user turn; returns the persona's reply. The turn is saved before replying."""
        text = text.strip()
        if not text:
            raise SessionError("That message was empty. Say something to continue the conversation.")
        if len(text) > MAX_TURN_CHARS:
            raise SessionError(f"That message is too long ({len(text)} characters; at most {MAX_TURN_CHARS}).")
        async with self._lock(user_id):
            session = await self._read(self.active, user_id)
            if session is None:
                raise SessionError("No role-play is running. Start one with /practice.")
            scenario = self.scenario_for(session)
            if session.persona.left:
                raise SessionError(f"{scenario.persona.first_name} has left the conversation. Use /end to see your debrief.")
            history = session.transcript()
            score, intents = self.scorer.read_turn(text, history)
            reading = Reading(score, intents)
            change = update_engagement(session.persona, reading, text)
            session.turns.append(
                {"role": "user", "text": text, "at": self._now(), "label": score.label, "confidence": score.confidence}
            )
            with usage.collecting(into=session.usage):
                reply = await self._persona_for(session).reply(scenario, session.persona, history, text, reading)
            session.turns.append({"role": "partner", "text": reply.text, "at": self._now()})
            if reply.left:
                session.persona.left = True
            await self._save(session)
            return TurnResult(reply.text, reply.left, score.label, session.persona.engagement, change,
                              session.id, scenario.persona.first_name)

    async def hint(self, user_id: str) -> str:
        async with self._lock(user_id):
            session = await self._read(self.active, user_id)
            if session is None:
                raise SessionError("Hints are for a role-play in progress. Start one with /practice.")
            scenario, turns = self.scenario_for(session), session.transcript()
            text = hint_for(scenario, session.persona, turns, self.scorer)
            if self.hinter is not None:
                with usage.collecting(into=session.usage):
                    text = await self.hinter.hint(scenario, session.persona, turns, text)
            session.hints += 1
            await self._save(session)
            return text

    async def end(self, user_id: str) -> tuple[Session, Debrief]:
        """Finish the role-play in progress, score it and keep the result."""
        async with self._lock(user_id):
            session = await self._read(self.active, user_id)
            if session is None:
                raise SessionError("No role-play is running. Start one with /practice.")
            scenario = self.scenario_for(session)
            judgement = None
            if self.judge is not None:
                with usage.collecting(into=session.usage):
                    judgement = await self.judge.judge(scenario, session.transcript())
            debrief = self._build_debrief(scenario, session, judgement)
            session.status = "ended"
            session.ended_at = self._now()
            session.ended_by = "partner" if session.persona.left else "user"
            session.result = {
                "focus_score": debrief.focus_score,
                "verdict": debrief.verdict,
                "labels": [t.label for t in debrief.turns],
            }
            if judgement is not None:
                session.result["judgement"] = judgement.to_dict()
            await self._save_and_point(user_id, [session], None)
            return session, debrief

    async def cancel(self, user_id: str) -> bool:
        """Drop the role-play in progress without scoring it. Returns False if there was none."""
        async with self._lock(user_id):
            session = await self._read(self.active, user_id)
            if session is None:
                return False
            session.status = "abandoned"
            session.ended_at = self._now()
            await self._save_and_point(user_id, [session], None)
            return True

    def debrief(self, user_id: str, session_id: str) -> Debrief | None:
        """Rebuild the debrief of a finished session (deterministic, so it matches the original)."""
        session = self.get(user_id, session_id)
        if session is None or session.status != "ended":
            return None
        return self._build_debrief(self.scenario_for(session), session,
                                   Judgement.from_dict((session.result or {}).get("judgement")))

    def _build_debrief(self, scenario: Scenario, session: Session, judgement: Judgement | None) -> Debrief:
        """The offline debrief, or with the judge's labels combined in (rule: bot/llm/combine.py)."""
        turns = session.transcript()
        if judgement is None:
            return build_debrief(scenario, session.persona, turns, self.scorer)
        combined = combine(self.scorer.score_conversation(turns), turns, judgement)
        return build_debrief(scenario, session.persona, turns, self.scorer, combined.score, combined.rewrites)

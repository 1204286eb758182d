"""Coaches and trainees: invites with consent, assignments, the roster, coach-authored scenarios.

Authorization lives here, not in the front end: every read of a trainee's data goes through a
link the trainee confirmed, and returns only what they consented to ("scores" or "transcripts").
Links are kept on both sides (the coach's ``trainees`` table, the trainee's ``coaches`` table);
writes touch each file atomically, in an order where a crash halfway leaves at worst a link the
trainee side does not know about, which every read re-checks and ignores.

Invite links carry a random single-use payload; only its SHA-256 is stored (in a small system
file), so the store never holds a usable invite.
"""

from __future__ import annotations

import hashlib
import secrets
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from bot.progress import summarise
from bot.scenarios import ID_RE, Scenario, ScenarioError, ScenarioLibrary, parse_scenario
from bot.schedule import Scheduler
from bot.session import finished_sessions
from bot.store import Store

SYSTEM = "sys-invites"  # system file: invite hashes -> coach
INVITES = "invites"
REGISTRY = "sys-scenarios"  # system file: coach scenario id -> coach (ids are unique across coaches)
REGISTERED = "scenarios"
COACH = "coach"
TRAINEES = "trainees"
COACHES = "coaches"
ASSIGNMENTS = "assignments"  # in the coach's file
ASSIGNED = "assigned"  # in the trainee's file
CUSTOM = "custom_scenarios"
CONSENTS = ("scores", "transcripts")
MAX_CUSTOM_SCENARIOS = 20


class CoachingError(ValueError):
    """Refused or impossible; the message is safe to show and reveals nothing about others."""


def _hash(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Assignment:
    id: str
    coach: str
    trainee: str
    trainee_name: str
    scenario_id: str
    scenario_title: str
    due_at: str
    target: int
    max_attempts: int
    created_at: str
    scores: list[int] = field(default_factory=list)
    status: str = "pending"  # pending | done | missed (attempts used up) | left (trainee left)
    reported: bool = False

    @property
    def best(self) -> int | None:
        return max(self.scores) if self.scores else None

    def state(self, now: datetime) -> str:
        """pending / done / overdue / missed / left, as shown on the roster."""
        if self.status == "pending" and now > datetime.fromisoformat(self.due_at):
            return "overdue"
        return self.status

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RosterRow:
    link_id: str
    name: str
    consent: str
    sessions: int
    last: int | None
    average: float | None
    trend: float | None  # points per session
    pending: int
    done: int
    overdue: int
    assignments: tuple[Assignment, ...]


class Coaching:
    def __init__(self, store: Store, library: ScenarioLibrary, scheduler: Scheduler,
                 clock: Callable[[], datetime] | None = None, invite_ttl: timedelta = timedelta(days=7)):
        self.store = store
        self.library = library
        self.scheduler = scheduler
        self.clock = clock or scheduler.clock
        self.invite_ttl = invite_ttl

    def now(self) -> datetime:
        return self.clock()

    # -- becoming a coach, invites ------------------------------------------------------------

    def become_coach(self, coach: str, display_name: str) -> None:
        self.store.update(coach, COACH, COACH, lambda c: {**(c or {"since": _iso(self.now())}), "name": display_name[:80]})

    def coach_profile(self, uid: str) -> dict[str, Any] | None:
        return self.store.get(uid, COACH, COACH)

    def is_coach(self, uid: str) -> bool:
        return self.coach_profile(uid) is not None

    def create_invite(self, coach: str) -> tuple[str, datetime]:
        """A fresh single-use payload for ``https://t.me/<bot>?start=<payload>``."""
        if not self.is_coach(coach):
            raise CoachingError("Only coaches can invite trainees. Send /coach first.")
        payload = "c" + secrets.token_urlsafe(24)  # 33 chars of [A-Za-z0-9_-]
        expires = self.now() + self.invite_ttl
        key = _hash(payload)
        self.store.put(SYSTEM, INVITES, key, {"hash": key, "coach": coach, "expires_at": _iso(expires), "status": "open"})
        return payload, expires

    def revoke_invites(self, coach: str) -> int:
        """Revoke every open invite of this coach; returns how many."""
        revoked = 0
        for row in self.store.all(SYSTEM, INVITES):
            if row.get("coach") == coach and row["status"] == "open":
                self.store.put(SYSTEM, INVITES, row["hash"], {**row, "status": "revoked"})
                revoked += 1
        return revoked

    def open_invites(self, coach: str) -> int:
        now = self.now()
        return sum(1 for row in self.store.all(SYSTEM, INVITES) if row.get("coach") == coach
                   and row["status"] == "open" and datetime.fromisoformat(row["expires_at"]) > now)

    def open_invite(self, payload: str) -> dict[str, Any]:
        """The invite behind a payload, if it can still be used; raises otherwise (no details)."""
        if not payload or len(payload) > 64:
            raise CoachingError("This invite link is not valid.")
        row = self.store.get(SYSTEM, INVITES, _hash(payload))
        if row is None or row["status"] != "open" or datetime.fromisoformat(row["expires_at"]) <= self.now():
            raise CoachingError("This invite link is not valid any more. Ask your coach for a new one.")
        coach = self.coach_profile(row["coach"])
        if coach is None:
            raise CoachingError("This invite link is not valid any more. Ask your coach for a new one.")
        return {"coach": row["coach"], "coach_name": coach["name"]}

    def accept_invite(self, payload: str, trainee: str, trainee_name: str, consent: str) -> str:
        """Link the trainee to the coach with the consent they chose; returns the coach id."""
        if consent not in CONSENTS:
            raise CoachingError("Please choose what your coach may see.")
        invite = self.open_invite(payload)
        coach = invite["coach"]
        if coach == trainee:
            raise CoachingError("You can't be your own trainee.")
        key = _hash(payload)
        used: list[bool] = []

        def use(row: dict[str, Any] | None) -> dict[str, Any] | None:
            if row is None or row["status"] != "open":
                return row
            used.append(True)
            return {**row, "status": "used", "used_by": _hash(trainee)}

        self.store.update(SYSTEM, INVITES, key, use)  # single use: first one wins, atomically
        if not used:
            raise CoachingError("This invite link is not valid any more. Ask your coach for a new one.")
        link_id = secrets.token_hex(4)
        since = _iso(self.now())
        self.store.put(trainee, COACHES, coach, {"coach": coach, "coach_name": invite["coach_name"],
                                                 "consent": consent, "since": since, "link_id": link_id})
        self.store.put(coach, TRAINEES, link_id, {"trainee": trainee, "name": trainee_name[:80],
                                                  "consent": consent, "since": since, "link_id": link_id})
        return coach

    # -- links --------------------------------------------------------------------------------

    def _link(self, coach: str, link_id: str) -> dict[str, Any] | None:
        """A coach's link to a trainee, only if the trainee's side confirms it."""
        row = self.store.get(coach, TRAINEES, link_id)
        if row is None:
            return None
        mirror = self.store.get(row["trainee"], COACHES, coach)
        if mirror is None or mirror.get("link_id") != link_id:
            return None
        return {**row, "consent": mirror["consent"]}  # the trainee's side is the truth

    def trainees(self, coach: str) -> list[dict[str, Any]]:
        rows = self.store.all(coach, TRAINEES)
        links = [self._link(coach, r["link_id"]) for r in rows]
        return sorted((link for link in links if link), key=lambda r: r["since"])

    def coaches(self, trainee: str) -> list[dict[str, Any]]:
        return sorted(self.store.all(trainee, COACHES), key=lambda r: r["since"])

    def leave(self, trainee: str, coach: str) -> bool:
        """The trainee leaves a coach; their assignments from that coach are closed."""
        mirror = self.store.get(trainee, COACHES, coach)
        if mirror is None:
            return False
        self.store.delete(trainee, COACHES, coach)  # trainee side first: access ends at once
        self.store.delete(coach, TRAINEES, mirror["link_id"])
        self._close_assignments(coach, trainee)
        return True

    def forget_trainee(self, trainee: str) -> list[tuple[str, str]]:
        """Before a trainee's data is deleted: unlink from every coach. Returns (coach, name) pairs."""
        left = []
        for mirror in self.coaches(trainee):
            coach = mirror["coach"]
            row = self.store.get(coach, TRAINEES, mirror["link_id"])
            self.store.delete(coach, TRAINEES, mirror["link_id"])
            self._close_assignments(coach, trainee)
            left.append((coach, (row or {}).get("name", "A trainee")))
        return left

    def forget_coach(self, coach: str) -> list[str]:
        """Before a coach's data is deleted: unlink every trainee. Returns the trainee ids."""
        trainees = []
        for row in self.store.all(coach, TRAINEES):
            self.store.delete(row["trainee"], COACHES, coach)
            for a in self._assigned_by(row["trainee"], coach):
                self.store.delete(row["trainee"], ASSIGNED, a.id)
            trainees.append(row["trainee"])
        return trainees

    def _close_assignments(self, coach: str, trainee: str) -> None:
        for data in self.store.all(coach, ASSIGNMENTS):
            a = Assignment(**data)
            if a.trainee == trainee and a.status == "pending":
                a.status = "left"
                self.store.put(coach, ASSIGNMENTS, a.id, a.to_dict())
            if a.trainee == trainee:
                for kind in ("assign_reminder", "assign_due"):
                    self.scheduler.cancel(trainee, kind, a.id)
        for a in self._assigned_by(trainee, coach):
            self.store.delete(trainee, ASSIGNED, a.id)

    def _assigned_by(self, trainee: str, coach: str) -> list[Assignment]:
        return [Assignment(**d) for d in self.store.all(trainee, ASSIGNED) if d["coach"] == coach]

    # -- assignments --------------------------------------------------------------------------

    def assign(self, coach: str, link_ids: list[str], scenario_id: str, due: datetime, target: int,
               max_attempts: int) -> list[Assignment]:
        if not self.is_coach(coach):
            raise CoachingError("Only coaches can assign exercises.")
        scenario = self.scenario(coach, scenario_id)
        if scenario is None:
            raise CoachingError("That scenario is not available.")
        if due <= self.now():
            raise CoachingError("The due date must be in the future.")
        if not 0 <= target <= 100 or not 1 <= max_attempts <= 20:
            raise CoachingError("Target must be 0-100 and attempts 1-20.")
        links = [self._link(coach, lid) for lid in link_ids]
        if not link_ids or any(link is None for link in links):
            raise CoachingError("You can only assign exercises to your own trainees.")
        created = []
        for link in links:
            assert link is not None
            a = Assignment(id=secrets.token_hex(4), coach=coach, trainee=link["trainee"], trainee_name=link["name"],
                           scenario_id=scenario.id, scenario_title=scenario.title, due_at=_iso(due), target=target,
                           max_attempts=max_attempts, created_at=_iso(self.now()))
            self.store.put(coach, ASSIGNMENTS, a.id, a.to_dict())
            self.store.put(a.trainee, ASSIGNED, a.id, a.to_dict())
            reminder = due - min(timedelta(hours=24), (due - self.now()) / 2)
            self.scheduler.schedule(a.trainee, "assign_reminder", a.id, reminder)
            self.scheduler.schedule(a.trainee, "assign_due", a.id, due)
            created.append(a)
        return created

    def assigned(self, trainee: str) -> list[Assignment]:
        return sorted((Assignment(**d) for d in self.store.all(trainee, ASSIGNED)), key=lambda a: a.due_at)

    def assignment_for_trainee(self, trainee: str, assignment_id: str) -> Assignment | None:
        data = self.store.get(trainee, ASSIGNED, assignment_id)
        return Assignment(**data) if data else None

    def record_attempt(self, trainee: str, scenario_id: str, score: int) -> list[Assignment]:
        """A finished practice session: count it towards matching pending assignments.

        Returns the assignments that just completed (target reached or attempts used up) so the
        coach can be told.
        """
        finished = []
        for a in self.assigned(trainee):
            if a.scenario_id != scenario_id or a.status != "pending":
                continue
            coach_side = self.store.get(a.coach, ASSIGNMENTS, a.id)
            if coach_side is None or self.store.get(trainee, COACHES, a.coach) is None:
                continue
            a.scores.append(int(score))
            if a.best is not None and a.best >= a.target:
                a.status = "done"
            elif len(a.scores) >= a.max_attempts:
                a.status = "missed"
            if a.status != "pending":
                a.reported = True
                finished.append(a)
                for kind in ("assign_reminder", "assign_due"):
                    self.scheduler.cancel(trainee, kind, a.id)
            self.store.put(trainee, ASSIGNED, a.id, a.to_dict())
            self.store.put(a.coach, ASSIGNMENTS, a.id, a.to_dict())
        return finished

    # -- the roster ---------------------------------------------------------------------------

    def roster(self, coach: str) -> list[RosterRow]:
        now = self.now()
        assignments = [Assignment(**d) for d in self.store.all(coach, ASSIGNMENTS)]
        rows = []
        for link in self.trainees(coach):
            scores = self._scores(link["trainee"])
            mine = tuple(sorted((a for a in assignments if a.trainee == link["trainee"]), key=lambda a: a.due_at))
            states = [a.state(now) for a in mine]
            progress = summarise(scores) if scores else None
            rows.append(RosterRow(
                link_id=link["link_id"], name=link["name"], consent=link["consent"], sessions=len(scores),
                last=scores[-1] if scores else None,
                average=round(statistics.fmean(scores), 1) if scores else None,
                trend=round(progress.slope, 1) if progress and progress.slope is not None else None,
                pending=states.count("pending"), done=states.count("done"), overdue=states.count("overdue"),
                assignments=mine,
            ))
        return rows

    def _scores(self, trainee: str) -> list[int]:
        return [int(s["result"]["focus_score"]) for s in finished_sessions(self.store, trainee) if s.get("result")]

    def transcripts(self, coach: str, link_id: str, limit: int = 1) -> list[dict[str, Any]]:
        """The trainee's latest finished sessions with transcripts, only with that consent."""
        link = self._link(coach, link_id)
        if link is None or link["consent"] != "transcripts":
            raise CoachingError("Not available.")
        sessions = finished_sessions(self.store, link["trainee"])
        return [{"name": link["name"], **s} for s in sessions[-limit:]]

    # -- coach-authored scenarios ---------------------------------------------------------------

    def add_scenario(self, coach: str, filename: str, data: bytes) -> Scenario:
        """Validate with the same rules as the built-in library; available to the coach's trainees."""
        if not self.is_coach(coach):
            raise CoachingError("Only coaches can add scenarios. Send /coach first.")
        scenario = parse_scenario(data, filename)  # raises ScenarioError naming field and problem
        if scenario.id in self.library:
            raise ScenarioError([f"{filename}: id: {scenario.id!r} is a built-in scenario; choose another id"])
        existing = {d["id"] for d in self.store.all(coach, CUSTOM)}
        if scenario.id not in existing and len(existing) >= MAX_CUSTOM_SCENARIOS:
            raise CoachingError(f"You can keep at most {MAX_CUSTOM_SCENARIOS} scenarios; remove one first.")
        claimed: list[bool] = []

        def claim(row: dict[str, Any] | None) -> dict[str, Any] | None:
            if row is None or row["coach"] == coach:
                claimed.append(True)
                return {"id": scenario.id, "coach": coach}
            return row

        self.store.update(REGISTRY, REGISTERED, scenario.id, claim)
        if not claimed:
            raise ScenarioError([f"{filename}: id: {scenario.id!r} is already used by another coach; choose another id"])
        self.store.put(coach, CUSTOM, scenario.id, {"id": scenario.id, "title": scenario.title,
                                                     "source": data.decode("utf-8"), "filename": filename,
                                                     "added_at": _iso(self.now())})
        return scenario

    def remove_scenario(self, coach: str, scenario_id: str) -> bool:
        if not self.store.delete(coach, CUSTOM, scenario_id):
            return False
        self.store.update(REGISTRY, REGISTERED, scenario_id,
                          lambda row: None if row is not None and row["coach"] == coach else row)
        return True

    def own_scenarios(self, coach: str) -> list[Scenario]:
        result = []
        for row in sorted(self.store.all(coach, CUSTOM), key=lambda r: r["added_at"]):
            try:
                result.append(parse_scenario(row["source"], row["filename"]))
            except ScenarioError:
                continue  # validated on upload; a later validator change must not break the bot
        return result

    def scenarios_for(self, uid: str) -> list[Scenario]:
        """Extra scenarios a user may practise: their own (as a coach) and their coaches'."""
        seen: dict[str, Scenario] = {s.id: s for s in self.own_scenarios(uid)}
        for link in self.coaches(uid):
            for s in self.own_scenarios(link["coach"]):
                seen.setdefault(s.id, s)
        return list(seen.values())

    def scenario(self, uid: str, scenario_id: str) -> Scenario | None:
        return self.library.get(scenario_id) or next((s for s in self.scenarios_for(uid) if s.id == scenario_id), None)


class ScenarioCatalog:
    """The built-in library plus coach-authored scenarios, resolvable by id.

    Lists (``all``) show only the built-ins: who may *see or start* a coach's scenario is decided
    by :meth:`Coaching.scenarios_for`. ``get`` resolves any registered id, so a trainee's session
    on a coach's scenario can always be continued and debriefed.
    """

    def __init__(self, base: ScenarioLibrary, store: Store):
        self.base = base
        self.store = store
        self._cache: dict[tuple[str, str], Scenario] = {}

    def get(self, scenario_id: str) -> Scenario | None:
        found = self.base.get(scenario_id)
        if found is not None:
            return found
        entry = self.store.get(REGISTRY, REGISTERED, scenario_id) if _valid_id(scenario_id) else None
        if entry is None:
            return None
        row = self.store.get(entry["coach"], CUSTOM, scenario_id)
        if row is None:
            return None
        key = (scenario_id, row["added_at"])
        if key not in self._cache:
            try:
                self._cache[key] = parse_scenario(row["source"], row["filename"])
            except ScenarioError:
                return None
        return self._cache[key]

    def all(self, difficulty: str | None = None) -> list[Scenario]:
        return self.base.all(difficulty)

    def __len__(self) -> int:
        return len(self.base)

    def __contains__(self, scenario_id: object) -> bool:
        return isinstance(scenario_id, str) and self.get(scenario_id) is not None


def _valid_id(scenario_id: str) -> bool:
    return bool(ID_RE.match(scenario_id))

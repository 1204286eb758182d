"""The post-event reflection: question flow and a score that rewards listening and giving."""

from __future__ import annotations

from bot.reflection import Reflection, reminder_suggestion, score_reflection, split_people


def run(answers: list[str | None]) -> Reflection:
    r = Reflection("e1", "Chamber mixer")
    for answer in answers:
        assert not r.done
        if answer is None:
            r.skip()
        else:
            r.answer(answer)
    assert r.done
    return r


LISTENER = [
    "Sam (data lead at Acme), Priya",
    "Sam is hiring a data engineer and struggling to find one. She loves sailing and explained how they run their data team.",
    "Priya is into marathon running; she told me how she built her agency and is worried about losing a big client.",
    "coffee next Tuesday",
    "send her an article on client retention on Friday",
    "I offered to introduce Sam to a recruiter friend",
    "them",
]
TALKER = [
    "Bob",
    "Not much, I told him all about our product and pricing.",
    "He'll call me if he needs us",
    "My card and a 10% discount",
    "me",
]


def test_questions_go_person_by_person() -> None:
    r = Reflection("e1", "Chamber mixer")
    steps = []
    for answer in LISTENER:
        key, text = r.question()
        steps.append((key, "Sam" in text, "Priya" in text))
        r.answer(answer)
    assert [s[0] for s in steps] == ["who", "learned", "learned", "followup", "followup", "offered", "balance"]
    assert steps[1][1] and steps[2][2]
    assert r.learned["Sam (data lead at Acme)"].startswith("Sam is hiring")


def test_listener_scores_well_above_talker() -> None:
    good = score_reflection(run(LISTENER))
    bad = score_reflection(run(TALKER))
    assert good.score >= 70 and good.verdict == "connector"
    assert bad.score < 35 and bad.verdict == "pitcher"
    assert good.gave_first and not bad.gave_first
    assert "issues" in good.people[0].kinds
    assert bad.pitches and "pricing" in bad.pitches[0]


def test_skipping_everything_is_allowed_and_scores_low() -> None:
    r = run([None, None, None])  # who, offered, balance: nobody named, so no per-person questions
    result = score_reflection(r)
    assert result.score <= 10 and result.people == ()


def test_people_are_split_sensibly() -> None:
    assert split_people("Sam (lead, Acme), Priya and Jo\nMaria") == ["Sam (lead, Acme)", "Priya", "Jo", "Maria"]
    assert split_people("nobody") == []
    assert len(split_people(",".join(f"P{i}" for i in range(20)))) == 5


def test_reminder_builds_on_what_was_learned() -> None:
    text = reminder_suggestion("Sam", "She loves sailing. Sam is hiring a data engineer.", "coffee next Tuesday", "Mixer")
    assert "hiring a data engineer" in text and "introduction" in text and "coffee next Tuesday" in text
    plain = reminder_suggestion("Jo", "", "", "Mixer")
    assert "since Mixer" in plain

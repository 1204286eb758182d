"""The offline focus scorer, as a user of netcoach would notice it.

Every example line here is written for this test (not taken from the bench corpora), so the test checks
that the scorer recognises *intents* rather than remembering its training data.
"""

from __future__ import annotations

import functools
import io
import json
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from bot.scoring import (
    LABELS,
    ConversationScore,
    OfflineScorer,
    Scorer,
    Turn,
    TurnScore,
    default_scorer,
    verdict_for,
)
from bot.scoring.cli import run
from bot.scoring.intents import ALL_INTENTS, DATA as INTENTS_TOML, IntentRecogniser

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"

# intents other modules rely on (debrief, persona engine, hints)
REQUIRED_INTENTS = {
    "greeting", "thanks", "small_talk", "closing", "logistics", "asks_about_them", "asks_what_they_do",
    "follow_up", "reflect", "offer_help", "propose_follow_up", "self_disclosure", "self_promotion",
    "offer_product", "call_to_action", "prospecting", "ask_favour", "steer_to_self",
}


def P(text: str) -> Turn:
    return Turn("partner", text)


def U(text: str) -> Turn:
    return Turn("user", text)


@pytest.fixture(scope="module")
def scorer() -> OfflineScorer:
    return default_scorer()


def label(scorer: OfflineScorer, text: str, partner: str | None = None) -> str:
    return scorer.score_turn(text, [P(partner)] if partner else []).label


# --------------------------------------------------------------------------- clear-cut turns

CLEAR = [
    # neutral
    ("Good evening! Is anyone sitting here?", None, "neutral"),
    ("Thanks so much, that's kind of you.", "Here, take my seat.", "neutral"),
    ("Lovely chatting, enjoy the rest of the summit!", None, "neutral"),
    ("Do you know which floor the breakout sessions are on?", None, "neutral"),
    ("Ha, the queue for coffee is longer than the keynote.", None, "neutral"),
    # other_focus
    ("What are you working on at the moment?", None, "other_focus"),
    ("How did you end up in marine biology?", None, "other_focus"),
    ("My neighbour runs a food bank logistics team, happy to introduce you two if that helps.",
     "We can't find anyone who understands volunteer rotas.", "other_focus"),
    ("Shall we grab a coffee next week so I can hear how the trial goes?", None, "other_focus"),
    # pitch
    ("Here's my card - ring me whenever you need a new roof.", None, "pitch"),
    ("Who signs off on IT purchases at your company?", None, "pitch"),
    ("We're the number one provider of cloud backup in Europe, with over 900 clients.", None, "pitch"),
    ("Can I put you down for a demo on Friday?", None, "pitch"),
]


@pytest.mark.parametrize("text,partner,gold", CLEAR)
def test_clear_cut_turns(scorer, text, partner, gold):
    assert label(scorer, text, partner) == gold


# --------------------------------------------------------------------------- the hard cases

HARD = [
    # questions that are pitches
    ("Is your firm still happy with the agency that does your payroll?", None, "pitch"),
    ("How much are you spending on cleaning contractors each year?", None, "pitch"),
    ("Would your team be open to trialling a new expenses app?", None, "pitch"),
    # other-focused lines without a question mark
    ("I'd love to hear how you went from teaching to running a brewery", None, "other_focus"),
    ("So the tech is ready but the farmers still need convincing.",
     "The sensors work fine, it's getting farmers to trust them that's slow.", "other_focus"),
    ("That sounds exhausting, losing two people in a month.", "Two of my best engineers quit in March.", "other_focus"),
    # "you"-heavy pitches
    ("You'd cut your energy bill by a third if you switched to us.", None, "pitch"),
    ("You really need a proper CRM, ours costs less than a coffee a day.", None, "pitch"),
    # "I"-heavy other focus
    ("I'm really curious what made you leave the law firm.", None, "other_focus"),
    ("I can send you the grant guide I used last year, no strings attached.",
     "We're applying for our first research grant.", "other_focus"),
    # answering "what do you do?" briefly vs turning it into a pitch
    ("I'm a physiotherapist at the county hospital.", "So what do you do?", "neutral"),
    ("I'm a physiotherapist - I run my own clinic, sessions are £45 and the first one is free, "
     "here's my card, book online anytime.", "So what do you do?", "pitch"),
    # favours before any relationship
    ("Nice to meet you. Could you introduce me to your CEO? I have a proposal for her.", "Hi, I'm Lena from Arcadia.", "pitch"),
    # mixed turns: label by the dominant intent
    ("Congrats on the launch! By the way we sell packaging at wholesale prices, want a sample pack?",
     "We launched our first product last week.", "pitch"),
    ("Ha, I'm in insurance, nothing exciting. But tell me more about the festival - how did it start?",
     "What about you, what do you do?", "other_focus"),
    # steering back to oneself
    ("Funny you say that, I actually founded a startup in that space, let me tell you about it.",
     "I've been reading a lot about vertical farming.", "pitch"),
    # "curious" questions whose purpose is a sale
    ("How do you currently manage your rota? We built an app that does it automatically.", "I run a care home.", "pitch"),
    ("Any plans to upgrade the tills this year? We install them.", None, "pitch"),
    ("Do you think your director would have a quick call with me?", None, "pitch"),
    ("Who takes care of your office cleaning at the moment?", None, "pitch"),
    # ...and genuine curiosity about the same topics stays other-focused
    ("How did you end up running a care home?", "I run a care home.", "other_focus"),
    ("That must be a lot to juggle. What's the hardest part of the week?", "I run a care home.", "other_focus"),
    # small talk shaped as a question is still small talk
    ("Are you staying for the drinks afterwards?", None, "neutral"),
    ("Not bad, and you?", "Hi! How are you?", "neutral"),
]


@pytest.mark.parametrize("text,partner,gold", HARD)
def test_hard_cases(scorer, text, partner, gold):
    assert label(scorer, text, partner) == gold


def test_context_changes_a_short_reply(scorer):
    shared = "We nearly went bankrupt last winter."
    # a short prompt after they shared something builds on it
    ts = scorer.score_turn("how come?", [P(shared)])
    assert ts.label == "other_focus" and ts.follow_up
    ts = scorer.score_turn("Tell me more.", [P(shared)])
    assert ts.label == "other_focus" and ts.follow_up
    # "yes" to a question is just an answer
    assert label(scorer, "Yes.", "Is this your first time at the expo?") == "neutral"
    # handing over a card when asked for it is not a pitch; pushing it unprompted is
    assert label(scorer, "Sure, here it is.", "Do you have a business card?") == "neutral"
    assert label(scorer, "Here's my card, call me if you need anything printed.") == "pitch"
    # naming a price because they asked is an answer, not a pitch
    assert label(scorer, "Usually about £60 an hour.", "What do you charge for a session?") == "neutral"
    # the same self-description is neutral when asked, a pitch when it is pushed unprompted at length
    answer = "I'm a web developer."
    assert label(scorer, answer, "And what do you do?") == "neutral"


def test_chat_style_typos_and_emoji(scorer):
    assert label(scorer, "wat made u start ur own company?? 😄") == "other_focus"
    assert label(scorer, "thats so intresting, how did u get into it", "i started out fixing bikes in my garage") == "other_focus"
    assert label(scorer, "heres my card 📇 call me if u ever need a website lol") == "pitch"
    assert label(scorer, "are u guys happy w ur current suplier??") == "pitch"
    assert label(scorer, "thx!! 🙏") == "neutral"
    news = "I just started at the museum!"
    assert label(scorer, "CONGRATS!!! 🎉🎉 WHAT WILL U BE WORKING ON??", news) == "other_focus"
    # shouting and emoji do not change how a line reads (whether a bare congratulation is other-focused
    # or polite is a call the corpora's authors split on, so only the sameness is asserted)
    assert label(scorer, "CONGRATS ON THE NEW JOB!!! 🎉🎉", news) == label(scorer, "Congrats on the new job!", news)
    # odd input must not break anything
    for text in ["", "   ", "🙂🙂🙂", "?!?!", "a" * 5000, "ñandú café naïve résumé", "\u200b\u200b"]:
        ts = scorer.score_turn(text, [])
        assert ts.label in LABELS and 0.0 <= ts.confidence <= 1.0


def test_intents_reasons_and_follow_up(scorer):
    ctx = [P("We're struggling to hire a data engineer.")]
    offer = "I know someone who places data engineers, happy to connect you."
    assert "offer_help" in scorer.intents(offer, ctx)
    ts = scorer.score_turn(offer, ctx)
    assert ts.label == "other_focus" and "offer_help" in ts.reasons and ts.follow_up
    assert "prospecting" in scorer.intents("Who handles vendor decisions there?")
    assert "call_to_action" in scorer.intents("Give me a ring if you ever need an accountant.")
    assert "propose_follow_up" in scorer.intents("Let's stay in touch - coffee next month?")
    assert "asks_what_they_do" in scorer.intents("So what do you do?")
    assert "reflect" in scorer.intents("It sounds like the move was harder than you expected.")
    assert "greeting" in scorer.intents("Hi there!")
    assert "self_disclosure" in scorer.intents("I'm a pharmacist.", [P("What do you do?")])
    assert "ask_favour" in scorer.intents("Could you pass my CV to your hiring manager?")
    assert "steer_to_self" in scorer.intents("Anyway, enough about that - let me tell you about my app.")
    # a sales question is not a genuine question about them
    assert "asks_about_them" not in scorer.intents("Who decides on the catering budget at your firm?")
    # every reason belongs to the documented vocabulary
    for text in [offer, "Who handles vendor decisions there?", "Hi!", "We sell software, want a demo?"]:
        assert set(scorer.score_turn(text, ctx).reasons) <= set(ALL_INTENTS)
    assert REQUIRED_INTENTS <= set(ALL_INTENTS)


def test_confidence_is_a_probability(scorer):
    texts = [t for t, _, _ in CLEAR + HARD] + ["", "ok", "hmm?"]
    for t in texts:
        ts = scorer.score_turn(t, [P("What do you do?")])
        assert isinstance(ts, TurnScore)
        assert 0.0 <= ts.confidence <= 1.0


# --------------------------------------------------------------------------- conversations

LISTENER = [
    P("Hi, I'm Omar - I run a community radio station."),
    U("Hi Omar, I'm Jess. Community radio, how fun - how did that start?"),
    P("Ten years ago a few of us got a licence. Now we're struggling to find young presenters."),
    U("Why do you think younger people aren't coming forward?"),
    P("They all want podcasts, not live radio."),
    U("So the skills are there, it's the live format that puts them off."),
    P("Exactly. Anyway, what do you do?"),
    U("I teach media studies at the college."),
    P("Oh really!"),
    U("A few of my students would love live experience - I'd be happy to put you in touch with them."),
    P("That would be amazing."),
    U("Great, I'll email you tonight. Good luck with the spring schedule!"),
]

PITCHER = [
    P("Hi, I'm Omar - I run a community radio station."),
    U("Hi Omar! I'm Jess from SoundPro, we sell broadcast equipment, the best mixers on the market."),
    P("Oh, okay."),
    U("What desk are you using at the moment? Is it due for an upgrade?"),
    P("It's old, but it works."),
    U("Our new model is 20% cheaper than the big brands and we do free installation this month."),
    P("I'll think about it."),
    U("Here's my card, call me when your budget opens up, or I can book you a demo next week."),
]

MIXED = [
    P("Hi, I'm Omar - I run a community radio station."),
    U("Hi Omar, nice to meet you. How long has the station been going?"),
    P("Ten years now. It's been a lot of work."),
    U("I can imagine. What keeps you going?"),
    P("The listeners, honestly."),
    U("We make broadcast software, by the way - our scheduling tool is half the price of the others. "
      "Want me to send you our pricing and set up a demo?"),
    P("Maybe later."),
    U("Sure. Who decides on equipment purchases at the station?"),
]


def test_focus_score_orders_listener_mixed_pitcher(scorer):
    good = scorer.score_conversation(LISTENER)
    mid = scorer.score_conversation(MIXED)
    bad = scorer.score_conversation(PITCHER)
    assert isinstance(good, ConversationScore)
    assert good.focus_score > mid.focus_score > bad.focus_score
    assert good.verdict == "connector"
    assert bad.verdict == "pitcher"
    assert mid.verdict in ("mixed", "pitcher")
    for cs in (good, mid, bad):
        assert 0 <= cs.focus_score <= 100
        assert cs.verdict == verdict_for(cs.focus_score)
    assert len(good.turn_scores) == sum(1 for t in LISTENER if t.role == "user")
    assert good.turn_labels[0] == "other_focus"


def test_long_pitch_weighs_more_than_a_short_reply(scorer):
    one_word_then_pitch = [
        P("Hello!"), U("Hi."),
        P("What brings you here?"),
        U("We're launching an AI bookkeeping platform that saves firms 40% on accounting costs, with a free "
          "trial this month, and I'm meeting as many finance directors as I can to book demos."),
        P("Right."), U("How about you, what do you do?"),
    ]
    cs = scorer.score_conversation(one_word_then_pitch)
    assert cs.verdict != "connector"


def test_no_user_turns_and_empty_conversation(scorer):
    for turns in ([], [P("Hello?")]):
        cs = scorer.score_conversation(turns)
        assert cs.turn_scores == () and 0 <= cs.focus_score <= 100


def test_deterministic_and_thread_safe(scorer):
    texts = [t for t, _, _ in CLEAR + HARD]
    first = [scorer.score_turn(t, [P("Tell me about yourself.")]) for t in texts]
    again = [OfflineScorer().score_turn(t, [P("Tell me about yourself.")]) for t in texts]
    assert first == again
    assert scorer.score_conversation(LISTENER) == OfflineScorer().score_conversation(LISTENER)
    results: list[list[TurnScore]] = []

    def work():
        results.append([scorer.score_turn(t, [P("Tell me about yourself.")]) for t in texts])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(r == first for r in results)


def test_scorer_satisfies_protocol(scorer):
    s: Scorer = scorer
    assert s.score_turn("Hi", ()).label == "neutral"


def test_pattern_gate_is_exact(scorer):
    """The opening-word gate that speeds matching up must never change what is recognised."""
    rec = scorer.recogniser
    texts = [t for t, _, _ in CLEAR + HARD] + [t.text for t in LISTENER + PITCHER + MIXED]
    for path in (DATA / "turns_train.jsonl", DATA / "conversations_train.jsonl"):
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    obj = json.loads(line)
                    texts += [obj["text"]] if "text" in obj else [t["text"] for t in obj.get("turns", [])]
    for t in texts:
        norm = rec.normalise(t)
        rec_gated = rec.match(norm)
        try:
            rec.use_gates = False
            rec_plain = rec.match(norm)
        finally:
            rec.use_gates = True
        assert rec_gated == rec_plain, t


def test_prepared_recogniser_matches_the_same_and_compiles_nothing_later(scorer):
    """The bot prepares the scorer at start-up so that no user's turn pays for compiling matchers.
    A turn in words the model knows must then find every matcher ready (an unprepared recogniser
    compiles on first sight of the same turns), and preparing must not change what is recognised."""
    scorer.recogniser  # loads the model
    known = tuple(scorer._model.known_words)
    spec = tomllib.loads(INTENTS_TOML.read_text(encoding="utf-8"))
    cold, warm = IntentRecogniser(spec, known), IntentRecogniser(spec, known)
    assert warm.prepare(known) > 0
    texts = [t for t, _, _ in CLEAR + HARD] + [t.text for t in LISTENER + PITCHER + MIXED]
    in_known_words = [t for t in texts if set(warm.normalise(t).tokens) <= set(known)]
    assert len(in_known_words) >= 3
    ready = len(warm._spec)
    for t in in_known_words:
        warm.match(warm.normalise(t))
        cold.match(cold.normalise(t))
    assert len(warm._spec) == ready
    assert len(cold._spec) > 0
    for t in texts:
        assert warm.match(warm.normalise(t)) == cold.match(cold.normalise(t)), t


# --------------------------------------------------------------------------- the CLI contract


def _run(lines: list[str]) -> tuple[int, list[dict]]:
    out = io.StringIO()
    code = run(io.StringIO("\n".join(lines) + "\n"), out, default_scorer())
    return code, [json.loads(x) for x in out.getvalue().splitlines()]


def test_cli_turn_and_conversation_lines():
    code, out = _run([
        json.dumps({"id": "t1", "context": [{"role": "partner", "text": "I breed alpacas."}], "text": "How did that start?"}),
        json.dumps({"id": 7, "turns": [t.__dict__ for t in PITCHER]}),
        json.dumps({"id": "t2", "text": "Here's my card, call me for a quote.", "extra": [1, 2], "note": "ignored"}),
        json.dumps({"id": "t3", "context": [], "text": "Hello!"}),
    ])
    assert code == 0
    assert [o["id"] for o in out] == ["t1", 7, "t2", "t3"]
    assert out[0] == {"id": "t1", "label": "other_focus", "confidence": out[0]["confidence"]}
    assert 0 <= out[0]["confidence"] <= 1
    assert set(out[1]) == {"id", "focus_score", "verdict", "turn_labels"}
    assert isinstance(out[1]["focus_score"], int) and out[1]["verdict"] == "pitcher"
    assert out[1]["turn_labels"] == default_scorer().score_conversation(PITCHER).turn_labels
    assert out[2]["label"] == "pitch" and "extra" not in out[2]
    assert out[3]["label"] == "neutral"


def test_cli_bad_lines_report_errors_and_the_run_goes_on():
    good = json.dumps({"id": "ok", "text": "What brings you here?"})
    code, out = _run([
        "{not json",
        "[1, 2, 3]",
        "",
        json.dumps({"id": "a"}),
        json.dumps({"id": "b", "text": 42}),
        json.dumps({"id": "c", "text": "hi", "context": [{"role": "boss", "text": "x"}]}),
        json.dumps({"id": "d", "turns": [{"role": "user"}]}),
        json.dumps({"id": "e", "turns": "nope"}),
        json.dumps({"id": "f", "text": "hi", "context": "nope"}),
        good,
    ])
    assert code == 0
    assert len(out) == 10  # one output line per input line, blank lines included
    for o in out[:9]:
        assert set(o) == {"id", "error"} and isinstance(o["error"], str) and o["error"]
    assert [o["id"] for o in out[:9]] == [None, None, None, "a", "b", "c", "d", "e", "f"]
    assert "role" in out[5]["error"]
    assert out[9]["id"] == "ok" and out[9]["label"] == "other_focus"


def test_cli_missing_or_empty_context_and_empty_input():
    code, out = _run([json.dumps({"id": 1, "text": "Thanks!"}), json.dumps({"id": 2, "text": "Thanks!", "context": None})])
    assert code == 0 and [o["label"] for o in out] == ["neutral", "neutral"]
    buf = io.StringIO()
    assert run(io.StringIO(""), buf, default_scorer()) == 0 and buf.getvalue() == ""


def test_cli_flushes_every_line():
    class Recorder(io.StringIO):
        flushes = 0

        def flush(self):
            Recorder.flushes += 1
            super().flush()

    out = Recorder()
    run(io.StringIO('{"id":1,"text":"hi"}\n{"id":2,"text":"bye"}\n'), out, default_scorer())
    assert Recorder.flushes >= 2


def test_cli_unreadable_input_exit_code():
    class Broken(io.StringIO):
        def __iter__(self):
            raise OSError("disk on fire")

    assert run(Broken(), io.StringIO(), default_scorer()) == 1


def test_python_m_bot_score_subprocess():
    lines = [
        {"id": "x", "context": [{"role": "partner", "text": "I just moved here from Oslo."}], "text": "What brought you here?"},
        {"id": "y", "turns": [t.__dict__ for t in LISTENER]},
        "garbage",
    ]
    stdin = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    proc = subprocess.run([sys.executable, "-m", "bot", "score"], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(out) == 3
    assert out[0]["id"] == "x" and out[0]["label"] == "other_focus"
    assert out[1]["id"] == "y" and out[1]["verdict"] == "connector"
    assert out[2]["id"] is None and "error" in out[2]


# --------------------------------------------------------------------------- quality guarantee



@functools.cache
def _evaluate(split: str) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from score_quality import evaluate
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return evaluate(split, default_scorer())


def test_turn_quality_on_heldout_split():
    """Behavioural guarantee: on the independently written held-out set, per-turn labels agree with people."""
    res = _evaluate("heldout")
    assert res["turns"]["macro_f1"] >= 0.85


def test_conversation_quality_on_heldout_split():
    """Behavioural guarantee: whole conversations are ranked and judged as people judged them."""
    res = _evaluate("heldout")
    assert res["conversations"]["spearman"] >= 0.85
    assert res["conversations"]["verdict_accuracy"] >= 0.85


def test_turn_labels_and_ranking_hold_for_new_authors():
    """The fresh split: 640 conversations by sixteen authors the shipped model never saw, written from the
    rubric alone. Turn labels and the ranking of conversations reach the bar there too."""
    res = _evaluate("fresh")
    assert res["turns"]["n"] >= 3000 and res["conversations"]["n"] >= 600
    assert res["turns"]["macro_f1"] >= 0.85
    assert res["conversations"]["spearman"] >= 0.85


@pytest.mark.xfail(strict=True, reason="verdicts on new authors' text are about 0.77 (docs/scorer.md, seventh "
                                       "round); this fails loudly the day they reach the bar")
def test_verdicts_reach_the_bar_for_new_authors():
    res = _evaluate("fresh")
    assert res["conversations"]["verdict_accuracy"] >= 0.85

"""What the scorer reads in one user turn: intents, context, shape and words, as model features.

:func:`analyse` is shared by training (``bench/train_scorer.py``) and scoring
(:class:`bot.scoring.offline.OfflineScorer`), so the model always sees features built the same way.
It reads the turn with the conversation before it: the partner's last line (were they asked about
the user? did they just share something? did they push back?), whether the user pitched earlier,
and the turn's own intents (:mod:`bot.scoring.intents`), shape and words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from bot.scoring.base import Turn
from bot.scoring.intents import INTENT_LABEL, IntentRecogniser, partner_view
from bot.scoring.normalise import Normalised, content_stems

STRONG_OTHER = frozenset(
    {"asks_about_them", "asks_what_they_do", "asks_about_them_stmt", "follow_up", "reflect", "offer_help",
     "propose_follow_up", "accepts_their_story", "advice"}
)
STRONG_PITCH = frozenset(
    {"self_promotion", "offer_product", "call_to_action", "prospecting", "ask_favour", "steer_to_self"}
)
STRONG_NEUTRAL = frozenset({"greeting", "thanks", "closing", "logistics"})
SOCIAL = frozenset({"greeting", "thanks", "closing", "acknowledge", "small_talk", "logistics"})
_FIRST = frozenset("i me my mine myself we us our ours ourselves".split())
_SECOND = frozenset("you your yours yourself yourselves".split())
_WE = frozenset("we our ours us".split())
_ANAPHORA = frozenset("that it this those these there they them".split())


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything the scorer read in one user turn."""

    intents: frozenset[str]  # raw pattern intents + derived ones (follow_up, self_disclosure...)
    features: dict[str, float]
    follow_up: bool
    asked_about_user: bool
    n_words: int
    prev_pitch: bool
    pitched_before: bool  # the user pitched / described their own offer earlier in the conversation
    resisted: bool  # the partner pushed back on being sold to (last line or earlier)
    social_q: bool
    company_voice: bool
    social_only: bool


def _partner_last(context: Sequence[Turn]) -> tuple[str | None, bool]:
    """(text of the partner's last line, whether it is the line right before this turn)."""
    for i in range(len(context) - 1, -1, -1):
        t = context[i]
        if t.role == "partner":
            return t.text, i == len(context) - 1
    return None, False


def _len_bucket(n: int) -> str:
    if n <= 2:
        return "1-2"
    if n <= 5:
        return "3-5"
    if n <= 12:
        return "6-12"
    if n <= 25:
        return "13-25"
    return "26+"


def analyse(rec: IntentRecogniser, text: str, context: Sequence[Turn] = ()) -> Analysis:
    """Recognise intents and build the model features of one user turn. Shared by training and scoring."""
    norm: Normalised = rec.normalise(text)
    per_sentence: list = []
    found = rec.match(norm, per_sentence)
    # small talk / logistics / greeting inside a question ("enjoying the show?", "is lunch included?")
    social_q = any(q and here & {"greeting", "logistics", "small_talk"} for q, here in per_sentence)
    n = max(norm.n_words, 1)
    f: dict[str, float] = {"bias": 1.0}

    # ---- context: the partner's last line
    p_text, adjacent = _partner_last(context)
    pflags: frozenset[str] = frozenset()
    p_stems: frozenset[str] = frozenset()
    p_statement = False
    if p_text is not None:
        pv = partner_view(rec, p_text)
        pflags = pv.flags
        p_stems = pv.stems
        p_statement = pv.statement
        f["c:has_partner"] = 1.0
        if not adjacent:
            f["c:not_adjacent"] = 1.0
    else:
        f["c:no_partner"] = 1.0
    for fl in pflags:
        f["c:" + fl] = 1.0
    asked = "partner_asks_about_user" in pflags or "partner_asks_offering" in pflags
    asked_offer = "partner_asks_offering" in pflags or "partner_requests" in pflags
    p_shares = p_statement and "partner_shares" in pflags
    if p_shares:
        f["c:p_shares_stmt"] = 1.0
    n_user_before = sum(1 for t in context if t.role == "user")
    f["c:user_turn_" + ("0" if n_user_before == 0 else "1-2" if n_user_before <= 2 else "3+")] = 1.0
    prev_user = next((t.text for t in reversed(context) if t.role == "user"), None)
    prev_pitch = prev_user is not None and _pitched(rec, prev_user)
    if prev_pitch:
        f["c:prev_user_pitch"] = 1.0  # a "curious" question right after one's own pitch is often qualifying
    # the whole conversation so far: did the user pitch earlier (not only in their last line)? did the partner
    # push back ("we're fine", "not really in the market", "I'll think about it")? After either, curiosity is
    # usually qualifying and short replies are objection handling.
    n_pitched = sum(1 for t in context if t.role == "user" and _pitched(rec, t.text))
    pitched_before = n_pitched > 0
    if pitched_before:
        f["c:user_pitched_before"] = 1.0
        if n_pitched >= 2:
            f["c:user_pitched_2+"] = 1.0
    resisted_now = "partner_resists" in pflags
    resisted = resisted_now or any(
        t.role == "partner" and "partner_resists" in partner_view(rec, t.text).flags for t in context[:-1]
    )
    if resisted:
        f["c:partner_resisted"] = 1.0

    # ---- shape
    sents = norm.sentences
    questions = [s for s in sents if s.question]
    is_q = bool(questions)
    toks = norm.tokens
    n_first = sum(1 for t in toks if t in _FIRST)
    n_second = sum(1 for t in toks if t in _SECOND)
    f["len:" + _len_bucket(norm.n_words)] = 1.0
    f["loglen"] = math.log1p(norm.n_words) / 3.0
    if is_q:
        f["q:any"] = 1.0
        f["q:share"] = len(questions) / max(len(sents), 1)
        if sents and sents[-1].question:
            f["q:ends"] = 1.0
    if n_first > n_second:
        f["pr:i>you"] = 1.0
    elif n_second > n_first:
        f["pr:you>i"] = 1.0
    f["pr:first"] = min(n_first / n, 0.5) * 2
    # "company voice": a statement in the first person plural ("we do...", "our clients...") next to a
    # question is how pitches that ask about the other person usually sound
    company_voice = any(
        not s.question and (_WE & set(s.tokens)) and not (s.tokens[:2] in (("let", "us"), ("we", "should")))
        for s in sents
    )
    if company_voice:
        f["cv:any"] = 1.0
        if is_q:
            f["cv:with_q"] = 1.0
    f["pr:second"] = min(n_second / n, 0.5) * 2

    # ---- overlap with the partner's last line
    u_stems = content_stems(toks)
    overlap = len(u_stems & p_stems) if p_stems else 0
    if overlap:
        f["ov:any"] = 1.0
        if overlap >= 2:
            f["ov:2+"] = 1.0
    anaphoric_q = any(any(t in _ANAPHORA for t in s.tokens) for s in questions)

    # ---- intents
    intents = set(found)
    pitchy = bool(intents & STRONG_PITCH)
    if "follow_up_phrase" in intents:
        intents.discard("follow_up_phrase")
        if pitchy:
            pass  # "Really? Who signs off on purchasing?" builds on nothing but a sale
        elif p_text is not None and not ("partner_asks_about_user" in pflags and not p_statement):
            intents.add("follow_up")
        else:
            intents.add("asks_about_them")
    if "asks_about_them_stmt" in intents and p_shares and not pitchy:
        intents.add("follow_up")
    if p_text is not None and p_statement and not pitchy:
        if is_q or "reflect" in intents:
            # a question / paraphrase that picks up the partner's own words, or points back at what they said
            small = bool(intents & {"greeting", "logistics", "small_talk", "thanks", "closing"})
            if overlap >= 1 or (anaphoric_q and norm.n_words <= 15 and not small):
                intents.add("follow_up")
            elif (
                is_q
                and (p_shares or (p_statement and not pv_q(rec, p_text) and norm.n_words <= 12))
                and "partner_asks_about_user" not in pflags
                and not (intents & {"greeting", "logistics", "small_talk"} and norm.n_words <= 8)
                and "asks_what_they_do" not in intents
            ):
                intents.add("follow_up")  # a question straight after they shared something
        if "offer_help" in intents and overlap >= 1:
            intents.add("follow_up")  # an offer that answers what they just said
    if "follow_up" in intents and is_q:
        intents.add("asks_about_them")
    if "asks_what_they_do" in intents:
        intents.add("asks_about_them")
    if "partner_offers_to_share" in pflags and "partner_pitches" not in pflags and norm.n_words <= 6 and not pitchy and (
        intents & {"acknowledge", "asks_about_them_stmt"} or not intents
    ):
        intents.add("accepts_their_story")  # "yes!" / "please do" to "want to see it?"
    intro_then_question = "asks_what_they_do" in intents and norm.n_words <= 20  # "we're a design studio - and you?"
    if "own_offering" in intents and not intro_then_question and (
        (not asked and (is_q or norm.n_words > 20 or intents & {"money_talk", "sales_opener"}))
        or (asked and is_q and norm.n_words > 15)  # an answer that turns into a qualifying question
    ):
        # describing one's own product unasked, and then asking / going on about it: promoting it
        intents.add("self_promotion")
    self_ish = bool(intents & {"self_disclosure", "self_talk"})
    if self_ish:
        if asked:
            intents.add("self_disclosure")
        elif "self_disclosure" in intents and norm.n_words > 15 and not is_q:
            intents.discard("self_disclosure")
            intents.add("self_talk")
    # "So people sign up keen and then drift off": a statement opening with "so", about them, right after they
    # shared something, is a paraphrase even when it shares no word with their line
    if (
        p_statement and not is_q and not pitchy and n_first == 0 and sents and sents[0].tokens[:1] == ("so",)
        and len(sents[0].tokens) >= 4 and not intents & {"greeting", "thanks", "closing", "logistics", "small_talk"}
    ):
        intents.add("reflect")
        f["x:so_paraphrase"] = 1.0
    # they asked for help / an intro and the user agrees to give it ("Absolutely, I'll email her tonight.")
    if "partner_asks_help" in pflags and not asked_offer and not pitchy and not is_q and norm.n_words <= 20 and (
        intents & {"acknowledge", "offer_help", "propose_follow_up"}
        or any(a == "i" and b in ("will", "can", "could") for a, b in zip(toks, toks[1:]))
    ):
        intents.add("offer_help")
        intents.discard("self_disclosure")
        intents.discard("self_talk")
        f["x:agrees_to_help"] = 1.0
    if "advice" in intents:
        # imperative advice counts as help only in answer to their question or problem, with nothing to sell
        if pitchy or p_text is None or not (p_statement or "partner_asks_about_user" in pflags or pv_q(rec, p_text)):
            intents.discard("advice")
    # a statement that picks up their words without talking about oneself: paraphrase, inference, empathy
    echo = (
        not is_q and p_statement and not pitchy and overlap >= 1 and n_first == 0
        and not intents & {"greeting", "thanks", "closing", "logistics", "small_talk"}
    )
    if echo:
        f["x:stmt_echo"] = 1.0
    for name in intents:
        f["i:" + name] = 1.0
    # how much of the turn each side's intents cover (dominant intent of mixed turns)
    cover_o = sum(v for k, v in found.items() if INTENT_LABEL.get(k, "") == "other_focus" or k in ("asks_about_them_stmt", "follow_up_phrase", "advice"))
    cover_p = sum(v for k, v in found.items() if k in STRONG_PITCH)
    f["cov:other"] = min(cover_o / n, 1.0)
    f["cov:self"] = min(sum(v for k, v in found.items() if k in ("self_talk", "own_offering", "sales_opener")) / n, 1.0)
    f["cov:pitch"] = min(cover_p / n, 1.0)
    so = intents & STRONG_OTHER
    sp = intents & STRONG_PITCH
    if so and sp:
        f["g:both"] = 1.0
    elif so:
        f["g:other_only"] = 1.0
    elif sp:
        f["g:pitch_only"] = 1.0
    if not so and not sp:
        f["g:none"] = 1.0
    social_only = bool(intents) and intents <= SOCIAL
    if social_only:
        f["g:social_only"] = 1.0

    # ---- interactions with the context
    tag = "asked" if asked else "unasked"
    for name in ("self_disclosure", "self_talk", "offer_product", "call_to_action", "self_promotion", "steer_to_self", "prospecting"):
        if name in intents:
            f["x:%s|%s" % (name, tag)] = 1.0
    if asked and not is_q and n_first >= n_second:
        f["x:answer_about_self|" + _len_bucket(norm.n_words)] = 1.0
    if ("partner_asks_offering" in pflags or "partner_requests" in pflags) and (
        intents & {"offer_product", "call_to_action", "self_talk", "money_talk"}
    ):
        f["x:answers_request"] = 1.0
    if is_q and p_shares:
        f["x:q|p_shares"] = 1.0
        if overlap:
            f["x:q|overlap"] = 1.0
    if is_q and not so and not sp:
        f["x:q_plain"] = 1.0
    if "partner_pitches" in pflags and is_q:
        f["x:q|p_pitches"] = 1.0
    if "sizing_q" in intents:
        # sizing up their operation after naming one's own company / offer (earlier or in this turn) is qualifying
        offer_known = pitched_before or bool(intents & {"company_intro", "own_offering"})
        f["x:sizing|" + ("pitched" if offer_known else "resisted" if resisted else "plain")] = 1.0
    if "partner_has_supplier" in pflags and is_q:
        f["x:q|p_supplier"] = 1.0  # "how's that working out for you?" after "we use a freelancer": sizing up the incumbent
    if pitched_before or resisted:
        ctx_tag = "pitched" if pitched_before else "resisted"
        if is_q:
            f["x:q|" + ctx_tag] = 1.0
        else:
            f["x:stmt|" + ctx_tag] = 1.0
        if "follow_up" in intents:
            f["x:fu|" + ctx_tag] = 1.0
        if so_any(intents) and not sp_any(intents):
            f["x:other_only|" + ctx_tag] = 1.0
        if resisted_now:
            f["x:after_pushback|" + ("q" if is_q else "stmt")] = 1.0

    # ---- words (regularised hard in training)
    prev = "<s>"
    for s in sents:
        prev = "<s>"
        for t in s.tokens:
            f["w:" + t] = 1.0
            f["b:%s_%s" % (prev, t)] = 1.0
            prev = t
        f["b:%s_</s>" % prev] = 1.0

    follow = "follow_up" in intents
    return Analysis(
        intents=frozenset(intents),
        features=f,
        follow_up=follow,
        asked_about_user=asked,
        n_words=norm.n_words,
        prev_pitch=prev_pitch,
        pitched_before=pitched_before,
        resisted=resisted,
        social_q=social_q,
        company_voice=company_voice,
        social_only=social_only,
    )


def so_any(intents) -> bool:
    return bool(STRONG_OTHER.intersection(intents))


def sp_any(intents) -> bool:
    return bool(STRONG_PITCH.intersection(intents))


def pv_q(rec: IntentRecogniser, text: str) -> bool:
    """Whether the partner's line contains a question (memoised through the normaliser)."""
    return any(s.question for s in rec.normalise(text).sentences)


def _pitched(rec: IntentRecogniser, text: str) -> bool:
    """Whether a (previous) user line carried a strong pitch intent; memoised through the normaliser."""
    return _pitched_cached(id(rec), text, rec)


@lru_cache(maxsize=8192)
def _pitched_cached(_rid: int, text: str, rec: IntentRecogniser) -> bool:
    found = rec.match(rec.normalise(text))
    return bool(set(found) & STRONG_PITCH) or "own_offering" in found or "company_intro" in found


def clear_caches() -> None:
    """Forget memoised readings of earlier user lines (see :func:`bot.scoring.intents.clear_caches`)."""
    _pitched_cached.cache_clear()

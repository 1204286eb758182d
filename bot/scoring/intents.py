"""Intent recogniser: normalises a chat line and names the networking intents in it.

Why a hand-built recogniser
---------------------------
The labels netcoach cares about are *intents* ("is this a sales question?", "is this an offer of help?"),
not surface features: "Who makes the purchasing decisions at your place?" is a question full of "you"
and still a pitch; "I'd love to hear how you got into that" has no question mark and is all "I", and it
is the best thing a networker can say. A few hundred labelled lines are far too few for a model to learn
these families from scratch, but the families are well known and short to write down, so they live as
regular-expression families in ``intents.toml`` (a data file coaches can read and extend), compiled once.
The statistical model in :mod:`bot.scoring.offline` then weighs the recognised intents, the context and a
few lexical cues.

Normalisation (:mod:`bot.scoring.normalise`) makes the patterns robust to chat style; the compiled forms
of the families and the opening-word gates that keep matching fast are in :mod:`bot.scoring.patterns`.
This module holds the recogniser that puts them together, and the memos around it.

Everything here is pure Python (``re`` + ``tomllib``), deterministic and thread-safe once built: the
compiled tables are immutable and the only mutable state is bounded memos (typo corrections, per-token
matching plans, compiled branch sets, a turn's match result on its Normalised) whose writes are idempotent.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from bot.scoring.normalise import CHAT_FORMS, STOPWORDS, Normalised, Normaliser, clear_stems, content_stems
from bot.scoring.patterns import NEVER, Gate, LazyRegex, anchor, compile_family, gate_terms, split_top

DATA = Path(__file__).with_name("intents.toml")

# Public vocabulary of intents that can appear in ``TurnScore.reasons`` (see docs/scorer.md).
OTHER_INTENTS = (
    "asks_about_them",
    "asks_what_they_do",
    "follow_up",
    "reflect",
    "offer_help",
    "propose_follow_up",
    "compliment",
)
PITCH_INTENTS = (
    "self_promotion",
    "offer_product",
    "call_to_action",
    "prospecting",
    "ask_favour",
    "steer_to_self",
    "self_talk",
    "sales_opener",
    "money_talk",
    "own_offering",
)
NEUTRAL_INTENTS = (
    "greeting",
    "thanks",
    "small_talk",
    "acknowledge",
    "closing",
    "logistics",
    "self_disclosure",
)
ALL_INTENTS = OTHER_INTENTS + PITCH_INTENTS + NEUTRAL_INTENTS
INTENT_LABEL = {
    **{i: "other_focus" for i in OTHER_INTENTS},
    **{i: "pitch" for i in PITCH_INTENTS},
    **{i: "neutral" for i in NEUTRAL_INTENTS},
}


# (family, regex of the branches that can open with a token, the same regex when it can match at the sentence
# start else None): one entry of a token's matching plan (see IntentRecogniser._plan_for)
_PlanItem = tuple[int, re.Pattern, "re.Pattern | None"]


class IntentRecogniser:
    """Compiled intent tables. Build once (``IntentRecogniser.load()``), share freely between threads."""

    def __init__(self, spec: dict, known_words: Iterable[str] = ()):
        macros = {k: v for k, v in spec.get("macros", {}).items()}
        self.version = spec.get("meta", {}).get("version", 1)

        def expand(p: str) -> str:
            for _ in range(3):
                p = re.sub(r"<([a-z_]+)>", lambda m: "(?:" + macros[m.group(1)] + ")" if m.group(1) in macros else m.group(0), p)
            return p

        self.intents: list[tuple[str, str, str, str, re.Pattern]] = []
        # Speed: each family is split into its top-level branches and every branch is indexed by the words
        # it can open with (see first_words). A family is then only tried where one of its opening words
        # occurs, with a small regex made of just the branches that can start with that word.
        self.gates: list[Gate | None] = []
        self._branches: list[list[str]] = []  # per family: branch sources (anchors already rewritten)
        self._branch_by_word: list[dict[str, list[int]]] = []
        self._branch_by_prefix: list[list[tuple[str, int]]] = []
        words: set[str] = set()
        for name, d in spec.get("intent", {}).items():
            pats = [expand(p) for p in d["patterns"]]
            self.intents.append((name, d["label"], d.get("strength", "weak"), d.get("question", "any"), LazyRegex(pats)))
            branches = [b for p in pats for b in split_top(p)]
            gate_b: set[str] = set()
            gate_w: set[str] = set()
            gate_p: set[str] = set()
            by_word: dict[str, list[int]] = {}
            by_prefix: list[tuple[str, int]] = []
            ok = True
            for j, b in enumerate(branches):
                g = gate_terms([b])
                if g is None:
                    ok = False
                    break
                bb, bw, bp = g
                gate_b |= bb
                gate_w |= bw
                gate_p |= set(bp)
                for w in set(bw) | {x.split(" ", 1)[0] for x in bb}:
                    by_word.setdefault(w, []).append(j)
                by_prefix.extend((x, j) for x in bp)
            self.gates.append((frozenset(gate_b), frozenset(gate_w), tuple(sorted(gate_p))) if ok else None)
            self._branches.append([anchor(b) for b in branches])
            self._branch_by_word.append(by_word)
            self._branch_by_prefix.append(by_prefix)
            for p in pats:
                words.update(w for w in re.findall(r"(?<![\\a-z])[a-z]{2,}(?![a-z])", p))
        self.context: dict[str, re.Pattern] = {}
        for name, d in spec.get("context", {}).items():
            self.context[name] = compile_family([expand(p) for p in d["patterns"]])
        self.strength = {n: s for n, _, s, _, _ in self.intents}
        targets = set(spec.get("typo", {}).get("targets", [])) | {
            w for w in words if len(w) >= 5 and w.isalpha()
        }
        # common words that must never be "repaired" into a pattern word
        self.known = frozenset(known_words) | frozenset(words) | STOPWORDS | frozenset(CHAT_FORMS.values()) | frozenset(
            spec.get("typo", {}).get("known", [])
        )
        self.normaliser = Normaliser(targets, self.known)
        # token -> (family, regex of its branches opening with the token) for the families it can open;
        # the same for two-word openings (only the families the first word alone does not open)
        self._plans: dict[str, tuple[_PlanItem, ...]] = {}
        self._bplans: dict[str, tuple[_PlanItem, ...]] = {}
        self.use_gates = True
        # opening-word index: word / bigram / prefix -> families that can start there
        self._word_idx: dict[str, tuple[int, ...]] = {}
        self._bigram_idx: dict[str, tuple[int, ...]] = {}
        self._prefix_idx: dict[str, tuple[int, ...]] = {}
        self._ungated = frozenset(i for i, g in enumerate(self.gates) if g is None)
        tmp: tuple[dict, dict, dict] = ({}, {}, {})
        for i, g in enumerate(self.gates):
            if g is None:
                continue
            for key_set, d in zip((g[1], g[0], g[2]), tmp):
                for key in key_set:
                    d.setdefault(key, []).append(i)
        self._word_idx, self._bigram_idx, self._prefix_idx = ({k: tuple(v) for k, v in d.items()} for d in tmp)
        self._pre_lens = tuple(sorted({len(k) for k in self._prefix_idx}))
        self._spec: dict[tuple[int, tuple[int, ...]], _PlanItem] = {}  # (family, branch numbers) -> plan item
        self._names = [x[0] for x in self.intents]
        self._ungated_order = tuple(sorted(self._ungated))
        # families that cannot count in a question / in a statement ("question" = "no" / "yes" in the table)
        self._skip_q = frozenset(i for i, x in enumerate(self.intents) if x[3] == "no")
        self._skip_stmt = frozenset(i for i, x in enumerate(self.intents) if x[3] == "yes")

    @classmethod
    @lru_cache(maxsize=4)
    def load(cls, path: str | None = None, known_words: tuple[str, ...] = ()) -> "IntentRecogniser":
        with open(path or DATA, "rb") as fh:
            spec = tomllib.load(fh)
        return cls(spec, known_words)

    # ------------------------------------------------------------------ text

    def normalise(self, text: str) -> Normalised:
        """The turn as the patterns read it (:mod:`bot.scoring.normalise`), memoised."""
        return _normalise_cached(self, text)

    # ------------------------------------------------------------------ intents

    def prepare(self, words: Iterable[str]) -> int:
        """Build (and compile) the matching plans of ``words`` and of every two-word opening now.

        Plans are otherwise made on first sight of a word, and compiling one costs about a millisecond:
        a bot's first turns after a restart would pay several each, on the event loop, while other
        users wait. Returns the number of compiled branch sets."""
        for t in words:
            if t not in self._plans:
                self._plan_for(t)
        for bg in self._bigram_idx:
            if bg not in self._bplans:
                t = bg.split(" ", 1)[0]
                self._bigram_plan_for(bg, t, self._plans.get(t) or self._plan_for(t))
        return len(self._spec)

    def match(self, norm: Normalised, per_sentence: list | None = None) -> dict[str, int]:
        """Intent name -> number of words in the sentences where it was found (its 'weight' in the turn).

        Speed: a family is only tried at the word positions where one of its possible opening words (see
        first_words) occurs, with an anchored ``match`` there, instead of a scan of the whole sentence;
        the result is the same as ``search`` (checked by the tests). The branches of a family that can open
        with a given word are compiled into one regex (see _plan_for), so each (family, position) costs one
        regex call, and a family already found in the sentence is not tried again.

        A generic question about the partner (``asks_about_them`` from its shape alone) does not count in a
        sentence that is a sales question / request ("could you introduce me to...?").
        """
        if not self.use_gates:
            return self._match_plain(norm, per_sentence)
        memo = norm.matches.get(self)
        if memo is None:
            memo = norm.matches[self] = self._match_gated(norm)
        if per_sentence is not None:
            per_sentence.extend(memo[1])
        return dict(memo[0])

    def _match_gated(self, norm: Normalised) -> tuple[dict[str, int], tuple[tuple[bool, frozenset[str]], ...]]:
        """(intent -> words, per-sentence (question, intents)) of ``match`` with the opening-word gate."""
        found: dict[str, int] = {}
        per_sentence = []
        names = self._names
        ungated = self._ungated_order
        plans, bigram_idx, bplans = self._plans, self._bigram_idx, self._bplans
        for s in norm.sentences:
            toks = s.tokens
            nt = len(toks)
            padded = s.padded
            # families ruled out by the sentence's kind count as "done" from the start and are removed below
            skip = self._skip_q if s.question else self._skip_stmt
            done = set(skip)
            pos = 3  # " ^^ " + tokens: the space before token k
            for k, t in enumerate(toks):
                plan = plans.get(t)
                if plan is None:
                    plan = self._plan_for(t)
                if k + 1 < nt:
                    bg = t + " " + toks[k + 1]
                    if bg in bigram_idx:
                        bplan = bplans.get(bg)
                        if bplan is None:
                            bplan = self._bigram_plan_for(bg, t, plan)
                        plan = plan + bplan
                for i, rx, rx0 in plan:
                    if i in done:
                        continue
                    # k == 0: a branch may also be anchored at the sentence start ("^", the "^^" marker);
                    # rx0 is rx when one of its branches is, else None
                    if rx.match(padded, pos) or (k == 0 and rx0 is not None and rx0.match(padded, 0)):
                        done.add(i)
                pos += len(t) + 1
            for i in ungated:
                if i not in done and self.intents[i][4].search(padded):
                    done.add(i)
            here = [names[i] for i in sorted(done.difference(skip))]
            if "asks_about_them" in here and _SALES_Q.intersection(here):
                here.remove("asks_about_them")
            per_sentence.append((s.question, frozenset(here)))
            for name in here:
                found[name] = found.get(name, 0) + nt
        return found, tuple(per_sentence)

    def _match_plain(self, norm: Normalised, per_sentence: list | None = None) -> dict[str, int]:
        """``match`` without the opening-word gate: a full regex search per family (the reference)."""
        found: dict[str, int] = {}
        for s in norm.sentences:
            here = []
            for name, _label, _strength, qmode, rx in self.intents:
                if (qmode == "yes" and not s.question) or (qmode == "no" and s.question):
                    continue
                if rx.search(s.padded):
                    here.append(name)
            if "asks_about_them" in here and _SALES_Q.intersection(here):
                here.remove("asks_about_them")
            if per_sentence is not None:
                per_sentence.append((s.question, frozenset(here)))
            n = len(s.tokens)
            for name in here:
                found[name] = found.get(name, 0) + n
        return found

    def _plan_for(self, t: str) -> tuple[_PlanItem, ...]:
        """(family, regex of its branches opening with ``t``, the same regex if one of those branches is
        anchored at the sentence start else None) for every family word ``t`` can open (complete opening
        words + opening prefixes); memoised per token."""
        acc: set[int] = set(self._word_idx.get(t, ()))
        lt = len(t)
        for L in self._pre_lens:
            if L > lt:
                break
            h = self._prefix_idx.get(t[:L])
            if h:
                acc.update(h)
        plan = tuple(self._branches_rx(i, t) for i in sorted(acc))
        if len(self._plans) < 100_000:
            self._plans[t] = plan
        return plan

    def _bigram_plan_for(self, bg: str, t: str, plan_t: tuple) -> tuple[_PlanItem, ...]:
        """Like _plan_for, for the families only the two-word opening ``bg`` can open (``t``, its first
        word, has the plan ``plan_t``)."""
        single = {item[0] for item in plan_t}
        plan = tuple(self._branches_rx(i, t) for i in sorted(set(self._bigram_idx[bg]) - single))
        if len(self._bplans) < 100_000:
            self._bplans[bg] = plan
        return plan

    def _branches_rx(self, i: int, t: str) -> _PlanItem:
        """The plan item of family ``i`` for token ``t`` (see _plan_for): one anchored regex made of the
        branches of the family that can open with ``t``.

        It matches at a position exactly when one of those branches does (an alternation), so one call
        replaces one per branch. Compiled once per distinct branch set, which many tokens share."""
        js = set(self._branch_by_word[i].get(t, ()))
        js.update(j for pre, j in self._branch_by_prefix[i] if t.startswith(pre))
        key = (i, tuple(sorted(js)))
        item = self._spec.get(key)
        if item is None:
            srcs = [self._branches[i][j] for j in key[1]]
            rx = compile_family(srcs, anchored=True) if srcs else NEVER
            # only a branch with "^" (anchored form r"\^\^ ") can match at position 0, before the "^^" marker;
            # any caret at all counts, to stay on the safe side
            item = (i, rx, rx if any("^" in b for b in srcs) else None)
            if len(self._spec) < 200_000:
                self._spec[key] = item
        return item

    def context_flags(self, norm: Normalised) -> frozenset[str]:
        flags = set()
        for name, rx in self.context.items():
            for s in norm.sentences:
                if name == "partner_asks_about_user" and not s.question:
                    continue
                if rx.search(s.padded):
                    flags.add(name)
                    break
        return frozenset(flags)



_SALES_Q = frozenset({"prospecting", "call_to_action", "ask_favour", "offer_product", "self_promotion"})


# The memo is keyed by (recogniser id, text); normalisation is pure, so sharing it between threads is safe.
@lru_cache(maxsize=8192)
def _normalise_cached_impl(rec_id: int, text: str) -> Normalised:
    return _RECOGNISERS[rec_id].normaliser.normalise(text)


_RECOGNISERS: dict[int, IntentRecogniser] = {}


def _normalise_cached(rec: IntentRecogniser, text: str) -> Normalised:
    rid = id(rec)
    if rid not in _RECOGNISERS:
        _RECOGNISERS[rid] = rec
    return _normalise_cached_impl(rid, text)


@dataclass(frozen=True, slots=True)
class PartnerView:
    """What the scorer needs from the partner's last line."""

    flags: frozenset[str]
    stems: frozenset[str]
    statement: bool  # has a non-question sentence of 3+ words (they shared something)


@lru_cache(maxsize=8192)
def _partner_view_impl(rec_id: int, text: str) -> PartnerView:
    rec = _RECOGNISERS[rec_id]
    pn = rec.normalise(text)
    return PartnerView(
        flags=rec.context_flags(pn),
        stems=frozenset(content_stems(pn.tokens)),
        statement=any(not s.question and len(s.tokens) >= 3 for s in pn.sentences),
    )


def partner_view(rec: IntentRecogniser, text: str) -> PartnerView:
    rid = id(rec)
    if rid not in _RECOGNISERS:
        _RECOGNISERS[rid] = rec
    return _partner_view_impl(rid, text)


def clear_caches(vocabulary: bool = False) -> None:
    """Forget memoised whole-input results (normalised turns, partner lines), for honest benchmarks.

    ``vocabulary=True`` also forgets the per-token memos (chat-form/typo mapping, opening-word lookups,
    matching plans): those depend only on the token, not the input, and warm up within a few hundred turns.
    The compiled branch regexes stay: they depend only on the pattern tables.
    """
    from bot.scoring.features import clear_caches as clear_feature_caches  # features imports this module

    clear_feature_caches()
    _normalise_cached_impl.cache_clear()
    _partner_view_impl.cache_clear()
    if vocabulary:
        clear_stems()
        for rec in list(_RECOGNISERS.values()):
            rec.normaliser.clear()
            rec._plans.clear()
            rec._bplans.clear()

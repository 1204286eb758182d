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

Normalisation makes the patterns robust to chat style: lowercase, straight quotes, contractions expanded
("don't" -> "do not", "let's" -> "let us"), chat forms ("u", "ur", "thx", "wanna"), a few typos repaired
(missing/extra letter or swapped neighbours on the words the patterns rely on), emoji mapped to words or
dropped, filler words removed, money and percentages turned into ``_money_`` / ``_pct_`` tokens.

Everything here is pure Python (``re`` + ``tomllib``), deterministic and thread-safe once built: the
compiled tables are immutable and the only mutable state is bounded memos (typo corrections, per-token
matching plans, compiled branch sets, a turn's match result on its Normalised) whose writes are idempotent.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

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

# ----------------------------------------------------------------------------- normalisation

_CHAT = {
    "u": "you", "ya": "you", "yu": "you", "yoo": "you", "ur": "your", "yr": "your", "urs": "yours",
    "r": "are", "b4": "before", "pls": "please", "plz": "please", "pleeease": "please",
    "thx": "thanks", "thnx": "thanks", "thanx": "thanks", "tnx": "thanks", "ty": "thanks", "tysm": "thanks",
    "tks": "thanks", "thankyou": "thank you", "thank": "thank",
    "gonna": "going to", "wanna": "want to", "gotta": "got to", "lemme": "let me", "gimme": "give me",
    "kinda": "kind of", "sorta": "sort of", "dunno": "do not know", "wat": "what", "wut": "what",
    "whatcha": "what are you", "watcha": "what are you", "wot": "what", "hw": "how",
    "whats": "what is", "hows": "how is", "whos": "who is", "wheres": "where is", "whens": "when is",
    "thats": "that is", "theres": "there is", "heres": "here is", "its": "its", "hes": "he is",
    "shes": "she is", "im": "i am", "ive": "i have", "youre": "you are", "youd": "you would",
    "youll": "you will", "youve": "you have", "yall": "you all", "dont": "do not", "cant": "can not",
    "wont": "will not", "didnt": "did not", "doesnt": "does not", "isnt": "is not", "arent": "are not",
    "wasnt": "was not", "werent": "were not", "havent": "have not", "hasnt": "has not",
    "wouldnt": "would not", "couldnt": "could not", "shouldnt": "should not", "lets": "let us",
    "theyre": "they are", "weve": "we have", "itll": "it will", "thatll": "that will",
    "cuz": "because", "coz": "because", "cos": "because", "bc": "because", "bcz": "because",
    "abt": "about", "btw": "by the way", "tbh": "to be honest", "imo": "in my opinion",
    "imho": "in my opinion", "rn": "right now", "np": "no problem", "ofc": "of course",
    "def": "definitely", "defo": "definitely", "prob": "probably", "probs": "probably", "msg": "message",
    "dm": "message", "hv": "have", "wud": "would", "cud": "could", "shud": "should", "luv": "love",
    "gr8": "great", "nite": "night", "k": "ok", "kk": "ok", "okay": "ok", "okey": "ok", "okk": "ok",
    "yep": "yes", "yup": "yes", "yea": "yes", "yeah": "yes", "yeh": "yes", "ye": "yes", "yass": "yes",
    "nah": "no", "nope": "no", "ppl": "people", "biz": "business", "convo": "conversation",
    "tmrw": "tomorrow", "tmr": "tomorrow", "tmw": "tomorrow", "2moro": "tomorrow", "2day": "today",
    "tonite": "tonight", "l8r": "later", "ltr": "later", "cya": "see you", "thru": "through",
    "tho": "though", "w": "with", "wo": "without", "bday": "birthday", "congratz": "congrats",
    "congrats": "congrats", "grats": "congrats", "gratz": "congrats", "intro": "intro",
    "ttyl": "talk to you later", "brb": "be right back", "idk": "i do not know", "afaik": "as far as i know",
    "asap": "as soon as possible", "fyi": "for your information", "pm": "pm", "hru": "how are you",
    "wyd": "what are you doing", "omg": "oh my god", "ngl": "not going to lie", "irl": "in real life",
    "smth": "something", "sth": "something", "sb": "somebody", "sm1": "someone", "some1": "someone",
    "any1": "anyone", "every1": "everyone", "no1": "no one", "n": "and",
    "nd": "and", "em": "them", "cause": "because", "till": "until", "til": "until", "alot": "a lot",
    "definately": "definitely", "defintely": "definitely", "recieve": "receive", "wierd": "weird",
    "untill": "until", "tommorow": "tomorrow", "tomorow": "tomorrow", "beleive": "believe",
    "freind": "friend", "thier": "their", "teh": "the", "adn": "and", "waht": "what", "yuo": "you",
    "yoru": "your", "jsut": "just", "taht": "that", "wiht": "with", "abotu": "about", "realy": "really",
    "hte": "the", "wnat": "want", "knwo": "know", "konw": "know", "tlak": "talk", "hwo": "how",
    "ot": "to", "fo": "of", "nad": "and", "si": "is", "yor": "your", "yur": "your", "youe": "your",
    "intrested": "interested", "intresting": "interesting", "insterested": "interested",
    "buisness": "business", "bussiness": "business", "busines": "business", "bizness": "business",
    "compnay": "company", "comapny": "company", "copmany": "company", "recomend": "recommend",
    "reccomend": "recommend", "reccommend": "recommend", "collegue": "colleague", "colleage": "colleague",
    "wanan": "wanna", "ur's": "yours", "ooh": "oh", "ohh": "oh", "aww": "aw",
    "sry": "sorry", "soz": "sorry", "srsly": "seriously", "rly": "really", "rlly": "really",
    "v": "very", "vv": "very", "gd": "good", "nvm": "never mind", "bt": "but", "wrk": "work",
    "wrkd": "worked", "mtg": "meeting", "mgr": "manager", "info": "info", "pls.": "please",
    "linkedin": "linkedin", "li": "linkedin", "bizcard": "business card", "whatsapp": "whatsapp",
}

# "id" / "ill" are ambiguous: expand only when followed by a verb-like word.
_ID_NEXT = frozenset(
    "love like be say recommend suggest imagine guess think rather really definitely happily gladly probably "
    "also need want have prefer bet enjoy appreciate welcome hate".split()
)
_ILL_NEXT = frozenset(
    "send introduce be let get connect email text check see call put look share have do make ping reach "
    "follow give try pass forward find dig drop leave catch grab keep ask mention write message admit "
    "take talk bring think definitely gladly happily also".split()
)

_FILLERS = frozenset(
    "really actually just honestly genuinely truly literally basically totally definitely absolutely "
    "certainly seriously um umm uh uhh erm er hmm hm oh ah lol haha hahaha hehe lmao rofl ooh wow aw "
    "btw okay anyways very super quite pretty".split()
)

_EMOJI_WORDS = {
    "👋": " hi ", "🙏": " thanks ", "👍": " ok ", "👌": " ok ", "🤝": " nice to meet you ",
    "😂": " haha ", "🤣": " haha ", "😅": " haha ", "😆": " haha ", "😄": " ", "😃": " ", "😀": " ",
    "🙂": " ", "😊": " ", "☺": " ", "😉": " ", "😁": " ", "🎉": " congrats ", "🥳": " congrats ",
    "👏": " congrats ", "🙌": " congrats ", "☕": " coffee ", "🍷": " wine ", "🍺": " beer ",
    "😢": " sorry ", "😞": " sorry ", "😔": " sorry ", "😬": " ouch ", "🤔": " hmm ", "💯": " exactly ",
    "❤": " love ", "💡": " idea ", "📇": " card ", "📞": " call ", "📧": " email ", "✉": " email ",
    "💰": " money ", "💸": " money ", "💵": " money ", "🚀": " ", "🔥": " ",
}

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201b": "'", "`": "'", "\u00b4": "'",
                         "\u201c": '"', "\u201d": '"', "\u2013": " - ", "\u2014": " - ", "\u2026": " . "})

_MONEY_RE = re.compile(
    r"(?:[$£€¥]\s?\d[\d,.]*\s?(?:k|m|bn|million|billion|grand|thousand)?\b)"
    r"|(?:\b\d[\d,.]*\s?(?:k|m)?\s?(?:dollars|euros|pounds|bucks|usd|eur|gbp|quid|grand)\b)"
    r"|(?:\b\d[\d,.]*\s?(?:k)\s?(?:a|per)\s(?:month|year|seat|user)\b)"
)
_HAS_DIGIT = re.compile(r"\d")
_TRIPLE = re.compile(r"(.)\1\1")
_TRIPLE_SUB = re.compile(r"(.)\1\1+")
_PCT_RE = re.compile(r"\b\d+(?:[.,]\d+)?\s?(?:%|percent\b|per cent\b)")
_CONTR_WORDS = {"can't": "can not", "won't": "will not", "shan't": "shall not", "let's": "let us", "ain't": "is not"}
_CONTR_SUFFIX = {"n't": " not", "'re": " are", "'ve": " have", "'ll": " will", "'d": " would", "'m": " am", "'s": " is"}
_S_IS = "it|that|what|who|where|how|there|here|he|she|everything|nothing|something|name|this|when|why"
_CONTR_ONE = re.compile(
    r"\b(?:can't|won't|shan't|let's|ain't)\b|n't\b|'(?:re|ve|ll|d|m)\b|\b(?:%s)'s\b" % _S_IS
)


def _contr_repl(m: re.Match) -> str:
    g = m.group(0)
    w = _CONTR_WORDS.get(g)
    if w is not None:
        return w
    if g.endswith("'s"):
        return g[:-2] + " is"
    return _CONTR_SUFFIX[g]


_TOKEN_RE = re.compile(r"[a-z0-9_]+|[?!.;:\n]")
_SENT_END = frozenset("?!.;:\n")
_CONTEXTUAL = frozenset(("id", "ill", "were"))  # tokens whose mapping depends on their neighbours

_QWORDS = frozenset("what how why where when who which whose whom".split())
_AUX = frozenset("do did does are were is was have has had can could would will should shall may might am".split())
_SUBJ = frozenset("you your it that there they we this he she anyone anybody someone any".split())

STOPWORDS = frozenset(
    """a an the and or but if so of to in on at for from with by about as into like through over after before
    under again further then once here there when where why how all any both each few more most other some such
    no nor not only own same than too very can will just should now i me my myself we our ours ourselves you
    your yours yourself yourselves he him his himself she her hers herself it its itself they them their theirs
    themselves what which who whom this that these those am is are was were be been being have has had having do
    does did doing would could ought get got let us really yes ok oh sure well also much many one two lot lots
    thing things stuff way kind sort bit little good great nice cool thanks thank please tell know think say said
    go going want make see hear love like interesting sounds sound always never ever mean meant right okay
    people time day week year years today tonight lately recently currently""".split()
)


def _strip_accents(s: str) -> str:
    if s.isascii():
        return s
    out = []
    for ch in unicodedata.normalize("NFKD", s):
        if unicodedata.combining(ch):
            continue
        out.append(ch)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Sentence:
    tokens: tuple[str, ...]  # core tokens (fillers removed)
    text: str  # " ".join(tokens)
    question: bool
    padded: str  # " ^^ " + text + " ": the form the compiled patterns search (see _compile)

    # Derived views, computed on access: the scorer itself never needs them, so normalising does not pay.
    @property
    def tokset(self) -> frozenset[str]:
        return frozenset(self.tokens)

    @property
    def bigrams(self) -> frozenset[str]:
        """"w1 w2" for adjacent tokens."""
        return frozenset(map(" ".join, zip(self.tokens, self.tokens[1:])))


@dataclass(frozen=True, slots=True)
class Normalised:
    tokens: tuple[str, ...]  # all tokens, fillers kept, no punctuation
    sentences: tuple[Sentence, ...]
    text: str  # core text of the whole turn (sentences joined with " . ")
    n_words: int
    has_qmark: bool
    # recogniser -> (intents found, per-sentence intents) of its match on this turn. The scorer matches most
    # turns twice (as the turn itself, then as the user's previous line when reading the next turn); this
    # memo lives only as long as the Normalised, i.e. in the whole-input memo that clear_caches() empties.
    matches: dict = field(default_factory=dict, compare=False, repr=False)


class _Typo:
    """Repairs a typo on the words the patterns rely on: one missing letter, one extra letter, or two
    swapped neighbours. Substitutions are not repaired (too many real words are one substitution apart)."""

    def __init__(self, targets: Iterable[str]):
        self.targets = frozenset(targets)
        deletes: dict[str, str] = {}
        swaps: dict[str, str] = {}
        for t in sorted(self.targets):
            if len(t) >= 7:
                for i in range(len(t)):
                    deletes.setdefault(t[:i] + t[i + 1 :], t)
            if len(t) >= 5:
                for i in range(len(t) - 1):
                    s = t[:i] + t[i + 1] + t[i] + t[i + 2 :]
                    if s != t:
                        swaps.setdefault(s, t)
        self.deletes = deletes
        self.swaps = swaps
        self.memo: dict[str, str] = {}

    def fix(self, tok: str, known: frozenset[str]) -> str:
        if tok in known or tok in self.targets or len(tok) < 5 or not tok.isalpha():
            return tok
        hit = self.memo.get(tok)
        if hit is not None:
            return hit
        out = tok
        if tok in self.swaps:
            out = self.swaps[tok]
        elif tok in self.deletes:  # missing letter ("intresting")
            out = self.deletes[tok]
        elif len(tok) >= 8:  # one extra letter ("meeeting", "introduuce")
            for i in range(len(tok)):
                cand = tok[:i] + tok[i + 1 :]
                if cand in self.targets:
                    out = cand
                    break
        if len(self.memo) < 50_000:
            self.memo[tok] = out
        return out


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
        # it can open with (see _first_words). A family is then only tried where one of its opening words
        # occurs, with a small regex made of just the branches that can start with that word.
        self.gates: list[Gate | None] = []
        self._branches: list[list[str]] = []  # per family: branch sources (anchors already rewritten)
        self._branch_by_word: list[dict[str, list[int]]] = []
        self._branch_by_prefix: list[list[tuple[str, int]]] = []
        words: set[str] = set()
        for name, d in spec.get("intent", {}).items():
            pats = [expand(p) for p in d["patterns"]]
            self.intents.append((name, d["label"], d.get("strength", "weak"), d.get("question", "any"), _LazyRegex(pats)))
            branches = [b for p in pats for b in _split_top(p)]
            gate_b: set[str] = set()
            gate_w: set[str] = set()
            gate_p: set[str] = set()
            by_word: dict[str, list[int]] = {}
            by_prefix: list[tuple[str, int]] = []
            ok = True
            for j, b in enumerate(branches):
                g = _gate_terms([b])
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
            self._branches.append([_anchor(b) for b in branches])
            self._branch_by_word.append(by_word)
            self._branch_by_prefix.append(by_prefix)
            for p in pats:
                words.update(w for w in re.findall(r"(?<![\\a-z])[a-z]{2,}(?![a-z])", p))
        self.context: dict[str, re.Pattern] = {}
        for name, d in spec.get("context", {}).items():
            self.context[name] = _compile([expand(p) for p in d["patterns"]])
        self.strength = {n: s for n, _, s, _, _ in self.intents}
        targets = set(spec.get("typo", {}).get("targets", [])) | {
            w for w in words if len(w) >= 5 and w.isalpha()
        }
        # common words that must never be "repaired" into a pattern word
        self.known = frozenset(known_words) | frozenset(words) | STOPWORDS | frozenset(_CHAT.values()) | frozenset(
            spec.get("typo", {}).get("known", [])
        )
        self.typo = _Typo(targets)
        # token -> (normalised tokens, whether one is a filler); pure, idempotent writes. Sentence ends and
        # the tokens read with their neighbour (_CONTEXTUAL) are never stored.
        self._tokmemo: dict[str, tuple[tuple[str, ...], bool]] = {}
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
        return _normalise_cached(self, text)

    def _normalise(self, text: str) -> Normalised:
        t = text if text.isascii() else unicodedata.normalize("NFKC", text)
        t = t.translate(_QUOTES).lower()
        if not t.isascii():
            for e, w in _EMOJI_WORDS.items():
                if e in t:
                    t = t.replace(e, w)
            t = _strip_accents(t)
        if _HAS_DIGIT.search(t):
            t = t.replace("100%", " totally ").replace("100 %", " totally ")
            t = _PCT_RE.sub(" _pct_ ", t)
            t = _MONEY_RE.sub(" _money_ ", t)
        if "'" in t:
            t = _CONTR_ONE.sub(_contr_repl, t).replace("'", "")
        raw = _TOKEN_RE.findall(t)
        # One pass over the raw tokens: map each (memoised per token), collect the sentence being read, and
        # close it at a sentence end. Per token the memo holds (mapped tokens, whether one is a filler).
        tokmemo = self._tokmemo
        words: list[str] = []
        sentences: list[Sentence] = []
        cur: list[str] = []  # the current sentence, fillers kept
        fillers = False  # ... has a filler
        has_q = False
        n = len(raw)
        for i, tok in enumerate(raw):
            entry = tokmemo.get(tok)
            if entry is None:
                if tok in _SENT_END:
                    if tok == "?":
                        has_q = True
                        if not cur and sentences:  # "???" after a sentence
                            s = sentences[-1]
                            sentences[-1] = Sentence(s.tokens, s.text, True, s.padded)
                    if cur:
                        words.extend(cur)
                        sentences.append(_sentence(cur, tok == "?", fillers))
                        cur = []
                        fillers = False
                    continue
                if tok in _CONTEXTUAL:
                    nxt = raw[i + 1] if i + 1 < n else ""
                    if (tok == "id" and nxt in _ID_NEXT) or (tok == "ill" and nxt in _ILL_NEXT):
                        entry = (("i", "would" if tok == "id" else "will"), False)
                    elif tok == "were" and i == 0 and nxt not in _SUBJ:
                        entry = (("we", "are"), False)
                if entry is None:
                    entry = self._map_entry(tok)
            cur.extend(entry[0])
            if entry[1]:
                fillers = True
        if cur:
            words.extend(cur)
            sentences.append(_sentence(cur, False, fillers))
        return Normalised(
            tokens=tuple(words),
            sentences=tuple(sentences),
            text=" . ".join(s.text for s in sentences),
            n_words=len(words),
            has_qmark=has_q,
        )

    def _map_entry(self, tok: str) -> tuple[tuple[str, ...], bool]:
        """(mapped tokens, whether one is a filler) for a token whose mapping does not depend on its
        neighbours; memoised."""
        mapped = self._map_token(tok)
        entry = (mapped, not _FILLERS.isdisjoint(mapped))
        if len(self._tokmemo) < 100_000 and tok not in _CONTEXTUAL:
            self._tokmemo[tok] = entry
        return entry

    def _map_token(self, tok: str) -> tuple[str, ...]:
        """Chat forms, squeezed repeats and typos for one token (pure: memoised by the caller)."""
        m = _CHAT.get(tok)
        if m is not None:
            return tuple(m.split())
        if len(tok) > 2 and tok.isalpha():
            # squeeze 3+ repeated letters ("sooooo", "niiice")
            if _TRIPLE.search(tok):
                tok = _TRIPLE_SUB.sub(r"\1\1", tok)
                m = _CHAT.get(tok)
                if m is not None:
                    return tuple(m.split())
            tok = self.typo.fix(tok, self.known)
        return (tok,)

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
        _first_words) occurs, with an anchored ``match`` there, instead of a scan of the whole sentence;
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
            rx = _compile(srcs, anchored=True) if srcs else _NEVER
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


class _Ungateable(Exception):
    pass


def _first_words(pattern: str, depth: int = 2, limit: int = 30000) -> tuple[set[str], set[str], set[str]]:
    """The possible opening words of a match of ``pattern`` (a branch searched right after a space).

    Returns (bigrams, words, prefixes): every match starts with one of the two-word openings in ``bigrams``
    ("could you"), or with one of the complete ``words`` (when what follows it is open-ended), or with a word
    that begins with one of the ``prefixes``. Raises _Ungateable when a match can start with an arbitrary word
    (e.g. ``[a-z]+``) or the analysis grows too large. It walks Python's own parse tree of the regex, so it
    is exact rather than a guess; the sentence marker ``^^`` (start anchor) is looked through.
    """
    from re import _constants as C  # type: ignore[attr-defined]
    from re import _parser as P  # type: ignore[attr-defined]

    bigrams: set[str] = set()
    words: set[str] = set()
    prefixes: set[str] = set()
    budget = [limit]

    def open_ended(done: tuple[str, ...], prefix: str) -> None:
        if done:
            words.add(done[0])
        elif prefix:
            prefixes.add(prefix)
        else:
            raise _Ungateable

    def word_done(done: tuple[str, ...], w: str, k) -> None:
        if w == "^^" or not w:
            k(done)
            return
        done = done + (w,)
        if len(done) >= depth:
            bigrams.add(" ".join(done)) if depth > 1 else words.add(w)
            return
        k(done)

    def walk(items: list, i: int, done: tuple[str, ...], prefix: str) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise _Ungateable
        if i == len(items):
            open_ended(done, prefix)  # the branch ends inside / right after the opening words
            return
        op, av = items[i]
        if op is C.LITERAL:
            ch = chr(av)
            if ch == " ":
                word_done(done, prefix, lambda d: walk(items, i + 1, d, ""))
            else:
                walk(items, i + 1, done, prefix + ch)
        elif op is C.IN:
            chars = []
            for o, a in av:
                if o is C.LITERAL and len(av) <= 4:
                    chars.append(chr(a))
                else:
                    chars = None
                    break
            if chars is None:
                if not done and not prefix and av == [(C.CATEGORY, C.CATEGORY_DIGIT)]:
                    prefixes.update("0123456789")  # a word starting with a digit
                    return
                open_ended(done, prefix)
                return
            for ch in chars:
                walk([(C.LITERAL, ord(ch))] + items[i + 1 :], 0, done, prefix)
        elif op is C.BRANCH:
            for alt in av[1]:
                walk(list(alt.data) + items[i + 1 :], 0, done, prefix)
        elif op is C.SUBPATTERN:
            walk(list(av[-1].data) + items[i + 1 :], 0, done, prefix)
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", None)):
            lo, _hi, sub = av
            if lo == 0:
                walk(items, i + 1, done, prefix)
            walk(list(sub.data) + items[i + 1 :], 0, done, prefix)
        elif op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            walk(items, i + 1, done, prefix)
        else:  # ANY, CATEGORY, NOT_LITERAL, GROUPREF...: an arbitrary character
            open_ended(done, prefix)

    walk(list(P.parse(pattern).data), 0, (), "")
    return bigrams, words, prefixes


Gate = tuple[frozenset[str], frozenset[str], tuple[str, ...]]


def _gate_terms(patterns: list[str]) -> Gate | None:
    """Opening-words gate of a family (see _first_words); None when some branch cannot be gated."""
    bigrams: set[str] = set()
    words: set[str] = set()
    prefixes: set[str] = set()
    for p in patterns:
        # the compiled form only lets a match end at a word end, hence the trailing space
        p = _anchor(p) + " "
        try:
            b, w, pr = _first_words(p, depth=2)
        except _Ungateable:
            try:
                b, w, pr = _first_words(p, depth=1)
            except _Ungateable:
                return None
        bigrams |= b
        words |= w
        prefixes |= pr
    return frozenset(bigrams), frozenset(words), tuple(sorted(prefixes))


_NEVER = re.compile(r"(?!x)x")


def _split_top(pattern: str) -> list[str]:
    """Split a regex at its top-level ``|`` (outside groups and character classes)."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            cur.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _anchor(p: str) -> str:
    """``^`` = start of the sentence (the ``^^`` marker), ``$`` = its end, in the padded sentence form."""
    return p.replace("^", r"\^\^ ").replace("$", r"(?= $)")


class _LazyRegex:
    """A whole family as one regex, compiled on first use (only needed when gating is off or impossible)."""

    __slots__ = ("patterns", "_rx")

    def __init__(self, patterns: list[str]):
        self.patterns = patterns
        self._rx: re.Pattern | None = None

    def _get(self) -> re.Pattern:
        if self._rx is None:
            self._rx = _compile(self.patterns)
        return self._rx

    def search(self, text: str):
        return self._get().search(text)

    def match(self, text: str, pos: int = 0):
        return self._get().match(text, pos)


def _compile(patterns: list[str], anchored: bool = False) -> re.Pattern:
    """One regex per family, searched in a sentence padded as `` ^^ words words ``.

    Every match must start at a space (i.e. at a word start) and end before a space (a word end). A
    literal leading space lets the regex engine skip ahead quickly, about twice as fast as ``\\b``.
    ``^`` in a pattern means "at the start of the sentence" (the ``^^`` marker), ``$`` "at its end".
    """
    out = ["(?:%s)" % (p if anchored else _anchor(p)) for p in patterns]
    return re.compile(" (?:" + "|".join(out) + r")(?:(?= )|(?<= ))")


def _sentence(toks: list[str], question: bool, fillers: bool) -> Sentence:
    """A sentence from its tokens (fillers are dropped unless that leaves nothing); a question when it ends
    with "?" or is shaped like one."""
    core = ([w for w in toks if w not in _FILLERS] or toks) if fillers else toks
    txt = " ".join(core)
    return Sentence(tuple(core), txt, question or _looks_like_question(core), " ^^ " + txt + " ")


def _looks_like_question(core: list[str]) -> bool:
    if not core:
        return False
    w0 = core[0]
    if w0 in _QWORDS:
        return len(core) > 1 or w0 in ("why", "how")
    if w0 in _AUX and len(core) > 1 and core[1] in _SUBJ:
        return True
    if w0 in ("and", "so", "but") and len(core) > 2 and (core[1] in _QWORDS or (core[1] in _AUX and core[2] in _SUBJ)):
        return True
    return False


# The memo is keyed by (recogniser id, text); normalisation is pure, so sharing it between threads is safe.
@lru_cache(maxsize=8192)
def _normalise_cached_impl(rec_id: int, text: str) -> Normalised:
    return _RECOGNISERS[rec_id]._normalise(text)


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
    try:
        from bot.scoring.offline import _pitched_cached

        _pitched_cached.cache_clear()
    except ImportError:  # pragma: no cover
        pass
    _normalise_cached_impl.cache_clear()
    _partner_view_impl.cache_clear()
    if vocabulary:
        _STEMS.clear()
        for rec in list(_RECOGNISERS.values()):
            rec.typo.memo.clear()
            rec._tokmemo.clear()
            rec._plans.clear()
            rec._bplans.clear()


# token -> its stem, or None when it does not count as content (short, stopword, number, _placeholder_)
_STEMS: dict[str, str | None] = {}


def stem(word: str) -> str:
    """A crude stem for word overlap: first 5 letters, plural/verb endings trimmed."""
    w = word
    for suf in ("ing", "ed", "es", "s"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            w = w[: -len(suf)]
            break
    return w[:5]


def content_stems(tokens: Iterable[str]) -> set[str]:
    """Stems of the content words (memoised per token, the content test included)."""
    out = set()
    get = _STEMS.get
    for t in tokens:
        st = get(t, _UNSEEN)
        if st is _UNSEEN:
            st = stem(t) if len(t) > 2 and t not in STOPWORDS and not t.isdigit() and not t.startswith("_") else None
            if len(_STEMS) < 100_000:
                _STEMS[t] = st
        if st is not None:
            out.add(st)
    return out


_UNSEEN = object()

"""Normalisation: a chat line as the intent patterns read it.

Lowercase, straight quotes, contractions expanded ("don't" -> "do not", "let's" -> "let us"), chat
forms ("u", "ur", "thx", "wanna"), a few typos repaired (missing/extra letter or swapped neighbours
on the words the patterns rely on), emoji mapped to words or dropped, filler words removed, money
and percentages turned into ``_money_`` / ``_pct_`` tokens; then split into sentences, each marked
as a question when it ends with "?" or is shaped like one. Pure Python, deterministic; the only
mutable state is bounded memos whose writes are idempotent.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable

__all__ = ["STOPWORDS", "CHAT_FORMS", "Normalised", "Normaliser", "Sentence", "TypoFixer", "content_stems", "stem", "clear_stems"]

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


def strip_accents(s: str) -> str:
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
    padded: str  # " ^^ " + text + " ": the form the compiled patterns search (see bot.scoring.patterns.compile_family)

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


class TypoFixer:
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


def sentence(toks: list[str], question: bool, fillers: bool) -> Sentence:
    """A sentence from its tokens (fillers are dropped unless that leaves nothing); a question when it ends
    with "?" or is shaped like one."""
    core = ([w for w in toks if w not in _FILLERS] or toks) if fillers else toks
    txt = " ".join(core)
    return Sentence(tuple(core), txt, question or looks_like_question(core), " ^^ " + txt + " ")


def looks_like_question(core: list[str]) -> bool:
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

class Normaliser:
    """Chat line -> :class:`Normalised`, with one recogniser's typo targets and known words."""

    def __init__(self, typo_targets: Iterable[str], known: frozenset[str]):
        self.typo = TypoFixer(typo_targets)
        self.known = known  # common words that must never be "repaired" into a pattern word
        # token -> (normalised tokens, whether one is a filler); pure, idempotent writes. Sentence ends and
        # the tokens read with their neighbour (_CONTEXTUAL) are never stored.
        self._tokmemo: dict[str, tuple[tuple[str, ...], bool]] = {}

    def clear(self) -> None:
        """Forget the per-token memos (typo repairs, token mappings)."""
        self.typo.memo.clear()
        self._tokmemo.clear()

    def normalise(self, text: str) -> Normalised:
        """The turn as the patterns read it (see the module docstring); pure, so callers memoise it."""
        t = text if text.isascii() else unicodedata.normalize("NFKC", text)
        t = t.translate(_QUOTES).lower()
        if not t.isascii():
            for e, w in _EMOJI_WORDS.items():
                if e in t:
                    t = t.replace(e, w)
            t = strip_accents(t)
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
                        sentences.append(sentence(cur, tok == "?", fillers))
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
            sentences.append(sentence(cur, False, fillers))
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


def clear_stems() -> None:
    _STEMS.clear()


CHAT_FORMS = _CHAT

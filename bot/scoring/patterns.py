"""Regex families as the intent recogniser uses them: compiled forms and opening-word gates.

A family (one intent's patterns in ``intents.toml``) is searched in a sentence padded as
`` ^^ words words ``: every match starts at a word start and ends at a word end, ``^`` means the
sentence start and ``$`` its end (:func:`anchor`, :func:`compile_family`). For speed the recogniser
does not scan whole sentences: :func:`gate_terms` works out, from Python's own parse tree of each
branch, the words a match can open with, so a family is only tried where one of them occurs.
"""

from __future__ import annotations

import re

__all__ = ["Gate", "LazyRegex", "NEVER", "Ungateable", "anchor", "compile_family", "first_words", "gate_terms", "split_top"]


class Ungateable(Exception):
    pass


def first_words(pattern: str, depth: int = 2, limit: int = 30000) -> tuple[set[str], set[str], set[str]]:
    """The possible opening words of a match of ``pattern`` (a branch searched right after a space).

    Returns (bigrams, words, prefixes): every match starts with one of the two-word openings in ``bigrams``
    ("could you"), or with one of the complete ``words`` (when what follows it is open-ended), or with a word
    that begins with one of the ``prefixes``. Raises Ungateable when a match can start with an arbitrary word
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
            raise Ungateable

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
            raise Ungateable
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


def gate_terms(patterns: list[str]) -> Gate | None:
    """Opening-words gate of a family (see first_words); None when some branch cannot be gated."""
    bigrams: set[str] = set()
    words: set[str] = set()
    prefixes: set[str] = set()
    for p in patterns:
        # the compiled form only lets a match end at a word end, hence the trailing space
        p = anchor(p) + " "
        try:
            b, w, pr = first_words(p, depth=2)
        except Ungateable:
            try:
                b, w, pr = first_words(p, depth=1)
            except Ungateable:
                return None
        bigrams |= b
        words |= w
        prefixes |= pr
    return frozenset(bigrams), frozenset(words), tuple(sorted(prefixes))


NEVER = re.compile(r"(?!x)x")


def split_top(pattern: str) -> list[str]:
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


def anchor(p: str) -> str:
    """``^`` = start of the sentence (the ``^^`` marker), ``$`` = its end, in the padded sentence form."""
    return p.replace("^", r"\^\^ ").replace("$", r"(?= $)")


class LazyRegex:
    """A whole family as one regex, compiled on first use (only needed when gating is off or impossible)."""

    __slots__ = ("patterns", "_rx")

    def __init__(self, patterns: list[str]):
        self.patterns = patterns
        self._rx: re.Pattern | None = None

    def _get(self) -> re.Pattern:
        if self._rx is None:
            self._rx = compile_family(self.patterns)
        return self._rx

    def search(self, text: str):
        return self._get().search(text)

    def match(self, text: str, pos: int = 0):
        return self._get().match(text, pos)


def compile_family(patterns: list[str], anchored: bool = False) -> re.Pattern:
    """One regex per family, searched in a sentence padded as `` ^^ words words ``.

    Every match must start at a space (i.e. at a word start) and end before a space (a word end). A
    literal leading space lets the regex engine skip ahead quickly, about twice as fast as ``\\b``.
    ``^`` in a pattern means "at the start of the sentence" (the ``^^`` marker), ``$`` "at its end".
    """
    out = ["(?:%s)" % (p if anchored else anchor(p)) for p in patterns]
    return re.compile(" (?:" + "|".join(out) + r")(?:(?= )|(?<= ))")

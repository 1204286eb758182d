"""Telegram's text formatting, as the fake Bot API server parses it: HTML, MarkdownV2 and legacy
Markdown into plain text plus MessageEntity dicts (offsets in UTF-16 code units), with tdlib-like
errors.

Why: the most common production failure of Telegram bots is "400 Bad Request: can't parse
entities" because user text with "<" or "." was not escaped, so the fake must refuse exactly
what Telegram refuses. Used by :mod:`tests.fakes.bot_api`.
"""

from __future__ import annotations

import re
from typing import Any


class EntityParseError(ValueError):
    """Raised for malformed formatted text; the message follows tdlib's wording."""


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Bot API entity offsets."""
    # Fast path: most bot text is BMP-only, where code points == code units.
    n = len(text)
    if text.isascii():
        return n
    return n + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------

_HTML_TAGS: dict[str, str] = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}

_HTML_ENTITY_RE = re.compile(r"&(?:(lt|gt|amp|quot);|#([0-9]{1,7});|#[xX]([0-9a-fA-F]{1,6});)")
_HTML_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_SPACE = " \t\n\r\x0b\x0c"


def _decode_entity(match: re.Match[str]) -> str | None:
    name, dec, hexa = match.groups()
    if name:
        return _HTML_NAMED[name]
    code = int(dec) if dec else int(hexa, 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code)


def _decode_attr(raw: str) -> str:
    def repl(m: re.Match[str]) -> str:
        return _decode_entity(m) or m.group(0)

    return _HTML_ENTITY_RE.sub(repl, raw)


def parse_html(text: str, *, strict_ampersand: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """Parse Bot API HTML into (plain_text, entities) or raise :class:`EntityParseError`."""
    out: list[str] = []
    u16 = 0
    # stack frames: [tag, attrs, utf16_start, char_index]
    stack: list[list[Any]] = []
    entities: list[dict[str, Any]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "&":
            m = _HTML_ENTITY_RE.match(text, i)
            ch = _decode_entity(m) if m else None
            if m and ch is not None:
                out.append(ch)
                u16 += utf16_len(ch)
                i = m.end()
                continue
            if strict_ampersand:
                raise EntityParseError(
                    f"Unsupported HTML entity at byte offset {_byte_offset(text, i)}; escape '&' as &amp;"
                )
            out.append("&")
            u16 += 1
            i += 1
            continue
        if c != "<":
            j = i + 1
            while j < n and text[j] not in "<&":
                j += 1
            chunk = text[i:j]
            out.append(chunk)
            u16 += utf16_len(chunk)
            i = j
            continue

        begin = i
        i += 1
        if i < n and text[i] == "/":
            j = text.find(">", i)
            if j == -1:
                raise EntityParseError(f"Unclosed end tag at byte offset {_byte_offset(text, begin)}")
            name = text[i + 1 : j].strip(_HTML_SPACE).lower()
            if not stack:
                raise EntityParseError(f"Unexpected end tag at byte offset {_byte_offset(text, begin)}")
            tag, tag_attrs, start, _ = stack[-1]
            if name != tag:
                raise EntityParseError(
                    f"Unmatched end tag at byte offset {_byte_offset(text, begin)}, "
                    f'expected "</{tag}>", found "</{name}>"'
                )
            stack.pop()
            i = j + 1
            length = u16 - start
            if tag == "code" and stack and stack[-1][0] == "pre":
                cls = tag_attrs.get("class", "")
                if cls.startswith("language-") and len(cls) > 9:
                    stack[-1][1]["__language"] = cls[9:]
                    continue
            if length <= 0:
                continue
            entity: dict[str, Any] = {"type": _HTML_TAGS[tag], "offset": start, "length": length}
            if tag == "a":
                href = tag_attrs.get("href", "").strip()
                if not href:
                    continue
                entity["url"] = href
            elif tag == "pre" and tag_attrs.get("__language"):
                entity["language"] = tag_attrs["__language"]
            elif tag == "blockquote" and "expandable" in tag_attrs:
                entity["type"] = "expandable_blockquote"
            elif tag == "tg-emoji":
                entity["custom_emoji_id"] = tag_attrs.get("emoji-id", "")
            entities.append(entity)
            continue

        # start tag: name runs up to whitespace or '>'
        j = i
        while j < n and text[j] not in _HTML_SPACE and text[j] != ">":
            j += 1
        if j >= n:
            raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
        name = text[i:j].lower()
        if name not in _HTML_TAGS:
            raise EntityParseError(
                f'Unsupported start tag "{name}" at byte offset {_byte_offset(text, begin)}'
            )
        attrs: dict[str, str] = {}
        i = j
        while True:
            while i < n and text[i] in _HTML_SPACE:
                i += 1
            if i >= n:
                raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
            if text[i] == ">":
                i += 1
                break
            k = i
            while k < n and (text[k].isalnum() or text[k] in "-_"):
                k += 1
            if k == i:
                raise EntityParseError(
                    f'Empty attribute name in the tag "{name}" at byte offset {_byte_offset(text, begin)}'
                )
            attr = text[i:k].lower()
            i = k
            while i < n and text[i] in _HTML_SPACE:
                i += 1
            if i >= n:
                raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
            if text[i] != "=":
                attrs[attr] = ""
                continue
            i += 1
            while i < n and text[i] in _HTML_SPACE:
                i += 1
            if i >= n:
                raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
            if text[i] in "\"'":
                k = text.find(text[i], i + 1)
                if k == -1:
                    raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
                raw = text[i + 1 : k]
                i = k + 1
            else:
                k = i
                while k < n and text[k] not in _HTML_SPACE and text[k] != ">":
                    k += 1
                raw = text[i:k]
                i = k
            attrs[attr] = _decode_attr(raw)
        if name == "span" and attrs.get("class") != "tg-spoiler":
            raise EntityParseError(
                f'Tag "span" must have class "tg-spoiler" at byte offset {_byte_offset(text, begin)}'
            )
        if name == "tg-emoji" and not attrs.get("emoji-id", "").isdigit():
            raise EntityParseError(
                f'Tag "tg-emoji" must have a valid "emoji-id" attribute at byte offset '
                f"{_byte_offset(text, begin)}"
            )
        stack.append([name, attrs, u16, begin])

    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


# --------------------------------------------------------------------------------------
# MarkdownV2
# --------------------------------------------------------------------------------------

_MDV2_RESERVED = "_*[]()~`>#+-=|{}.!"
_MDV2_TYPE_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
}


def parse_markdown_v2(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse MarkdownV2 (tdlib rules: every reserved character must be escaped)."""
    out: list[str] = []
    u16 = 0
    stack: list[dict[str, Any]] = []  # {type, start, index}
    entities: list[dict[str, Any]] = []
    quote_start: int | None = None
    quote_expandable = False
    i, n = 0, len(text)

    def emit(chunk: str) -> None:
        nonlocal u16
        out.append(chunk)
        u16 += utf16_len(chunk)

    while i < n:
        c = text[i]
        at_line_start = i == 0 or text[i - 1] == "\n"
        # Block quotes: '>' (or '**>' for expandable) at the start of a line, outside entities.
        if at_line_start and not stack:
            if text.startswith("**>", i):
                if quote_start is None:
                    quote_start, quote_expandable = u16, True
                i += 3
                continue
            if c == ">":
                if quote_start is None:
                    quote_start, quote_expandable = u16, False
                i += 1
                continue
            if quote_start is not None:
                _close_quote(entities, quote_start, u16, quote_expandable, out)
                quote_start = None
        if c == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
            emit(text[i + 1])
            i += 2
            continue
        top: str | None = stack[-1]["type"] if stack else None
        reserved = "`" if top in ("code", "pre") else _MDV2_RESERVED
        if c not in reserved:
            emit(c)
            i += 1
            continue
        # Expandable quote terminator "||" right before end of line/text.
        if (
            quote_start is not None
            and not stack
            and text.startswith("||", i)
            and (i + 2 == n or text[i + 2] == "\n")
        ):
            quote_expandable = True
            i += 2
            continue

        is_end = False
        if top is not None:
            nxt = text[i + 1] if i + 1 < n else ""
            is_end = {
                "bold": c == "*",
                "italic": c == "_" and nxt != "_",
                "code": c == "`",
                "pre": text.startswith("```", i),
                "text_link": c == "]",
                "custom_emoji": c == "]",
                "underline": c == "_" and nxt == "_",
                "strikethrough": c == "~",
                "spoiler": c == "|" and nxt == "|",
            }[top]
        if not is_end:
            start_index = i
            language = None
            if c == "_":
                if i + 1 < n and text[i + 1] == "_":
                    etype = "underline"
                    i += 1
                else:
                    etype = "italic"
            elif c == "*":
                etype = "bold"
            elif c == "~":
                etype = "strikethrough"
            elif c == "|" and i + 1 < n and text[i + 1] == "|":
                etype = "spoiler"
                i += 1
            elif c == "[":
                etype = "text_link"
            elif c == "!" and i + 1 < n and text[i + 1] == "[":
                etype = "custom_emoji"
                i += 1
            elif c == "`":
                if text.startswith("```", i):
                    # tdlib: optional language up to whitespace, then skip one newline.
                    etype = "pre"
                    i += 3
                    k = i
                    while k < n and not text[k].isspace() and text[k] != "`":
                        k += 1
                    if k != i and k < n and text[k] != "`":
                        language = text[i:k]
                        i = k
                    if i < n and text[i] == "\r":
                        i += 1
                    if i < n and text[i] == "\n":
                        i += 1
                    stack.append({"type": etype, "start": u16, "index": start_index, "language": language})
                    continue
                etype = "code"
            else:
                raise EntityParseError(
                    f"Character '{c}' is reserved and must be escaped with the preceding '\\'"
                )
            stack.append({"type": etype, "start": u16, "index": start_index, "language": language})
            i += 1
            continue

        frame = stack.pop()
        etype = frame["type"]
        entity: dict[str, Any] = {"type": etype, "offset": frame["start"], "length": u16 - frame["start"]}
        i += 1
        if etype in ("underline", "spoiler"):
            i += 1
        elif etype == "pre":
            i += 2
            if frame.get("language"):
                entity["language"] = frame["language"]
        elif etype in ("text_link", "custom_emoji"):
            url = ""
            if i < n and text[i] == "(":
                i += 1
                buf: list[str] = []
                while i < n and text[i] != ")":
                    if text[i] == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
                        buf.append(text[i + 1])
                        i += 2
                        continue
                    buf.append(text[i])
                    i += 1
                if i >= n:
                    raise EntityParseError(
                        f"Can't find end of a url at byte offset {_byte_offset(text, frame['index'])}"
                    )
                i += 1
                url = "".join(buf)
            if etype == "custom_emoji":
                m = re.fullmatch(r"tg://emoji\?id=(\d+)", url)
                if not m:
                    raise EntityParseError(
                        f"Custom emoji entity must contain a tg://emoji URL at byte offset "
                        f"{_byte_offset(text, frame['index'])}"
                    )
                entity["custom_emoji_id"] = m.group(1)
            else:
                if not url:
                    continue  # "[text]" without URL is plain text in tdlib
                entity["url"] = url
        if entity["length"] > 0:
            entities.append(entity)

    if stack:
        frame = stack[-1]
        raise EntityParseError(
            f"Can't find end of {_MDV2_TYPE_NAMES[frame['type']]} entity at byte offset "
            f"{_byte_offset(text, frame['index'])}"
        )
    if quote_start is not None:
        _close_quote(entities, quote_start, u16, quote_expandable, out)
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _close_quote(
    entities: list[dict[str, Any]], start: int, end: int, expandable: bool, out: list[str]
) -> None:
    # The newline that ends the quote is not part of it.
    text_so_far = "".join(out)
    if text_so_far.endswith("\n"):
        end -= 1
    if end > start:
        entities.append(
            {
                "type": "expandable_blockquote" if expandable else "blockquote",
                "offset": start,
                "length": end - start,
            }
        )


# --------------------------------------------------------------------------------------
# Legacy Markdown
# --------------------------------------------------------------------------------------


def parse_markdown(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Parse legacy Markdown (``*bold*``, ``_italic_``, `` `code` ``, ```` ```pre``` ````, links)."""
    out: list[str] = []
    u16 = 0
    entities: list[dict[str, Any]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.append(text[i + 1])
            u16 += 1
            i += 2
            continue
        if c not in "_*`[":
            out.append(c)
            u16 += utf16_len(c)
            i += 1
            continue
        begin = i
        if c == "`" and text.startswith("```", i):
            end = text.find("```", i + 3)
            if end == -1:
                raise EntityParseError(
                    f"Can't find end of the entity starting at byte offset {_byte_offset(text, begin)}"
                )
            body = text[i + 3 : end]
            language = None
            if "\n" in body:
                first, rest = body.split("\n", 1)
                if first and not first.isspace():
                    language, body = first, rest
            if body:
                pre: dict[str, Any] = {"type": "pre", "offset": u16, "length": utf16_len(body)}
                if language:
                    pre["language"] = language
                entities.append(pre)
            out.append(body)
            u16 += utf16_len(body)
            i = end + 3
            continue
        close = "]" if c == "[" else c
        end = text.find(close, i + 1)
        if end == -1:
            raise EntityParseError(
                f"Can't find end of the entity starting at byte offset {_byte_offset(text, begin)}"
            )
        body = text[i + 1 : end]
        i = end + 1
        etype = {"_": "italic", "*": "bold", "`": "code", "[": "text_link"}[c]
        entity: dict[str, Any] | None = {"type": etype, "offset": u16, "length": utf16_len(body)}
        if c == "[":
            if i < n and text[i] == "(":
                url_end = text.find(")", i)
                if url_end == -1:
                    raise EntityParseError(
                        f"Can't find end of a URL at byte offset {_byte_offset(text, begin)}"
                    )
                entity["url"] = text[i + 1 : url_end]  # type: ignore[index]
                i = url_end + 1
            else:
                entity = None  # "[text]" without a URL stays plain text
        if entity is not None and entity["length"] > 0:
            entities.append(entity)
        out.append(body)
        u16 += utf16_len(body)
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------


def parse_formatted(
    text: str, parse_mode: str | None, *, strict_ampersand: bool = True
) -> tuple[str, list[dict[str, Any]]]:
    """Dispatch on ``parse_mode`` (case-insensitive, like Telegram)."""
    mode = (parse_mode or "").strip().lower()
    if not mode:
        return text, []
    if mode == "html":
        return parse_html(text, strict_ampersand=strict_ampersand)
    if mode == "markdownv2":
        return parse_markdown_v2(text)
    if mode == "markdown":
        return parse_markdown(text)
    raise ValueError(f"Unsupported parse_mode {parse_mode!r}")


_STRIP_CHARS = " \t\n\r\x0b\x0c"


def strip_text(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Trim surrounding whitespace like Telegram does, shifting/clipping entity ranges."""
    stripped = text.strip(_STRIP_CHARS)
    if stripped == text:
        return text, entities
    lead = utf16_len(text[: len(text) - len(text.lstrip(_STRIP_CHARS))])
    new_len = utf16_len(stripped)
    fixed: list[dict[str, Any]] = []
    for e in entities:
        start = max(0, e["offset"] - lead)
        end = min(new_len, e["offset"] + e["length"] - lead)
        if end > start:
            fixed.append({**e, "offset": start, "length": end - start})
    return stripped, fixed


_AUTO_ENTITY_RE = re.compile(
    r"(?P<bot_command>(?<![\w/@])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/]))"
    r"|(?P<mention>(?<![\w@/])@[A-Za-z0-9_]{4,32}(?!\w))"
    r"|(?P<hashtag>(?<![\w#])#\w*[^\W\d]\w*)"
    r"|(?P<url>(?<![\w@/])(?:https?://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]])"
)


def detect_user_entities(text: str) -> list[dict[str, Any]]:
    """Entities Telegram adds to a user's plain message: commands, mentions, hashtags, URLs."""
    found: list[dict[str, Any]] = []
    if not any(ch in text for ch in "/@#w"):
        return found
    for m in _AUTO_ENTITY_RE.finditer(text):
        kind = m.lastgroup
        assert kind is not None
        found.append(
            {
                "type": kind,
                "offset": utf16_len(text[: m.start()]),
                "length": utf16_len(m.group(0)),
            }
        )
    return found

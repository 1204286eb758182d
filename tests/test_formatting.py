"""Splitting long messages for Telegram, and escaping of everything user-provided."""

from __future__ import annotations

from bot.telegram.formatting import TELEGRAM_LIMIT, say, split_message


def test_short_text_is_one_chunk() -> None:
    assert split_message("hello") == ["hello"]


def test_splits_at_paragraphs_then_lines_then_spaces() -> None:
    paragraphs = "\n\n".join(f"Paragraph {i}: " + "word " * 150 for i in range(12))
    chunks = split_message(paragraphs)
    assert len(chunks) > 1
    assert all(len(c) <= TELEGRAM_LIMIT for c in chunks)
    assert all(c.startswith("Paragraph") for c in chunks)  # never cut mid-paragraph here
    assert "".join(c.replace("\n", "").replace(" ", "") for c in chunks) == paragraphs.replace("\n", "").replace(" ", "")


def test_a_single_huge_word_is_still_split_under_the_limit() -> None:
    chunks = split_message("x" * 9000)
    assert [len(c) for c in chunks] == [4000, 4000, 1000]


def test_wording_escapes_user_values() -> None:
    text = say("goal_saved", goal="<b>win</b> & <script>")
    assert "&lt;b&gt;win&lt;/b&gt; &amp; &lt;script&gt;" in text
    assert "<i>" in text  # our own markup survives

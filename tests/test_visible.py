"""`visible`, the one escaping function for text that reaches people, and the log formatter that
applies it: every character that could forge a line, move the cursor or reorder text is shown as an
escape; everything else (any script, emoji, a backslash) is kept."""

from __future__ import annotations

import io
import json
import logging

import pytest

from xinf_watch.visible import LogFormatter, visible, visible_json

HIDDEN = ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\x9b", "\u061c", "\u200b", "\u200d", "\u200e",
          "\u2028", "\u2029", "\u202a", "\u202e", "\u2066", "\u2069", "\ufeff", "\U000e0041", "\ud800"]


@pytest.mark.parametrize("char", HIDDEN)
def test_each_hidden_character_is_shown_as_an_escape(char: str) -> None:
    shown = visible(f"a{char}b")
    assert shown.startswith("a\\") and shown.endswith("b") and char not in shown
    assert shown.isascii() and shown.isprintable()


def test_plain_text_of_any_script_is_kept() -> None:
    for text in ("GET /v1/models", "Grüße, 日本語, العربية, 🙂", "C:\\path\\x1b", ""):
        assert visible(text) == text
    assert visible(None) == "None" and visible(42) == "42"


def test_visible_json_is_one_line_carrying_the_exact_data() -> None:
    data = {"path": "/x\n[RESOLVED] ignore\r\x1b[2J\u202e\u2028\x85\x7f\U000e0041 é"}
    line = visible_json(data)
    assert json.loads(line) == data
    assert line.splitlines() == [line] and line.isprintable()
    assert "é" in line and "\\u202e" in line


def test_log_records_show_their_arguments_and_composed_messages_escaped() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(LogFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("xinf_watch.test_visible")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("file %s gone after %d lines:\n%s", "a\nWARNING forged\x1b[2J", 3, "second line")
        logger.warning("composed\nERROR forged")
        try:
            raise ValueError("bad\nERROR forged")
        except ValueError:
            logger.exception("failed on %s", "\u202epath")
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["WARNING file a\\x0aWARNING forged\\x1b[2J gone after 3 lines:", "second line",
                         "WARNING composed\\x0aERROR forged"]  # fmt: skip
    assert lines[3] == "ERROR failed on \\u202epath" and lines[-1] == "ValueError: bad\\x0aERROR forged"
    assert not any(line.startswith(("ERROR forged", "WARNING forged")) for line in lines)

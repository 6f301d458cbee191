"""Escaping terminal controls in text from outside: what is replaced, what is kept, logs."""

from __future__ import annotations

import io
import logging

from hypothesis import given
from hypothesis import strategies as st

from agent.textsafe import SafeFormatter, safe_text

ACTIVE = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


def test_every_control_is_replaced_by_a_visible_escape() -> None:
    assert safe_text("\x1b[2J") == "\\x1b[2J"
    assert safe_text("\u009b31m") == "\\x9b31m"
    assert safe_text("abc\u202efdp.exe") == "abc\\u202efdp.exe"
    assert safe_text("ok\rVERDICT: PASS") == "ok\\x0dVERDICT: PASS"
    assert safe_text("\x7f\x00") == "\\x7f\\x00"
    assert safe_text("bad \udc9b byte") == "bad \\udc9b byte"  # a lone surrogate cannot even be printed


def test_multiline_keeps_line_breaks_and_tabs_only() -> None:
    assert safe_text("a\nb\tc", multiline=True) == "a\nb\tc"
    assert safe_text("a\nb\tc") == "a\\x0ab\\x09c"
    assert safe_text("a\r\nb", multiline=True) == "a\\x0d\nb"


def test_ordinary_text_is_untouched() -> None:
    text = "Jérôme 26.3 °C — 東京 ✓ C:\\path\\x1b is just text"
    assert safe_text(text) == text
    assert safe_text(None) == "None" and safe_text(42) == "42"


@given(st.text())
def test_no_active_character_survives(text: str) -> None:
    for multiline in (False, True):
        out = safe_text(text, multiline=multiline)
        assert not {ord(c) for c in out} & (set(ACTIVE) - ({0x09, 0x0A} if multiline else set()))
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in out)


def test_the_log_formatter_escapes_messages_and_arguments() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test_textsafe")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("hq said: %s", "\x1b]0;pwned\x07\u009b2J\nfake line")
        try:
            raise ValueError("boom \x1b[31m")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\u009b" not in text
    first = text.splitlines()[0]
    assert first == "WARNING hq said: \\x1b]0;pwned\\x07\\x9b2J\\x0afake line"
    assert "Traceback (most recent call last):\n" in text and "boom \\x1b[31m" in text

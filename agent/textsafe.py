"""Text from outside made safe to show on a terminal or write to a log. Pure.

A string that came from a unit, headquarters, a driver, a file or a serial line may hold
terminal controls: ESC and CSI sequences clear the screen, move the cursor, retitle the window
or forge a line (``\\rVERDICT: PASS``); bidi overrides reorder what a reader sees. Before such
text reaches a screen or a log, every C0 and C1 control, DEL, the bidi embedding, override and
isolate characters and lone surrogates are replaced by a visible escape (``\\x1b``,
``\\u202e``), so a reader sees that they were there and nothing acts on them. JSON output needs
none of this: ``json.dumps`` escapes them already.
"""

from __future__ import annotations

import logging
import re
from types import TracebackType

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

# C0 except TAB and LF, which a multi-line display keeps; DEL and C1; bidi embeddings, overrides and
# isolates (U+202A-U+202E, U+2066-U+2069); lone surrogates (undecodable bytes), which cannot be printed.
_MULTILINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: object, *, multiline: bool = False) -> str:
    """``text`` (``str()`` of it) with every control a terminal acts on replaced by a visible escape.

    ``multiline``: keep LF and TAB (a table, a log listing); otherwise they are escaped too, so
    the result is one line.
    """
    return (_MULTILINE if multiline else _ONE_LINE).sub(_escape, str(text))


class SafeFormatter(logging.Formatter):
    """A log formatter whose message cannot drive the terminal or journal that shows it.

    The message (arguments included) is escaped as one line; a traceback keeps its line breaks.
    Use it wherever a log may hold text from outside (a peer's error text, a device's name).
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        saved = record.message
        record.message = safe_text(saved)
        try:
            return super().formatMessage(record)
        finally:
            record.message = saved

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 (logging's name)
        return safe_text(super().formatException(ei), multiline=True)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        return safe_text(super().formatStack(stack_info), multiline=True)


def install_safe_logging(level: int, fmt: str) -> None:
    """``logging.basicConfig`` with a :class:`SafeFormatter` on the root handler, for the CLIs."""
    logging.basicConfig(level=level, format=fmt)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(SafeFormatter(fmt))

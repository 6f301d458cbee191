"""Assembling console lines from raw serial bytes: line editing, echo, length limit, mode. Pure.

A line that starts with ``{`` is a machine line (one JSON object, never echoed); any other line
is typed by a person: it is echoed, backspace and DEL rub out the last character, Ctrl-U the
whole line, Ctrl-C abandons it, and terminal escape sequences (arrow keys) are swallowed; the
echo shows C1 controls and bidi overrides escaped, so line noise cannot drive the terminal. CR,
LF and CRLF all end a line. Bytes past ``max_line`` are dropped up to the end of the line, which
is then reported as overlong: whatever arrives, the next line starts clean.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from agent.textsafe import safe_text

MAX_LINE = 4096

ESC = 0x1B
CTRL_C = 0x03
CTRL_U = 0x15
BS = 0x08
DEL = 0x7F
TAB = 0x09
CR = 0x0D
LF = 0x0A

_SPECIAL = re.compile(rb"[\x00-\x1f\x7f]")
_RUBOUT = b"\b \b"


@dataclass(frozen=True, slots=True)
class Line:
    """A complete line, decoded. ``machine``: it started with ``{``."""

    text: str
    machine: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that cannot be used: ``reason`` is "too-long" or "not-utf8"."""

    reason: str
    machine: bool
    length: int


@dataclass(frozen=True, slots=True)
class Interrupted:
    """Ctrl-C: the line being typed was abandoned."""


Event = Line | Rejected | Interrupted


class LineAssembler:
    """Feed bytes, get complete lines and the echo to send back. Not thread-safe: one line's
    console thread owns it."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if max_line < 16:
            raise ValueError("max_line must be at least 16")
        self.max_line = max_line
        self._buf = bytearray()
        self._machine: bool | None = None  # None until the line's first byte decides
        self._length = 0  # bytes of the line so far, including any dropped past max_line
        self._overflow = False
        self._discarding = False
        self._esc = 0  # 0: none, 1: after ESC, 2: inside a CSI sequence
        self._after_cr = False
        self._echo_text = codecs.getincrementaldecoder("utf-8")("replace")

    @property
    def pending(self) -> bool:
        """A line has begun and not ended."""
        return self._length > 0 or self._esc != 0

    def reset(self) -> None:
        """Forget the line in progress; the next byte starts a new one."""
        self._buf.clear()
        self._machine = None
        self._length = 0
        self._overflow = False
        self._discarding = False
        self._esc = 0
        self._echo_text.reset()

    def resync(self) -> None:
        """Drop everything up to and including the next line end (after a flood or a lost line)."""
        self.reset()
        self._discarding = True

    def feed(self, data: bytes) -> tuple[list[Event], bytes]:
        """Consume ``data``; return the events it completed and the echo for the terminal."""
        events: list[Event] = []
        echo = bytearray()
        pos, end = 0, len(data)
        while pos < end:
            if self._esc:
                self._escape_byte(data[pos])
                pos += 1
                continue
            match = _SPECIAL.search(data, pos)
            stop = end if match is None else match.start()
            if stop > pos:
                self._after_cr = False
                self._text(data[pos:stop], echo)
                pos = stop
                continue
            self._control(data[pos], events, echo)
            pos += 1
        return events, bytes(echo)

    # -- internals ---------------------------------------------------------------------------

    def _echoing(self) -> bool:
        return self._machine is False and not self._overflow and not self._discarding

    def _text(self, chunk: bytes, echo: bytearray) -> None:
        if self._discarding:
            return
        if self._machine is None:
            self._machine = chunk[:1] == b"{"
        self._length += len(chunk)
        if self._overflow:
            return
        room = self.max_line - len(self._buf)
        if len(chunk) > room:
            self._overflow = True
            self._buf.clear()
            return
        self._buf += chunk
        if self._echoing():
            echo += safe_text(self._echo_text.decode(chunk)).encode()

    def _control(self, byte: int, events: list[Event], echo: bytearray) -> None:
        after_cr, self._after_cr = self._after_cr, False
        if byte in (CR, LF):
            if byte == LF and after_cr:
                return  # the LF of a CRLF
            self._after_cr = byte == CR
            self._end_line(events, echo)
        elif byte == TAB:
            self._text(b" ", echo)
        elif byte in (BS, DEL):
            self._rubout(echo)
        elif byte == CTRL_U:
            while self._buf and not self._overflow:
                self._rubout(echo)
        elif byte == CTRL_C:
            if self._echoing() or self._machine is None:
                echo += b"^C\r\n"
            self.reset()
            events.append(Interrupted())
        elif byte == ESC:
            self._esc = 1
        # every other control byte (NUL, XON/XOFF, line noise) is ignored

    def _rubout(self, echo: bytearray) -> None:
        if self._overflow or self._discarding or not self._buf:
            return
        while self._buf and 0x80 <= self._buf[-1] < 0xC0:  # UTF-8 continuation bytes go with their lead
            self._buf.pop()
            self._length -= 1
        if self._buf:
            self._buf.pop()
            self._length -= 1
        if self._echoing():
            echo += _RUBOUT
        if not self._buf:
            self._machine = None
            self._length = 0

    def _escape_byte(self, byte: int) -> None:
        if self._esc == 1:
            self._esc = 2 if byte in (0x5B, 0x4F) else 0  # CSI "[" or SS3 "O" sequences
        elif 0x40 <= byte <= 0x7E or byte < 0x20:  # a final byte (or a stray control) ends it
            self._esc = 0

    def _end_line(self, events: list[Event], echo: bytearray) -> None:
        if self._discarding:
            self.reset()
            return
        machine = bool(self._machine)
        if self._echoing() or self._machine is None:
            echo += b"\r\n"
        if self._overflow:
            events.append(Rejected("too-long", machine, self._length))
        else:
            try:
                events.append(Line(self._buf.decode("utf-8"), machine))
            except UnicodeDecodeError:
                events.append(Rejected("not-utf8", machine, self._length))
        self.reset()

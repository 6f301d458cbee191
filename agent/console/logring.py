"""The recent log lines the console shows, kept in memory with anything secret-looking redacted.

The agent never logs key material on purpose; this is the second line of defence, so that a
mistake elsewhere cannot leak a key over the serial port. Redacted: PEM blocks (complete or cut
off), ``name=value`` pairs whose name says secret (key, token, password, signature, nonce...),
and long base64 runs. Hex digests and fingerprints are kept: they are how evidence is named.
"""

from __future__ import annotations

import collections
import datetime
import logging
import re
import threading

MAX_LINES = 500
MAX_LINE_CHARS = 300

_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|$)", re.S)
_SECRET_PAIR = re.compile(
    r"(?i)\b([\w-]*(?:secret|passw(?:or)?d|passphrase|token|private|priv_?key|api_?key|signature|nonce|"
    r"authorization|content_key)[\w-]*)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
)
# base64 with at least one character hex lacks, 40 or more long: key blobs, wrapped keys, tokens
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])(?=[A-Za-z0-9+/]*[g-zG-Z+/])[A-Za-z0-9+/]{40,}={0,2}")


def redact(text: str) -> str:
    """``text`` with PEM blocks, secret-named values and long base64 runs replaced."""
    text = _PEM.sub("[redacted PEM]", text)
    text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    return _BASE64.sub("[redacted]", text)


class LogRing(logging.Handler):
    """A logging handler keeping the last ``capacity`` records as redacted one-line strings.

    Thread-safe: ``emit`` runs on whichever thread logs, ``tail`` on the console's.
    """

    def __init__(self, capacity: int = MAX_LINES, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self._ring_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC).strftime("%H:%M:%S")
            # cut first: redaction stays cheap whatever a message holds (a cut PEM block is still caught)
            line = redact(f"{stamp} {record.levelname[0]} {record.name}: {message}"[: 4 * MAX_LINE_CHARS])
            line = " ".join(line.split())  # one line, whatever the message held
            if len(line) > MAX_LINE_CHARS:
                line = line[: MAX_LINE_CHARS - 1] + "…"
        except Exception:  # a handler must never break the code that logs
            self.handleError(record)
            return
        with self._ring_lock:
            self._lines.append(line)

    def tail(self, n: int) -> list[str]:
        """The last ``n`` lines, oldest first (n <= 0: none)."""
        if n <= 0:
            return []
        with self._ring_lock:
            return list(self._lines)[-n:]

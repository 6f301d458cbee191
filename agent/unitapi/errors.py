"""The one refusal error of the unit API, shared by the control socket and the console."""

from __future__ import annotations


class Refused(Exception):
    """A request the unit will not or cannot carry out, with a stable ``code`` for scripts
    (unknown-command, bad-args, bad-request, login-required, refused, bad-value, unavailable,
    failed...). The message is one line: what is wrong and what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

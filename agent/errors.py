"""The one refusal error of the unit: a stable ``code`` for scripts and a one-line message."""

from __future__ import annotations


class CodedError(Exception):
    """A request refused with a stable, machine-readable ``code`` (``bad-request``, ``refused``,
    ``bad-value``, ``unavailable``...) and a one-line ``message`` for people, which says what is
    wrong and what to do and never echoes a secret.

    The control socket, the console, its login and its backend each refused with their own copy
    of this class; they are this class under their old names (subclasses or aliases), so an
    ``except CodedError`` catches every refusal and every front-end renders ``code`` and
    ``message`` the same way.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def as_dict(self) -> dict[str, str]:
        """``{"code", "message"}``: the error object of a JSON answer."""
        return {"code": self.code, "message": self.message}

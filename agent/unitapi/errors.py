"""The unit API's one refusal: :class:`agent.errors.CodedError`, by the name the front-ends use.

A refusal has a stable ``code`` for scripts (unknown-command, bad-args, bad-request, forbidden,
login-required, refused, bad-value, unavailable, failed...) and a one-line message: what is
wrong and what to do. ``ControlError``, ``BackendError`` and ``ConsoleError`` are this class
too, and the console's ``AuthError`` derives from it.
"""

from __future__ import annotations

from agent.errors import CodedError

Refused = CodedError

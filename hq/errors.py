"""The one error the HTTP API answers with: a status, a stable code and a message, as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping


class ApiError(Exception):
    """A request refused with ``status``; rendered as ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}, sort_keys=True).encode("utf-8")

"""What the console needs from the unit: the ``ConsoleBackend`` protocol and its value types.

The console never touches the recorder, the store or the sensors itself; it asks a backend. The
agent's backend is :class:`agent.console.agent_backend.AgentBackend`; tests use hand-written
fakes. Every method returns plain JSON-able data. None returns footage, plaintext, or a private
key: there is no method that could.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

PASS = "pass"
FAIL = "fail"
WARN = "warn"
SKIP = "skip"


class BackendError(Exception):
    """A request the unit cannot carry out, with a stable ``code`` (refused, bad-value, unavailable...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class SelftestItem:
    """One self-test check: ``result`` is pass, fail, warn (works, but look at it) or skip."""

    name: str
    result: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "result": self.result, "detail": self.detail}


def verdict(items: list[SelftestItem]) -> str:
    """FAIL if any item failed, else PASS (warnings do not fail a unit)."""
    return FAIL if any(i.result == FAIL for i in items) else PASS


class ConsoleBackend(Protocol):
    """The unit as the console sees it. Methods are called from the console thread only, one at
    a time; implementations must never raise anything but :class:`BackendError` on purpose, and
    must not block for more than a few seconds (``selftest`` excepted, which waits for sensors).

    ``actor`` names who asked, for the audit log and chain events (``console:<name>:<fp16>``).
    """

    @property
    def device_id(self) -> str: ...

    def version(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def sensors(self) -> list[dict[str, Any]]: ...

    def selftest(self) -> list[SelftestItem]: ...

    def log_tail(self, n: int) -> list[str]: ...

    def time_info(self) -> dict[str, Any]: ...

    def gps(self) -> dict[str, Any]: ...

    def storage(self) -> dict[str, Any]: ...

    def sync_status(self) -> dict[str, Any]: ...

    def sync_now(self, actor: str) -> dict[str, Any]: ...

    def key_fingerprints(self) -> dict[str, Any]: ...

    def record(self, action: str, actor: str, note: str | None = None) -> dict[str, Any]: ...

    def config_get(self, key: str) -> dict[str, Any]: ...

    def config_set(self, key: str, value: object, actor: str) -> dict[str, Any]: ...

    def reboot(self, actor: str) -> dict[str, Any]: ...

    def audit(self, actor: str, action: str, target: str, outcome: str, **detail: Any) -> None: ...

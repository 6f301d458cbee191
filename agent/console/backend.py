"""What the front-ends need from the unit: the ``ConsoleBackend`` protocol and its value types.

The console and the control socket never touch the recorder, the store or the sensors
themselves; they ask a backend. The running unit's is :class:`agent.unitapi.api.UnitApi`; tests
use hand-written fakes. Every method returns plain JSON-able data. None returns footage,
plaintext, or a private key: there is no method that could.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agent.unitapi.errors import Refused

if TYPE_CHECKING:
    from agent.unitapi.status import UnitStatus

PASS = "pass"
FAIL = "fail"
WARN = "warn"
SKIP = "skip"


BackendError = Refused  # the unit API's one refusal, by the name the console has always used

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
    """The unit as a front-end sees it. The console calls it from its own thread, one call at a
    time; the control socket from its connection threads (``get_status``, ``record``,
    ``switch``). Implementations never raise anything but :class:`BackendError` on purpose, and
    never block for more than a few seconds (``selftest`` excepted, which waits for sensors).

    ``actor`` names who asked, for the audit log and chain events (``console:<name>:<fp16>``,
    ``ctl:uid=<uid>,pid=<pid>``).
    """

    @property
    def device_id(self) -> str: ...

    def version(self) -> dict[str, Any]: ...

    def get_status(self) -> UnitStatus: ...

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

    def record(self, action: str, actor: str, note: str | None = None, trigger: str = "console") -> dict[str, Any]:
        ...

    def switch(self, name: str, on: bool, actor: str) -> dict[str, Any]: ...

    def config_get(self, key: str) -> dict[str, Any]: ...

    def config_set(self, key: str, value: object, actor: str) -> dict[str, Any]: ...

    def reboot(self, actor: str) -> dict[str, Any]: ...

    def audit(self, actor: str, action: str, target: str, outcome: str, **detail: Any) -> None: ...

"""What every battery gauge driver shares: the last reading, the last error, and the status."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hal.common import SensorError
from hal.power import PowerStatus


class GaugeReadings:
    """The last reading and last error of one power driver.

    Not locked: the driver holds its own lock around :meth:`read` and :meth:`status`.
    """

    def __init__(self, name: str, driver: str) -> None:
        self.name = name
        self.driver = driver
        self.last: PowerStatus | None = None
        self.last_error: str | None = None

    def read(self, is_open: bool, measure: Callable[[], PowerStatus],
             failures: tuple[type[Exception], ...] = ()) -> PowerStatus:
        """``measure()`` kept as the last reading; SensorError naming the driver when closed or
        when ``measure`` raises one of ``failures`` (kept as the last error)."""
        if not is_open:
            raise SensorError(f"{self.name}: read while closed")
        try:
            self.last = measure()
        except failures as exc:
            self.last_error = str(exc)
            raise SensorError(f"{self.name}: {exc}") from exc
        return self.last

    def status(self, is_open: bool, fields: Sequence[str], **extra: object) -> dict[str, object]:
        """``get_status()``: name, driver, open, ``extra``, the last reading's ``fields`` (None
        before the first) and the last error."""
        last = self.last
        readings = {f: getattr(last, f) if last is not None else None for f in fields}
        return {"name": self.name, "driver": self.driver, "open": is_open, **extra, **readings,
                "last_error": self.last_error}

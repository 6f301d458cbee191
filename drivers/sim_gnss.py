"""A simulated GNSS receiver: replays an NMEA log (by default a 10-minute city walk) at 1 Hz, looping."""

from __future__ import annotations

import dataclasses
import logging
from fractions import Fraction
from pathlib import Path

from drivers import nmea
from drivers.pacing import PacedDevice, check_bool, check_int, check_path
from drivers.registry import register
from hal.clock import Clock
from hal.gnss import GnssFix

log = logging.getLogger(__name__)

DEFAULT_TRACK = Path(__file__).resolve().parent / "data" / "track.nmea"
_NS_PER_S = 1_000_000_000


@register("gnss", "sim")
class SimGnss(PacedDevice):
    """A receiver that reports the epochs of a recorded NMEA log, one per second.

    The log is read once in ``open``; lines that are not valid NMEA are skipped, as a serial
    driver skips line noise, and counted by problem (``refused`` in the status, one warning per
    problem in the log, as gpsd logs each malformed field); sentences with placeholder
    coordinates are kept (their time counts) and counted as ``placeholders``. Each pass of a
    loop moves UTC on by the log's length, so time never goes backwards. With ``rebase_time``
    the log's first epoch is placed at the clock's UTC at open; otherwise the log's own UTC is
    reported. One consumer thread.
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        path: str | Path = DEFAULT_TRACK,
        rebase_time: bool = False,
        loop: bool = True,
        queue_reports: int = 4,
    ) -> None:
        super().__init__(
            name=name, clock=clock, rate_hz=Fraction(1), queue_depth=check_int("queue_reports", queue_reports, 1, 64)
        )
        self._path = check_path("path", path)
        self._rebase = check_bool("rebase_time", rebase_time)
        self._loop = check_bool("loop", loop)
        self._epochs: list[list[nmea.Sentence]] = []
        self._shift_ns = 0
        self._bad_lines = 0
        self._refused: dict[str, int] = {}
        self._placeholders = 0

    def _open_source(self) -> None:
        try:
            text = self._path.read_bytes()
        except OSError as exc:
            raise self._fail(f"reading NMEA log {self._path}: {exc.strerror}") from exc
        parsed = nmea.parse_log(text.splitlines())
        self._refused, self._placeholders = parsed.refused, parsed.placeholders
        self._bad_lines = sum(parsed.refused.values())
        for problem, count in sorted(parsed.refused.items()):
            log.warning("%s: skipped %d lines of %s (%s): first %s", self.name, count, self._path, problem,
                        parsed.examples[problem])
        self._epochs = nmea.split_epochs(parsed.sentences)
        if not self._epochs:
            raise self._fail(f"no NMEA epochs in {self._path}")
        self._limit = None if self._loop else len(self._epochs)
        self._shift_ns = self._clock.utc_ns() - self._track_start_ns() if self._rebase else 0

    def _track_start_ns(self) -> int:
        """The log's UTC at its first epoch, inferred from the first epoch that knows the time."""
        for i, epoch in enumerate(self._epochs):
            fix = nmea.fix_from_epoch(epoch, 0)
            if fix.utc_ns is not None:
                return fix.utc_ns - i * _NS_PER_S
        return 0

    def read(self, timeout_s: float) -> GnssFix | None:
        """The next report (fix or no-fix), waiting up to ``timeout_s`` (0 polls); None on timeout."""
        slot = self._next_slot(timeout_s)
        if slot is None:
            return None
        laps, i = divmod(slot.index, len(self._epochs))
        fix = nmea.fix_from_epoch(self._epochs[i], slot.due_ns)
        if fix.utc_ns is None:
            return fix
        return dataclasses.replace(fix, utc_ns=fix.utc_ns + self._shift_ns + laps * len(self._epochs) * _NS_PER_S)

    def _status_extra(self) -> dict[str, object]:
        return {
            "driver": "sim",
            "path": str(self._path),
            "epochs": len(self._epochs),
            "bad_lines": self._bad_lines,
            "refused": dict(self._refused),
            "placeholders": self._placeholders,
        }

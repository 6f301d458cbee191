"""The live encoder's bitrate from the link's feedback: a pure, loss- and delay-based controller."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

LOSS_HIGH = 0.10  # above: cut the rate in proportion (as Google Congestion Control's loss controller)
LOSS_LOW = 0.02  # below: probe upwards
INCREASE = 1.08  # per step while the link is clean
RTT_HIGH_S = 0.4  # a queue is building: hold back
RTT_CUT = 0.85


@dataclass(frozen=True, slots=True)
class Bounds:
    min_bps: int
    max_bps: int

    def clamp(self, bps: float) -> int:
        return int(max(self.min_bps, min(self.max_bps, bps)))


def next_bitrate(current_bps: int, bounds: Bounds, loss_fraction: float | None, rtt_s: float | None,
                 remb_bps: int | None) -> int:
    """The bitrate for the next interval (about a second). ``loss_fraction`` (0..1) and ``rtt_s``
    come from the receiver reports (None: no report yet); ``remb_bps`` is the media server's
    estimate of what it can take (REMB; None: none). Loss above 10 % cuts the rate by half the
    loss; a round trip above 400 ms cuts it by 15 %; a clean link raises it by 8 %; never above
    the REMB estimate, always within ``bounds``."""
    rate = float(current_bps)
    if loss_fraction is not None and loss_fraction > LOSS_HIGH:
        rate *= 1.0 - 0.5 * loss_fraction
    elif rtt_s is not None and rtt_s > RTT_HIGH_S:
        rate *= RTT_CUT
    elif loss_fraction is not None and loss_fraction < LOSS_LOW:
        rate *= INCREASE
    if remb_bps is not None and remb_bps > 0:
        rate = min(rate, remb_bps)
    return bounds.clamp(rate)


@dataclass(frozen=True, slots=True)
class Report:
    """The newest receiver report the sender holds (aiortc keeps the last one until another arrives)."""

    received: datetime  # when it arrived
    loss_fraction: float | None
    rtt_s: float | None


def news(report: Report | None, acted_on: Report | None) -> tuple[float | None, float | None]:
    """(loss, round trip) of ``report`` if it is not the one already acted on, else (None, None):
    while the link is silent (a loss burst that takes the reports too) the last clean report must
    not keep raising the rate, nor the last lossy one keep cutting it; :func:`next_bitrate` holds."""
    if report is None or (acted_on is not None and report.received == acted_on.received):
        return None, None
    return report.loss_fraction, report.rtt_s

"""Choosing a camera's H.264 encoder from what this board's probe found: a pure decision.

The probe (:mod:`agent.media.encoder_probe`) is the I/O shell; it answers one question per
encoder, "does it open with this camera's settings and honour a requested keyframe?", and this
module turns the configured choice and those answers into the encoder to use and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

SOFTWARE = "libx264"
# The camera's own encoder (picamera2's H264Encoder): frames never pass through Python.
CAMERA = "picamera2"
# Tried in this order by "auto", before the software encoder.
HARDWARE = (CAMERA, "h264_v4l2m2m")
CHOICES = ("auto", SOFTWARE, *HARDWARE)


@dataclass(frozen=True, slots=True)
class EncoderRequest:
    """What one camera asks of its encoder; a probe answers for exactly these settings."""

    width: int
    height: int
    fps_num: int
    fps_den: int
    pixel_format: str
    bitrate_bps: int
    gop_frames: int
    threads: int

    def describe(self) -> str:
        rate = f"{self.fps_num}" if self.fps_den == 1 else f"{self.fps_num}/{self.fps_den}"
        return f"{self.width}x{self.height} {self.pixel_format} {rate} fps"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One encoder's answer: usable or not, and a reason a technician can act on."""

    codec: str
    usable: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Selection:
    """The encoder a camera will use (None: none is usable) and why, with every answer consulted."""

    choice: str
    codec: str | None
    reason: str
    tried: tuple[ProbeResult, ...]

    @property
    def usable(self) -> bool:
        return self.codec is not None


Probe = Callable[[str], ProbeResult]


class EncoderProbe(Protocol):
    """What the unit asks of a board: can ``codec`` encode ``request`` here, keyframes included?"""

    def __call__(self, codec: str, request: EncoderRequest) -> ProbeResult: ...


def select_encoder(choice: str, probe: Probe) -> Selection:
    """The encoder for ``choice`` ("auto" or an encoder name), asking ``probe`` only what it needs.

    An explicit encoder is used if its probe says usable, never swapped for another: the unit
    was told what to use, and a refusal names the reason. "auto" takes the first usable hardware
    encoder, else libx264, and says why each hardware one was passed over.
    """
    if choice not in CHOICES:
        raise ValueError(f"encoder {choice!r} is not one of {', '.join(CHOICES)}")
    if choice != "auto":
        result = probe(choice)
        if result.usable:
            return Selection(choice, choice, f"{choice}: {result.reason}", (result,))
        return Selection(choice, None, f"{choice} (configured) is unusable: {result.reason}", (result,))
    tried: list[ProbeResult] = []
    for codec in HARDWARE:
        result = probe(codec)
        tried.append(result)
        if result.usable:
            return Selection(choice, codec, f"{codec}: {result.reason}", tuple(tried))
    software = probe(SOFTWARE)
    tried.append(software)
    passed_over = "; ".join(f"{r.codec}: {r.reason}" for r in tried[:-1])
    if software.usable:
        return Selection(choice, SOFTWARE, f"{SOFTWARE}: {software.reason} (passed over {passed_over})",
                         tuple(tried))
    return Selection(choice, None, f"no H.264 encoder is usable: {passed_over}; {SOFTWARE}: {software.reason}",
                     tuple(tried))


def refusal(key: str, selection: Selection, fallback: Selection | None) -> str:
    """The one line a unit that cannot use ``selection`` stops with: what failed (the probe's
    reason) and what to do. ``fallback`` is what "auto" would pick on this board (None: not asked,
    ``selection`` was already "auto")."""
    if selection.choice == "auto" or fallback is None:
        return (f"{selection.reason}; this board cannot record H.264 as configured: check the camera's size and "
                "rate (`bodycam drivers` shows every encoder's answer)")
    if fallback.codec is not None:
        return (f"{selection.reason}; set {key} = \"auto\" to record with {fallback.codec} on this board, or fix "
                f"what the probe found (`bodycam drivers` shows every encoder's answer)")
    return (f"{selection.reason}; \"auto\" finds no usable encoder here either ({fallback.reason}); "
            "`bodycam drivers` shows every encoder's answer")

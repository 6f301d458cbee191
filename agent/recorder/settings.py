"""What the recorder is told at construction."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RecorderSettings:
    segment_ns: int
    pre_event_ns: int
    pre_event_audio: bool
    checkpoint_ns: int
    firmware: str

"""The recorder: a package of a loop (core), a typed inbox, a track aligner, a segment pipeline,
the unit's mode machine and a typed status. ``agent.recorder`` re-exports what other modules use."""

from agent.recorder.core import Recorder
from agent.recorder.mode import CommandError
from agent.recorder.settings import RecorderSettings
from agent.recorder.status import RecorderStatus

__all__ = ["CommandError", "Recorder", "RecorderSettings", "RecorderStatus"]

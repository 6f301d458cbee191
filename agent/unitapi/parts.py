"""What the unit API reads from a running unit: the pieces the daemon built, as a protocol."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from agent.config import Config
from hal.clock import Clock


class UnitParts(Protocol):
    """The daemon's running unit as the unit API sees it (``agent.running.Agent``; fakes in tests).

    Optional pieces are read with ``getattr``: ``sync`` (the sync worker, absent or None when
    sync is off) and ``sync_problem`` (why it is off).
    """

    data_dir: Path
    config: Config
    clock: Clock
    keystore: Any
    store: Any
    recorder: Any
    storage: Any
    sensors: Any

    @property
    def workers(self) -> Sequence[Any]: ...

"""Sync alarms: what the worker raises when evidence cannot reach headquarters as it should, and
the hooks that carry them to the unit (a signed chain event, the status indicator).

Kinds: ``auth`` (headquarters refuses the unit; uploads stop), ``config`` (the unit's sync
settings are unusable), ``conflict`` (headquarters holds another file for an entry),
``receipt`` (a receipt failed its check), ``refusal-unverified`` (a 422 without a valid signed
notice), ``quarantined`` (headquarters quarantined an entry, on a signed notice), ``tlog`` (a
proof from headquarters' transparency log did not verify), ``tlog-fork`` (the log contradicts a
checkpoint the unit verified before: a fork or a rewrite). ``auth``, ``config`` and
``tlog-fork`` stand until cleared (``on_alarm_cleared``; a fork never is); the others are one-off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Alarm = Callable[[str, str], None]  # (kind, message), on the sync thread; must not block
AlarmCleared = Callable[[str], None]  # (kind) of a standing alarm that is over
PostCommand = Callable[..., None]  # the recorder's post_command(name, actor, **args)

KINDS = ("auth", "config", "conflict", "receipt", "refusal-unverified", "quarantined", "tlog", "tlog-fork")
STANDING = frozenset({"auth", "config", "tlog-fork"})
RECORDER_COMMAND = "sync_alarm"
ACTOR = "sync"
MAX_MESSAGE = 200  # characters of a message that go into a signed event


def event_detail(kind: str, message: str, active: bool = True) -> dict[str, Any]:
    """The detail of the ``sync-alarm`` chain event for an alarm raised (or cleared)."""
    return {"kind": kind, "message": message[:MAX_MESSAGE], "active": active, "standing": kind in STANDING}


def recorder_hooks(post_command: PostCommand) -> tuple[Alarm, AlarmCleared]:
    """``on_alarm`` and ``on_alarm_cleared`` that queue a ``sync_alarm`` command on the recorder,
    which signs the event (:func:`event_detail`) and sets the status indicator; never blocks."""

    def raised(kind: str, message: str) -> None:
        post_command(RECORDER_COMMAND, ACTOR, **event_detail(kind, message))

    def cleared(kind: str) -> None:
        post_command(RECORDER_COMMAND, ACTOR, **event_detail(kind, "", active=False))

    return raised, cleared

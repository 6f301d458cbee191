"""Who may do what: the three access levels and how a control-socket peer gets one."""

from __future__ import annotations

import enum


class Access(enum.StrEnum):
    """``open``: anyone on the line; ``read``: anyone, unless the unit asks for a login first;
    ``change``: a logged-in technician on the console, the agent's own user on the socket."""

    OPEN = "open"
    READ = "read"
    CHANGE = "change"


OPEN, READ, CHANGE = Access.OPEN, Access.READ, Access.CHANGE
_RANK = {OPEN: 0, READ: 1, CHANGE: 2}


def allows(granted: Access, needed: Access) -> bool:
    """Does ``granted`` cover a command that needs ``needed``?"""
    return _RANK[granted] >= _RANK[needed]


def peer_access(peer_uid: int | None, agent_uid: int) -> Access:
    """The access of a control-socket peer: the agent's own user and root may change things;
    any other uid (the socket is mode 0600, so only if an operator loosened it) may read; a peer
    whose uid cannot be told may read. Pure."""
    if peer_uid is not None and peer_uid in (agent_uid, 0):
        return CHANGE
    return READ

"""The control socket's front-end over the one command table: the peer's uid decides its access."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.console.backend import ConsoleBackend
from agent.control import Handler, Peer
from agent.unitapi.access import allows, peer_access
from agent.unitapi.commands import CTL, CTL_COMMANDS, Context, bind
from agent.unitapi.errors import Refused


class NoSession:
    """The socket has no technician sessions: its peers are who the kernel says they are."""

    @property
    def technician_name(self) -> str | None:
        return None

    def begin_login(self) -> dict[str, Any]:
        raise Refused("unknown-command", "the control socket has no login")

    def finish_login(self, key: str, signature: str, cert: str | None) -> dict[str, Any]:
        return self.begin_login()

    def logout(self) -> dict[str, Any]:
        return self.begin_login()


def ctl_handler(unit: ConsoleBackend, agent_uid: int, now_ns: Callable[[], int]) -> Handler:
    """What :class:`agent.control.ControlServer` calls for each request line."""
    session = NoSession()

    def handle(name: str, peer: Peer, raw: dict[str, Any]) -> dict[str, Any]:
        cmd = CTL_COMMANDS.get(name)
        if cmd is None:
            raise Refused("unknown-command", f"unknown command {name!r} (known: {', '.join(sorted(CTL_COMMANDS))})")
        try:
            args = bind(cmd, raw)
        except Refused as exc:
            raise Refused("bad-request", str(exc)) from None
        needed = cmd.access_for(args)
        if not allows(peer_access(peer.uid, agent_uid), needed):
            raise Refused("forbidden", f"{name} needs the agent's own user (uid {agent_uid}) or root")
        return cmd.handler(Context(unit, session, peer.actor, now_ns(), {}, CTL), args)

    return handle

"""sd_notify(3) without libsystemd: readiness, status, watchdog pings and stop notices to systemd."""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping
from types import TracebackType

log = logging.getLogger(__name__)

_FIELD = re.compile(r"[A-Z][A-Z0-9_]*")
SEND_TIMEOUT_S = 2.0  # a wedged service manager must not hang the main loop for longer


def notify_address(value: str | None) -> str | bytes | None:
    """The socket address named by a ``$NOTIFY_SOCKET`` value, or None when there is none we can use.

    An absolute path is a socket in the file system; ``@name`` is the abstract socket ``\\0name``.
    Anything else (unset, empty, relative, or ``vsock:`` which systemd 254+ uses for VMs) is None.
    """
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """The watchdog timeout systemd set for process ``pid`` (``WatchdogSec=``), in µs, or None.

    None when ``$WATCHDOG_USEC`` is unset, not a positive integer, or ``$WATCHDOG_PID`` names another
    process (a child that inherited the environment must not ping on its parent's behalf). Ping at
    least every half of it.
    """
    raw = environ.get("WATCHDOG_USEC", "")
    if not raw.isdigit() or int(raw) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(raw)


def format_message(fields: Mapping[str, str | int]) -> bytes:
    """``KEY=value`` lines for one datagram. Newlines inside a value become spaces (a newline would
    start a new assignment); keys must look like systemd's (``READY``, ``STATUS``, ``WATCHDOG``)."""
    lines = []
    for key, value in fields.items():
        if not _FIELD.fullmatch(key):
            raise ValueError(f"{key!r} is not an sd_notify field name")
        text = str(value).replace("\r", " ").replace("\n", " ")
        lines.append(f"{key}={text}")
    return ("\n".join(lines) + "\n").encode()


class Notifier:
    """Tells the service manager how the agent is doing (``Type=notify``, ``WatchdogSec=``).

    Why: systemd should consider the unit started only once drivers are open and the store has
    recovered, show the recording state in ``systemctl status``, and restart the agent when its
    main loop stops pinging. Outside systemd (``$NOTIFY_SOCKET`` unset) every call is a no-op that
    returns False, so the agent runs the same way from a shell or a test.

    Nothing here raises on the main loop: a failed send is logged (once, until a send succeeds
    again) and returns False; the service manager going away must not stop a recording. Thread
    contract: any thread may call any method; each message is one datagram on one socket, and
    datagram sends are atomic, so no lock is needed.
    """

    def __init__(self, address: str | bytes | None, watchdog_usec: int | None = None) -> None:
        """``address``: a path or an abstract ``b"\\0name"`` (see :func:`notify_address`); None disables."""
        self.address = address
        self.watchdog_usec = watchdog_usec if address is not None else None
        self._sock: socket.socket | None = None
        self._failing = False
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.settimeout(SEND_TIMEOUT_S)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        """The notifier systemd asked for through ``$NOTIFY_SOCKET`` (and ``$WATCHDOG_USEC``)."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET")
        address = notify_address(raw)
        if raw and address is None:
            log.warning("NOTIFY_SOCKET=%r is not a socket this agent can use; not notifying systemd", raw)
        return cls(address, watchdog_usec(env, os.getpid() if pid is None else pid))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """Send one message (``send(READY=1, STATUS="recording")``); True when it was delivered."""
        payload = format_message(fields)
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto(payload, self.address)
        except OSError as exc:  # includes TimeoutError
            if not self._failing:
                log.warning("notifying systemd through %r: %s", self.address, exc)
            self._failing = True
            return False
        if self._failing:
            log.info("notifying systemd works again")
            self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: send it only once drivers are open and the store has recovered."""
        return self.send(READY=1) if status is None else self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """``STATUS=``: one line for ``systemctl status``, e.g. the recording state."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the main loop is healthy. Only call it when it really is."""
        return self.send(WATCHDOG=1)

    def watchdog_trigger(self) -> bool:
        """``WATCHDOG=trigger``: act as if the watchdog expired now (systemd restarts the unit)."""
        return self.send(WATCHDOG="trigger")

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: starting or stopping legitimately takes this much longer from now
        (a long recovery, sealing a big segment), instead of being killed by ``TimeoutStartSec=``."""
        return self.send(EXTEND_TIMEOUT_USEC=max(0, round(seconds * 1_000_000)))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: a clean stop has begun (sealing what is open)."""
        return self.send(STOPPING=1) if status is None else self.send(STOPPING=1, STATUS=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

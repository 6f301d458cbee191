"""The interactive mode of ``bodycam diag``: a prompt with line editing and history, and the
signals that end it like Ctrl-C so the logout still runs."""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from agent.diag import EXIT_OK, EXIT_PORT, ConsoleClient, DiagError, say, show
from agent.textsafe import safe_text

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519

HISTORY = Path.home() / ".bodycam_diag_history"


def interactive(client: ConsoleClient, key: ed25519.Ed25519PrivateKey | None, cert: str | None) -> int:
    try:
        import readline
    except ImportError:  # not on every platform; typing still works without history
        readline = None  # type: ignore[assignment]
    if readline is not None:
        with contextlib.suppress(OSError):
            readline.read_history_file(HISTORY)
    version = client.request("version", [])
    unit = safe_text((version.get("data") or {}).get("device_id", "?"))
    print(f"connected to unit {unit} on {safe_text(client.device)}; `help` lists commands, `quit` leaves")
    try:
        while True:
            try:
                line = input(f"{unit}> ")
            except EOFError:
                print()
                return EXIT_OK
            try:
                words = shlex.split(line)
            except ValueError as exc:
                print(f"error: {exc}")
                continue
            if not words:
                continue
            if words[0] in ("quit", "exit"):
                return EXIT_OK
            try:
                show(client.call(words[0], words[1:], key, cert), words[0], False)
            except DiagError as exc:
                say(f"error: {exc}", file=sys.stderr)
                if exc.exit_code == EXIT_PORT:
                    return exc.exit_code
    except KeyboardInterrupt:
        print()
        return EXIT_OK
    finally:
        if readline is not None:
            with contextlib.suppress(OSError):
                readline.write_history_file(HISTORY)


@contextlib.contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (the terminal closed) interrupt like Ctrl-C, so the logout still runs."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    signals = [sig for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if sig is not None]
    saved = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)



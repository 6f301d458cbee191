"""The ``bodycam`` command: the device side (run, ctl, provision, verify).

Subcommands import their modules only when they run, so ``bodycam ctl`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

from agent.textsafe import install_safe_logging

CTL_COMMANDS = ("start", "stop", "mark", "status", "stealth", "mute")


def _lazy(module: str, func: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        code: int = getattr(importlib.import_module(module), func)(args)
        return code

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bodycam", description="bodycam: wearable evidence camera agent")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the agent")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--config", type=Path, help="config file (default: <data-dir>/bodycam.toml)")
    p.add_argument("--sim", action="store_true", help="simulated sensors; provisions a development unit if needed")
    p.add_argument("--device-id", help="device id when --sim provisions (default sim-unit-1)")
    p.add_argument("--duration", type=float, help="stop cleanly after this many seconds")
    p.add_argument("--console", metavar="DEVICE",
                   help="serve the technician console on this serial device (overrides [console] device)")
    p.set_defaults(func=_lazy("agent.daemon", "cmd_run"))

    p = sub.add_parser("ctl", help="control a running agent through its local socket")
    p.add_argument("--data-dir", type=Path, default=Path("."))
    p.add_argument("--socket", type=Path, help="control socket (default <data-dir>/ctl.sock)")
    p.add_argument("--json", action="store_true")
    p.add_argument("command", choices=CTL_COMMANDS)
    p.add_argument("value", nargs="?", help="on|off for stealth and mute; a note for mark")
    p.set_defaults(func=_lazy("agent.ctl_cmd", "cmd_ctl"))

    p = sub.add_parser("drivers", help="list every driver, its HAL kind, and whether it is usable here (and why not)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--kind", help="only drivers of this HAL kind")
    p.set_defaults(func=_lazy("agent.drivers_cmd", "run"))

    from agent import diag, provision, verify_cmd  # diag's module is light: its libraries load when it runs

    p = sub.add_parser("diag", help="technician client for a unit's serial console")
    diag.add_arguments(p)
    p.set_defaults(func=_lazy("agent.diag", "cmd_diag"))

    provision.add_parser(sub)
    verify_cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # logs hold text from outside (headquarters' error texts, driver messages): escaped, never replayed
    install_safe_logging(logging.DEBUG if args.verbose else logging.INFO,
                         "%(asctime)s %(levelname)s %(name)s: %(message)s")
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

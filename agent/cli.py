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

from agent.cliargs import Parser, add_common, add_verbose, commands_epilog, device_id
from agent.textsafe import install_safe_logging

VERBOSE_HELP = "log more: debug lines from every module"


def _lazy(module: str, func: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        code: int = getattr(importlib.import_module(module), func)(args)
        return code

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bodycam", description="bodycam: wearable evidence camera agent. "
                    "`bodycam COMMAND --help` explains each command.")
    add_common(parser, VERBOSE_HELP)
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(  # type: ignore[assignment]
        dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the agent (records, seals, syncs)",
                       description="Run the agent on a provisioned data dir until stopped (SIGTERM or Ctrl-C).")
    p.add_argument("--data-dir", type=Path, required=True, help="the unit's data dir (keys, config, evidence)")
    p.add_argument("--config", type=Path, help="config file (default: <data-dir>/bodycam.toml)")
    p.add_argument("--sim", action="store_true", help="simulated sensors; provisions a development unit if needed")
    p.add_argument("--device-id", type=device_id, help="device id when --sim provisions (default sim-unit-1)")
    p.add_argument("--duration", type=float, help="stop cleanly after this many seconds")
    p.add_argument("--console", metavar="DEVICE",
                   help="serve the technician console on this serial device (overrides [console] device)")
    p.set_defaults(func=_lazy("agent.daemon", "cmd_run"))

    from agent.ctl_cmd import COMMANDS as CTL_COMMANDS  # light: the socket client only

    p = sub.add_parser("ctl", help="control a running agent through its local socket",
                       description="Control a running agent through its local socket (mode 0600).\n"
                       "Exit codes: 0 done; 1 refused or failed; 2 bad usage; 3 no agent listening.",
                       epilog=commands_epilog("commands", CTL_COMMANDS))
    p.add_argument("--data-dir", type=Path, default=Path("."), help="the agent's data dir (default: .)")
    p.add_argument("--socket", type=Path, help="control socket (default <data-dir>/ctl.sock)")
    p.add_argument("--json", action="store_true", help="print the agent's whole answer as JSON")
    p.add_argument("command", choices=tuple(CTL_COMMANDS), metavar="COMMAND", help="one of the commands below")
    p.add_argument("value", nargs="?", help="on|off for stealth and mute; a note for mark")
    p.set_defaults(func=_lazy("agent.ctl_cmd", "cmd_ctl"))

    from agent import diag_args, drivers_cmd, provision, verify_cmd  # their libraries load when they run

    drivers_cmd.add_parser(sub)

    p = sub.add_parser("diag", help="technician client for a unit's serial console",
                       description=diag_args.DESCRIPTION, epilog=diag_args.commands_help())
    diag_args.add_arguments(p)
    p.set_defaults(func=_lazy("agent.diag", "cmd_diag"))

    provision.add_parser(sub)
    verify_cmd.add_parser(sub)
    for name, choice in sub.choices.items():
        if name != "diag":  # diag passes what follows its command to the unit
            add_verbose(choice, VERBOSE_HELP)
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

"""The command line of ``bodycam diag``: its options, the console commands its help lists, and
options given after the command. Light: ``bodycam`` builds its parser from here at every start."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cliargs import Parser, commands_epilog

DEFAULT_TIMEOUT_S = 10.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``bodycam diag`` options and its command (``agent.cli`` and :func:`main` use them)."""
    _add_options(p)
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND ...",
                   help="a console command and its arguments (none: interactive); options may follow it")


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", help="the unit's serial port (/dev/ttyACM0, /dev/ttyUSB0, or a pty)")
    p.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200, 8N1)")
    p.add_argument("--key", type=Path, help="technician private key (PEM Ed25519, mode 0600): logs in for changes")
    p.add_argument("--cert", type=Path, help="certificate from headquarters (default: KEY.cert if present)")
    p.add_argument("--json", action="store_true", help="print the unit's JSON answer (one-shot mode)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds to wait for an answer (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--keygen", type=Path, metavar="KEY", help="create a technician key pair (KEY, KEY.pub) and exit")


def hoist_options(args: argparse.Namespace) -> argparse.Namespace:
    """Options given after the command (``bodycam diag --port P status --json``) are diag's own,
    not arguments for the unit; words after ``--`` always go to the unit."""
    own_parser = Parser(prog="bodycam diag", add_help=False)
    _add_options(own_parser)
    actions = own_parser._option_string_actions
    words, command, own = list(args.command or []), [], []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            command += words[i + 1:]
            break
        action = actions.get(word.split("=", 1)[0])
        if action is None:
            command.append(word)
            i += 1
            continue
        taken = 1 if action.nargs != 0 and "=" not in word else 0
        own += words[i:i + 1 + taken]
        i += 1 + taken
    own_parser.parse_args(own, namespace=args)
    args.command = command
    return args


def commands_help() -> str:
    """The console's commands, from its command table, for ``bodycam diag --help``."""
    from agent.unitapi.access import CHANGE
    from agent.unitapi.commands import COMMANDS

    # a command whose access depends on its arguments (record start|stop|mark) needs a login for some
    listed = {c.usage: c.summary + (" (login)" if callable(c.access) or c.access is CHANGE else "")
              for c in COMMANDS.values()}
    return commands_epilog("commands (the unit's console; `help COMMAND` on the unit explains one)", listed)


DESCRIPTION = (
    "The field technician's client for a unit's serial console: reads are open, changes log in with\n"
    "--key. Try it without hardware: `socat -d -d pty,raw,echo=0 pty,raw,echo=0` prints two ptys; run\n"
    "`bodycam run --sim --data-dir D --console PTY1` and `bodycam diag --port PTY2 status`.\n"
    "Exit codes: 0 done; 1 the unit refused or the self-test failed; 2 bad usage or key file;\n"
    "3 the port is absent, busy or silent; 4 the login was refused; 130 interrupted."
)

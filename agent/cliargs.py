"""What ``bodycam`` and ``bodycam-hq`` share on their command lines: one-line usage errors,
``--version`` and ``-v``, device ids checked as they are parsed, and old option spellings that
still work with a note on stderr."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from agent import __version__

EXIT_USAGE = 2
# The id headquarters accepts (hq.records): a unit provisioned with another could never enrol.
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEVICE_ID_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. unit-0042)"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line naming the value and where help is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def device_id(value: str) -> str:
    """argparse ``type=`` for a device id."""
    if not _DEVICE_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a device id: use {DEVICE_ID_RULE}")
    return value


def valid_device_id(value: str) -> bool:
    return bool(_DEVICE_ID.fullmatch(value))


def add_common(parser: argparse.ArgumentParser, verbose_help: str) -> None:
    """``--version`` and ``-v``/``--verbose`` on the top-level parser."""
    from agent.evidence.format import FORMAT_VERSION

    parser.add_argument("--version", action="version",
                        version=f"{parser.prog} {__version__} (evidence format {FORMAT_VERSION})",
                        help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)


def add_verbose(parser: argparse.ArgumentParser, verbose_help: str) -> None:
    """``-v`` after the subcommand too (``bodycam-hq enroll ... -v``); it never resets a ``-v``
    given before the subcommand."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)


class Renamed(argparse._StoreAction):
    """An option stored under its current name (the first spelling); any later spelling is an old
    one, still accepted, with a note on stderr saying which to use."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        current = self.option_strings[0]
        if option_string is not None and option_string != current:
            print(f"{parser.prog}: {option_string} is deprecated, use {current}", file=sys.stderr)
        super().__call__(parser, namespace, values, option_string)


def commands_epilog(title: str, commands: dict[str, str]) -> str:
    """A help epilog listing commands and what each does."""
    width = max(len(c) for c in commands)
    return f"{title}:\n" + "\n".join(f"  {c.ljust(width)}  {what}" for c, what in commands.items())

"""``serve``'s options for the operations room (session timeouts, the decrypt daemon's socket), and
the settings they make."""

from __future__ import annotations

import argparse
from pathlib import Path

from hq.accounts.sessions import ABSOLUTE_S, IDLE_S, SessionPolicy
from hq.web.context import WebSettings


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from exc
    if not 1 <= value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"{text} s: give 1 to 604800 seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session-idle-s", type=_seconds, default=float(IDLE_S),
                        help=f"operations room: sign a browser out after this long without a request "
                        f"(default {IDLE_S} s)")
    parser.add_argument("--session-max-s", type=_seconds, default=float(ABSOLUTE_S),
                        help=f"operations room: sign a browser out this long after sign-in, active or not "
                        f"(default {ABSOLUTE_S} s)")
    parser.add_argument("--decryptd-socket", type=Path, default=None, metavar="PATH",
                        help="operations room: the unix socket of `bodycam-hq decryptd`, which decrypts for "
                        "playback and GNSS trails (without it, evidence search works and playback answers 503)")


def settings(args: argparse.Namespace) -> WebSettings:
    return WebSettings(sessions=SessionPolicy(idle_s=args.session_idle_s, absolute_s=args.session_max_s),
                       decryptd_socket=args.decryptd_socket)

"""``bodycam-hq decryptd``: run the decrypt component, the only process that loads ``hq.key``."""

from __future__ import annotations

import argparse
import grp
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from agent.evidence.keys import KeyFileError, load_hq_private
from agent.sdnotify import Notifier
from hq.decryptd import DecryptdError, Decryptor, DecryptServer, Limits, check_folder, harden

log = logging.getLogger(__name__)


def cmd_decryptd(args: argparse.Namespace) -> int:
    harden()
    try:
        group = None if args.group is None else grp.getgrnam(args.group).gr_gid
    except KeyError:
        print(f"bodycam-hq decryptd: no group {args.group!r}: create it or leave out --group", file=sys.stderr)
        return 2
    try:
        key = load_hq_private(args.hq_key)
    except KeyFileError as exc:
        print(f"bodycam-hq decryptd: {exc}", file=sys.stderr)
        return 2
    limits = Limits(max_jobs=args.max_jobs, deadline_s=args.deadline_s)
    sock_path: Path = args.socket
    try:
        sock_path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        check_folder(sock_path.parent)
        server = DecryptServer(sock_path, Decryptor(key, limits), group)
    except (DecryptdError, OSError) as exc:
        print(f"bodycam-hq decryptd: {exc}", file=sys.stderr)
        return 2
    del key
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("decryptd: listening on %s (%d jobs at once, deadline %.0f s)", sock_path, limits.max_jobs,
             limits.deadline_s)
    Notifier.from_environ().ready(f"listening on {sock_path}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "decryptd", help="run the decrypt component for playback (the only holder of hq.key)",
        description="Listen on a unix socket and decrypt segments for the web application's playback. "
        "This is the only process that loads headquarters' private key: run it as its own user that "
        "owns hq.key, and give the web workers' user its group (--group). Exit codes: 0 stopped; 2 bad "
        "key, group or socket.")
    p.add_argument("--hq-key", type=Path, required=True, help="headquarters' private key (keys/hq.key, mode 0600)")
    p.add_argument("--socket", type=Path, required=True,
                   help="the unix socket to create (its folder is created 0750 if missing)")
    p.add_argument("--group", help="group allowed to connect (socket 0660); default: this user only (0600)")
    p.add_argument("--max-jobs", type=_positive_int, default=2, help="segments decrypted at once (default 2)")
    p.add_argument("--deadline-s", type=float, default=120.0, help="longest one request may take (default 120)")
    p.set_defaults(func=cmd_decryptd)


def _positive_int(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{text} is not from 1 to 64")
    return value

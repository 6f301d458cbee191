"""``serve``'s live-view options, and attaching live view to a node's service from them."""

from __future__ import annotations

import argparse
import logging
import os
import threading
from pathlib import Path

from hq.live.broker import JanusBroker
from hq.live.channel import ChannelRequests
from hq.live.janus import JanusClient
from hq.live.service import LivePolicy, LiveService, TurnSettings
from hq.service import HqService

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 5.0


class LiveSetupError(Exception):
    """A live-view option that cannot be used (the message names it)."""


def add_live_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--janus-url", metavar="URL", help="live view: Janus's HTTP API (http://127.0.0.1:8088/janus); "
                   "without it units' WHIP offers are answered 503")
    p.add_argument("--janus-secret-file", type=Path, metavar="FILE",
                   help="file (0600) holding Janus's api_secret (janus.jcfg, general.api_secret)")
    p.add_argument("--turn-url", action="append", default=[], metavar="turn:HOST:PORT",
                   help="a TURN server for units behind carrier NAT and for viewers (repeatable)")
    p.add_argument("--turn-secret-file", type=Path, metavar="FILE",
                   help="file (0600) holding coturn's static-auth-secret (credentials are minted per stream)")
    p.add_argument("--live-supervisors-only", action="store_true",
                   help="only supervisors may watch live (default: operators and supervisors)")


def _secret(path: Path, option: str) -> str:
    try:
        if os.stat(path).st_mode & 0o077:
            raise LiveSetupError(f"{option} {path}: others may read it; chmod 600 {path}")
        text = path.read_text().strip()
    except OSError as exc:
        raise LiveSetupError(f"{option} {path}: {exc.strerror}") from exc
    if not text:
        raise LiveSetupError(f"{option} {path}: the file is empty")
    return text


class Sweeper:
    """Drops viewers whose token was not renewed, every few seconds, on its own thread."""

    def __init__(self, live: LiveService) -> None:
        self._live = live
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-sweep", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SWEEP_INTERVAL_S):
            try:
                self._live.sweep()
            except Exception:
                log.exception("live view: dropping expired viewers")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def attach_live(args: argparse.Namespace, service: HqService) -> LiveService | None:
    """Live view for this node when ``--janus-url`` is given (else None): units are asked to start
    and stop over the request channel (``service.requests``), and record the operator by the
    channel's pseudonym, the one headquarters' audit log keeps with the request."""
    if not args.janus_url:
        return None
    if args.janus_secret_file is None:
        raise LiveSetupError("--janus-url needs --janus-secret-file (Janus's api_secret; none is not allowed)")
    janus = JanusClient(args.janus_url, _secret(args.janus_secret_file, "--janus-secret-file"))
    turn = None
    if args.turn_url:
        if args.turn_secret_file is None:
            raise LiveSetupError("--turn-url needs --turn-secret-file (coturn's static-auth-secret)")
        turn = TurnSettings(tuple(args.turn_url), _secret(args.turn_secret_file, "--turn-secret-file"))
    live = LiveService(JanusBroker(janus), service.audit, ChannelRequests(service.requests),
                       service.requests.pseudonym, LivePolicy(supervisors_only=args.live_supervisors_only), turn)
    service.requests.result_listeners.append(live.unit_answered)  # a unit that refuses is not waited for
    sweeper = Sweeper(live)
    service.live = live
    service.on_close(sweeper.stop)
    service.on_close(live.close)
    service.on_close(janus.close)
    log.info("live view: Janus at %s%s", args.janus_url, f", TURN {', '.join(args.turn_url)}" if turn else "")
    return live

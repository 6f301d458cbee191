"""playback section: from pressing play on a recording's page to the first decoded frame, in chromium.

A real ``bodycam-hq serve`` (embedded index, TLS on loopback) with its decrypt daemon
(``bodycam-hq decryptd``, its own process on a unix socket), a supervisor made with the real CLI,
and a recording of the simulated camera (colour bars, clock burned in; tests/playback_util.py)
sealed to headquarters' key and ingested as an upload would be. Then, ``RUNS`` times: the
recording's page loaded afresh in headless chromium (tests/browser_util.py), Play pressed, and the
time until the player's first frame is presented (``requestVideoFrameCallback``): the stored
segment read, decrypted by the daemon, remuxed to fragmented MP4, streamed, appended to the
MediaSource and decoded. Median and p95; nothing is asserted.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

from agent.evidence.keys import load_hq_private
from hq.index import open_index
from hq.storage import FileEvidenceStore
from tests.browser_util import Browser, OpsServer, sign_in
from tests.burnin_util import camera
from tests.playback_daemon import DecryptDaemon
from tests.playback_util import ingest, record

from .common import Result

log = logging.getLogger("bench.playback")

RUNS = 15
SIZE = (1280, 720)
FPS = 30
SECONDS = 8.0
SEGMENT_S = 4.0
GOAL_FIRST_FRAME_S = 1.5


def _pct(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3) if ordered else None


def run(quick: bool) -> Result:
    runs = 4 if quick else RUNS
    width, height = (640, 360) if quick else SIZE
    with tempfile.TemporaryDirectory(prefix="bodycam-bench-play-") as tmp:
        root = Path(tmp)
        sock_dir = root / "run"
        sock_dir.mkdir(mode=0o750)
        server = OpsServer.start(root / "H", users={"sam": ("supervisor",)},
                                 extra_args=["--decryptd-socket", str(sock_dir / "decryptd.sock")])
        daemon = browser = None
        try:
            daemon = DecryptDaemon(server.data / "keys" / "hq.key", sock_dir / "decryptd.sock")
            cam = camera(width, height)
            rec = record(root / "unit", device_id="bench-play", seconds=SECONDS, segment_s=SEGMENT_S,
                         hq_key=load_hq_private(server.data / "keys" / "hq.key"), size=(width, height), fps=FPS,
                         picture=lambda frame, utc_ns: cam.render(frame, utc_ns))
            with open_index(server.data) as index:
                ingest(index, FileEvidenceStore(server.data), server.data, rec, time.time_ns())
            log.info("recorded %s s at %dx%d, %d segments; playing it %d times", SECONDS, width, height,
                     len(rec.segments()), runs)
            browser = Browser()
            page = browser.new_page()
            sign_in(page, server, "sam")
            firsts = []
            for _ in range(runs):
                page.goto(f"{server.url}/ops/evidence/{rec.device_id}/{rec.recording_id}")
                page.get_by_role("button", name="Play", exact=True).click()
                page.wait_for_function("() => window.bodycamPlayer.firstFrameAt !== null", timeout=60_000)
                firsts.append(page.evaluate("window.bodycamPlayer.firstFrameAt - window.bodycamPlayer.pressedAt")
                              / 1000)
        finally:
            if browser is not None:
                browser.close()
            if daemon is not None:
                daemon.stop()
            server.stop()
    return {
        "picture": f"{width}x{height} at {FPS} fps, {SEGMENT_S:.0f} s segments, H.264 with Opus, and thermal",
        "press_to_first_frame_s": {"median": round(statistics.median(firsts), 3), "p95": _pct(firsts, 0.95),
                                   "runs": [round(x, 3) for x in firsts], "goal_median": GOAL_FIRST_FRAME_S},
        "what": "Play pressed on the recording's page to its first frame presented: read, decrypt (decryptd), "
                "remux, stream, MediaSource, decode",
    }

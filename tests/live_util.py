"""Live-view rig for the integration tests and the bench: Janus, coturn, headquarters and a simulated unit on loopback.

``LiveRig(tmp)`` starts a real Janus (tests/janus_util.py), a real coturn (tests/turn_util.py) and
``bodycam-hq serve`` with ``--janus-url`` and ``--turn-url``; ``unit(...)`` provisions and enrols a
simulated unit whose camera burns a machine-readable time code (drivers/sim_timecode.py), with live
view on. ``JanusViewer`` subscribes to a unit's stream straight from Janus with aiortc (the
bench's and the Python tests' viewer; browsers go through headquarters' viewer routes) and reads
the time code of every decoded frame: glass-to-glass latency against this host's clock.
``OpsViewer`` watches as an operator through headquarters' live panel routes (join, answer,
keepalive, leave), which ask a unit that is not streaming to start over the request channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
import time
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Self

import numpy as np

from agent.config import load_config, render_config
from drivers import sim_timecode
from hq.live.broker import room_of
from hq.live.janus import JanusClient, JanusError
from tests.integration.agent_util import AgentProcess
from tests.integration.hq_util import HqProcess, hq_keygen, provision_for_hq
from tests.janus_util import Janus, host_address
from tests.turn_util import Turn
from tests.udp_impair import Impairment


def write_secret(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    return path


class LiveRig:
    def __init__(self, tmp: Path, *, hq_args: tuple[str, ...] = (), impair: bool = False,
                 serve: Callable[[Path, tuple[str, ...]], Any] | None = None) -> None:
        """``impair``: units reach the TURN server through an :class:`Impairment` relay
        (``self.impairment``), whose loss bursts and delay the tests and the bench set.
        ``serve(hq_dir, args)`` starts headquarters with the live options (default
        :class:`HqProcess`; the browser tests pass the operations room's ``OpsServer.start``);
        what it returns needs ``url`` and ``stop()``."""
        self.tmp = tmp
        self.hq_dir = tmp / "hq"
        hq_keygen(self.hq_dir)
        self.janus = Janus(tmp).start()
        self.turn = Turn(tmp, host_address()).start()
        self.impairment = Impairment(self.turn.port) if impair else None
        turn_url = self.turn.url if self.impairment is None else \
            f"turn:127.0.0.1:{self.impairment.port}?transport=udp"
        secret = write_secret(tmp / "janus.secret", self.janus.api_secret)
        args = ("--janus-url", self.janus.url, "--janus-secret-file", str(secret),
                "--turn-url", turn_url, "--turn-secret-file", str(self.turn.secret_file), *hq_args)
        self.hq = (serve or _hq_process)(self.hq_dir, args)
        self.agents: list[AgentProcess] = []

    def unit(self, device_id: str, **live: Any) -> tuple[Path, Path]:
        """A provisioned, enrolled unit with live view on (``live`` overrides [live] settings);
        returns (data dir, config path)."""
        data = self.tmp / device_id
        cfg_path = provision_for_hq(data, self.hq_dir, self.hq.url, device_id, segment_s=4.0)
        cfg = load_config(cfg_path)
        cams = {name: dataclasses.replace(cam, options=types.MappingProxyType(
            {**cam.options, "timecode": True})) for name, cam in cfg.cameras.items()}
        settings = {"enabled": True, **live}
        cfg = dataclasses.replace(cfg, cameras=types.MappingProxyType(cams),
                                  live=dataclasses.replace(cfg.live, **settings))
        cfg_path.write_text(render_config(cfg))
        return data, cfg_path

    def start_agent(self, data: Path, cfg: Path) -> AgentProcess:
        agent = AgentProcess(data, cfg)
        self.agents.append(agent)
        agent.wait_ready()
        return agent

    def audit(self, event_type: str) -> list[tuple[str, str, str, dict[str, Any]]]:
        """Headquarters' audit records of ``event_type``: (actor, target, outcome, detail)."""
        with contextlib.closing(sqlite3.connect(self.hq_dir / "index.sqlite")) as db:
            rows = db.execute("SELECT actor, target, outcome, detail FROM audit WHERE event_type = ? ORDER BY id",
                              (event_type,)).fetchall()
        return [(a, t, o, json.loads(d)) for a, t, o, d in rows]

    def close(self) -> None:
        for agent in self.agents:
            agent.kill()
        self.hq.stop()
        if self.impairment is not None:
            self.impairment.close()
        self.turn.stop()
        self.janus.stop()


def _hq_process(hq_dir: Path, args: tuple[str, ...]) -> HqProcess:
    return HqProcess(hq_dir, extra_args=args)


@dataclasses.dataclass
class Seen:
    """What a viewer decoded: per frame, (arrival host UTC ms, burned-in UTC ms mod 2^48, index)."""

    frames: list[tuple[float, int, int]] = dataclasses.field(default_factory=list)
    undecodable: int = 0
    sound: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (arrival ms, peak 0..1)

    def latencies_ms(self) -> list[float]:
        return [arrived - (burned % (1 << 48)) for arrived, burned, _ in self.frames
                if abs(arrived % (1 << 48) - burned) < 60_000]


class AiortcViewer:
    """An aiortc viewer on its own thread and event loop: ``_main`` connects, sets ``_ready`` once
    the media server has its answer, and decodes into ``seen`` until ``_stop``."""

    def __init__(self, device_id: str, on_frame: Callable[[float, int, int], None] | None = None) -> None:
        self._device = device_id
        self.seen = Seen()
        self._on_frame = on_frame
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="viewer", daemon=True)

    def start(self, timeout_s: float = 30.0) -> Self:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise AssertionError(f"viewer not connected within {timeout_s} s ({self._error})")
        if self._error is not None:
            raise AssertionError(f"viewer failed: {self._error}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start() / the test
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        raise NotImplementedError


class JanusViewer(AiortcViewer):
    """A viewer subscribed to ``device_id``'s stream straight from Janus (aiortc, its own thread)."""

    def __init__(self, janus_url: str, api_secret: str, device_id: str,
                 on_frame: Callable[[float, int, int], None] | None = None) -> None:
        super().__init__(device_id, on_frame)
        self._client = JanusClient(janus_url, api_secret)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        self._client.close()

    def _feed(self) -> int:
        room = room_of(self._device)
        handle = self._client.attach()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    data = self._client.request(handle, {"request": "listparticipants", "room": room})
                except JanusError:  # no room until the unit's first publish
                    data = {}
                pubs = [p for p in data.get("participants", []) if p.get("publisher")]
                if pubs:
                    return int(pubs[0]["id"])
                time.sleep(0.2)
        finally:
            self._client.detach(handle)
        raise AssertionError(f"{self._device} never published")

    async def _main(self) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        feed = await asyncio.to_thread(self._feed)
        handle = await asyncio.to_thread(self._client.attach)
        _, jsep = await asyncio.to_thread(self._client.message, handle, {
            "request": "join", "room": room_of(self._device), "ptype": "subscriber", "streams": [{"feed": feed}]})
        assert jsep is not None
        pc = RTCPeerConnection()
        done = asyncio.Event()

        @pc.on("track")
        def on_track(track: Any) -> None:
            asyncio.ensure_future(read_frames(track, done, self.seen, self._on_frame))

        await pc.setRemoteDescription(RTCSessionDescription(jsep["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await asyncio.to_thread(self._client.message, handle, {"request": "start"},
                                {"type": "answer", "sdp": pc.localDescription.sdp})
        self._ready.set()
        while not self._stop.is_set():
            await asyncio.sleep(0.1)
        done.set()
        await pc.close()
        await asyncio.to_thread(self._client.detach, handle)



async def _frames_of(track: Any, done: asyncio.Event) -> AsyncIterator[Any]:
    """``track``'s decoded frames until ``done`` or the track ends."""
    while not done.is_set():
        try:
            yield await asyncio.wait_for(track.recv(), 1.0)
        except TimeoutError:
            continue
        except Exception:
            return


async def read_frames(track: Any, done: asyncio.Event, seen: Seen,
                      on_frame: Callable[[float, int, int], None] | None = None) -> None:
    """Decode ``track`` until ``done``: each frame's burned-in time code and index into ``seen``;
    an audio track's frames as (arrival, peak level) into ``seen.sound``."""
    async for frame in _frames_of(track, done):
        arrived = time.time() * 1000
        if track.kind == "audio":
            samples = frame.to_ndarray()
            seen.sound.append((arrived, float(np.abs(samples).max()) / 32768.0 if samples.size else 0.0))
            continue
        code = sim_timecode.read(np.ascontiguousarray(frame.to_ndarray(format="gray")))
        if code is None:
            seen.undecodable += 1
            continue
        seen.frames.append((arrived, code[0], code[1]))
        if on_frame is not None:
            on_frame(arrived, code[0], code[1])


class OpsViewer(AiortcViewer):
    """An operator watching through headquarters' live panel routes, as the panel's script does
    (join, answer, keepalive every 10 s, leave), with aiortc instead of a browser; ``http`` is a
    signed-in session of the operations room and ``csrf`` its token. ``joined_s``: how long the
    join took (headquarters waits for the unit to start when it is not streaming)."""

    KEEPALIVE_S = 10.0

    def __init__(self, http: Any, base_url: str, csrf: str, device_id: str) -> None:
        super().__init__(device_id)
        self._http = http
        self._base = base_url
        self._headers = {"X-CSRF-Token": csrf, "Origin": base_url}
        self.token = ""
        self.joined_s: float | None = None

    def post(self, path: str, doc: dict[str, Any]) -> Any:
        return self._http.post(self._base + path, json=doc, headers=self._headers, timeout=60)

    def stop(self) -> None:
        """Leave (headquarters audits it and tells the unit when this was the last viewer)."""
        self._stop.set()
        self._thread.join(15)
        if self.token:
            answer = self.post("/ops/live-viewer/leave", {"token": self.token})
            assert answer.status_code == 200, answer.text

    async def _main(self) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        began = time.monotonic()
        joined = await asyncio.to_thread(self.post, f"/ops/live/{self._device}/join", {})
        if joined.status_code != 200:
            raise AssertionError(f"join answered {joined.status_code}: {joined.text}")
        self.joined_s = time.monotonic() - began
        grant = joined.json()
        self.token = grant["token"]
        pc = RTCPeerConnection()
        done = asyncio.Event()

        @pc.on("track")
        def on_track(track: Any) -> None:
            asyncio.ensure_future(read_frames(track, done, self.seen))

        await pc.setRemoteDescription(RTCSessionDescription(grant["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answered = await asyncio.to_thread(self.post, "/ops/live-viewer/answer",
                                           {"token": self.token, "sdp": pc.localDescription.sdp})
        if answered.status_code != 200:
            raise AssertionError(f"answer answered {answered.status_code}: {answered.text}")
        self._ready.set()
        renewed = time.monotonic()
        while not self._stop.is_set():
            await asyncio.sleep(0.1)
            if time.monotonic() - renewed >= self.KEEPALIVE_S:
                renewed = time.monotonic()
                await asyncio.to_thread(self.post, "/ops/live-viewer/keepalive", {"token": self.token})
        done.set()
        await pc.close()

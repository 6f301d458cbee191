"""The segment pipeline with a fake muxer, a fake chain and a fake clock: every rotation case,
checkpoints, and what a failed open, write or seal leaves behind."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.chainlog import OpenSegment
from agent.media.packets import EncodedPacket, MediaError, TrackSpec
from agent.recorder.aligner import HOLD_MAX_NS, TrackAligner
from agent.recorder.pipeline import REOPEN_INTERVAL_NS, SegmentPipeline
from tests.fakes import FakeClock

S = 1_000_000_000
FRAME = S // 10
TRACKS = [
    TrackSpec("chest", "video", "h264", 64, 48, "yuv420p", None, None, 10, 1, None, None),
    TrackSpec("audio", "audio", "opus", None, None, None, 48000, 1, 48000, 1, None, None),
]


@dataclass
class FakeWriter:
    checkpoints: list[int] = field(default_factory=list)
    fail: BaseException | None = None
    bytes_written: int = 0

    def checkpoint(self, mono_ns: int) -> None:
        if self.fail is not None:
            raise self.fail
        self.checkpoints.append(mono_ns)


@dataclass
class FakeFile:
    closed: bool = False

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeMuxer:
    start_ns: int
    packets: list[EncodedPacket] = field(default_factory=list)
    fail: BaseException | None = None
    closed: bool = False

    def write(self, packet: EncodedPacket) -> None:
        if self.fail is not None:
            raise self.fail
        self.packets.append(packet)

    def close(self) -> None:
        self.closed = True


@dataclass
class Signed:
    seq: int


@dataclass
class Sealed:
    signed: Signed
    bytes_total: int = 0
    chunks: int = 0


class FakeChain:
    """Opens, seals, salvages and signs in memory; ``fail_open`` makes the next opens raise."""

    device_id = "unit-p"

    def __init__(self) -> None:
        self.opened: list[OpenSegment] = []
        self.sealed: list[dict[str, Any]] = []
        self.events: list[tuple[str, dict[str, Any], str | None]] = []
        self.salvaged: list[Path] = []
        self.fail_open: BaseException | None = None

    def open_segment(self, mono_start_ns: int, utc_start_ns: int, recording_id: str | None = None) -> OpenSegment:
        if self.fail_open is not None:
            raise self.fail_open
        n = len(self.opened)
        seg = OpenSegment(f"s{n}", Path(f"s{n}.part"), FakeFile(), FakeWriter(),  # type: ignore[arg-type]
                          mono_start_ns, utc_start_ns, mono_start_ns)
        self.opened.append(seg)
        return seg

    def seal(self, seg: OpenSegment, **kw: Any) -> Sealed:
        self.sealed.append({"id": seg.segment_id, **kw})
        return Sealed(Signed(len(self.sealed)))

    def salvage_now(self, path: Path) -> int | None:
        self.salvaged.append(path)
        return 7

    def event(self, name: str, detail: dict[str, Any] | None = None, **kw: Any) -> None:
        self.events.append((name, detail or {}, kw.get("recording_id")))


class Rig:
    def __init__(self, segment_s: int = 4) -> None:
        self.clock = FakeClock()
        self.chain = FakeChain()
        self.muxers: list[FakeMuxer] = []
        self.space_faults = 0
        self.errors: list[str] = []
        self.fail_muxer: BaseException | None = None
        self.flags: list[str] = []
        self.frame = 0
        self.p = SegmentPipeline(
            chain=self.chain,  # type: ignore[arg-type]
            clock=self.clock,
            tracks=TRACKS,
            anchor="chest",
            segment_ns=segment_s * S,
            checkpoint_ns=S,
            segment_flags=lambda: self.flags,
            on_space_fault=self._space_fault,
            on_error=self.errors.append,
            open_muxer=self._muxer,
        )

    def _muxer(self, opened: Any, tracks: Any, start_ns: int, title: str, meta: dict[str, str]) -> FakeMuxer:
        if self.fail_muxer is not None:
            raise self.fail_muxer
        assert meta == {"device_id": "unit-p", "recording_id": self.p.recording_id}
        mux = FakeMuxer(start_ns)
        self.muxers.append(mux)
        return mux

    def _space_fault(self) -> None:
        self.space_faults += 1

    def now(self) -> int:
        return self.clock.monotonic_ns()

    def video(self, key: bool = False, at: int | None = None) -> EncodedPacket:
        return EncodedPacket("chest", at or self.now(), at or self.now(), FRAME, key, b"v", 1)

    def audio(self, at: int | None = None) -> EncodedPacket:
        return EncodedPacket("audio", at or self.now(), at or self.now(), FRAME, True, b"a", 4800)

    def run(self, seconds: float, gop: int = 10, audio: bool = True) -> None:
        """Feed 10 fps video (a keyframe every ``gop`` frames since the first) and audio, one frame per tick."""
        for _ in range(round(seconds * 10)):
            self.p.route(self.video(key=self.frame % gop == 0))
            self.frame += 1
            if audio:
                self.p.route(self.audio())
            self.clock.advance_ns(FRAME)
            self.p.housekeeping(self.now())


def test_rotation_at_the_first_anchor_keyframe_past_the_segment_length() -> None:
    r = Rig(segment_s=4)
    r.p.begin("rec-1", "ctl", r.now(), r.now())
    r.run(9.5)
    assert [s["id"] for s in r.chain.sealed] == ["s0", "s1"] and r.p.current is not None
    first, second = r.chain.sealed
    assert first["mono_end_ns"] == r.chain.opened[1].mono_start_ns == r.chain.opened[0].mono_start_ns + 4 * S
    assert second["mono_end_ns"] - r.chain.opened[1].mono_start_ns == 4 * S
    assert first["fields"]["tracks"][0]["frames"] == 40 and first["fields"]["tracks"][1]["frames"] == 40 * 4800


def test_no_rotation_without_a_keyframe() -> None:
    r = Rig(segment_s=2)
    r.p.begin("rec-1", "ctl", r.now(), r.now())
    r.run(5, gop=50)  # one keyframe, at the start
    assert r.chain.sealed == [] and len(r.chain.opened) == 1


def test_a_rotation_that_cannot_open_keeps_the_current_segment() -> None:
    r = Rig(segment_s=2)
    r.p.begin("rec-1", "ctl", r.now(), r.now())
    r.run(1.5)
    r.chain.fail_open = OSError(errno.EIO, "no")
    r.run(1)
    assert r.chain.sealed == [] and r.p.current is not None and len(r.muxers[0].packets) == 50
    assert r.errors and "cannot open a segment" in r.errors[-1]
    r.chain.fail_open = None
    r.clock.advance_ns(REOPEN_INTERVAL_NS)
    r.run(1)
    assert len(r.chain.sealed) == 1  # the next keyframe, past the retry interval, rotates


def test_a_video_track_stays_in_the_closing_segment_until_its_keyframe() -> None:
    r = Rig(segment_s=2)
    r.p.begin("rec-1", "ctl", r.now(), r.now())
    r.run(2)
    boundary = r.now()
    r.p.route(r.video(key=True))  # the anchor rotates
    closing, current = r.p.closing, r.p.current
    assert closing is not None and current is not None and current.start_ns == boundary
    r.p.route(r.audio(at=boundary - FRAME // 2))  # audio from before the boundary: the closing one
    assert r.muxers[0].packets[-1].track == "audio" and "audio" not in current.switched
    r.p.route(r.audio(at=boundary))
    assert r.p.closing is None and r.chain.sealed[0]["mono_end_ns"] == boundary  # all tracks moved: sealed


def test_a_track_with_nothing_in_the_old_segment_starts_in_the_new_one() -> None:
    r = Rig(segment_s=2)
    r.p.begin("rec-1", "ctl", r.now(), r.now())
    r.run(2, audio=False)
    r.p.route(r.video(key=True))
    assert r.p.closing is None and len(r.chain.sealed) == 1  # nothing to wait for


def test_a_stalled_track_is_not_waited_for_past_twice_the_hold() -> None:
    r = Rig(segment_s=2)
    r.p.begin("rec-1", "ctl", r.now(), r.now())
    r.run(2)
    r.p.route(r.video(key=True))
    start = r.now()
    r.clock.advance_ns(2 * HOLD_MAX_NS)
    r.p.housekeeping(r.now())
    assert r.p.closing is not None
    r.clock.advance_ns(1)
    r.p.housekeeping(r.now())
    assert r.p.closing is None and r.chain.sealed[0]["mono_end_ns"] == start


def test_finish_during_a_rotation_seals_both_in_order() -> None:
    r = Rig(segment_s=2)
    r.p.begin("rec-1", "ctl", r.now(), r.now())
    r.run(2)
    r.p.route(r.video(key=True))
    assert r.p.finish() == "rec-1"
    assert [s["id"] for s in r.chain.sealed] == ["s0", "s1"]
    assert r.chain.sealed[0]["mono_end_ns"] == r.chain.opened[1].mono_start_ns
    assert r.p.current is None and r.p.closing is None and r.p.recording_id is None


def test_packets_before_the_start_and_video_before_a_keyframe_are_not_written() -> None:
    r = Rig()
    start = r.now()
    r.p.begin("rec-1", "ctl", start, start)
    r.p.route(r.audio(at=start - FRAME))
    r.p.route(r.video(key=False))
    r.p.route(r.video(key=True))
    assert [p.keyframe for p in r.muxers[0].packets] == [True]


def test_pre_event_and_flags_in_the_manifest() -> None:
    r = Rig(segment_s=10)
    r.flags = ["stealth"]
    start = r.now()
    r.p.begin("rec-1", "ctl", start, start + 3 * S)
    r.run(5)
    r.p.finish()
    sealed = r.chain.sealed[0]
    assert sealed["fields"]["pre_event_ns"] == 3 * S and sealed["flags"] == ["pre-event", "stealth"]
    assert sealed["priority"] == 1


def test_checkpoints_are_made_at_the_interval_and_mark_frames_durable() -> None:
    r = Rig(segment_s=10)
    r.p.begin("rec-1", "ctl", r.now(), r.now())
    r.run(2.5)
    writer = r.chain.opened[0].writer
    assert len(writer.checkpoints) == 2  # type: ignore[attr-defined]
    assert r.p.current is not None and r.p.current.durable_frames["chest"] == 20


def test_a_failed_write_salvages_and_reopens_at_the_next_anchor_keyframe() -> None:
    r = Rig(segment_s=10)
    r.p.begin("rec-1", "ctl", r.now(), r.now())
    r.run(1.5)
    r.muxers[0].fail = MediaError("broken pipe")
    r.run(0.1)
    assert r.p.current is None and r.chain.salvaged == [Path("s0.part")]
    assert r.chain.events[-1][0] == "storage-error" and r.chain.events[-1][2] == "rec-1"
    assert r.p.lost["chest"] == 1 + 15 - 10  # the failed packet and those after the last checkpoint
    r.run(0.4)
    assert r.p.current is None and r.p.without_segment_ns(r.now()) == 5 * FRAME
    r.run(1)
    assert r.p.current is not None and r.p.current.trigger == "continued"
    assert r.p.without_segment_ns(r.now()) == 0


def test_a_full_disk_opens_nothing_until_the_disk_is_measured() -> None:
    r = Rig(segment_s=10)
    r.p.begin("rec-1", "ctl", r.now(), r.now())
    r.run(1)
    r.muxers[0].fail = OSError(errno.ENOSPC, "full")
    r.run(3)
    assert r.space_faults == 1 and r.p.current is None and r.chain.events[-1][0] == "storage-full"
    r.p.measured()
    r.run(1)
    assert r.p.current is not None and r.space_faults == 1


def test_a_recording_whose_first_segment_cannot_open_counts_what_it_loses() -> None:
    r = Rig()
    r.chain.fail_open = OSError(errno.EIO, "no")
    assert r.p.begin("rec-1", "ctl", r.now(), r.now()) is None
    r.run(0.5)
    assert r.p.lost == {"chest": 5, "audio": 5 * 4800} and r.p.without_segment_ns(r.now()) == 5 * FRAME


def test_a_muxer_that_cannot_open_closes_the_segment_file() -> None:
    r = Rig()
    r.fail_muxer = MediaError("no codec")
    assert r.p.begin("rec-1", "ctl", r.now(), r.now()) is None
    assert r.chain.opened[0].fh.closed  # type: ignore[attr-defined]


def test_a_failed_checkpoint_fails_the_segment() -> None:
    r = Rig(segment_s=10)
    r.p.begin("rec-1", "ctl", r.now(), r.now())
    r.run(0.5)
    r.chain.opened[0].writer.fail = OSError(errno.EIO, "fsync")  # type: ignore[attr-defined]
    r.run(0.6)
    assert r.chain.sealed == [] and r.chain.events[0][0] == "storage-error"


def test_a_failed_seal_is_never_counted_as_sealed() -> None:
    r = Rig(segment_s=10)
    r.p.begin("rec-1", "ctl", r.now(), r.now())
    r.run(1)

    def refuse(seg: OpenSegment, **kw: Any) -> Sealed:
        raise OSError(errno.EIO, "seal")

    r.chain.seal = refuse  # type: ignore[method-assign]
    r.p.finish()
    assert r.p.sealed == 0 and r.chain.salvaged == [Path("s0.part")]


def test_marks_number_from_one_per_recording() -> None:
    r = Rig()
    assert r.p.mark("alice", None) is None
    r.p.begin("rec-1", "ctl", r.now(), r.now())
    assert r.p.mark("alice", "look") == 1 and r.p.mark("bob", None) == 2
    assert r.p.current is not None and r.p.current.notes == [{"id": 1, "note": "look"}]
    r.p.finish()
    r.p.begin("rec-2", "ctl", r.now(), r.now())
    assert r.p.mark("alice", None) == 1


# -- the aligner in front of the pipeline ---------------------------------------------------------


def test_aligner_holds_other_tracks_until_the_anchor_passes_them() -> None:
    a = TrackAligner("chest", hold_max_ns=S)
    audio = EncodedPacket("audio", 5 * FRAME, 5 * FRAME, FRAME, True, b"", 1)
    assert a.offer(audio) is None and len(a) == 1
    assert a.release(now_ns=5 * FRAME) == []
    video = EncodedPacket("chest", 5 * FRAME, 5 * FRAME, FRAME, True, b"", 1)
    assert a.offer(video) is video
    assert a.release(now_ns=5 * FRAME) == [audio]


def test_aligner_releases_a_packet_that_waited_too_long() -> None:
    a = TrackAligner("chest", hold_max_ns=S)
    audio = EncodedPacket("audio", 10 * S, 10 * S, FRAME, True, b"", 1)
    a.offer(audio)
    assert a.release(now_ns=11 * S - 1) == [] and a.release(now_ns=11 * S) == [audio]


def test_aligner_without_an_anchor_passes_everything() -> None:
    a = TrackAligner(None)
    audio = EncodedPacket("audio", 1, 1, FRAME, True, b"", 1)
    assert a.offer(audio) is audio and a.release_all() == []

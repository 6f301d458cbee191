"""The pre-event buffer's own figures: how much footage a drain would give, and its bytes."""

from __future__ import annotations

from agent.media.packets import EncodedPacket
from agent.prebuffer import PreEventBuffer

S = 1_000_000_000
FRAME_NS = S // 10


def video(index: int, keyframe: bool) -> EncodedPacket:
    return EncodedPacket("chest", index * FRAME_NS, index * FRAME_NS, FRAME_NS, keyframe, b"x" * 100, 1)


def test_the_span_runs_from_the_kept_keyframe_to_the_newest_packets_end() -> None:
    buffer = PreEventBuffer(2 * S, "chest", ["chest"])
    assert buffer.span_ns() == 0 and buffer.bytes == 0
    for i in range(55):  # 5.5 s at 10 fps, a keyframe every second
        buffer.push(video(i, keyframe=i % 10 == 0))
    # the newest keyframe at least 2 s old is at 3 s; the newest packet ends at 5.5 s
    assert buffer.start_ns() == 3 * S and buffer.span_ns() == 5 * S // 2
    assert buffer.bytes == 100 * len(buffer)
    drained = buffer.drain()
    assert drained[0].pts_ns == 3 * S and drained[-1].end_ns - drained[0].pts_ns == 5 * S // 2
    assert buffer.span_ns() == 0 and buffer.bytes == 0

"""ALSA microphone: overrun accounting (pure) and the driver fed by a fake PortAudio stream."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest

from drivers.alsa_microphone import AlsaMicrophone, SampleCounter
from hal.common import SensorError
from tests.fakes import FakeClock

RATE = 48000
BLOCK = 960  # 20 ms


def test_contiguous_blocks_have_no_loss() -> None:
    c = SampleCounter(RATE)
    positions = [c.block(BLOCK, 10.0 + i * 0.02, 0, False) for i in range(3)]
    assert [(p.first_sample, p.dropped_before) for p in positions] == [(0, 0), (960, 0), (1920, 0)]


def test_an_overrun_is_measured_with_adc_times() -> None:
    c = SampleCounter(RATE)
    c.block(BLOCK, 10.0, 0, False)
    pos = c.block(BLOCK, 10.0 + 0.02 + 0.1, 0, True)  # 100 ms missing
    assert (pos.first_sample, pos.dropped_before) == (960 + 4800, 4800)
    assert c.overruns == 1 and c.lost_samples == 4800


def test_without_adc_times_the_host_arrival_gap_is_used() -> None:
    c = SampleCounter(RATE)
    c.block(BLOCK, 0.0, 1_000_000_000, False)
    pos = c.block(BLOCK, 0.0, 1_000_000_000 + 120_000_000, True)  # 120 ms later, one 20 ms block
    assert pos.dropped_before == 4800
    assert c.block(BLOCK, 0.0, 1_140_000_000, False).dropped_before == 0


class FakeStream:
    def __init__(self, callback: Callable[..., None]) -> None:
        self.callback = callback
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


def test_driver_turns_callbacks_into_chunks_and_counts_drops() -> None:
    streams: list[FakeStream] = []

    def factory(cb: Callable[..., None]) -> FakeStream:
        streams.append(FakeStream(cb))
        return streams[-1]

    clock = FakeClock()
    mic = AlsaMicrophone(name="audio", clock=clock, queue_chunks=2, stream_factory=factory)
    with mic:
        s = streams[0]
        assert s.started
        block = np.arange(BLOCK, dtype=np.int16).reshape(BLOCK, 1)
        ok, overflow = SimpleNamespace(input_overflow=False), SimpleNamespace(input_overflow=True)
        s.callback(block, BLOCK, SimpleNamespace(inputBufferAdcTime=5.0), ok)
        s.callback(block, BLOCK, SimpleNamespace(inputBufferAdcTime=5.02), ok)
        s.callback(block, BLOCK, SimpleNamespace(inputBufferAdcTime=5.04), ok)  # queue full: lost
        first, second = mic.read(0.1), mic.read(0.1)
        s.callback(block, BLOCK, SimpleNamespace(inputBufferAdcTime=5.16), overflow)  # 100 ms overrun after that
        third = mic.read(0)
        assert mic.read(0) is None
        status = mic.get_status()
    assert first is not None and second is not None and third is not None
    assert (first.first_sample, second.first_sample) == (0, 960)
    assert first.samples.shape == (BLOCK, 1) and first.samples.dtype == np.int16
    assert first.sensor_ns == 5_000_000_000
    assert third.index == 2 and third.first_sample == 960 * 3 + 4800
    assert third.dropped_before == 960 + 4800, "the chunk the queue could not hold, and the overrun"
    assert status["overruns"] == 1 and status["dropped"] == 960 + 4800
    assert streams[0].closed
    with pytest.raises(SensorError, match="read while closed"):
        mic.read(0)

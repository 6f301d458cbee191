"""The Lepton VoSPI parser fed synthetic packet streams: discards, invalid segments, lost sync,
wrong segment numbers, CRC errors, telemetry as header and footer."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from drivers import lepton_vospi as v

Words = npt.NDArray[np.uint16]


def scene(seed: int) -> Words:
    """A (120, 160) frame of centikelvin-like values, different for every seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(27000, 32000, size=(v.HEIGHT, v.WIDTH), dtype=np.uint16)


def telemetry_words(frame_counter: int, fpa_ck: int = 30215, uptime_ms: int = 0x0001_2345) -> Words:
    rows = np.zeros(3 * v.PAYLOAD_WORDS, dtype=np.uint16)
    rows[0] = 14  # revision
    rows[1], rows[2] = uptime_ms & 0xFFFF, uptime_ms >> 16  # low word first
    status = 0x0000_0038 | 0x0010_0000  # FFC desired, FFC complete, over-temperature imminent
    rows[3], rows[4] = status & 0xFFFF, status >> 16
    rows[20], rows[21] = frame_counter & 0xFFFF, frame_counter >> 16
    rows[22], rows[24], rows[26], rows[29] = 8000, fpa_ck, 30100, 30150
    rows[30], rows[31] = 0x5678, 0x0001
    return rows


def segment_packets(
    pixels: Words, seg: int, telemetry: v.Telemetry = v.Telemetry.OFF, tel: Words | None = None,
    number_as: int | None = None,
) -> list[bytes]:  # fmt: skip
    """The packets of segment ``seg`` (1-4) of a frame, as a Lepton 3 sends them."""
    rows = pixels.reshape(-1, v.PAYLOAD_WORDS)  # 240 packets of video
    tel_rows = np.zeros((v.TELEMETRY_PACKETS, v.PAYLOAD_WORDS), dtype=np.uint16)
    if tel is not None:
        tel_rows[:3] = tel.reshape(3, v.PAYLOAD_WORDS)
    if telemetry is v.Telemetry.HEADER:
        rows = np.concatenate([tel_rows, rows])
    elif telemetry is v.Telemetry.FOOTER:
        rows = np.concatenate([rows, tel_rows])
    per = len(rows) // 4
    out = []
    for n in range(per):
        payload = rows[(seg - 1) * per + n].astype(">u2").tobytes()
        out.append(v.make_packet(n, payload, segment=seg if number_as is None else number_as))
    return out


def frame_packets(pixels: Words, telemetry: v.Telemetry = v.Telemetry.OFF, tel: Words | None = None) -> list[bytes]:
    return [p for seg in range(1, 5) for p in segment_packets(pixels, seg, telemetry, tel)]


def feed_all(asm: v.VospiAssembler, packets: list[bytes]) -> list[v.Frame]:
    return [f for f in (asm.feed(p) for p in packets) if f is not None]


def test_crc_is_ccitt_xmodem_with_id_nibble_and_crc_zeroed() -> None:
    assert v.crc16(b"123456789") == 0x31C3  # the CRC-16/XMODEM check value
    packet = v.make_packet(20, bytes(range(160)), segment=3)
    assert packet[0] >> 4 == 3 and packet[1] == 20
    assert int.from_bytes(packet[2:4], "big") == v.crc16(bytes([0, 20, 0, 0]) + bytes(range(160)))


def test_a_clean_stream_gives_the_frame_back() -> None:
    asm = v.VospiAssembler()
    pixels = scene(1)
    frames = feed_all(asm, frame_packets(pixels))
    assert len(frames) == 1
    assert frames[0].pixels.shape == (120, 160) and frames[0].pixels.dtype == np.uint16
    np.testing.assert_array_equal(frames[0].pixels, pixels)
    assert frames[0].telemetry is None and frames[0].dropped_before == 0
    assert asm.counters.frames == 1 and asm.counters.crc_errors == 0


def test_discard_packets_between_packets_and_segments_are_ignored() -> None:
    asm = v.VospiAssembler()
    stream: list[bytes] = [v.DISCARD] * 5
    for packet in frame_packets(scene(2)):
        stream += [packet, v.DISCARD] if packet[1] % 7 == 0 else [packet]
    frames = feed_all(asm, stream)
    assert len(frames) == 1 and asm.counters.discards > 5
    np.testing.assert_array_equal(frames[0].pixels, scene(2))


def test_segment_number_zero_is_thrown_away_as_the_datasheet_says() -> None:
    """Between unique frames a Lepton 3 sends segments numbered 0; they must not end up in a frame."""
    asm = v.VospiAssembler()
    junk = scene(99)
    stream = segment_packets(junk, 1, number_as=0) + segment_packets(junk, 2, number_as=0)
    stream += frame_packets(scene(3)) + segment_packets(junk, 3, number_as=0) + frame_packets(scene(4))
    frames = feed_all(asm, stream)
    assert [f.pixels[0, 0] for f in frames] == [scene(3)[0, 0], scene(4)[0, 0]]
    np.testing.assert_array_equal(frames[1].pixels, scene(4))
    assert asm.counters.invalid_segments == 3 and asm.counters.frames_dropped == 0


def test_a_crc_error_drops_that_frame_only() -> None:
    asm = v.VospiAssembler()
    bad = frame_packets(scene(5))
    corrupt = bytearray(bad[130])
    corrupt[50] ^= 0x01
    bad[130] = bytes(corrupt)
    frames = feed_all(asm, bad + frame_packets(scene(6)))
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0].pixels, scene(6))
    assert frames[0].dropped_before == 1
    assert asm.counters.crc_errors == 1 and asm.counters.frames_dropped == 1 and not asm.needs_resync


def test_crc_checking_can_be_turned_off() -> None:
    asm = v.VospiAssembler(check_crc=False)
    packets = frame_packets(scene(7))
    packets[0] = packets[0][:2] + b"\x00\x00" + packets[0][4:]
    assert len(feed_all(asm, packets)) == 1


def test_a_lost_packet_is_a_sequence_error_and_the_stream_recovers_at_the_next_segment_1() -> None:
    asm = v.VospiAssembler()
    packets = frame_packets(scene(8))
    del packets[70]  # packet 10 of segment 2
    frames = feed_all(asm, packets + frame_packets(scene(9)))
    assert len(frames) == 1 and frames[0].dropped_before == 1
    np.testing.assert_array_equal(frames[0].pixels, scene(9))
    assert asm.counters.sequence_errors >= 1


def test_wrong_segment_numbers_drop_the_partial_frame() -> None:
    asm = v.VospiAssembler()
    pixels = scene(10)
    stream = segment_packets(pixels, 1) + segment_packets(pixels, 3)  # segment 2 never came
    stream += segment_packets(pixels, 4, number_as=5)  # nonsense segment number 5
    stream += frame_packets(scene(11))
    frames = feed_all(asm, stream)
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0].pixels, scene(11))
    assert asm.counters.bad_segment_numbers >= 2 and asm.counters.frames_dropped == 1


def test_a_stream_starting_mid_frame_waits_for_segment_1() -> None:
    asm = v.VospiAssembler()
    stream = frame_packets(scene(12))[95:] + frame_packets(scene(13))
    frames = feed_all(asm, stream)
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0].pixels, scene(13))


def test_garbage_loses_sync_and_resync_recovers() -> None:
    asm = v.VospiAssembler(max_bad_packets=8)
    rng = np.random.default_rng(0)
    garbage = [bytes([0x00]) + rng.integers(0, 256, 163, dtype=np.uint8).tobytes() for _ in range(10)]
    assert feed_all(asm, garbage) == []
    assert asm.needs_resync and asm.counters.crc_errors >= 8
    assert feed_all(asm, frame_packets(scene(14))) == [], "nothing is taken until the shell resyncs"
    asm.resynced()
    assert not asm.needs_resync and asm.counters.resyncs == 1
    frames = feed_all(asm, frame_packets(scene(15)))
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0].pixels, scene(15))


def test_too_long_without_a_good_segment_loses_sync() -> None:
    asm = v.VospiAssembler(max_bad_packets=10_000, max_packets_without_segment=200)
    # packets that pass the CRC but never make a segment: packet 1 over and over
    stuck = v.make_packet(1, bytes(160))
    feed_all(asm, [stuck] * 250)
    assert asm.needs_resync


@pytest.mark.parametrize("mode", [v.Telemetry.HEADER, v.Telemetry.FOOTER])
def test_telemetry_rows_are_split_off_and_decoded(mode: v.Telemetry) -> None:
    asm = v.VospiAssembler(telemetry=mode)
    assert asm.packets_per_segment == 61
    pixels, tel = scene(16), telemetry_words(frame_counter=0x0002_0003)
    frames = feed_all(asm, frame_packets(pixels, mode, tel))
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0].pixels, pixels)
    row = frames[0].row_a
    assert row is not None
    assert (row.revision, row.uptime_ms, row.frame_counter) == (14, 0x0001_2345, 0x0002_0003)
    assert (row.fpa_temp_ck, row.housing_temp_ck, row.fpa_temp_last_ffc_ck) == (30215, 30100, 30150)
    assert row.uptime_last_ffc_ms == 0x0001_5678 and row.frame_mean == 8000
    assert row.ffc_desired and row.ffc_state == 3 and row.overtemp_shutdown_imminent and not row.agc_enabled


def test_packets_of_the_wrong_size_are_refused() -> None:
    with pytest.raises(ValueError, match="164 bytes"):
        v.VospiAssembler().feed(bytes(100))

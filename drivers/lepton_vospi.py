"""Pure FLIR Lepton 3.x VoSPI decoding: packets, CRCs, segments, frames, telemetry rows. No I/O.

Layout (Lepton engineering datasheet, VoSPI section): a packet is 164 bytes, a 16-bit ID,
a 16-bit CRC and 160 bytes of payload (80 big-endian words, half a 160-pixel line). The ID's
low 12 bits number the packet within its segment; ``xFxx`` marks a discard packet sent when
no data is ready. A frame is 4 segments of 60 packets (61 with telemetry, which then takes 4
packets at the head of segment 1 or the tail of segment 4). Packet 20 of each segment carries
the segment number (1-4) in the ID's bits 14-12; 0 marks a segment to throw away (the Lepton
3 repeats frames between unique ones). The CRC is CRC-16-CCITT (XMODEM) over the packet with
the ID's top nibble and the CRC field zeroed. After lost sync the host must idle with chip
select de-asserted for at least 185 ms, then start again at a packet 0.
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

PACKET_BYTES = 164
PAYLOAD_WORDS = 80
WIDTH = 160
HEIGHT = 120
SEGMENTS = 4
SEGMENT_PACKET = 20  # the packet whose ID carries the segment number
RESYNC_IDLE_S = 0.185
VIDEO_PACKETS = HEIGHT * WIDTH // PAYLOAD_WORDS  # 240
TELEMETRY_PACKETS = 4  # three telemetry rows (A, B, C) and one unused


class Telemetry(enum.Enum):
    OFF = "off"
    HEADER = "header"
    FOOTER = "footer"


def crc16(data: bytes) -> int:
    """CRC-16-CCITT, polynomial x^16 + x^12 + x^5 + 1, initial value 0 (the XMODEM variant)."""
    return binascii.crc_hqx(data, 0)


def packet_crc(packet: bytes) -> int:
    """The CRC a packet should carry: computed with the ID's top nibble and the CRC field zeroed."""
    return crc16(bytes([packet[0] & 0x0F, packet[1], 0, 0]) + packet[4:])


def make_packet(number: int, payload: bytes, segment: int = 0) -> bytes:
    """A valid packet (for emulators and tests); ``segment`` only goes into packet 20's ID."""
    if len(payload) != PACKET_BYTES - 4:
        raise ValueError("payload must be 160 bytes")
    ident = (number & 0x0FFF) | ((segment & 0x7) << 12 if number == SEGMENT_PACKET else 0)
    head = bytes([ident >> 8, ident & 0xFF, 0, 0])
    crc = packet_crc(head + payload)
    return bytes([head[0], head[1], crc >> 8, crc & 0xFF]) + payload


DISCARD = bytes([0x0F, 0xFF]) + bytes(PACKET_BYTES - 2)


@dataclass(frozen=True, slots=True)
class TelemetryRowA:
    """The fields of telemetry row A this firmware uses. 32-bit values are sent low word first."""

    revision: int
    uptime_ms: int
    status: int
    frame_counter: int
    frame_mean: int
    fpa_temp_ck: int  # focal plane, centikelvin (the Lepton reports kelvin x 100)
    housing_temp_ck: int
    fpa_temp_last_ffc_ck: int
    uptime_last_ffc_ms: int

    @property
    def ffc_desired(self) -> bool:
        return bool(self.status & 0x8)

    @property
    def ffc_state(self) -> int:
        """0 never commanded, 1 imminent, 2 in progress, 3 complete."""
        return (self.status >> 4) & 0x3

    @property
    def agc_enabled(self) -> bool:
        return bool(self.status & 0x1000)

    @property
    def overtemp_shutdown_imminent(self) -> bool:
        return bool(self.status & 0x100000)


def _dword(words: npt.NDArray[np.uint16], index: int) -> int:
    return int(words[index]) | (int(words[index + 1]) << 16)


def parse_telemetry_row_a(words: npt.NDArray[np.uint16]) -> TelemetryRowA:
    """Row A from its 80 words (already in host order)."""
    if len(words) < PAYLOAD_WORDS:
        raise ValueError(f"telemetry row A needs {PAYLOAD_WORDS} words, got {len(words)}")
    return TelemetryRowA(
        revision=int(words[0]),
        uptime_ms=_dword(words, 1),
        status=_dword(words, 3),
        frame_counter=_dword(words, 20),
        frame_mean=int(words[22]),
        fpa_temp_ck=int(words[24]),
        housing_temp_ck=int(words[26]),
        fpa_temp_last_ffc_ck=int(words[29]),
        uptime_last_ffc_ms=_dword(words, 30),
    )


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete frame: (120, 160) pixel words, telemetry words (rows A, B, C) if enabled."""

    pixels: npt.NDArray[np.uint16] = field(repr=False)
    telemetry: npt.NDArray[np.uint16] | None = field(default=None, repr=False)
    dropped_before: int = 0

    @property
    def row_a(self) -> TelemetryRowA | None:
        return parse_telemetry_row_a(self.telemetry[:PAYLOAD_WORDS]) if self.telemetry is not None else None


@dataclass
class Counters:
    packets: int = 0
    discards: int = 0
    crc_errors: int = 0
    sequence_errors: int = 0  # a packet number out of order: a packet was lost
    bad_segment_numbers: int = 0  # a segment numbered > 4, or out of order
    invalid_segments: int = 0  # segment number 0: thrown away as the datasheet says
    frames: int = 0
    frames_dropped: int = 0  # partial frames given up
    resyncs: int = 0


class VospiAssembler:
    """Feeds on raw packets and returns complete frames; decides when sync is lost.

    Sync is lost (``needs_resync``) after ``max_bad_packets`` consecutive CRC failures or
    sequence errors, or after ``max_packets_without_segment`` non-discard packets without one
    good segment. The I/O shell then idles chip select for :data:`RESYNC_IDLE_S` and calls
    :meth:`resynced`. Not thread-safe: one reader.
    """

    def __init__(
        self,
        telemetry: Telemetry = Telemetry.OFF,
        check_crc: bool = True,
        max_bad_packets: int = 8,
        max_packets_without_segment: int = 3 * SEGMENTS * 61,
    ) -> None:
        self.telemetry = telemetry
        self.packets_per_segment = (VIDEO_PACKETS + (0 if telemetry is Telemetry.OFF else TELEMETRY_PACKETS)) // 4
        self.check_crc = check_crc
        self.max_bad_packets = max_bad_packets
        self.max_packets_without_segment = max_packets_without_segment
        self.counters = Counters()
        self._buffer = np.zeros((SEGMENTS, self.packets_per_segment, PAYLOAD_WORDS), dtype=np.uint16)
        self._segment = np.zeros((self.packets_per_segment, PAYLOAD_WORDS), dtype=np.uint16)
        self.needs_resync = False
        self._reset_state()

    def _reset_state(self) -> None:
        self._expected_packet = 0
        self._segment_number: int | None = None  # from packet 20 of the segment in progress
        self._next_segment = 1
        self._bad_run = 0
        self._since_segment = 0
        self._dropped_since_frame = 0
        self._in_segment = False

    def resynced(self) -> None:
        """The shell has idled chip select; start again from the next packet 0."""
        if self._next_segment > 1:
            self._dropped_since_frame += 1
            self.counters.frames_dropped += 1
        dropped = self._dropped_since_frame
        self._reset_state()
        self._dropped_since_frame = dropped
        self.needs_resync = False
        self.counters.resyncs += 1

    def feed(self, raw: bytes) -> Frame | None:
        """One 164-byte packet; returns a frame when this packet completes one."""
        if len(raw) != PACKET_BYTES:
            raise ValueError(f"a VoSPI packet is {PACKET_BYTES} bytes, got {len(raw)}")
        c = self.counters
        c.packets += 1
        if raw[0] & 0x0F == 0x0F:
            c.discards += 1
            return None
        if self.needs_resync:
            return None
        if self.check_crc and int.from_bytes(raw[2:4], "big") != packet_crc(raw):
            c.crc_errors += 1
            self._bad_packet()
            return None
        number = int.from_bytes(raw[0:2], "big") & 0x0FFF
        self._since_segment += 1
        if number == 0:
            if self._in_segment:
                c.sequence_errors += 1  # a new segment started before this one finished
            self._in_segment, self._expected_packet, self._segment_number = True, 0, None
        elif not self._in_segment:
            self._check_progress()  # waiting for a packet 0 (after start or an error)
            return None
        if number != self._expected_packet:
            c.sequence_errors += 1
            self._in_segment = False
            self._bad_packet()
            return None
        self._bad_run = 0
        if number == SEGMENT_PACKET:
            self._segment_number = (raw[0] >> 4) & 0x7
        self._segment[number] = np.frombuffer(raw, dtype=">u2", count=PAYLOAD_WORDS, offset=4)
        self._expected_packet += 1
        if self._expected_packet < self.packets_per_segment:
            self._check_progress()
            return None
        self._in_segment = False
        return self._segment_done()

    def _segment_done(self) -> Frame | None:
        c = self.counters
        number = self._segment_number
        self._since_segment = 0
        if number == 0:
            c.invalid_segments += 1
            return None
        if number is None or number > SEGMENTS:
            c.bad_segment_numbers += 1
            self._drop_partial()
            return None
        if number != self._next_segment:
            c.bad_segment_numbers += 1
            self._drop_partial()
            if number != 1:  # a segment 1 restarts the frame; any other waits for one
                return None
        self._buffer[number - 1] = self._segment
        if number < SEGMENTS:
            self._next_segment = number + 1
            return None
        self._next_segment = 1
        c.frames += 1
        frame = self._frame()
        self._dropped_since_frame = 0
        return frame

    def _drop_partial(self) -> None:
        if self._next_segment > 1:
            self.counters.frames_dropped += 1
            self._dropped_since_frame += 1
        self._next_segment = 1

    def _frame(self) -> Frame:
        words = self._buffer.reshape(-1, PAYLOAD_WORDS)
        telemetry = None
        if self.telemetry is Telemetry.HEADER:
            telemetry, words = words[: TELEMETRY_PACKETS - 1].reshape(-1).copy(), words[TELEMETRY_PACKETS:]
        elif self.telemetry is Telemetry.FOOTER:
            telemetry = words[VIDEO_PACKETS : VIDEO_PACKETS + TELEMETRY_PACKETS - 1].reshape(-1).copy()
            words = words[:VIDEO_PACKETS]
        pixels = words.reshape(HEIGHT, WIDTH).copy()
        return Frame(pixels, telemetry, self._dropped_since_frame)

    def _bad_packet(self) -> None:
        self._bad_run += 1
        if self._bad_run >= self.max_bad_packets:
            self._lose_sync()

    def _check_progress(self) -> None:
        if self._since_segment >= self.max_packets_without_segment:
            self._lose_sync()

    def _lose_sync(self) -> None:
        self.needs_resync = True
        self._in_segment = False

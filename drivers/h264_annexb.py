"""H.264 Annex B byte streams, read without a decoder: NAL units, parameter sets, IDR pictures.

Pure functions over bytes, for drivers whose camera encodes H.264 itself (picamera2): the
track's global header is the SPS/PPS the stream carries in-band before each IDR.
"""

from __future__ import annotations

import re

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
START_CODE = b"\x00\x00\x00\x01"
_START = re.compile(b"\x00\x00\x01")


def nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B stream (each without its start code); bytes before the first
    start code are not a NAL unit and are left out. Trailing zero bytes belong to the next start
    code (a 4-byte one), so they are stripped."""
    starts = [m.end() for m in _START.finditer(data)]
    units = []
    for i, begin in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        unit = data[begin:end].rstrip(b"\x00") if i + 1 < len(starts) else data[begin:end]
        if unit:
            units.append(unit)
    return units


def nal_type(unit: bytes) -> int:
    return unit[0] & 0x1F


def parameter_sets(data: bytes) -> bytes | None:
    """The first SPS and the first PPS of ``data`` as an Annex B global header (4-byte start
    codes, as FFmpeg's encoders give it), or None when either is missing."""
    sps = pps = None
    for unit in nal_units(data):
        kind = nal_type(unit)
        if kind == NAL_SPS and sps is None:
            sps = unit
        elif kind == NAL_PPS and pps is None:
            pps = unit
    if sps is None or pps is None:
        return None
    return START_CODE + sps + START_CODE + pps


def has_idr(data: bytes) -> bool:
    """Whether ``data`` holds an IDR slice: a decoder can start here."""
    return any(nal_type(u) == NAL_IDR for u in nal_units(data))

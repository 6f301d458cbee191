"""Constants of evidence format version 1 (see docs/evidence-format.md)."""

from __future__ import annotations

import base64
import re

FORMAT_VERSION = 1
MAGIC = b"BODYCAM\x01"

REC_HEADER = ord("H")
REC_DATA = ord("D")
REC_CHECKPOINT = ord("C")
REC_MANIFEST = ord("M")

RECORD_HEAD_LEN = 5  # type byte + u32 big-endian body length
MAX_RECORD_BODY = 64 * 1024 * 1024
SIGNATURE_LEN = 64
TAG_LEN = 16
NONCE_PREFIX_LEN = 7
KEY_LEN = 32

MIN_CHUNK_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 16 * 1024 * 1024

GENESIS_PREV = "0" * 64

# Domain separation: every signature and every HPKE info starts with one of these.
CTX_MANIFEST = b"bodycam/v1/manifest\x00"
CTX_CHECKPOINT = b"bodycam/v1/checkpoint\x00"
CTX_SEGMENT_KEY = b"bodycam/v1/segment-key\x00"
CTX_SEALED = b"bodycam/v1/sealed-metadata\x00"

SEGMENT_SUFFIX = ".bcs"
PARTIAL_SUFFIX = ".part"

FLAGS = frozenset({"pre-event", "recovered", "stealth", "muted", "clock-unsynced", "background"})
# The flag sets each kind of entry may carry (section 8.5). Events carry none.
SEGMENT_FLAGS = frozenset({"pre-event", "stealth", "muted", "clock-unsynced", "background"})  # any subset
BACKGROUND_FLAG = "background"  # re-sealed from the background ring on headquarters' request (8.9)
RECOVERED_FLAGS = ["clock-unsynced", "recovered"]  # exactly, since salvage flags its clock
LEGACY_RECOVERED_FLAGS = ["recovered"]  # early 0.1.0 builds: accepted with a warning

TIME_SOURCES = frozenset({"gnss", "ntp", "rtc", "unsynced"})

HEADER_MEMBERS = frozenset(
    {"format", "type", "device_id", "boot_id", "segment_id", "suite", "hq_key", "aead", "nonce_prefix",
     "chunk_bytes", "started", "enc"}
)
LEGACY_OPTIONAL_HEADER_MEMBERS = frozenset({"started"})  # early 0.1.0 builds wrote no `started`
STARTED_MEMBERS = frozenset({"mono_ns", "utc_ns", "recording_id"})

EVENT_TYPES = frozenset(
    {
        "boot",
        "shutdown",
        "record-start",
        "record-stop",
        "stealth-on",
        "stealth-off",
        "mute-on",
        "mute-off",
        "clock-step",
        "recovered-after-power-loss",
        "storage-low",
        "storage-ok",
        "storage-full",
        "storage-error",
        "sensor-fault",
        "sensor-recovered",
        "config-changed",
        "mark",
        "sync-alarm",
        "sync-alarm-cleared",
        "live-start",
        "live-stop",
    }
)


def segment_filename(seq: int) -> str:
    return f"{seq:010d}{SEGMENT_SUFFIX}"


_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def b64decode_strict(text: str) -> bytes:
    """Strict base64 (section 3): RFC 4648 section 4 alphabet, "=" padding, no other character,
    and canonical (RFC 4648 section 3.5: the padding bits are zero). Raises ValueError otherwise."""
    if not _BASE64.fullmatch(text):
        raise ValueError("not strict base64 (alphabet, padding or length)")
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64 (non-zero padding bits)")
    return raw


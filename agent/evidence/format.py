"""Constants of evidence format version 1 (see docs/evidence-format.md)."""

from __future__ import annotations

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

FLAGS = frozenset({"pre-event", "recovered", "stealth", "muted", "clock-unsynced"})

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
    }
)


def segment_filename(seq: int) -> str:
    return f"{seq:010d}{SEGMENT_SUFFIX}"

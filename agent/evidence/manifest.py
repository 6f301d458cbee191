"""Manifests: build, sign, check the shape of, and hash the signed record of each chain entry."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from agent.evidence import canonical
from agent.evidence.format import (
    BACKGROUND_FLAG,
    CTX_MANIFEST,
    EVENT_TYPES,
    FLAGS,
    FORMAT_VERSION,
    GENESIS_PREV,
    LEGACY_RECOVERED_FLAGS,
    RECOVERED_FLAGS,
    SEGMENT_FLAGS,
    SIGNATURE_LEN,
    TIME_SOURCES,
    b64decode_strict,
)
from hal.keystore import KeyStore

HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that is malformed: a field missing, of the wrong type, or out of range."""


@dataclass(frozen=True, slots=True)
class SignedManifest:
    """A manifest as it travels: its canonical bytes and the device's signature over them."""

    manifest: dict[str, Any]
    body: bytes
    signature: bytes

    @property
    def hash(self) -> str:
        """The chain hash: SHA-256 of the canonical manifest bytes, hex."""
        return hashlib.sha256(self.body).hexdigest()

    @property
    def seq(self) -> int:
        return int(self.manifest["seq"])

    def record_body(self) -> bytes:
        return self.body + self.signature


def sign_manifest(manifest: dict[str, Any], signer: KeyStore) -> SignedManifest:
    check_manifest(manifest)
    body = canonical.dumps(manifest)
    return SignedManifest(manifest, body, signer.sign(CTX_MANIFEST + body))


def parse_manifest_record(record: bytes) -> SignedManifest:
    """Split a manifest record into bytes and signature, parse and shape-check it (no signature check)."""
    if len(record) <= SIGNATURE_LEN:
        raise ManifestError("manifest record too short")
    body, sig = record[:-SIGNATURE_LEN], record[-SIGNATURE_LEN:]
    try:
        manifest = canonical.loads(body)
    except canonical.CanonicalError as exc:
        raise ManifestError(f"manifest is not canonical JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ManifestError("manifest is not a JSON object")
    check_manifest(manifest)
    return SignedManifest(manifest, body, sig)


def _need(m: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    if key not in m:
        raise ManifestError(f"{where}{key}: missing")
    value = m[key]
    if isinstance(value, bool) and kind is int:
        raise ManifestError(f"{where}{key}: expected int")
    if not isinstance(value, kind):
        raise ManifestError(f"{where}{key}: expected {getattr(kind, '__name__', kind)}")
    return value


def _nonneg(m: dict[str, Any], key: str, where: str = "") -> int:
    value: int = _need(m, key, int, where)
    if value < 0:
        raise ManifestError(f"{where}{key}: negative")
    return value


def _hex(m: dict[str, Any], key: str, where: str = "") -> str:
    value: str = _need(m, key, str, where)
    if not HEX64.match(value):
        raise ManifestError(f"{where}{key}: not a SHA-256 hex digest")
    return value


def _int_or_null(m: dict[str, Any], key: str, where: str = "", minimum: int | None = None) -> None:
    value = m.get(key)
    if value is None:
        return
    if type(value) is not int:
        raise ManifestError(f"{where}{key}: expected int or null")
    if minimum is not None and value < minimum:
        raise ManifestError(f"{where}{key}: negative")


def _check_time(t: dict[str, Any]) -> None:
    for key in ("utc_start_ns", "utc_end_ns", "mono_start_ns", "mono_end_ns", "signed_mono_ns"):
        _nonneg(t, key, "time.")
    if _need(t, "source", str, "time.") not in TIME_SOURCES:
        raise ManifestError(f"time.source: unknown source {t['source']!r} (known: {', '.join(sorted(TIME_SOURCES))})")
    _need(t, "synced", bool, "time.")
    if t["mono_end_ns"] < t["mono_start_ns"]:
        raise ManifestError("time.mono_end_ns: before mono_start_ns")
    _int_or_null(t, "uncertainty_ns", "time.", minimum=0)
    if "gnss_offset_ns" in t:
        _need(t, "gnss_offset_ns", int, "time.")


def _check_flags(m: dict[str, Any], kind: str) -> list[str]:
    flags: list[str] = _need(m, "flags", list)
    if not all(isinstance(f, str) for f in flags):
        raise ManifestError("flags: every flag must be a string")
    unknown = [f for f in flags if f not in FLAGS]
    if unknown:
        raise ManifestError(f"flags: unknown flag(s) {unknown}")
    if flags != sorted(set(flags)):
        raise ManifestError("flags: not sorted and unique")
    if kind == "event" and flags:
        raise ManifestError(f"flags: an event carries no flags, this one has {flags}")
    if kind == "segment" and "recovered" in flags and flags not in (RECOVERED_FLAGS, LEGACY_RECOVERED_FLAGS):
        raise ManifestError(f"flags: a recovered segment is flagged exactly {RECOVERED_FLAGS}, not {flags}")
    if kind == "segment" and "recovered" not in flags and not SEGMENT_FLAGS.issuperset(flags):
        raise ManifestError(f"flags: {flags} is not a segment's flag set")
    return flags


def _check_segment(m: dict[str, Any], flags: list[str]) -> None:
    _need(m, "segment_id", str)
    _need(m, "container", str)
    _need(m, "trigger", str)
    c = _need(m, "ciphertext", dict)
    _hex(c, "sha256", "ciphertext.")
    _hex(c, "header_sha256", "ciphertext.")
    _nonneg(c, "length", "ciphertext.")
    _nonneg(c, "chunks", "ciphertext.")
    _nonneg(c, "checkpoints", "ciphertext.")
    if "recovered" in flags:
        # salvaged after a power loss or a storage fault: the device never knew the plaintext
        if "plaintext" not in m or m["plaintext"] is not None:
            raise ManifestError("plaintext: must be null in a recovered segment")
        r = _need(m, "recovery", dict)
        _nonneg(r, "attested_chunks", "recovery.")
        _int_or_null(r, "attested_mono_ns", "recovery.", minimum=0)
        _nonneg(r, "dropped_tail_bytes", "recovery.")
    else:
        p = _need(m, "plaintext", dict)
        _hex(p, "sha256", "plaintext.")
        _nonneg(p, "length", "plaintext.")
    if BACKGROUND_FLAG in flags:
        b = _need(m, "background", dict)
        _nonneg(b, "ring_seq", "background.")
        _hex(b, "ring_manifest_sha256", "background.")
        _need(b, "request_id", str, "background.")
    for i, track in enumerate(_need(m, "tracks", list)):
        where = f"tracks[{i}]."
        if not isinstance(track, dict):
            raise ManifestError(f"tracks[{i}]: not an object")
        _need(track, "name", str, where)
        _need(track, "kind", str, where)
        _need(track, "codec", str, where)
        _nonneg(track, "frames", where)
        _nonneg(track, "dropped", where)
    for i, mark in enumerate(_need(m, "marks", list)):
        if not isinstance(mark, dict):
            raise ManifestError(f"marks[{i}]: not an object")
        _nonneg(mark, "mono_ns", f"marks[{i}].")


def check_manifest(m: dict[str, Any]) -> None:
    """Raise ManifestError unless ``m`` has every field its type requires."""
    if _need(m, "format", int) != FORMAT_VERSION:
        raise ManifestError(f"format: version {m['format']} is not supported (known: {FORMAT_VERSION})")
    kind = _need(m, "type", str)
    if kind not in ("segment", "event"):
        raise ManifestError(f"type: unknown entry type {kind!r}")
    _need(m, "device_id", str)
    _nonneg(m, "seq")
    _need(m, "boot_id", str)
    _hex(m, "prev")
    _need(m, "firmware", str)
    _hex(m, "config_sha256")
    _check_time(_need(m, "time", dict))
    if "sealed" in m:
        try:
            if not b64decode_strict(_need(m, "sealed", str)):
                raise ValueError("empty")
        except ValueError as exc:
            raise ManifestError(f"sealed: not a non-empty strict base64 string ({exc})") from None
    flags = _check_flags(m, kind)
    if kind == "segment":
        _check_segment(m, flags)
    else:
        event = _need(m, "event", str)
        if event not in EVENT_TYPES:
            raise ManifestError(f"event: unknown event type {event!r}")
        _need(m, "detail", dict)


def base_fields(
    *,
    kind: str,
    device_id: str,
    seq: int,
    boot_id: str,
    prev: str | None,
    firmware: str,
    config_sha256: str,
    time: dict[str, Any],
    flags: list[str] | None = None,
    sealed: str | None = None,
) -> dict[str, Any]:
    """The fields every chain entry carries."""
    m: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "type": kind,
        "device_id": device_id,
        "seq": seq,
        "boot_id": boot_id,
        "prev": prev or GENESIS_PREV,
        "firmware": firmware,
        "config_sha256": config_sha256,
        "time": time,
        "flags": sorted(set(flags or [])),
    }
    if sealed is not None:
        m["sealed"] = sealed
    return m

"""Verifying evidence offline: every file, then the chain; with headquarters' key, the content too.

Trusts only the device public key it is given. Public material alone proves signatures,
ciphertext hashes, chunk structure, checkpoints and the chain; the content key is needed
only to prove that the chunks decrypt and the media decodes.
"""

from __future__ import annotations

import hashlib
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.chain import Entry, Finding, verify_chain
from agent.evidence.decrypt import DecryptError, open_metadata, open_segment
from agent.evidence.format import (
    CTX_CHECKPOINT,
    CTX_MANIFEST,
    FORMAT_VERSION,
    HEADER_MEMBERS,
    LEGACY_OPTIONAL_HEADER_MEMBERS,
    LEGACY_RECOVERED_FLAGS,
    MAGIC,
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    SEGMENT_SUFFIX,
    STARTED_MEMBERS,
    b64decode_strict,
    segment_filename,
)
from agent.evidence.keys import HqPrivateKey, verify_signature
from agent.evidence.manifest import HEX64, ManifestError, SignedManifest, parse_manifest_record
from agent.evidence.sealing import SUITE_P256, SUITE_X25519, WRAPPED_KEY_BYTES
from agent.evidence.segment import Scan, scan

Progress = Callable[[int, int, str], None]


@dataclass
class FileResult:
    path: Path
    signed: SignedManifest | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BackgroundCopy:
    """A segment copied from the unit's background ring on headquarters' request (format 8.9)."""

    seq: int
    ring_seq: int | None
    request_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ring_seq": self.ring_seq, "request_id": self.request_id}


@dataclass
class Report:
    files: int = 0
    segments: int = 0
    events: int = 0
    footage_ns: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    device_id: str | None = None
    clean_end: bool = False
    decrypted: bool = False
    hashes: dict[int, str] = field(default_factory=dict)  # seq -> manifest SHA-256 of each entry in order
    anchored_through: int | None = None  # the highest seq an anchor vouches for, when anchors were given
    background: list[BackgroundCopy] = field(default_factory=list)  # segments flagged background, by seq
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "device_id": self.device_id,
            "files": self.files,
            "segments": self.segments,
            "events": self.events,
            "footage_s": round(self.footage_ns / 1e9, 3),
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "clean_end": self.clean_end,
            # what an OK result proves about completeness: nothing is missing between first_seq
            # and last_seq; the start only from seq 0, the end only from a final shutdown event
            "start_proven": self.first_seq == 0,
            "end_proven": self.clean_end,
            "anchored_through": self.anchored_through,
            "decrypted": self.decrypted,
            "background": [b.as_dict() for b in self.background],
            "problems": [p.as_dict() for p in self.problems],
            "warnings": [w.as_dict() for w in self.warnings],
        }


def find_files(path: Path) -> list[Path]:
    """A data dir (its ``segments/``), a folder of segments, or one file.

    In a folder, every name ending in ``.bcs`` is taken, whatever it is (a directory or a
    dangling link named so is reported by ``check_file``, never skipped), in code point order.
    """
    if not path.is_dir():
        return [path]  # one file; check_file says so if it is not a regular one
    folder = path / "segments" if (path / "segments").is_dir() else path
    return sorted(p for p in folder.iterdir() if p.name.endswith(SEGMENT_SUFFIX))


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be an evidence file (None: it is a regular file, or a link to one)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "is a symbolic link to nothing (dangling), not an evidence file" if path.is_symlink() else None
    except OSError:
        return None  # open() below reports it with its reason
    if stat.S_ISDIR(mode):
        return "is a directory, not an evidence file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a device, socket or pipe), not an evidence file"
    return None


def check_file(path: Path, device_pub: ed25519.Ed25519PublicKey) -> tuple[FileResult, Scan | None]:
    """Everything that public material can prove about one file."""
    result = FileResult(path)
    odd = _not_a_file(path)
    if odd is not None:
        result.problems.append(odd)
        return result, None
    try:
        with path.open("rb") as fh:
            structure = scan(fh)
    except OSError as exc:
        result.problems.append(f"cannot read: {exc.strerror}")
        return result, None
    result.problems.extend(structure.problems)
    if structure.manifest_record is None:
        if not structure.problems:
            result.problems.append("no manifest: the segment was never sealed (or its end was cut off)")
        return result, structure
    try:
        signed = parse_manifest_record(structure.manifest_record)
    except ManifestError as exc:
        result.problems.append(f"manifest: {exc}")
        return result, structure
    if not verify_signature(device_pub, signed.signature, CTX_MANIFEST + signed.body):
        result.problems.append("manifest signature does not verify with the device key (altered, or another device)")
        return result, structure
    result.signed = signed
    m = signed.manifest
    if path.name != segment_filename(signed.seq):
        result.warnings.append(f"file name does not match its seq {signed.seq} (renamed?)")
    if m["type"] == "event":
        if structure.header_body is not None or structure.chunks or structure.checkpoints:
            result.problems.append("event entry carries other records (an event file is the manifest alone)")
        return result, structure
    if m["flags"] == LEGACY_RECOVERED_FLAGS:
        result.warnings.append(
            "recovered segment flagged only 'recovered' (written by an early 0.1.0 build; "
            "now flagged 'clock-unsynced' too): its UTC times were not synchronised"
        )
    _check_segment_body(result, signed, structure, device_pub)
    return result, structure


def _check_segment_body(result: FileResult, signed: SignedManifest, s: Scan, pub: ed25519.Ed25519PublicKey) -> None:
    m = signed.manifest
    c = m["ciphertext"]
    if s.header is None or s.header_body is None:
        result.problems.append("segment has no header")
        return
    for key in ("device_id", "boot_id", "segment_id"):
        if s.header.get(key) != m.get(key):
            result.problems.append(f"header {key} differs from the manifest's")
    result.problems.extend(header_problems(s.header))
    result.warnings.extend(header_warnings(s.header))
    recovered = "recovered" in m["flags"]
    if not s.chunks:
        result.problems.append("segment has no data chunk")
    elif not recovered and s.checkpoints and s.checkpoints[-1].actual_chunks == s.chunks:
        result.problems.append("checkpoint after the final chunk (a sealed segment ends: final chunk, manifest)")
    if hashlib.sha256(s.header_body).hexdigest() != c["header_sha256"]:
        result.problems.append("header hash differs from the manifest's (header altered)")
    if s.manifest_offset != c["length"]:
        result.problems.append(f"ciphertext is {s.manifest_offset} bytes, the manifest says {c['length']}")
    if s.prefix_sha256 != c["sha256"]:
        result.problems.append("ciphertext SHA-256 differs from the signed manifest (content altered)")
    if s.chunks != c["chunks"]:
        result.problems.append(f"{s.chunks} chunks, the manifest says {c['chunks']}")
    if len(s.checkpoints) != c["checkpoints"]:
        result.problems.append(f"{len(s.checkpoints)} checkpoints, the manifest says {c['checkpoints']}")
    for i, cp in enumerate(s.checkpoints):
        if not verify_signature(pub, cp.signature, CTX_CHECKPOINT + cp.body):
            result.problems.append(f"checkpoint {i} signature does not verify")
        elif (
            cp.claimed.get("sha256") != cp.actual_sha256
            or not _same_int(cp.claimed.get("offset"), cp.actual_offset)
            or not _same_int(cp.claimed.get("chunks"), cp.actual_chunks)
            or cp.claimed.get("segment_id") != m["segment_id"]
        ):
            result.problems.append(f"checkpoint {i} does not match the bytes before it")


def _same_int(value: object, expected: int) -> bool:
    return type(value) is int and value == expected


def header_problems(h: dict[str, Any]) -> list[str]:
    """What is wrong with a segment header's members (empty: nothing); see ``header_warnings``."""
    problems = []
    missing = HEADER_MEMBERS - LEGACY_OPTIONAL_HEADER_MEMBERS - h.keys()
    if missing:
        problems.append(f"header lacks {', '.join(sorted(missing))}")
    extra = h.keys() - HEADER_MEMBERS
    if extra:
        problems.append(f"header has unknown member(s) {', '.join(sorted(extra))}")
    if not _same_int(h.get("format"), FORMAT_VERSION):
        problems.append(f"header format {h.get('format')!r} is not supported (known: {FORMAT_VERSION})")
    if h.get("type") != "segment-header":
        problems.append(f"header type {h.get('type')!r} is not a segment header")
    for key in ("device_id", "boot_id", "segment_id"):
        if key in h and not isinstance(h[key], str):
            problems.append(f"header {key} is not a string")
    if "hq_key" in h and not (isinstance(h["hq_key"], str) and HEX64.fullmatch(h["hq_key"])):
        problems.append("header hq_key is not a SHA-256 fingerprint in lowercase hex")
    if "enc" in h and not _enc_ok(h["enc"], h.get("suite")):
        problems.append("header enc is not the strict base64 of one wrapped key for its suite")
    if h.get("aead") != "AES-256-GCM-STREAM":
        problems.append(f"header aead {h.get('aead')!r} is unknown")
    if h.get("suite") not in (SUITE_X25519, SUITE_P256):
        problems.append(f"header suite {h.get('suite')!r} is unknown")
    cb = h.get("chunk_bytes")
    if type(cb) is not int or not MIN_CHUNK_BYTES <= cb <= MAX_CHUNK_BYTES:
        problems.append(f"header chunk_bytes {cb!r} is out of range")
    prefix = h.get("nonce_prefix")
    if not isinstance(prefix, str) or not re.fullmatch(r"[0-9a-f]{14}", prefix):
        problems.append("header nonce_prefix is not 7 bytes of lowercase hex")
    if "started" in h and not _started_ok(h["started"]):
        problems.append("header started is neither {} nor {mono_ns: int, utc_ns: int, recording_id: string or null}")
    return problems


def _started_ok(started: object) -> bool:
    if started == {}:
        return True
    return (
        isinstance(started, dict)
        and started.keys() == STARTED_MEMBERS
        and type(started["mono_ns"]) is int
        and type(started["utc_ns"]) is int
        and (started["recording_id"] is None or isinstance(started["recording_id"], str))
    )


def _enc_ok(enc: object, suite: object) -> bool:
    if not isinstance(enc, str):
        return False
    try:
        wrapped = b64decode_strict(enc)
    except ValueError:
        return False
    return suite not in WRAPPED_KEY_BYTES or len(wrapped) == WRAPPED_KEY_BYTES[suite]


def header_warnings(h: dict[str, Any]) -> list[str]:
    """What an old writer left out of a header that today's writer puts in."""
    missing = LEGACY_OPTIONAL_HEADER_MEMBERS - h.keys()
    return [f"header lacks {key} (written by an early 0.1.0 build)" for key in sorted(missing)]


Decoder = Callable[[bytes, SignedManifest], list[str]]


def _check_content(result: FileResult, hq_key: HqPrivateKey, decode: Decoder) -> None:
    assert result.signed is not None
    m = result.signed.manifest
    try:
        open_metadata(result.signed, hq_key)
    except DecryptError as exc:
        result.problems.append(str(exc))
    if m["type"] != "segment":
        return
    parts: list[bytes] = []
    try:
        opened = open_segment(result.path, hq_key, parts.append, recovered="recovered" in m["flags"])
    except DecryptError as exc:
        result.problems.append(f"cannot decrypt: {exc}")
        return
    result.problems.extend(opened.problems)
    if opened.problems:
        return
    plain = m.get("plaintext")
    if plain is not None and (
        opened.plaintext_sha256 != plain["sha256"] or opened.plaintext_length != plain["length"]
    ):
        result.problems.append("decrypted content differs from the plaintext hash in the manifest")
        return
    result.problems.extend(decode(b"".join(parts), result.signed))


def verify_path(
    path: Path,
    device_pub: ed25519.Ed25519PublicKey,
    hq_key: HqPrivateKey | None = None,
    decode: Decoder | None = None,
    progress: Progress | None = None,
    expected_device_id: str | None = None,
) -> Report:
    files = find_files(path)
    report = Report(files=len(files), decrypted=hq_key is not None)
    entries: list[Entry] = []
    for i, f in enumerate(files):
        if progress is not None:
            progress(i, len(files), f.name)
        result, _ = check_file(f, device_pub)
        if result.signed is not None and hq_key is not None and not result.problems:
            _check_content(result, hq_key, decode or (lambda _b, _m: []))
        seq = result.signed.seq if result.signed is not None else None
        report.problems.extend(Finding(f.name, seq, p) for p in result.problems)
        report.warnings.extend(Finding(f.name, seq, w) for w in result.warnings)
        if result.signed is not None:
            entries.append(Entry(f.name, result.signed.manifest, result.signed.hash))
    if progress is not None:
        progress(len(files), len(files), "chain")
    chain = verify_chain(entries, expected_device_id)
    report.problems.extend(chain.problems)
    report.warnings.extend(chain.warnings)
    report.device_id = chain.device_id
    report.clean_end = chain.clean_end
    for e in chain.ordered:
        report.hashes[e.seq] = e.hash
        if e.kind == "segment":
            report.segments += 1
            t = e.manifest["time"]
            report.footage_ns += t["mono_end_ns"] - t["mono_start_ns"]
            if "background" in e.manifest.get("flags", ()):
                report.background.append(background_copy(e.seq, e.manifest))
        else:
            report.events += 1
    if chain.ordered:
        report.first_seq = chain.ordered[0].seq
        report.last_seq = chain.ordered[-1].seq
    return report


def background_copy(seq: int, manifest: dict[str, Any]) -> BackgroundCopy:
    """What a segment flagged ``background`` says of its origin; members the checks of 8.9
    already refused (a file with problems) read as None rather than raising here."""
    origin = manifest.get("background")
    origin = origin if isinstance(origin, dict) else {}
    ring_seq, request_id = origin.get("ring_seq"), origin.get("request_id")
    return BackgroundCopy(seq, ring_seq if isinstance(ring_seq, int) else None,
                          request_id if isinstance(request_id, str) else None)


def looks_like_evidence(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False

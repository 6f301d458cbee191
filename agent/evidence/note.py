"""C2SP signed notes (Ed25519), transparency-log checkpoints and witness cosignatures.

``c2sp.org/signed-note``: text ending in a newline, a blank line, then lines ``— NAME
base64(key id || signature)``; key id = SHA-256(name || "\\n" || type || public key)[:4].
``c2sp.org/tlog-checkpoint``: the text is ``origin\\nsize\\nbase64(root)\\n`` (and optional
extension lines). ``c2sp.org/tlog-cosignature`` (type 0x04): a witness signs ``cosignature/v1\\n
time T\\n`` followed by the checkpoint text, its signature being ``u64 T || Ed25519 signature``.
Headquarters, its witnesses, the unit and ``bodycam verify`` all use this module, so any
Go-ecosystem verifier (golang.org/x/mod/sumdb/note, transparency-dev) reads what it writes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.merkle import HASH_LEN

SIG_ED25519 = 0x01
SIG_COSIGNATURE = 0x04
MAX_NOTE_BYTES = 64 * 1024
MAX_SIGNATURES = 100
DASH = "\u2014"
_NAME = re.compile(r"^[^\s+]+$")
_DECIMAL = re.compile(r"^(0|[1-9][0-9]{0,18})$")


class NoteError(ValueError):
    """A note, key or checkpoint that is malformed or does not verify; the message says which."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"{what} is not base64") from exc


def raw_public(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, sig_type: int, public: bytes) -> int:
    """The signed-note key id: the first 4 bytes (big-endian) of SHA-256(name || 0x0A || type || key)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def check_name(name: str) -> str:
    if not name or not _NAME.match(name):
        raise NoteError(f"key name {name!r}: must be non-empty, without spaces or '+'")
    return name


@dataclass(frozen=True, slots=True)
class Verifier:
    """A trusted public key under a name: a log's (type 0x01) or a witness's (type 0x04)."""

    name: str
    sig_type: int
    public: ed25519.Ed25519PublicKey

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.sig_type, raw_public(self.public))

    def vkey(self) -> str:
        """The verifier key string ``name+hex(id)+base64(type || key)``."""
        return f"{self.name}+{self.key_id:08x}+{_b64(bytes([self.sig_type]) + raw_public(self.public))}"

    def verify(self, text: bytes, signature: bytes) -> int | None:
        """The signature's timestamp for a cosignature (0 for a plain signature) if it verifies over
        ``text``, else None."""
        if self.sig_type == SIG_COSIGNATURE:
            if len(signature) != 8 + 64:
                return None
            when = int.from_bytes(signature[:8], "big")
            if when > 2**63 - 1:
                return None
            message, sig = cosigned_message(text, when), signature[8:]
        else:
            when, message, sig = 0, text, signature
        try:
            self.public.verify(sig, message)
        except InvalidSignature:
            return None
        return when


def parse_vkey(vkey: str) -> Verifier:
    """A verifier from ``name+hex(id)+base64(type || key)``; only Ed25519 types 0x01 and 0x04."""
    parts = vkey.strip().split("+", 2)  # the base64 key material may hold "+" itself
    if len(parts) != 3:
        raise NoteError("a verifier key is NAME+KEYID+BASE64 (three parts separated by '+')")
    name, hex_id, material = parts
    check_name(name)
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
        raise NoteError("a verifier key's id is 8 lower-case hex digits")
    raw = _unb64(material, "the verifier key's material")
    if len(raw) != 33 or raw[0] not in (SIG_ED25519, SIG_COSIGNATURE):
        raise NoteError("the verifier key is not an Ed25519 (0x01) or cosignature (0x04) key")
    v = Verifier(name, raw[0], ed25519.Ed25519PublicKey.from_public_bytes(raw[1:]))
    if v.key_id != int(hex_id, 16):
        raise NoteError(f"the verifier key's id {hex_id} does not match its name and key")
    return v


@dataclass(frozen=True, slots=True)
class Signer:
    """A private key that signs notes under ``name`` (type 0x01) or cosigns checkpoints (0x04)."""

    name: str
    private: ed25519.Ed25519PrivateKey
    sig_type: int = SIG_ED25519

    @property
    def verifier(self) -> Verifier:
        return Verifier(check_name(self.name), self.sig_type, self.private.public_key())

    def signature_line(self, text: bytes, timestamp_s: int = 0) -> str:
        """``— NAME base64(id || sig)``; a cosignature carries ``timestamp_s`` (POSIX seconds)."""
        if self.sig_type == SIG_COSIGNATURE:
            body = struct.pack(">Q", timestamp_s) + self.private.sign(cosigned_message(text, timestamp_s))
        else:
            body = self.private.sign(text)
        return f"{DASH} {self.name} {_b64(struct.pack('>I', self.verifier.key_id) + body)}\n"


def cosigned_message(text: bytes, timestamp_s: int) -> bytes:
    """What an Ed25519 cosignature signs (c2sp.org/tlog-cosignature, "Ed25519 signed message")."""
    return b"cosignature/v1\ntime " + str(timestamp_s).encode("ascii") + b"\n" + text


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("a note's text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("a note may hold no control characters but newlines")


def sign(text: str, *signers: Signer, timestamp_s: int = 0) -> str:
    """A note of ``text`` signed by each of ``signers``."""
    _check_text(text)
    data = text.encode("utf-8")
    return text + "\n" + "".join(s.signature_line(data, timestamp_s) for s in signers)


@dataclass(frozen=True, slots=True)
class SignatureLine:
    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        return f"{DASH} {self.name} {_b64(struct.pack('>I', self.key_id) + self.signature)}\n"


def split(note: str) -> tuple[str, list[SignatureLine]]:
    """The text and the signature lines of a note, checked for form only."""
    if len(note.encode("utf-8")) > MAX_NOTE_BYTES:
        raise NoteError(f"a note larger than {MAX_NOTE_BYTES} bytes")
    _check_text(note)
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("a note needs a blank line between its text and its signatures")
    text, sig_block = note[: cut + 1], note[cut + 2:]
    lines = sig_block.split("\n")[:-1]
    if not lines:
        raise NoteError("a note without signatures")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"a note with more than {MAX_SIGNATURES} signatures")
    return text, [_signature_line(line) for line in lines]


def _signature_line(line: str) -> SignatureLine:
    prefix = DASH + " "
    if not line.startswith(prefix):
        raise NoteError("a signature line starts with an em dash and a space")
    name, _, sig_b64 = line[len(prefix):].partition(" ")
    check_name(name)
    raw = _unb64(sig_b64, "a signature")
    if len(raw) < 5:
        raise NoteError("a signature is shorter than its key id")
    return SignatureLine(name, struct.unpack(">I", raw[:4])[0], raw[4:])


@dataclass(frozen=True, slots=True)
class Opened:
    """A note whose text verified: the text, the names of the keys that signed it (with a
    cosignature's timestamp, else 0), and every signature line as it came."""

    text: str
    verified: dict[str, int]
    lines: tuple[SignatureLine, ...]


def open_note(note: str, verifiers: list[Verifier]) -> Opened:
    """Check ``note`` with the trusted ``verifiers``: lines of unknown keys are ignored, a known
    key's signature that fails rejects the note, and at least one must verify."""
    text, lines = split(note)
    data = text.encode("utf-8")
    known = {(v.name, v.key_id): v for v in verifiers}
    verified: dict[str, int] = {}
    for sl in lines:
        v = known.get((sl.name, sl.key_id))
        if v is None:
            continue
        when = v.verify(data, sl.signature)
        if when is None:
            raise NoteError(f"the signature of {sl.name} does not verify")
        verified[sl.name] = when
    if not verified:
        raise NoteError("no signature by a trusted key: " + (", ".join(sorted({s.name for s in lines})) or "none"))
    return Opened(text, verified, tuple(lines))


# -- checkpoints -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head (c2sp.org/tlog-checkpoint): origin, size, root and extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """The checkpoint of a note's text (signatures already checked by ``open_note``)."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint has an origin, a size and a root hash, each on its own line")
    origin, size, root_b64, *extensions = lines[:-1]
    if not origin or any(not e for e in extensions):
        raise NoteError("a checkpoint's lines must not be empty")
    if not _DECIMAL.match(size):
        raise NoteError(f"checkpoint size {size!r} is not a decimal without leading zeroes")
    root = _unb64(root_b64, "the checkpoint's root hash")
    if len(root) != HASH_LEN:
        raise NoteError("the checkpoint's root hash is not 32 bytes")
    return Checkpoint(origin, int(size), root, tuple(extensions))


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: str
    verified: dict[str, int]


def open_checkpoint(
    note: str, log: Verifier, witnesses: list[Verifier] | None = None, witness_quorum: int = 0
) -> SignedCheckpoint:
    """A checkpoint signed by ``log`` whose origin is the log key's name, and cosigned by at
    least ``witness_quorum`` of ``witnesses``; NoteError otherwise."""
    opened = open_note(note, [log, *(witnesses or [])])
    if log.name not in opened.verified:
        raise NoteError(f"the checkpoint is not signed by the log key {log.name}")
    cp = parse_checkpoint(opened.text)
    if cp.origin != log.name:
        raise NoteError(f"the checkpoint's origin {cp.origin!r} is not the log {log.name!r}")
    cosigners = sorted(w.name for w in witnesses or [] if w.name in opened.verified)
    if len(cosigners) < witness_quorum:
        raise NoteError(f"the checkpoint carries {len(cosigners)} trusted witness cosignature(s), "
                        f"{witness_quorum} required")
    return SignedCheckpoint(cp, note, opened.verified)


def add_signatures(note: str, lines: str) -> str:
    """``note`` with more signature lines (a witness's answer) appended, duplicates dropped."""
    text, have = split(note)
    extra = split(text + "\n" + lines)[1] if lines.strip() else []
    seen = {(s.name, s.key_id) for s in have}
    merged = list(have) + [s for s in extra if (s.name, s.key_id) not in seen]
    return text + "\n" + "".join(s.line() for s in merged)

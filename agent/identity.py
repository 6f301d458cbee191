"""Before the agent signs anything: is the identity in the data dir the one its evidence was signed with?"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.format import CTX_MANIFEST, PARTIAL_SUFFIX, SEGMENT_SUFFIX
from agent.evidence.keys import KeyFileError, load_device_public, public_der, verify_signature
from agent.evidence.manifest import ManifestError, parse_manifest_record
from agent.evidence.segment import scan
from hal.keystore import KeyStore

KEY_NAME = "device.key"
PUB_NAME = "device.pub"
INDEX_NAME = "index.sqlite"


class IdentityError(Exception):
    """The data dir's identity is missing or does not match its evidence; the message says what to do."""


def _count(folder: Path, *patterns: str) -> int:
    try:
        return sum(1 for pattern in patterns for _ in folder.glob(pattern))
    except OSError:
        return 0


def evidence_traces(data_dir: Path, *, include_pub: bool = True) -> list[str]:
    """What in ``data_dir`` shows that a unit has already lived there (empty for a fresh dir).

    ``include_pub=False`` leaves ``device.pub`` out: a provisioned dir that never recorded.
    """
    traces = []
    entries = _count(data_dir / "segments", f"*{SEGMENT_SUFFIX}", f"*{PARTIAL_SUFFIX}")
    if entries:
        traces.append(f"{entries} evidence file(s) in segments/")
    quarantined = _count(data_dir / "quarantine", "*")
    if quarantined:
        traces.append(f"{quarantined} file(s) in quarantine/")
    if (data_dir / INDEX_NAME).exists():
        traces.append(f"an evidence index ({INDEX_NAME})")
    if include_pub and (data_dir / PUB_NAME).exists():
        traces.append(f"a device public key ({PUB_NAME})")
    return traces


def require_no_evidence(data_dir: Path, doing: str) -> None:
    """Refuse to create an identity where ``device.key`` is missing but evidence is not: new keys would
    orphan it."""
    traces = evidence_traces(data_dir)
    if traces:
        raise IdentityError(
            f"{data_dir / KEY_NAME} is missing but {data_dir} holds {', '.join(traces)}: restore the unit's"
            f" device.key from its backup; {doing} would give this evidence a new identity it was not signed with"
            " (to start afresh, move the data dir aside first)"
        )


def require_no_evidence_to_replace(data_dir: Path) -> None:
    """Refuse to replace an identity whose evidence is still in the data dir."""
    traces = evidence_traces(data_dir, include_pub=False)
    if traces:
        raise IdentityError(
            f"{data_dir} holds {', '.join(traces)} signed with its current identity: a new key would leave"
            " that evidence unverifiable beside it; once headquarters has it, move the data dir aside and"
            " provision a fresh one"
        )


def _newest_sealed_manifest(segments: Path) -> tuple[str, bytes, bytes] | None:
    for path in sorted(segments.glob(f"*{SEGMENT_SUFFIX}"), reverse=True):
        try:
            with path.open("rb") as fh:
                found = scan(fh)
            if found.manifest_record is None:
                continue
            signed = parse_manifest_record(found.manifest_record)
        except (OSError, ManifestError):
            continue  # recovery names unreadable files; the identity is judged on a readable one
        return path.name, signed.body, signed.signature
    return None


def check_identity(data_dir: Path, keystore: KeyStore) -> None:
    """Refuse to run with a device key that is not the one this data dir's evidence was signed with.

    ``device.pub`` must hold the key's public half (it is what verifiers use), and the newest
    readable sealed entry must verify with it.
    """
    public = ed25519.Ed25519PublicKey.from_public_bytes(keystore.public_key_raw())
    pub_path = data_dir / PUB_NAME
    if pub_path.exists():
        try:
            stored = load_device_public(pub_path)
        except KeyFileError as exc:
            raise IdentityError(f"{exc}: restore {PUB_NAME} from the unit's backup or enrolment record") from None
        if public_der(stored) != public_der(public):
            raise IdentityError(
                f"{pub_path} is not the public half of {data_dir / KEY_NAME}: one of them was replaced;"
                " restore the pair the unit was provisioned with"
            )
    newest = _newest_sealed_manifest(data_dir / "segments")
    if newest is None:
        return
    name, body, signature = newest
    if not verify_signature(public, signature, CTX_MANIFEST + body):
        raise IdentityError(
            f"{data_dir / KEY_NAME} did not sign this data dir's evidence (segments/{name}): the key was"
            " replaced; restore the unit's original device.key, or move the data dir aside to start afresh"
        )

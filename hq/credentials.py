"""C2PA content credentials on a court export's MP4s (docs/court-export.md, "Content credentials").

Headquarters signs with its export key under a chain it issues itself: ``keys/export-ca.pem``
(a root: CA, path length 0, keyCertSign and cRLSign) and ``keys/export.pem`` (the end entity: not a
CA, digitalSignature only, extended key usage id-kp-documentSigning, RFC 9336), both ECDSA P-256,
made on the first export that needs them (``ensure_credentials``); the private keys are 0600. The
C2PA certificate profile wants exactly this: an end entity that is not self-signed, with a key
usage for signatures and an EKU from its list. Signing is c2pa-python (``Builder``), imported
lazily: the ``hq`` extra.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from agent.evidence.format import segment_filename
from agent.evidence.keys import write_private_pem, write_public_pem
from agent.evidence.manifest import parse_manifest_record
from agent.evidence.segment import scan
from hq.keygen import make_ca

CA_KEY, CA_CERT = "export-ca.key", "export-ca.pem"
SIGNER_KEY, SIGNER_CERT = "export.key", "export.pem"
SIGNER_DAYS = 825
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")  # id-kp-documentSigning, RFC 9336
ASSERTION = "org.bodycam.evidence"
CAPTURE = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"


class CredentialsError(Exception):
    """Content credentials that cannot be issued or signed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ExportSigner:
    """Headquarters' export key and its certificate chain (end entity first, root last)."""

    key_pem: bytes
    cert_pem: bytes
    root_pem: bytes


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def issue_signer(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, now: datetime.datetime,
                 common_name: str = "bodycam headquarters court export") -> tuple[ec.EllipticCurvePrivateKey,
                                                                                 x509.Certificate]:
    """An end-entity certificate for signing C2PA manifests, issued by ``ca_cert``."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SIGNER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def ensure_credentials(keys: Path, now: datetime.datetime) -> ExportSigner:
    """The export key and chain in ``keys``, issued there first if missing (or expired)."""
    try:
        if not (keys / CA_KEY).is_file():
            ca_key, ca_cert = make_ca(now, "bodycam headquarters court export CA")
            write_private_pem(keys / CA_KEY, _private_pem(ca_key))
            write_public_pem(keys / CA_CERT, _pem(ca_cert))
            for stale in (SIGNER_KEY, SIGNER_CERT):
                (keys / stale).unlink(missing_ok=True)
        root_pem = (keys / CA_CERT).read_bytes()
        fresh = (keys / SIGNER_CERT).is_file() and x509.load_pem_x509_certificate(
            (keys / SIGNER_CERT).read_bytes()).not_valid_after_utc > now + datetime.timedelta(days=1)
        if not fresh or not (keys / SIGNER_KEY).is_file():
            loaded = serialization.load_pem_private_key((keys / CA_KEY).read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise CredentialsError(f"{keys / CA_KEY} is not an ECDSA key")
            key, cert = issue_signer(loaded, x509.load_pem_x509_certificate(root_pem), now)
            write_private_pem(keys / SIGNER_KEY, _private_pem(key), overwrite=True)
            write_public_pem(keys / SIGNER_CERT, _pem(cert))
        return ExportSigner((keys / SIGNER_KEY).read_bytes(), (keys / SIGNER_CERT).read_bytes(), root_pem)
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"the court export's signing key in {keys}: {exc}") from exc


def manifest_definition(title: str, recorded_utc: str, evidence: dict[str, Any], action: str) -> dict[str, Any]:
    """The C2PA manifest of one MP4: what was done (a capture by the unit, then ``action`` at
    headquarters) and the evidence assertion binding the originals."""
    return {
        "claim_generator_info": [{"name": "bodycam-hq", "version": "0.1.0"}],
        "title": title,
        "format": "video/mp4",
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [
                {"action": "c2pa.created", "digitalSourceType": CAPTURE, "when": recorded_utc,
                 "softwareAgent": {"name": "bodycam unit"}},
                {"action": action, "softwareAgent": {"name": "bodycam-hq court export"}},
            ]}},
            {"label": ASSERTION, "data": evidence},
        ],
    }


def sign_mp4(path: Path, signer: ExportSigner, definition: dict[str, Any]) -> None:
    """Embed content credentials into the MP4 at ``path`` (rewritten through a temporary file)."""
    try:
        import c2pa
    except ImportError as exc:
        raise CredentialsError("content credentials need c2pa-python: pip install 'bodycam[hq]'") from exc
    tmp = path.with_name(path.name + ".c2pa")
    try:
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, signer.cert_pem, signer.key_pem, None)
        with c2pa.Signer.from_info(info) as c2signer, c2pa.Builder(json.dumps(definition)) as builder, \
                path.open("rb") as src, tmp.open("w+b") as dst:
            builder.sign(c2signer, "video/mp4", src, dst)
        os.replace(tmp, path)
    except c2pa.C2paError as exc:
        tmp.unlink(missing_ok=True)
        raise CredentialsError(f"{path.name}: signing its content credentials: {exc}") from exc


def evidence_assertion(device_dir: Path, record: dict[str, Any], receipts: dict[int, bytes | None],
                       device_key_sha256: str, copy_file: str, kind: str) -> dict[str, Any]:
    """What the content credentials of ``copy_file`` bind: per original segment its manifest hash,
    the plaintext hash and signature the unit made, and headquarters' receipt for it."""
    segments = []
    for s in record["segments"]:
        seq = int(s["seq"])
        with (device_dir / segment_filename(seq)).open("rb") as fh:
            found = scan(fh)
        if found.manifest_record is None:
            raise CredentialsError(f"seq {seq} has no manifest")
        signed = parse_manifest_record(found.manifest_record)
        receipt = receipts.get(seq)
        segments.append({"seq": seq, "manifest_sha256": signed.hash, "plaintext_sha256": s["plaintext_sha256"],
                         "unit_signature": base64.b64encode(signed.signature).decode(),
                         "receipt": None if receipt is None else base64.b64encode(receipt).decode()})
    return {"device_id": record["device_id"], "recording_id": record["recording_id"],
            "device_key_sha256": device_key_sha256, "file": copy_file, "kind": kind,
            "camera_packets": record["camera_packets"], "timecode": record["timecode"], "clock": record["clock"],
            "segments": segments}

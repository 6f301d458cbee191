"""``bodycam-hq keygen``: headquarters' keys, its own CA and the service's TLS certificate.

Files (docs/sync-protocol.md, "Keys and trust"): ``hq.key`` (HPKE), ``receipt.key`` (Ed25519),
``hq.pub`` (both public keys, PEM), ``ca.key``/``ca.pem`` (ECDSA P-256, 10 years) and
``server.key``/``server.pem`` (for localhost, 127.0.0.1, ::1 and any extra names). Private keys
are written 0600 and never printed.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.evidence.keys import (
    KeyFileError,
    fingerprint,
    generate_hq_key,
    generate_receipt_key,
    load_hq_public,
    public_der,
    write_hq_pub,
    write_private_pem,
    write_public_pem,
)

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest validity mainstream TLS clients accept for a server certificate
DEFAULT_SANS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class KeygenResult:
    hq_fingerprint: str
    receipt_fingerprint: str
    ca_fingerprint: str
    sans: tuple[str, ...]


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_ca(now: datetime.datetime, common_name: str = "bodycam headquarters CA"
            ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, sans: tuple[str, ...], now: datetime.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in sans]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def keygen(
    out: Path, profile: str = "default", extra_sans: tuple[str, ...] = (), overwrite: bool = False
) -> KeygenResult:
    """Create every headquarters key file in ``out`` (0700); raise KeyFileError on refusal."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    if not overwrite:
        existing = [n for n in ("hq.key", "receipt.key", "ca.key", "server.key") if (out / n).exists()]
        if existing:
            raise KeyFileError(f"{out} already holds {', '.join(existing)}; refusing to overwrite private keys")
    hq_fp = generate_hq_key(out / "hq.key", out / "hq.pub", profile=profile, overwrite=overwrite)
    receipt_pub = generate_receipt_key(out / "receipt.key", overwrite=overwrite)
    write_hq_pub(out / "hq.pub", load_hq_public(out / "hq.pub"), receipt_pub)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = make_ca(now)
    sans = tuple(dict.fromkeys((*DEFAULT_SANS, *extra_sans)))
    server_key, server_cert = make_server_cert(ca_key, ca_cert, sans, now)
    write_private_pem(out / "ca.key", _private_pem(ca_key), overwrite)
    write_public_pem(out / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))
    write_private_pem(out / "server.key", _private_pem(server_key), overwrite)
    write_public_pem(out / "server.pem", server_cert.public_bytes(serialization.Encoding.PEM))
    return KeygenResult(
        hq_fingerprint=hq_fp,
        receipt_fingerprint=fingerprint(public_der(receipt_pub)),
        ca_fingerprint=ca_cert.fingerprint(hashes.SHA256()).hex(),
        sans=sans,
    )

"""Headquarters' court export signing chain: the C2PA certificate profile, key modes, reuse and renewal."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from hq.credentials import DOCUMENT_SIGNING, ensure_credentials

NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


def test_the_export_chain_follows_the_c2pa_certificate_profile(tmp_path: Path) -> None:
    signer = ensure_credentials(tmp_path, NOW)
    cert = x509.load_pem_x509_certificate(signer.cert_pem)
    root = x509.load_pem_x509_certificate(signer.root_pem)
    assert cert.issuer == root.subject and cert.subject != cert.issuer  # not self-signed
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert DOCUMENT_SIGNING in ekus and ExtendedKeyUsageOID.EMAIL_PROTECTION in ekus
    assert ExtendedKeyUsageOID.SERVER_AUTH not in ekus
    root_key = root.public_key()
    assert isinstance(root_key, ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    for name in ("export.key", "export-ca.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_the_signer_is_kept_then_renewed_before_it_expires(tmp_path: Path) -> None:
    first = ensure_credentials(tmp_path, NOW)
    assert ensure_credentials(tmp_path, NOW + datetime.timedelta(days=30)) == first
    later = ensure_credentials(tmp_path, NOW + datetime.timedelta(days=825))
    assert later.cert_pem != first.cert_pem and later.root_pem == first.root_pem
    assert x509.load_pem_x509_certificate(later.cert_pem).not_valid_after_utc > NOW + datetime.timedelta(days=826)

"""``bodycam-hq`` commands: keygen files and certificates, enrolment, listing, export rules, listen checks."""

from __future__ import annotations

import contextlib
import json
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from agent.evidence.keys import KeyFileError, load_hq_public, load_receipt_private, load_receipt_public, public_pem
from hq.cli import main
from hq.export import ExportError, parse_time
from hq.index import SqliteIndex
from hq.records import Evidence
from hq.serve import ListenError, check_listen, parse_listen
from tests.evidence_util import ChainBuilder

T0_NS = 1_790_000_000_000_000_000


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keygen_writes_every_file_with_its_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "keys"
    assert main(["keygen", "--out", str(out), "--san", "hq.example", "--san", "10.0.0.5"]) == 0
    for name in ("hq.key", "receipt.key", "ca.key", "server.key"):
        assert mode(out / name) == 0o600, name
    for name in ("hq.pub", "ca.pem", "server.pem"):
        assert mode(out / name) == 0o644, name
    assert mode(out) == 0o700
    printed = capsys.readouterr().out
    assert "PRIVATE KEY" not in printed
    # hq.pub: the HPKE key first (what units seal to), then the receipt key.
    assert isinstance(load_hq_public(out / "hq.pub"), x25519.X25519PublicKey)
    receipt_pub = load_receipt_public(out / "hq.pub")
    assert receipt_pub.public_bytes_raw() == load_receipt_private(out / "receipt.key").public_key().public_bytes_raw()
    cert = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "hq.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1", "10.0.0.5"]
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650
    cert.verify_directly_issued_by(ca)


def test_the_server_certificate_passes_a_strict_tls_client_check(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    assert main(["keygen", "--out", str(out)]) == 0
    client = ssl.create_default_context(cafile=str(out / "ca.pem"))
    client.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(out / "server.pem"), str(out / "server.key"))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for end in (c, s):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    c.do_handshake()
    assert c.version() in ("TLSv1.2", "TLSv1.3")


def test_keygen_fips_profile_and_refusal_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    assert main(["keygen", "--out", str(out), "--profile", "fips"]) == 0
    assert isinstance(load_hq_public(out / "hq.pub"), ec.EllipticCurvePublicKey)
    assert isinstance(load_receipt_public(out / "hq.pub"), ed25519.Ed25519PublicKey)
    before = (out / "hq.key").read_bytes()
    assert main(["keygen", "--out", str(out)]) == 1
    assert (out / "hq.key").read_bytes() == before
    assert main(["keygen", "--data-dir", str(tmp_path / "H")]) == 0
    assert (tmp_path / "H" / "keys" / "receipt.key").is_file()


def test_an_hq_pub_without_a_receipt_key_says_so(tmp_path: Path) -> None:
    old = tmp_path / "hq.pub"
    old.write_bytes(public_pem(x25519.X25519PrivateKey.generate().public_key()))
    assert isinstance(load_hq_public(old), x25519.X25519PublicKey)
    with pytest.raises(KeyFileError, match="no receipt key"):
        load_receipt_public(old)


def test_enrol_list_revoke_and_export_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "H")
    unit = ChainBuilder(tmp_path / "unit", device_id="unit-9")
    pub = unit.write_device_pub(tmp_path / "device.pub")
    assert main(["keygen", "--data-dir", data]) == 0  # enrol refuses a data dir that was never set up
    assert main(["enroll", "--data-dir", data, "--device-id", "unit-9", "--device-pub", str(pub)]) == 0
    assert main(["enroll", "--data-dir", data, "--device-id", "unit-9", "--device-pub", str(pub)]) == 0  # idempotent
    assert main(["enroll", "--data-dir", data, "--device-id", "unit-10", "--device-pub", str(pub)]) == 1  # same key
    assert main(["enroll", "--data-dir", data, "--device-id", "../x", "--device-pub", str(pub)]) == 2
    capsys.readouterr()
    assert main(["evidence", "list", "--data-dir", data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["export", "--data-dir", data, "--device", "unit-9", "--out", str(tmp_path / "e")]) == 1
    assert main(["revoke", "--data-dir", data, "--device-id", "unit-9"]) == 0
    assert main(["revoke", "--data-dir", data, "--device-id", "nobody"]) == 1
    with SqliteIndex(tmp_path / "H" / "index.sqlite") as index:
        outcomes = [(a.event_type, a.outcome) for a in index.audit_log()]
    assert outcomes == [
        ("enroll", "ok"),
        ("enroll", "refused"),
        ("evidence-list", "ok"),
        ("export", "refused"),
        ("revoke", "ok"),
        ("revoke", "refused"),
    ]


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("127.0.0.1", ":80", "host:99999", "host:x"):
        with pytest.raises(ListenError):
            parse_listen(bad)
    for host in ("127.0.0.1", "::1", "localhost"):
        check_listen(host, allow_remote=False)
    for host in ("0.0.0.0", "::", "192.0.2.7"):
        with pytest.raises(ListenError, match="loopback"):
            check_listen(host, allow_remote=False)
    check_listen("0.0.0.0", allow_remote=True)


def test_export_times() -> None:
    assert parse_time("1790000000000000000") == 1_790_000_000_000_000_000
    assert parse_time("2026-09-21T10:00:00Z") == parse_time("2026-09-21T10:00:00") == 1_789_984_800 * 10**9
    assert parse_time("2026-09-21T12:00:00.5+02:00") == 1_789_984_800 * 10**9 + 500_000_000
    with pytest.raises(ExportError):
        parse_time("yesterday")


def test_evidence_list_shows_flags_and_lists_background_copies_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "H")
    pub = ChainBuilder(tmp_path / "unit", device_id="unit-9").write_device_pub(tmp_path / "device.pub")
    assert main(["keygen", "--data-dir", data]) == 0
    assert main(["enroll", "--data-dir", data, "--device-id", "unit-9", "--device-pub", str(pub)]) == 0
    copied = {"flags": ["background", "muted"], "trigger": "background",
              "background": {"ring_seq": 4, "ring_manifest_sha256": "33" * 32, "request_id": "ab" * 16}}
    with SqliteIndex(tmp_path / "H" / "index.sqlite") as index:
        for seq, manifest in enumerate([{"flags": ["pre-event"]}, copied]):
            index.add_evidence(Evidence("unit-9", seq, "segment", f"{seq + 1:064x}", "00" * 32, "22" * 32, 10,
                                        T0_NS, T0_NS + 1, T0_NS, "verified", f"unit-9/{seq}", f"{seq:032x}",
                                        manifest=json.dumps(manifest)))
    capsys.readouterr()
    assert main(["evidence", "list", "--data-dir", data, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["seq"], r["flags"], r["background_request"]) for r in rows] == [
        (0, ["pre-event"], None), (1, ["background", "muted"], "ab" * 16)]
    assert main(["evidence", "list", "--data-dir", data, "--background"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["device", "seq", "kind", "flags"]
    assert [line.split()[:4] for line in lines] == [["unit-9", "1", "segment", "background,muted"]]
    with SqliteIndex(tmp_path / "H" / "index.sqlite") as index:
        listed = [a for a in index.audit_log() if a.event_type == "evidence-list"]
    assert [a.detail["background_only"] for a in listed] == [False, True]

"""``bodycam-hq`` for a newcomer: quiet by default, one-line errors naming the file or value and
what to do, no accidental new headquarters, plaintext owner-only, technician certificates."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.config import ConsoleConfig
from agent.console.auth import raw_public
from agent.console.service import load_trust
from hq.cli import main
from tests.evidence_util import ChainBuilder


def hq(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hq.cli", *argv], capture_output=True, text=True, check=False)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_commands_are_quiet_unless_asked(tmp_path: Path) -> None:
    data = tmp_path / "H"
    assert hq("keygen", "--data-dir", str(data)).returncode == 0
    quiet = hq("evidence", "list", "--data-dir", str(data))
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = hq("-v", "evidence", "list", "--data-dir", str(data))
    assert "INFO hq.audit" in loud.stderr


@pytest.mark.parametrize("argv", [["enroll", "--device-id", "u-1", "--device-pub", "device.pub"],
                                  ["evidence", "list"], ["revoke", "--device-id", "u-1"],
                                  ["export", "--device-id", "u-1", "--out", "court"]])
def test_a_mistyped_data_dir_is_refused_not_made_into_a_new_headquarters(
        tmp_path: Path, argv: list[str]) -> None:
    typo = tmp_path / "HQ-typo"
    done = hq(*argv[:1], *(["list"] if argv[0] == "evidence" else []), "--data-dir", str(typo),
              *argv[2 if argv[0] == "evidence" else 1:])
    line = one_line(done.stderr)
    assert done.returncode == 2 and str(typo) in line and f"bodycam-hq keygen --data-dir {typo}" in line
    assert not typo.exists()


def test_serve_names_the_missing_key_file_and_what_to_run(tmp_path: Path) -> None:
    data = tmp_path / "H"
    done = hq("serve", "--data-dir", str(data), "--listen", "127.0.0.1:0")
    line = one_line(done.stderr)
    assert done.returncode == 2 and str(data / "keys" / "server.pem") in line and "bodycam-hq keygen" in line
    assert "[Errno" not in line


def test_serve_on_an_address_in_use_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "H"
    assert main(["keygen", "--data-dir", str(data)]) == 0
    capsys.readouterr()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        listen = f"127.0.0.1:{busy.getsockname()[1]}"
        assert main(["serve", "--data-dir", str(data), "--listen", listen]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{listen} is already in use" in line and "--listen HOST:PORT" in line and "Errno" not in line


def test_old_flag_spellings_work_with_a_deprecation_note(tmp_path: Path) -> None:
    data = tmp_path / "H"
    assert hq("keygen", "--data-dir", str(data)).returncode == 0
    done = hq("evidence", "list", "--data-dir", str(data), "--device", "u-1")
    assert done.returncode == 0 and done.stderr.strip() == "bodycam-hq evidence list: --device is deprecated, " \
                                                           "use --device-id"


def test_decrypt_writes_plaintext_owner_only_and_a_public_key_is_named_as_such(tmp_path: Path) -> None:
    b = ChainBuilder(tmp_path / "segments")
    paths = b.incident(segments=1)
    key = tmp_path / "hq.key"
    key.write_bytes(b.hq_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key.chmod(0o600)
    out = tmp_path / "plain"
    done = hq("decrypt", *map(str, paths), "--hq-key", str(key), "--out", str(out))
    assert done.returncode == 0, done.stderr
    written = sorted(out.iterdir())
    assert any(p.suffix == ".mkv" for p in written) and any(p.suffix == ".json" for p in written)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in written), [oct(p.stat().st_mode) for p in written]
    pub = tmp_path / "hq.pub"
    pub.write_bytes(b.hq_public.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo))
    pub.chmod(0o644)
    done = hq("decrypt", str(paths[0]), "--key", str(pub), "--out", str(out))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines[0].endswith("--key is deprecated, use --hq-key"), done.stderr
    assert f"{pub} is a public key" in lines[1] and "chmod" not in lines[1]


def test_a_technician_certificate_issued_by_headquarters_opens_the_named_unit(tmp_path: Path) -> None:
    data = tmp_path / "H"
    assert hq("keygen", "--data-dir", str(data)).returncode == 0
    done = hq("technician", "ca", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((data / "keys" / "technician-ca.key").stat().st_mode) == 0o600
    alice = ed25519.Ed25519PrivateKey.generate()
    pub = tmp_path / "alice.key.pub"
    pub.write_bytes(alice.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    done = hq("technician", "issue", "--data-dir", str(data), "--name", "alice", "--technician-pub", str(pub),
              "--device-id", "unit-0042", "--days", "7")
    assert done.returncode == 0, done.stderr
    cert = (tmp_path / "alice.key.cert").read_text().strip()
    assert "until" in done.stdout and "1 unit (unit-0042)" in done.stdout
    # the unit's side: its console trusts headquarters' technician CA from its data dir
    unit = tmp_path / "unit"
    unit.mkdir()
    (unit / "technician-ca.pub").write_bytes((data / "keys" / "technician-ca.pub").read_bytes())
    cfg = ConsoleConfig(technician_ca="technician-ca.pub")
    technician, _ = load_trust(cfg, unit, "unit-0042").resolve(raw_public(alice.public_key()), cert, time.time_ns())
    assert technician.name == "alice" and technician.via == "certificate"
    with pytest.raises(Exception, match="does not name unit"):
        load_trust(cfg, unit, "unit-0043").resolve(raw_public(alice.public_key()), cert, time.time_ns())
    # a private key sent by mistake is refused, and never read into a certificate
    priv = tmp_path / "bob.key"
    priv.write_bytes(alice.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    done = hq("technician", "issue", "--data-dir", str(data), "--name", "bob", "--technician-pub", str(priv),
              "--device-id", "unit-0042")
    assert done.returncode == 2 and "is a private key" in one_line(done.stderr)


def test_a_bad_store_url_is_one_line_saying_what_to_write(tmp_path: Path) -> None:
    data = tmp_path / "H"
    assert hq("keygen", "--data-dir", str(data)).returncode == 0
    done = hq("serve", "--data-dir", str(data), "--listen", "127.0.0.1:0", "--store-url", "s3://AK:pw123@evidence")
    line = one_line(done.stderr)
    assert done.returncode == 2 and "never carries credentials" in line and "pw123" not in line
    done = hq("export", "--data-dir", str(data), "--device-id", "u-1", "--out", str(tmp_path / "court"),
              "--store-url", "s3://evidence?retention_days=0")
    line = one_line(done.stderr)
    assert done.returncode == 1 and "retention_days='0'" in line


def test_serve_refuses_a_basemap_it_cannot_read_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "H"
    assert hq("keygen", "--data-dir", str(data)).returncode == 0
    junk = tmp_path / "city.mbtiles"
    junk.write_bytes(b"not a database" * 100)
    done = hq("serve", "--data-dir", str(data), "--listen", "127.0.0.1:0", "--basemap", str(junk))
    line = one_line(done.stderr)
    assert done.returncode == 2 and str(junk) in line and "not an MBTiles file" in line
    done = hq("serve", "--data-dir", str(data), "--listen", "127.0.0.1:0", "--no-contact-s", "0")
    assert done.returncode == 2 and "--no-contact-s" in done.stderr and "give 1 to 604800" in done.stderr

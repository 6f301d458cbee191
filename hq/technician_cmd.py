"""``bodycam-hq technician``: headquarters' technician CA, and certificates that let a technician's
key log in to named units' serial consoles (the format is ``agent.console.auth``'s)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from agent.cliargs import device_id
from agent.console.auth import issue_certificate, key_fingerprint, parse_public_pems
from agent.diag import DiagError, generate_technician_key, load_technician_key
from agent.humanize import plural, utc
from hq.app import open_index
from hq.audit import Auditor
from hq.cmdutil import actor

CA_KEY = "technician-ca.key"
CA_PUB = "technician-ca.pub"
DEFAULT_DAYS = 30
NS_PER_DAY = 86_400 * 1_000_000_000


def _fail(command: str, message: str, code: int = 2) -> int:
    print(f"bodycam-hq technician {command}: {message}", file=sys.stderr)
    return code


def cmd_ca(args: argparse.Namespace) -> int:
    key_path = args.data_dir / "keys" / CA_KEY
    if key_path.exists():
        return _fail("ca", f"{key_path} exists: headquarters already has a technician CA (certificates it "
                     "signed stay valid only while it is kept)", 1)
    fp = generate_technician_key(key_path, key_path.with_name(CA_PUB))
    print(f"technician CA written to {key_path} (0600: keep it offline) and {key_path.with_name(CA_PUB)}")
    print(f"CA key SHA-256 {fp}")
    print(f'put {CA_PUB} in each unit\'s data dir and set [console] technician_ca = "{CA_PUB}"')
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    ca_path: Path = args.ca_key or args.data_dir / "keys" / CA_KEY
    if not ca_path.exists():
        return _fail("issue", f"{ca_path} does not exist: create headquarters' technician CA first with "
                     f"`bodycam-hq technician ca --data-dir {args.data_dir}`")
    try:
        ca = load_technician_key(ca_path)
    except DiagError as exc:
        return _fail("issue", str(exc).replace("--key", "--ca-key"))
    try:
        data = args.technician_pub.read_bytes()
    except OSError as exc:
        return _fail("issue", f"reading {args.technician_pub}: {exc.strerror}")
    if b"PRIVATE KEY" in data:
        return _fail("issue", f"{args.technician_pub} is a private key: ask the technician for the .pub file "
                     "(bodycam diag --keygen writes it); a private key never leaves its owner")
    try:
        public = parse_public_pems(data)[0]
    except ValueError as exc:
        return _fail("issue", f"{args.technician_pub}: {exc} (expected the technician's Ed25519 .pub file)")
    out: Path = args.out or _default_out(args.technician_pub)
    now_ns = time.time_ns()
    not_after = now_ns + int(args.days * NS_PER_DAY)
    try:
        cert = issue_certificate(ca, technician=args.name, public_key=public, devices=args.device_id,
                                 not_before_utc_ns=now_ns, not_after_utc_ns=not_after)
    except ValueError as exc:
        return _fail("issue", str(exc))
    out.write_bytes(cert + b"\n")
    fp = key_fingerprint(public)

    with open_index(args.data_dir, args.database_url) as index:
        Auditor(index, "hq-cli", time.time_ns).record(
            "technician-issue", actor(), args.name, "ok", key_sha256=fp, devices=sorted(set(args.device_id)),
            not_after_utc_ns=not_after)
    print(f"certificate for {args.name} (key SHA-256 {fp[:16]}...) written to {out}")
    print(f"opens {plural(len(set(args.device_id)), 'unit')} ({', '.join(sorted(set(args.device_id)))}) "
          f"until {utc(not_after)}")
    print("the technician keeps it beside their key as KEY.cert (bodycam diag --key KEY finds it) or passes --cert")
    return 0


def _default_out(pub: Path) -> Path:
    """``alice.key.pub`` -> ``alice.key.cert``: where ``bodycam diag --key alice.key`` looks."""
    return pub.with_suffix(".cert") if pub.suffix == ".pub" else pub.with_name(pub.name + ".cert")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], data: argparse.ArgumentParser) -> None:
    p = sub.add_parser("technician", help="technician CA and console certificates",
                       description="Certificates that let a technician's key log in to named units' consoles.")
    tsub = p.add_subparsers(dest="technician_command", required=True, metavar="COMMAND")
    q = tsub.add_parser("ca", parents=[data], help=f"create headquarters' technician CA (keys/{CA_KEY}, {CA_PUB})")
    q.set_defaults(func=cmd_ca)
    q = tsub.add_parser("issue", parents=[data], help="issue a certificate for a technician's public key",
                        description="Issue a certificate letting a technician's key log in to the units named "
                        "with --device-id, for --days days. Exit codes: 0 issued; 2 bad usage or key file.")
    q.add_argument("--name", required=True, help="the technician's name, as the audit log shows it (alice)")
    q.add_argument("--technician-pub", type=Path, required=True,
                   help="the technician's public key (KEY.pub from bodycam diag --keygen)")
    q.add_argument("--device-id", type=device_id, action="append", required=True,
                   help="a unit the certificate opens (repeatable; no wildcard)")
    q.add_argument("--days", type=float, default=DEFAULT_DAYS, help=f"validity in days (default {DEFAULT_DAYS})")
    q.add_argument("--out", type=Path, help="where to write it (default: beside the .pub, as KEY.cert)")
    q.add_argument("--ca-key", type=Path, help=f"the CA's private key (default: DATA_DIR/keys/{CA_KEY})")
    q.set_defaults(func=cmd_issue)

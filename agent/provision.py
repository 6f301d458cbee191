"""``bodycam provision``: a device identity, headquarters' public key and a config in a data dir."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from agent.cliargs import DEVICE_ID_RULE, device_id
from agent.config import Config, ConfigError, default_config, parse_config, render_config
from agent.dirlock import DirLock, DirLockError
from agent.evidence.keys import KeyFileError, generate_device_key, load_hq_public, load_receipt_public
from agent.fserrors import explain
from agent.identity import KEY_NAME, PUB_NAME, IdentityError, require_no_evidence, require_no_evidence_to_replace

CONFIG_NAME = "bodycam.toml"
HQ_CA_NAME = "hq-ca.pem"


class ProvisionError(Exception):
    pass


def _check_sync(hq_pub: Path, hq_url: str, hq_ca: Path | None) -> None:
    """Refuse sync settings the unit could not use, before anything is created."""
    if not hq_url and hq_ca is None:
        return
    if not hq_url or hq_ca is None:
        raise ProvisionError("--hq-url and --hq-ca go together: uploads need both")
    parts = urlsplit(hq_url)
    if parts.scheme != "https" or not parts.hostname:
        raise ProvisionError(f"--hq-url {hq_url!r} is not https://HOST[:PORT]")
    try:
        certs = x509.load_pem_x509_certificates(hq_ca.read_bytes())
    except OSError as exc:
        raise ProvisionError(f"reading --hq-ca {hq_ca}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ProvisionError(f"--hq-ca {hq_ca} holds no PEM certificate") from exc
    if not certs:
        raise ProvisionError(f"--hq-ca {hq_ca} holds no PEM certificate")
    load_receipt_public(hq_pub)  # receipts are checked with its second key: refuse an hq.pub without one


def _with_sync(config: Config, hq_url: str, ca_name: str) -> Config:
    config = dataclasses.replace(config, hq=dataclasses.replace(config.hq, url=hq_url, ca=ca_name))
    try:
        return parse_config(render_config(config), "<provision>")  # validated like a file would be
    except ConfigError as exc:
        raise ProvisionError(str(exc)) from exc


def provision(
    data_dir: Path,
    device_id: str,
    hq_pub: Path,
    force: bool = False,
    *,
    hq_url: str = "",
    hq_ca: Path | None = None,
    caller_holds_lock: bool = False,
) -> str:
    """Create the identity and config; return the device key's fingerprint. Never overwrites a key unasked.

    With ``hq_url`` and ``hq_ca`` the unit uploads to headquarters: the CA (the only trust anchor
    for its TLS connection) is copied into the data dir as ``hq-ca.pem`` and the config's
    ``hq.url`` and ``hq.ca`` point at them.

    The data dir's lock (``agent.dirlock``) is taken for the duration, so a running agent's
    identity is never replaced under it; ``caller_holds_lock`` when the caller already holds it.
    Never creates or replaces an identity beside evidence it did not sign (``IdentityError``).
    """
    load_hq_public(hq_pub)  # refuse a file that is not a headquarters key before creating anything
    _check_sync(hq_pub, hq_url, hq_ca)
    config = default_config(device_id, hq_public_key="hq.pub")
    if hq_ca is not None:
        config = _with_sync(config, hq_url, HQ_CA_NAME)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    if caller_holds_lock:
        return _provision_locked(data_dir, config, hq_pub, hq_ca, force)
    with DirLock(data_dir, "bodycam provision"):  # never under a running agent
        return _provision_locked(data_dir, config, hq_pub, hq_ca, force)


def _provision_locked(data_dir: Path, config: Config, hq_pub: Path, hq_ca: Path | None, force: bool) -> str:
    key_path, pub_path = data_dir / KEY_NAME, data_dir / PUB_NAME
    if key_path.exists() and not force:
        raise ProvisionError(f"{key_path} exists: this unit already has an identity (use --force to replace it)")
    if key_path.exists():
        require_no_evidence_to_replace(data_dir)
    elif not force:
        require_no_evidence(data_dir, "provisioning it again")
    else:
        require_no_evidence_to_replace(data_dir)
    if force and key_path.exists():
        key_path.unlink()
    fp = generate_device_key(key_path, pub_path)
    if hq_pub.resolve() != (data_dir / "hq.pub").resolve():
        shutil.copyfile(hq_pub, data_dir / "hq.pub")
    if hq_ca is not None and hq_ca.resolve() != (data_dir / HQ_CA_NAME).resolve():
        tmp_ca = data_dir / (HQ_CA_NAME + ".tmp")
        shutil.copyfile(hq_ca, tmp_ca)
        os.chmod(tmp_ca, 0o644)
        os.replace(tmp_ca, data_dir / HQ_CA_NAME)
    cfg_path = data_dir / CONFIG_NAME
    tmp = cfg_path.with_name(CONFIG_NAME + ".tmp")
    tmp.write_text(render_config(config))
    os.replace(tmp, cfg_path)
    return fp


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("provision", help="create this unit's identity key and config",
                       description="Create the unit's Ed25519 identity (device.key, 0600), copy headquarters' "
                       "public key and write bodycam.toml; prints the line that enrols the unit at headquarters.")
    p.add_argument("--data-dir", type=Path, required=True, help="the unit's data dir (created 0700 if absent)")
    p.add_argument("--device-id", type=device_id, required=True, help="the unit's id: " + DEVICE_ID_RULE)
    p.add_argument("--hq-pub", type=Path, required=True, help="headquarters' public key (hq.pub)")
    p.add_argument("--force", action="store_true", help="replace an existing identity (the old key is lost)")
    p.add_argument("--hq-url", default="", help="headquarters' sync service, https://HOST[:PORT] (needs --hq-ca)")
    p.add_argument("--hq-ca", type=Path, help=f"headquarters' CA certificate (ca.pem), copied to {HQ_CA_NAME}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fp = provision(args.data_dir, args.device_id, args.hq_pub, args.force, hq_url=args.hq_url, hq_ca=args.hq_ca)
    except (ProvisionError, KeyFileError, IdentityError) as exc:
        print(f"bodycam provision: {exc}", file=sys.stderr)
        return 1
    except (OSError, DirLockError) as exc:
        print(f"bodycam provision: {explain(exc, args.data_dir)}", file=sys.stderr)
        return 1
    print(f"provisioned {args.device_id} in {args.data_dir}")
    print(f"device public key: {args.data_dir / 'device.pub'} (SHA-256 {fp})")
    print(f"enrol at headquarters with: {enrol_line(args.device_id, args.data_dir, args.hq_pub)}")
    return 0


def enrol_line(device: str, data_dir: Path, hq_pub: Path) -> str:
    """The command that enrols this unit, runnable as printed: absolute paths, and headquarters'
    data dir when hq.pub came from its keys/ folder (a placeholder otherwise)."""
    keys = hq_pub.resolve().parent
    hq_dir = str(keys.parent) if keys.name == "keys" else "HQ_DATA_DIR"
    return (f"bodycam-hq enroll --data-dir {shlex.quote(hq_dir)} --device-id {device} "
            f"--device-pub {shlex.quote(str((data_dir / PUB_NAME).resolve()))}")

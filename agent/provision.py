"""``bodycam provision``: a device identity, headquarters' public key and a config in a data dir."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from agent.config import default_config, render_config
from agent.evidence.keys import KeyFileError, generate_device_key, load_hq_public

CONFIG_NAME = "bodycam.toml"


class ProvisionError(Exception):
    pass


def provision(data_dir: Path, device_id: str, hq_pub: Path, force: bool = False) -> str:
    """Create the identity and config; return the device key's fingerprint. Never overwrites a key unasked."""
    load_hq_public(hq_pub)  # refuse a file that is not a headquarters key before creating anything
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    key_path, pub_path = data_dir / "device.key", data_dir / "device.pub"
    if key_path.exists() and not force:
        raise ProvisionError(f"{key_path} exists: this unit already has an identity (use --force to replace it)")
    if force and key_path.exists():
        key_path.unlink()
    fp = generate_device_key(key_path, pub_path)
    if hq_pub.resolve() != (data_dir / "hq.pub").resolve():
        shutil.copyfile(hq_pub, data_dir / "hq.pub")
    config = default_config(device_id, hq_public_key="hq.pub")
    cfg_path = data_dir / CONFIG_NAME
    tmp = cfg_path.with_name(CONFIG_NAME + ".tmp")
    tmp.write_text(render_config(config))
    os.replace(tmp, cfg_path)
    return fp


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("provision", help="create this unit's identity key and config")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--device-id", required=True)
    p.add_argument("--hq-pub", type=Path, required=True, help="headquarters' public key (hq.pub)")
    p.add_argument("--force", action="store_true", help="replace an existing identity (the old key is lost)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fp = provision(args.data_dir, args.device_id, args.hq_pub, args.force)
    except (ProvisionError, KeyFileError) as exc:
        print(f"bodycam provision: {exc}", file=sys.stderr)
        return 1
    print(f"provisioned {args.device_id} in {args.data_dir}")
    print(f"device public key: {args.data_dir / 'device.pub'} (SHA-256 {fp})")
    print(f"enrol at headquarters with: bodycam-hq enroll --device-id {args.device_id} --device-pub device.pub")
    return 0

"""The ``bodycam-hq`` command: headquarters' side (keygen, decrypt; serve and ingest come with sync)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from agent.evidence.decrypt import DecryptError, open_metadata, open_segment
from agent.evidence.keys import KeyFileError, generate_hq_key, load_hq_private
from agent.evidence.manifest import ManifestError, parse_manifest_record
from agent.evidence.segment import scan


def cmd_keygen(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    try:
        fp = generate_hq_key(out / "hq.key", out / "hq.pub", profile=args.profile, overwrite=args.force)
    except KeyFileError as exc:
        print(f"bodycam-hq keygen: {exc}", file=sys.stderr)
        return 1
    print(f"headquarters key pair ({args.profile} profile) written to {out}: hq.key (0600, keep offline), hq.pub")
    print(f"hq.pub SHA-256 {fp}")
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    try:
        key = load_hq_private(args.key)
    except KeyFileError as exc:
        print(f"bodycam-hq decrypt: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for seg in args.segments:
        try:
            failures += _decrypt_one(seg, key, out)
        except (OSError, DecryptError, ManifestError) as exc:
            print(f"{seg}: FAILED: {exc}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


def _decrypt_one(seg: Path, key: object, out: Path) -> int:
    with seg.open("rb") as fh:
        structure = scan(fh)
    if structure.manifest_record is None:
        raise DecryptError("no manifest (unsealed or cut-off segment)")
    signed = parse_manifest_record(structure.manifest_record)
    m = dict(signed.manifest)
    meta = open_metadata(signed, key)  # type: ignore[arg-type]
    if meta is not None:
        m["sealed_opened"] = meta
    stem = out / seg.stem
    if m["type"] == "segment":
        media = stem.with_suffix(".mkv")
        tmp = media.with_name(media.name + ".tmp")
        with tmp.open("wb") as fh:
            opened = open_segment(seg, key, fh.write, recovered="recovered" in m["flags"])  # type: ignore[arg-type]
        if opened.problems:
            tmp.unlink()
            raise DecryptError("; ".join(opened.problems))
        if opened.plaintext_sha256 != m["plaintext"]["sha256"]:
            tmp.unlink()
            raise DecryptError("decrypted content does not match the manifest's plaintext hash")
        os.replace(tmp, media)
        print(f"{seg.name}: {media} ({opened.plaintext_length} bytes, {opened.chunks} chunks)")
    else:
        print(f"{seg.name}: event {m['event']}")
    stem.with_suffix(".json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bodycam-hq", description="bodycam headquarters")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("keygen", help="create headquarters' key pair")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--profile", choices=("default", "fips"), default="default")
    p.add_argument("--force", action="store_true", help="overwrite an existing key (evidence sealed to it is lost)")
    p.set_defaults(func=cmd_keygen)
    p = sub.add_parser("decrypt", help="decrypt segments to playable media files and JSON manifests")
    p.add_argument("segments", nargs="+", type=Path)
    p.add_argument("--key", type=Path, required=True, help="hq.key")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_decrypt)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""``bodycam-hq decrypt``: segments to playable media files and JSON manifests, with ``hq.key``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import BinaryIO

from agent.cliargs import Renamed
from agent.evidence.decrypt import DecryptError, open_metadata, open_segment
from agent.evidence.keys import KeyFileError, load_hq_private
from agent.evidence.manifest import ManifestError, parse_manifest_record
from agent.evidence.segment import scan
from agent.textsafe import safe_text


def cmd_decrypt(args: argparse.Namespace) -> int:
    try:
        key = load_hq_private(args.hq_key)
    except KeyFileError as exc:
        print(f"bodycam-hq decrypt: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    failures = 0
    for seg in args.segments:
        try:
            failures += _decrypt_one(seg, key, out)
        except (OSError, DecryptError, ManifestError) as exc:
            print(safe_text(f"{seg}: FAILED: {exc}"), file=sys.stderr)  # problems quote the file
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
        with _private(tmp) as fh:
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
        print(safe_text(f"{seg.name}: event {m['event']}"))  # the event name is the unit's
    with _private(stem.with_suffix(".json")) as fh:  # holds the opened sealed metadata: plaintext too
        fh.write((json.dumps(m, indent=2, sort_keys=True) + "\n").encode())
    return 0


def _private(path: Path) -> BinaryIO:
    """Open ``path`` for writing, readable by its owner only (0600), whatever was there before:
    decrypted evidence is never left readable by every user of the machine."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("decrypt", help="decrypt segments to playable media files and JSON manifests",
                       description="Decrypt segments with headquarters' private key. Plaintext files are "
                       "created 0600 (owner only). Exit codes: 0 all decrypted; 1 a segment failed; 2 bad key.")
    p.add_argument("segments", nargs="+", type=Path, help="segment files (*.bcs)")
    p.add_argument("--hq-key", "--key", action=Renamed, type=Path, required=True,
                   help="headquarters' private key (keys/hq.key)")
    p.add_argument("--out", type=Path, required=True, help="folder for the media files (.mkv) and manifests (.json)")
    p.set_defaults(func=cmd_decrypt)

"""``bodycam verify`` on a case export's viewing copies (docs/court-export.md, "What a viewing copy
proves"): offline, with public keys only.

For each recording's copy: its H.264 packets are counted against the recorded segments'; each
segment's share of them is put back into that segment's residue (:mod:`agent.evidence.viewcopy`)
and the result must hash to the ``plaintext.sha256`` in the manifest the unit signed (the manifest
whose signature and chain ``bodycam verify`` checked). The rebuilt plaintext is then demuxed and
its H.264 packets, the decoder set-up (avcC), the audio packets and the thermal track's packets
are compared with the copies' ones, in order.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.evidence.format import segment_filename
from agent.evidence.manifest import ManifestError, parse_manifest_record
from agent.evidence.segment import SegmentError, scan
from agent.evidence.viewcopy import CopyError, Track, camera_rate, demux, offsets_ms, rebuild, timecode
from agent.textsafe import safe_text


@dataclass
class CopyFindings:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _signed(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            s = scan(fh)
        if s.manifest_record is None:
            raise CopyError("has no manifest")
        signed = parse_manifest_record(s.manifest_record)
    except (OSError, SegmentError, ManifestError) as exc:
        raise CopyError(str(exc)) from exc
    return {"manifest": signed.manifest, "hash": signed.hash}


def check_copies(folder: Path, listed: list[dict[str, Any]] | None, chain_hashes: dict[str, dict[int, str]],
                 found: CopyFindings) -> None:
    """Check every viewing copy ``listed`` in case.json; ``chain_hashes``: per unit, the manifest
    hashes whose signatures and chain the unit's check verified."""
    if listed is None:
        found.notes.append("no viewing copies in this export (exported without decryption)")
        return
    for entry in listed:
        rel = str(entry.get("record", ""))
        try:
            record = json.loads((folder / rel).read_bytes())
            _check_one(folder / rel, record, chain_hashes.get(str(record["device_id"]), {}), found)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            found.problems.append(f"{safe_text(rel)}: the viewing copy's record is unreadable ({exc})")
        except CopyError as exc:
            found.problems.append(safe_text(f"{rel}: {exc}"))


def _check_one(record_path: Path, record: dict[str, Any], hashes: dict[int, str], found: CopyFindings) -> None:
    viewing = record_path.parent
    device_dir = viewing.parent
    name = f"{record['device_id']}/{viewing.name}/{record['video']}"
    copy = demux(viewing / str(record["video"]), "camera")
    if copy is None:
        raise CopyError(f"{name} holds no H.264 track")
    segments = record["segments"]
    recorded = sum(int(s["camera_packets"]) for s in segments)
    if len(copy.packets) != recorded:
        found.problems.append(safe_text(f"{name}: holds {len(copy.packets)} H.264 packets, the unit recorded "
                                        f"{recorded} (a frame dropped or added)"))
        return
    audio: list[bytes] = []
    thermal: list[bytes] = []
    signed_all = [_signed(device_dir / segment_filename(int(s["seq"]))) for s in segments]
    offsets = offsets_ms([m["manifest"] for m in signed_all])
    at = 0
    unbound = []
    left_out: list[str] = []
    before = len(found.problems)
    for s, signed, offset in zip(segments, signed_all, offsets, strict=True):
        seq, n = int(s["seq"]), int(s["camera_packets"])
        share = copy.packets[at:at + n]
        shown_at = copy.times_ms[at:at + n]
        where = f"{name}: H.264 packets {at}..{at + n - 1} (seq {seq})"
        at += n
        if signed["hash"] != s["manifest_sha256"] or hashes.get(seq) != signed["hash"]:
            found.problems.append(safe_text(f"{name}: seq {seq} is not a verified entry of the unit's chain"))
            continue
        plain = signed["manifest"].get("plaintext")
        want = plain["sha256"] if isinstance(plain, dict) else None
        try:
            rebuilt = rebuild((viewing / str(s["residue"])).read_bytes(), [(int(o), int(n)) for o, n in s["holes"]],
                              share)
        except CopyError as exc:
            found.problems.append(safe_text(f"{where}: do not fit the recorded segment ({exc})"))
            continue
        digest = hashlib.sha256(rebuilt).hexdigest()
        if want is None:
            unbound.append(seq)
            if digest != s.get("decrypted_sha256"):
                found.problems.append(safe_text(f"{where}: not the packets headquarters decrypted (changed)"))
                continue
        elif digest != want:
            found.problems.append(safe_text(f"{where}: not the packets the unit signed (a packet changed)"))
            continue
        original = demux(rebuilt, "camera", "matroska")
        if original is None or original.packets != share:
            found.problems.append(safe_text(f"{where}: not the recorded segment's H.264 packets in order"))
            continue
        late = _late(original.times_ms, shown_at, offset)
        if late is not None:
            found.problems.append(safe_text(f"{where}: packet {at - n + late[0]} is shown at {late[1]} ms, the unit "
                                            f"recorded it at {late[2]} ms on the recording's timeline"))
        if original.extradata != copy.extradata:
            found.problems.append(safe_text(f"{name}: its H.264 decoder set-up (avcC) is not the recorded one"))
        for kind, into in (("audio", audio), ("thermal", thermal)):
            track = demux(rebuilt, kind, "matroska")
            have = track.packets if track is not None else []
            copied = int(s.get(f"{kind}_packets", len(have)))
            into.extend(have[:copied])
            if len(have) > copied:
                left_out.append(f"seq {seq}: {len(have) - copied} {kind} packet(s)")
    if len(found.problems) > before:
        return
    _check_time_code(found, name, copy.tags, signed_all[0]["manifest"])
    _compare(found, f"{name}: its audio", demux(viewing / str(record["video"]), "audio"), audio)
    if record.get("thermal"):
        lossless = f"{record['device_id']}/{viewing.name}/{record['thermal']['lossless']}"
        _compare(found, f"{lossless}: the thermal track", demux(viewing / record["thermal"]["lossless"], "thermal"),
                 thermal)
    if len(found.problems) > before:
        return
    if left_out:
        found.notes.append(safe_text(f"{name}: not in the copy (its track began later or ended): "
                                     + "; ".join(left_out)))
    if unbound:
        found.notes.append(safe_text(f"{name}: seq {unbound} were salvaged after a power loss (the unit never knew "
                                     "their plaintext): their packets rest on headquarters' export, not the unit's "
                                     "signature"))
    found.notes.append(safe_text(f"{name}: its {recorded} H.264 packets are the unit's, byte for byte and in order"))


def _compare(found: CopyFindings, what: str, copy: Track | None, recorded: list[bytes]) -> None:
    have = [] if copy is None else copy.packets
    if len(have) != len(recorded):
        found.problems.append(safe_text(f"{what}: {len(have)} packets, the unit recorded {len(recorded)}"))
    elif have != recorded:
        first = next(i for i, (a, b) in enumerate(zip(have, recorded, strict=True)) if a != b)
        found.problems.append(safe_text(f"{what}: packet {first} is not the recorded one"))


def _late(recorded_ms: list[int | None], shown_ms: list[int | None], offset_ms: int) -> tuple[int, int, int] | None:
    """The first packet the copy shows at another time than the unit recorded (1 ms of rounding
    allowed): (index, shown, recorded), or None."""
    for i, (rec, shown) in enumerate(zip(recorded_ms, shown_ms, strict=True)):
        if rec is None or shown is None:
            continue
        if abs(shown - (rec + offset_ms)) > 1:
            return i, shown, rec + offset_ms
    return None


def _check_time_code(found: CopyFindings, name: str, tags: dict[str, str], first: dict[str, Any]) -> None:
    """The copy's time code and creation time are the first segment's signed UTC start."""
    start_ns = int(first["time"]["utc_start_ns"])
    want = timecode(start_ns, camera_rate(first))
    got = tags.get("timecode", "")
    m = re.fullmatch(r"(\d\d:\d\d:\d\d)[:;](\d+)", got)  # ffmpeg writes as many frame digits as it needs
    if m is None or m.group(1) != want[:8] or int(m.group(2)) != int(want[9:]):
        found.problems.append(safe_text(f"{name}: its time code {got or 'is missing'}, the unit's recorded start "
                                        f"is {want}"))
    created = datetime.datetime.fromtimestamp(start_ns // 1_000_000_000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if not tags.get("creation_time", "").startswith(created):
        found.problems.append(safe_text(f"{name}: its creation time {tags.get('creation_time')!r} is not the unit's "
                                        f"recorded start {created}Z"))

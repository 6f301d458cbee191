"""Evidence search, a recording's page and playback, for the operations room; knows no HTTP.

Every search (``evidence-search``), every view of a recording (``view-evidence``), of its
positions (``view-position-trail``) and every playback start (``view-playback``, with the
segments it decrypts) is audited before anything is shown; the object is
``recording:DEVICE/RECORDING_ID``. Playback asks the decrypt component
(``hq.decryptd``) through a ``Decrypter``: this process never holds headquarters' private key,
and the plaintext it gets back stays in memory.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from agent.evidence.viewcopy import offsets_ms
from hq.audit import Auditor
from hq.decrypt_client import DecryptClientError
from hq.export import receipt_summary
from hq.index import Index
from hq.records import VERIFICATION, Evidence, RecordingFilter, RecordingSummary, valid_device_id
from hq.rendition import Piece, RenditionError, StreamInfo, thermal_rendition, video_rendition
from hq.storage import EvidenceStore, StorageError

MAX_PAGE = 100
MAX_RECORDING_ID = 64
NO_DECRYPTD = "playback needs bodycam-hq decryptd: start it and pass --decryptd-socket"


class EvidenceError(Exception):
    """A request the service cannot answer. ``kind``: ``bad-request``, ``not-found`` or
    ``unavailable`` (the decrypt component or the store); the message says what to do."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Decrypter(Protocol):
    """What playback needs of the decrypt component (``hq.decrypt_client.DecryptClient``)."""

    def segment(self, source: BinaryIO, length: int, *, device_id: str, seq: int, plaintext_sha256: str | None,
                recovered: bool = False) -> bytes: ...

    def metadata(self, device_id: str, seq: int, sealed: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class SearchPage:
    recordings: list[RecordingSummary]
    total: int
    filter: RecordingFilter


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment of a recording on its timeline (ms since the recording's first segment started)."""

    seq: int
    offset_ms: int
    duration_ms: int
    entry: Evidence
    manifest: dict[str, Any]

    @property
    def tracks(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("tracks") or [])


@dataclass(frozen=True, slots=True)
class Mark:
    id: int
    at_ms: int
    utc_ns: int
    by: str
    seq: int


@dataclass(frozen=True, slots=True)
class RecordingView:
    """What a recording's page shows: its segments and events, receipts, chain position, marks."""

    device_id: str
    recording_id: str
    segments: list[Segment]
    events: list[tuple[Evidence, dict[str, Any]]]
    marks: list[Mark]
    contiguous_through: int
    chain_head_seq: int | None
    receipts: dict[int, dict[str, Any] | None]

    @property
    def utc_start_ns(self) -> int:
        return self.segments[0].entry.utc_start_ns

    @property
    def duration_ms(self) -> int:
        last = self.segments[-1]
        return last.offset_ms + last.duration_ms

    @property
    def cameras(self) -> list[str]:
        """The names of the recording's camera tracks, in the order the unit lists them."""
        names = [str(t.get("name")) for s in self.segments for t in s.tracks if t.get("kind") == "video"]
        return list(dict.fromkeys(names))

    @property
    def has_thermal(self) -> bool:
        return any(t.get("kind") == "thermal" for s in self.segments for t in s.tracks)


class Playback:
    """A playback's fragmented MP4, piece by piece (an iterator of bytes), with what a player needs
    before the first byte: ``start_ms``, where the stream's time 0 lies on the recording's timeline,
    and ``codecs`` (RFC 6381)."""

    def __init__(self, stream: Iterator[bytes], info: StreamInfo) -> None:
        first = next(stream)  # made before anything is sent: a refusal is raised here
        self._stream = itertools.chain((first,), stream)
        self.start_ms = info.start_ms or 0
        self.codecs = info.codecs

    def __iter__(self) -> Playback:
        return self

    def __next__(self) -> bytes:
        return next(self._stream)


@dataclass(frozen=True, slots=True)
class Fix:
    at_ms: int
    utc_ns: int | None
    lat_deg: float
    lon_deg: float
    h_acc_m: float | None


def recording_target(device_id: str, recording_id: str) -> str:
    """A recording's object id in the audit log."""
    return f"recording:{device_id}/{recording_id}"


def timeline(entries: list[Evidence]) -> list[Segment]:
    """The segments of one recording placed on its timeline: by the monotonic clock within one boot
    (exact), by UTC across boots (a recording resumed after a restart); ``offsets_ms``."""
    held = [(e, json.loads(e.manifest)) for e in entries if e.kind == "segment" and e.manifest is not None]
    if not held:
        return []
    return [Segment(e.seq, offset, (int(m["time"]["mono_end_ns"]) - int(m["time"]["mono_start_ns"])) // 1_000_000,
                    e, m) for (e, m), offset in zip(held, offsets_ms([m for _, m in held]), strict=True)]


def marks_of(segments: list[Segment]) -> list[Mark]:
    marks = []
    for s in segments:
        start = int(s.manifest["time"]["mono_start_ns"])
        for m in s.manifest.get("marks") or ():
            at = s.offset_ms + (int(m["mono_ns"]) - start) // 1_000_000
            marks.append(Mark(int(m.get("id", 0)), at, int(m.get("utc_ns", 0)), str(m.get("by", "")), s.seq))
    return marks


def _time(text: str, name: str) -> int:
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EvidenceError("bad-request", f"{name}: {text[:40]!r} is not a date and time such as "
                            "2026-12-03T10:00 (UTC)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1_000


def parse_filter(params: Mapping[str, str]) -> RecordingFilter:
    """A search filter from a form's fields (empty fields mean "any"); one clear line if wrong."""
    p = {k: v.strip() for k, v in params.items() if v and v.strip()}
    device = p.get("unit")
    if device is not None and not valid_device_id(device):
        raise EvidenceError("bad-request", "unit: letters, digits, '.', '_' and '-' only, as enrolled")
    rec = p.get("recording")
    if rec is not None and (len(rec) > MAX_RECORDING_ID or not all(c in "0123456789abcdef-" for c in rec.lower())):
        raise EvidenceError("bad-request", "recording: the recording id or its start (hex digits and '-')")
    marked = {"yes": True, "no": False, None: None}.get(p.get("marks"), "bad")
    if marked == "bad":
        raise EvidenceError("bad-request", "marks: yes, no or empty")
    status = p.get("status")
    if status is not None and status not in VERIFICATION:
        raise EvidenceError("bad-request", f"status: one of {', '.join(VERIFICATION)}, or empty")
    background = {"background": True, "recorded": False, None: None}.get(p.get("source"), "bad")
    if background == "bad":
        raise EvidenceError("bad-request", "source: background (ranges asked of a unit's background ring), "
                            "recorded, or empty")
    try:
        page = int(p.get("page", "1"))
        size = int(p.get("per_page", "25"))
    except ValueError:
        raise EvidenceError("bad-request", "page and per_page must be whole numbers") from None
    if not (1 <= page <= 100_000 and 1 <= size <= MAX_PAGE):
        raise EvidenceError("bad-request", f"page from 1, per_page from 1 to {MAX_PAGE}")
    from_ns = _time(p["from"], "from") if "from" in p else None
    to_ns = _time(p["to"], "to") if "to" in p else None
    if from_ns is not None and to_ns is not None and to_ns < from_ns:
        raise EvidenceError("bad-request", "to is before from")
    return RecordingFilter(device, from_ns, to_ns, rec.lower() if rec else None, marked,  # type: ignore[arg-type]
                           status, size, (page - 1) * size, background)  # type: ignore[arg-type]


class EvidenceService:
    """Search, recording views and playback over the index, the store and the decrypt component.

    Thread-safe as its parts are: the index, the store and the decrypter take concurrent calls.
    """

    def __init__(self, index: Index, store: EvidenceStore, decrypter: Decrypter | None, audit: Auditor,
                 now_ns: Callable[[], int], custody: Callable[..., None] | None = None) -> None:
        self._index = index
        self._custody = custody  # the custody ledger's writer (LifecycleService.custody): playback is custody
        self._store = store
        self._decrypter = decrypter
        self._audit = audit
        self._now_ns = now_ns

    def search(self, actor: str, f: RecordingFilter) -> SearchPage:
        rows, total = self._index.search_recordings(f)
        self._audit.record("evidence-search", actor, f"device:{f.device_id}" if f.device_id else "evidence", "ok",
                           results=total,
                           filter={k: getattr(f, k) for k in f.__slots__})
        return SearchPage(rows, total, f)

    def recording(self, actor: str, device_id: str, recording_id: str) -> RecordingView:
        entries = self._index.recording_entries(device_id, recording_id)
        segments = timeline(entries)
        target = recording_target(device_id, recording_id)
        if not segments:
            self._audit.record("view-evidence", actor, target, "failed", reason="no such recording")
            raise EvidenceError("not-found", f"no recording {recording_id} of {device_id} is held")
        device = self._index.device(device_id)
        head = self._index.chain_head(device_id)
        self._audit.record("view-evidence", actor, target, "ok", segments=[s.seq for s in segments])
        events = [(e, json.loads(e.manifest)) for e in entries if e.kind == "event" and e.manifest]
        return RecordingView(
            device_id, recording_id, segments, events, marks_of(segments),
            contiguous_through=device.contiguous_through if device else -1,
            chain_head_seq=None if head is None else head[0],
            receipts={e.seq: receipt_summary(e.receipt) for e in entries},
        )

    def trail(self, actor: str, view: RecordingView) -> tuple[list[Fix], dict[int, str]]:
        """The recording's GNSS fixes and the notes of its marks, opened by the decrypt component;
        a view of positions, audited."""
        decrypter = self._need_decrypter()
        fixes: list[Fix] = []
        notes: dict[int, str] = {}
        target = recording_target(view.device_id, view.recording_id)
        for s in view.segments:
            sealed = s.manifest.get("sealed")
            if not sealed:
                continue
            meta = self._ask(functools.partial(decrypter.metadata, view.device_id, s.seq, str(sealed)), actor,
                             "view-position-trail", target)
            start = int(s.manifest["time"]["mono_start_ns"])
            for g in meta.get("gnss") or ():
                if not isinstance(g, dict) or "lat_e7" not in g or "lon_e7" not in g:
                    continue
                at = s.offset_ms + (int(g.get("mono_ns", start)) - start) // 1_000_000
                h_acc = g.get("h_acc_mm")
                fixes.append(Fix(at, g.get("utc_ns"), int(g["lat_e7"]) / 1e7, int(g["lon_e7"]) / 1e7,
                                 None if h_acc is None else int(h_acc) / 1000))
            for n in meta.get("notes") or ():
                if isinstance(n, dict) and isinstance(n.get("note"), str):
                    notes[int(n.get("id", 0))] = n["note"]
        self._audit.record("view-position-trail", actor, target, "ok", fixes=len(fixes))
        return fixes, notes

    def play(self, actor: str, view: RecordingView, from_seq: int | None = None,
             rendition: str = "video", camera: str | None = None) -> Playback:
        """Audit the playback start, then the fragmented MP4 from segment ``from_seq`` (default: the
        first) to the end, made as the segments are decrypted; ``camera`` names one of the
        recording's cameras (default: the first). The first segment is decrypted and muxed before
        this returns, so a refusal is raised here, not in the middle of a stream."""
        decrypter = self._need_decrypter()
        segments = [s for s in view.segments if from_seq is None or s.seq >= from_seq]
        target = recording_target(view.device_id, view.recording_id)
        if not segments or (from_seq is not None and segments[0].seq != from_seq):
            raise EvidenceError("not-found", f"segment {from_seq} is not part of recording {view.recording_id}")
        if rendition == "thermal" and not view.has_thermal:
            raise EvidenceError("not-found", "this recording has no thermal track")
        if camera is not None and camera not in view.cameras:
            raise EvidenceError("not-found", f"camera: one of {', '.join(view.cameras) or 'none'}")
        self._audit.record("view-playback", actor, target, "ok", rendition=rendition,
                           segments=[s.seq for s in segments], **({"camera": camera} if camera else {}))
        if self._custody is not None:
            self._custody("playback", actor, f"{view.device_id}/{view.recording_id}", rendition=rendition,
                          seqs=[s.seq for s in segments], **({"camera": camera} if camera else {}))
        pieces = (self._piece(decrypter, view.device_id, s, actor, target) for s in segments)
        info = StreamInfo()
        made = (thermal_rendition(pieces, info=info) if rendition == "thermal"
                else video_rendition(pieces, camera, info=info))
        return Playback(self._guarded(made, actor, target), info)

    def _guarded(self, stream: Iterator[bytes], actor: str, target: str) -> Iterator[bytes]:
        try:
            yield from stream
        except RenditionError as exc:
            self._audit.record("playback-error", actor, target, "failed", reason=str(exc))
            raise EvidenceError("unavailable", str(exc)) from exc

    def refused(self, actor: str, action: str, target: str, reason: str) -> None:
        """Audit an action the web application refused (a role without the right)."""
        self._audit.record(action, actor, target, "refused", reason=reason)

    def _piece(self, decrypter: Decrypter, device_id: str, s: Segment, actor: str, target: str) -> Piece:
        e = s.entry
        recovered = "recovered" in (s.manifest.get("flags") or ())
        want = None if recovered else s.manifest["plaintext"]["sha256"]

        def ask() -> bytes:
            try:
                with self._store.get(device_id, e.seq, e.location) as src:
                    return decrypter.segment(src, e.size_bytes, device_id=device_id, seq=e.seq,
                                             plaintext_sha256=want, recovered=recovered)
            except StorageError as exc:
                raise EvidenceError("unavailable", f"reading seq {e.seq} from the store: {exc}") from exc

        return Piece(e.seq, self._ask(ask, actor, "playback-error", target), s.offset_ms)

    def _ask(self, call: Callable[[], Any], actor: str, event: str, target: str) -> Any:
        try:
            return call()
        except DecryptClientError as exc:
            self._audit.record(event, actor, target, "failed", reason=str(exc), code=exc.code)
            raise EvidenceError("unavailable", f"decrypting: {exc}") from exc

    def _need_decrypter(self) -> Decrypter:
        if self._decrypter is None:
            raise EvidenceError("unavailable", NO_DECRYPTD)
        return self._decrypter

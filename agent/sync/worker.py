"""The sync worker: one thread that uploads sealed entries to headquarters and sends heartbeats.

Decisions are pure: the order, bandwidth and backoff rules of :mod:`agent.sync.policy`, the
phases of :mod:`agent.sync.phases`. This module is the shell around them: the thread, the pass,
the heartbeat, the status and the alarms; one entry's upload is :mod:`agent.sync.uploader`'s,
the uploads in progress :mod:`agent.sync.session`'s.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.tlogproof import TlogError
from agent.store import Segment, Store, StoreError
from agent.sync.alarms import Alarm, AlarmCleared
from agent.sync.client import HqClient
from agent.sync.errors import AuthError, ConfigurationError, EntryFailed, ProtocolError, Stopped, SyncError
from agent.sync.heartbeat import heartbeat_body
from agent.sync.phases import (
    AuthRefused,
    AuthRestored,
    Effect,
    Event,
    Failed,
    PassDone,
    Phase,
    Progress,
    RetryDue,
    Stop,
    SyncState,
    transition,
)
from agent.sync.policy import NS_PER_S, bucket_for, choose_next, should_preempt
from agent.sync.session import Uploads, UploadSession
from agent.sync.settings import SyncSettings
from agent.sync.status import StatusBoard
from agent.sync.tlogview import ForkError, LogView
from agent.sync.uploader import EntryUploader
from hal.clock import Clock
from hal.keystore import KeyStore

__all__ = ["ACTOR", "Alarm", "AlarmCleared", "EntryFailed", "StatusProvider", "Stopped", "SyncSettings",
           "SyncWorker"]

log = logging.getLogger(__name__)

ACTOR = "sync"
StatusProvider = Callable[[], Mapping[str, Any]]


class SyncWorker:
    """Uploads the unit's sealed entries to headquarters, most important first, and marks each
    acknowledged only on a receipt signed by the pinned receipt key that names what was sent.

    Never touches the recorder: it reads sealed files from disk and the index through the store,
    whose lock it holds only for single short calls. Alarms go to ``on_alarm(kind, message)``
    and, for a standing alarm that is over, ``on_alarm_cleared(kind)`` (see
    :mod:`agent.sync.alarms`). Thread contract: ``start``, ``stop``, ``kick`` and ``get_status``
    from any thread; everything else runs on the ``sync`` thread (or, in tests, on the caller of
    :meth:`run_once`, with the thread not started), the alarm hooks included.
    """

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        keystore: KeyStore,
        device_id: str,
        hq_url: str,
        ca_path: Path,
        receipt_public_key: ed25519.Ed25519PublicKey,
        clock: Clock,
        settings: SyncSettings,
        status_provider: StatusProvider,
        *,
        on_alarm: Alarm | None = None,
        on_alarm_cleared: AlarmCleared | None = None,
        rng: random.Random | None = None,
        log_view: LogView | None = None,
    ) -> None:
        self._store = store
        self._data_dir = Path(data_dir)
        self._keystore = keystore
        self._device_id = device_id
        self._hq_url = hq_url
        self._ca_path = Path(ca_path)
        self._clock = clock
        self._settings = settings
        self._status_provider = status_provider
        self._on_alarm = on_alarm
        self._on_alarm_cleared = on_alarm_cleared
        self._rng = rng or random.Random()
        self._uploads = Uploads(store, self._data_dir, device_id, settings.chunk_bytes, clock)
        self._log_view = log_view or LogView(self._data_dir, receipt_public_key)
        self._uploader = EntryUploader(store, self._uploads, self._data_dir, device_id, receipt_public_key,
                                       settings.bandwidth_bps, self, settings.timeouts.ingest_s, self._log_view)
        self._client: HqClient | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sync", daemon=True)
        # Worker-thread state: the phase machine, and when the next heartbeat and each deferred entry are due.
        self._state = SyncState()
        self._next_heartbeat_ns = clock.monotonic_ns()
        self._deferred: dict[int, int] = {}
        self._bucket = bucket_for(settings.bandwidth_bps, clock.monotonic_ns())
        self._active: Segment | None = None
        self._pruned = False
        self._forked = False
        self._board = StatusBoard(clock.monotonic_ns())  # shared with get_status

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread: an upload in flight is abandoned (it resumes at the next start)."""
        self._stop.set()
        self._wake.set()
        client = self._client
        if client is not None:
            client.abort()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._apply(Stop())

    def kick(self) -> None:
        """Look for work now instead of at the next interval (a backoff still applies)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                wait_s = self.run_once()
            except Exception as e:  # the pass failed outside the protocol (the store...): log, go on
                log.exception("sync pass failed")
                self._board.set(last_error=self._error(f"{type(e).__name__}: {e}"))
                wait_s = self._settings.interval_s
            self._wake.wait(wait_s)

    # ---- one pass ---------------------------------------------------------------------------

    def run_once(self) -> float:
        """Heartbeat if due and upload what is pending, unless backing off; return the seconds
        until the next pass is due."""
        if self._state.waiting(self._mono()):
            self._refresh_backlog()
            return self._next_wait_s()
        self._apply(RetryDue())
        self._board.set(next_retry_mono_ns=None)
        if not self._pruned:
            self._uploads.prune()
            self._pruned = True
        self._refresh_backlog()
        try:
            client = self._get_client()
            if self._state.auth_refused:
                self._heartbeat(client)  # the probe: raises AuthError while still refused
                self._apply(AuthRestored())
            elif self._mono() >= self._next_heartbeat_ns:
                self._heartbeat(client)
            self._upload_backlog(client)
            self._apply(PassDone())
            self._board.set(current=None)
        except Stopped:
            pass
        except AuthError as e:
            self._auth_failed(e)
        except SyncError as e:
            self._failed(e)
        finally:
            self._active = None
            if self._client is not None:
                self._client.close()  # idle connections go stale; a pass opens a fresh one
        self._refresh_backlog()
        return self._next_wait_s()

    def _get_client(self) -> HqClient:
        if self._client is None:
            self._client = HqClient(self._hq_url, self._ca_path, self._device_id, self._keystore, self._clock,
                                    self._settings.timeouts)
        return self._client

    def _candidates(self) -> list[Segment]:
        return self._store.segments("uploading") + self._store.pending_upload()

    def _upload_backlog(self, client: HqClient) -> None:
        while not self._stop.is_set():
            entry = choose_next(self._candidates(), self._deferred, self._mono())
            if entry is None:
                return
            self._active = entry
            try:
                self._uploader.upload(client, entry)
            except EntryFailed as e:
                self.defer(entry, str(e))
            self._active = None
            self._refresh_backlog()
            if self._mono() >= self._next_heartbeat_ns:
                self._heartbeat(client)
        raise Stopped

    # ---- what an upload asks of the worker (agent.sync.uploader.UploadHost) ----------------

    def progress(self, session: UploadSession, sent_bytes: int = 0) -> None:
        self._apply(Progress())
        if sent_bytes:
            self._board.add_sent(sent_bytes)
        self._board.set(connected=True, current={"seq": session.seg.seq, "offset": session.offset,
                                                 "length": session.length},
                        last_progress_mono_ns=self._mono())

    def between_chunks(self, client: HqClient, session: UploadSession) -> bool:
        if self._stop.is_set():
            raise Stopped
        if self._mono() >= self._next_heartbeat_ns:
            self._heartbeat(client)
        now = self._mono()
        waiting = [c for c in self._store.pending_upload(limit=8) if self._deferred.get(c.seq, 0) <= now]
        return should_preempt(session.seg, waiting)

    def settled(self, seg: Segment, receipt: dict[str, Any] | None) -> None:
        if self._deferred.pop(seg.seq, None) is not None:
            self._publish_deferred()
        if receipt is not None:
            self._board.set(last_receipt={"seq": seg.seq, "utc_ns": self._clock.utc_ns(),
                                          "received_utc_ns": receipt.get("received_utc_ns")})

    def defer(self, seg: Segment, reason: str, *, audit: bool = True) -> None:
        retry_s = self._settings.entry_retry_s
        self._deferred[seg.seq] = self._mono() + round(retry_s * NS_PER_S)
        self._publish_deferred()
        if audit:
            self.audit("upload-error", seg.path, "failed", seq=seg.seq, error=reason, retry_in_s=retry_s)
        log.warning("entry %d deferred %.0f s: %s", seg.seq, retry_s, reason)
        self._board.set(last_error=self._error(reason, seg.seq))

    def pace(self, n_bytes: int) -> None:
        self._bucket, wait_s = self._bucket.take(n_bytes, self._mono())
        self.wait(wait_s)

    def wait(self, seconds: float) -> None:
        while seconds > 0:
            if self._stop.is_set():
                raise Stopped
            step = min(seconds, 0.1)  # short sleeps, so a stop is noticed
            self._clock.sleep(step)
            seconds -= step

    def alarm(self, kind: str, message: str) -> None:
        log.error("sync alarm (%s): %s", kind, message)
        self._board.set(alarm={"kind": kind, "message": message, "utc_ns": self._clock.utc_ns()})
        self._call_hook(self._on_alarm, kind, message)

    def audit(self, action: str, target: str, outcome: str, **detail: Any) -> None:
        try:
            self._store.audit(ACTOR, action, target, outcome, **detail)
        except StoreError as e:
            log.error("cannot audit %s of %s: %s", action, target, e)

    def _publish_deferred(self) -> None:
        self._board.set(deferred={seq: at for seq, at in sorted(self._deferred.items())})

    # ---- heartbeat --------------------------------------------------------------------------

    def _heartbeat(self, client: HqClient) -> None:
        """Send the status; a network failure raises (the pass backs off and the heartbeat stays due)."""
        body = heartbeat_body(self._heartbeat_status(), self._keystore)
        next_ns = self._mono() + round(self._settings.heartbeat_s * NS_PER_S)
        try:
            reply = client.heartbeat(body, self._log_view.seen_size)
        except ProtocolError as e:  # an odd answer to a heartbeat must not hold up uploads
            log.warning("%s", e)
            self._next_heartbeat_ns = next_ns
            self._board.set(connected=True, last_error=self._error(str(e)))
            return
        self._next_heartbeat_ns = next_ns
        now = self._clock.utc_ns()
        server = reply.get("server_utc_ns")
        offset_ms = round((server - now) / 1e6) if isinstance(server, int) else None
        self._board.set(connected=True, last_heartbeat_utc_ns=now, hq_clock_offset_ms=offset_ms)
        self._check_log(reply.get("tlog"))

    def _check_log(self, value: object) -> None:
        """The heartbeat answer's checkpoint must extend the one kept (docs/sync-protocol.md,
        "Transparency log"); a contradiction raises the standing ``tlog-fork`` alarm."""
        try:
            self._log_view.heartbeat_answer(value if isinstance(value, str) else None)
        except ForkError as e:
            if not self._forked:  # one signed event per run; the kept checkpoint keeps it detectable
                self._forked = True
                self.audit("tlog-fork", "headquarters-log", "failed", reason=str(e))
                self._board.set(tlog_fork=str(e))
                self.alarm("tlog-fork", f"headquarters' transparency log forked or was rewritten: {e}")
        except (TlogError, OSError) as e:
            log.warning("headquarters' log checkpoint not taken: %s", e)
        self._board.set(tlog=self._log_view.status())

    def _heartbeat_status(self) -> dict[str, Any]:
        try:
            unit = dict(self._status_provider())
        except Exception as e:  # the heartbeat says the provider failed rather than not going out
            unit = {"error": f"{type(e).__name__}: {e}"}
        head = self._store.chain_head(self._device_id)
        entries, size, last_seq = self._board.backlog_and_receipt()
        sync = {"backlog_entries": entries, "backlog_bytes": size, "last_receipt_seq": last_seq}
        return {**unit, "device_id": self._device_id, "utc_ns": self._clock.utc_ns(),
                "chain_head": None if head is None else {"seq": head[0], "hash": head[1]}, "sync": sync}

    # ---- phases -----------------------------------------------------------------------------

    def _apply(self, event: Event) -> tuple[Effect, ...]:
        """Move the phase machine and carry out the effects that need nothing from the caller;
        return them all (the caller raises the alarms, which need its error)."""
        self._state, effects = transition(self._state, event, self._mono())
        self._board.set(phase=self._state.phase)
        for effect in effects:
            if effect is Effect.AUTH_RESTORED:
                self.audit("upload-authorised", self._device_id, "ok", reason="headquarters accepts the unit again")
                log.info("headquarters accepts this unit again; uploads resume")
                self._board.clear_alarm("auth")
                self._call_hook(self._on_alarm_cleared, "auth")
            elif effect is Effect.CONFIG_RESOLVED:
                self._call_hook(self._on_alarm_cleared, "config")
        return effects

    def _failed(self, e: SyncError) -> None:
        if self._stop.is_set():
            log.info("sync stopped: %s", e)
            return
        jitter = self._rng.random()
        effects = self._apply(Failed(self._settings.backoff, jitter, config=isinstance(e, ConfigurationError)))
        failures, retry_at = self._state.failures, self._state.retry_at_ns
        delay_s = self._settings.backoff.jittered_s(failures, jitter)
        seg = self._active
        if seg is not None:
            self.audit("upload-error", seg.path, "failed", seq=seg.seq, error=str(e), status=e.status,
                       retry_in_s=round(delay_s, 3))
        log.warning("sync: %s; retrying in %.1f s (failure %d)", e, delay_s, failures)
        if Effect.ALARM_CONFIG in effects:
            self.alarm("config", str(e))
        self._board.set(connected=e.status is not None, current=None,
                        last_error=self._error(str(e), None if seg is None else seg.seq), next_retry_mono_ns=retry_at)

    def _auth_failed(self, e: AuthError) -> None:
        if Effect.ALARM_AUTH in self._apply(AuthRefused(self._settings.auth_retry_s)):
            self.audit("upload-refused", self._device_id, "refused", reason="unauthorised", status=e.status,
                       error=str(e))
            self.alarm("auth", f"headquarters refuses this unit, uploads stopped: {e}")
        self._board.set(connected=True, current=None, last_error=self._error(str(e)),
                        next_retry_mono_ns=self._state.retry_at_ns)

    def _call_hook(self, hook: Callable[..., None] | None, *args: str) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            log.exception("alarm callback failed")

    # ---- status -----------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._state.phase

    def get_status(self) -> dict[str, Any]:
        """A snapshot for the console and the health report."""
        return self._board.snapshot(self._clock.monotonic_ns(), self._clock.utc_ns(), self._hq_url)

    def _refresh_backlog(self) -> None:
        try:
            entries = self._candidates()
        except StoreError as e:
            log.warning("reading the backlog: %s", e)
            return
        remaining = sum(max(0, s.size_bytes - s.upload_offset) for s in entries)
        self._board.set(backlog_entries=len(entries), backlog_bytes=remaining)

    def _error(self, message: str, seq: int | None = None) -> dict[str, Any]:
        return {"message": message, "seq": seq, "utc_ns": self._clock.utc_ns()}

    def _mono(self) -> int:
        return self._clock.monotonic_ns()

    def _next_wait_s(self) -> float:
        now = self._mono()
        if self._state.retry_at_ns is not None:
            return max(0.0, (self._state.retry_at_ns - now) / NS_PER_S)
        return max(0.0, min(self._settings.interval_s, (self._next_heartbeat_ns - now) / NS_PER_S))

"""Building a unit's sync worker from its config: the one place that reads ``[hq]`` and ``[sync]``."""

from __future__ import annotations

import logging
from pathlib import Path

from agent.config import Config, resolve_path
from agent.evidence.keys import KeyFileError, load_receipt_public
from agent.evidence.tlogproof import TlogError
from agent.store import Store
from agent.sync.alarms import Alarm, AlarmCleared
from agent.sync.client import HqClient
from agent.sync.requests import RequestChannel, RequestHandlers
from agent.sync.tlogview import LogView, parse_witnesses
from agent.sync.worker import StatusProvider, SyncSettings, SyncWorker
from hal.clock import Clock
from hal.keystore import KeyStore

log = logging.getLogger(__name__)


class SyncSetupError(Exception):
    """The unit is configured to upload but cannot: the message says what to fix."""


def build_sync_worker(
    config: Config,
    data_dir: Path,
    store: Store,
    keystore: KeyStore,
    clock: Clock,
    status_provider: StatusProvider,
    on_alarm: Alarm | None = None,
    on_alarm_cleared: AlarmCleared | None = None,
) -> SyncWorker | None:
    """The worker for this unit, or None when ``hq.url`` is empty (sync off). ``on_alarm`` and
    ``on_alarm_cleared`` carry its alarms to the unit (:func:`agent.sync.alarms.recorder_hooks`).

    Raises :class:`SyncSetupError` when ``hq.url`` is set but ``hq.ca`` is not, or when
    ``hq.public_key`` holds no receipt key: receipts could not be checked, so nothing could ever
    be acknowledged. A CA file that cannot be read is reported by the worker itself (an alarm
    and backoff), so provisioning it later needs no restart.
    """
    if not config.hq.url:
        log.info("sync off: no hq.url in the config")
        return None
    if not config.hq.ca:
        raise SyncSetupError("hq.url is set but hq.ca is not: provision with --hq-url and --hq-ca")
    try:
        receipt_key = load_receipt_public(resolve_path(data_dir, config.hq.public_key))
    except KeyFileError as e:
        raise SyncSetupError(f"cannot check receipts: {e}") from e
    try:
        witnessing = parse_witnesses(config.sync.tlog_witnesses, config.sync.tlog_witness_quorum)
    except TlogError as e:
        raise SyncSetupError(str(e)) from e
    return SyncWorker(
        store, data_dir, keystore, config.device.id, config.hq.url, resolve_path(data_dir, config.hq.ca),
        receipt_key, clock, SyncSettings.from_config(config.sync), status_provider, on_alarm=on_alarm,
        on_alarm_cleared=on_alarm_cleared, log_view=LogView(data_dir, receipt_key, witnessing),
    )


def build_request_channel(
    config: Config, data_dir: Path, store: Store, keystore: KeyStore, clock: Clock, handlers: RequestHandlers,
) -> RequestChannel | None:
    """The unit's channel for requests from headquarters (docs/sync-protocol.md, "Requests from
    headquarters"), or None when sync is off. Call after :func:`build_sync_worker` succeeded
    (same settings, same checks)."""
    if not config.hq.url or not config.hq.ca:
        return None
    hq_key = load_receipt_public(resolve_path(data_dir, config.hq.public_key))
    settings = SyncSettings.from_config(config.sync)
    url, ca = config.hq.url, resolve_path(data_dir, config.hq.ca)

    def connect() -> HqClient:
        return HqClient(url, ca, config.device.id, keystore, clock, settings.timeouts)

    return RequestChannel(connect, store, keystore, config.device.id, hq_key, clock, handlers, settings.backoff)

"""One node's operations room behind the web pages: the alert service attached to the unit API,
its sweeper thread, the live-update bus and the basemap; and ``serve``'s options for them."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hq.alert_store import SqlAlertStore
from hq.alerts import AlertError, AlertPolicy
from hq.basemap import BasemapError, MbtilesSource, default_basemap
from hq.events import EventBus, bus_for
from hq.index import SqlIndex
from hq.ops import AlertSweeper, OpsService
from hq.service import HqService

SWEEP_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class OpsSettings:
    """``basemap``: an MBTiles file (None: the shipped OpenStreetMap world raster, zoom 0-6).
    ``sweep_interval_s``: how often every unit's alerts are decided without a heartbeat (no
    contact, new quarantines)."""

    policy: AlertPolicy = field(default_factory=AlertPolicy)
    sweep_interval_s: float = SWEEP_INTERVAL_S
    basemap: Path | None = None


class OpsRoom:
    """Built once per server process; ``close`` stops the sweeper and the bus."""

    def __init__(self, service: HqService, settings: OpsSettings | None = None,
                 now_ns: Callable[[], int] = time.time_ns) -> None:
        settings = settings or OpsSettings()
        index = service.index
        if not isinstance(index, SqlIndex):
            raise TypeError("the operations room keeps its alerts in the SQL index")
        self.settings = settings
        self.tiles = MbtilesSource(settings.basemap or default_basemap())
        self.bus: EventBus = bus_for(index.engine.url)
        self.ops = OpsService(index, SqlAlertStore(index.engine), self.bus, now_ns,
                              settings.policy)
        self.ops.attach(service)
        self._closed = False
        self._sweeper = AlertSweeper(self.ops, settings.sweep_interval_s)
        self._sweeper.start()

    def close(self) -> None:
        """Stop the sweeper and end every live stream (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._sweeper.stop()
        self.bus.close()


def _number(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text}: give {low:g} to {high:g}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = AlertPolicy()
    parser.add_argument("--no-contact-s", type=_number(1, 7 * 86400), default=defaults.no_contact_s,
                        help=f"alert when a unit has not been heard from for this long "
                        f"(default {defaults.no_contact_s:g} s)")
    parser.add_argument("--alert-sweep-s", type=_number(0.2, 3600), default=SWEEP_INTERVAL_S,
                        help=f"decide every unit's alerts this often between heartbeats "
                        f"(default {SWEEP_INTERVAL_S:g} s)")
    parser.add_argument("--basemap", type=Path, metavar="FILE.mbtiles",
                        help="the map's raster tiles (MBTiles; default: the shipped OpenStreetMap world, zoom 0-6)")


def settings(args: argparse.Namespace) -> OpsSettings:
    """The settings ``args`` name; a basemap that cannot be read is refused here, before serving."""
    try:
        policy = AlertPolicy(no_contact_s=args.no_contact_s)
        if args.basemap is not None:
            MbtilesSource(args.basemap)
    except (AlertError, BasemapError) as exc:
        raise OpsSettingsError(str(exc)) from exc
    return OpsSettings(policy=policy, sweep_interval_s=args.alert_sweep_s, basemap=args.basemap)


class OpsSettingsError(ValueError):
    """An option of the operations room that cannot be used."""

"""The driver registry: drivers register by HAL kind and name; the config picks them by name."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from hal.common import Availability

KINDS = ("camera", "thermal", "microphone", "gnss", "inputs", "indicators", "power", "clock")

T = TypeVar("T")


class DriverError(Exception):
    """An unknown driver name, or options a driver does not take."""


@dataclass(frozen=True, slots=True)
class DriverInfo:
    kind: str
    name: str
    factory: Callable[..., Any]
    summary: str

    def probe(self) -> Availability:
        probe = getattr(self.factory, "probe", None)
        if probe is None:
            return Availability(True)
        result: Availability = probe()
        return result


class Registry:
    """Maps (kind, name) to a driver class. One registry per process, passed around explicitly."""

    def __init__(self) -> None:
        self._drivers: dict[tuple[str, str], DriverInfo] = {}

    def register(self, kind: str, name: str) -> Callable[[T], T]:
        if kind not in KINDS:
            raise DriverError(f"unknown driver kind {kind!r}")

        def decorate(cls: T) -> T:
            key = (kind, name)
            if key in self._drivers:
                raise DriverError(f"driver {kind}/{name} registered twice")
            doc = (getattr(cls, "__doc__", None) or "").strip().splitlines()
            self._drivers[key] = DriverInfo(kind, name, cls, doc[0] if doc else "")  # type: ignore[arg-type]
            return cls

        return decorate

    def get(self, kind: str, name: str) -> DriverInfo:
        try:
            return self._drivers[(kind, name)]
        except KeyError:
            known = ", ".join(sorted(n for k, n in self._drivers if k == kind)) or "none"
            raise DriverError(f"no {kind} driver named {name!r} (known: {known})") from None

    def create(self, kind: str, driver: str, /, **options: Any) -> Any:
        """Instantiate driver ``driver`` of ``kind``; options the driver does not take raise DriverError."""
        info = self.get(kind, driver)
        try:
            return info.factory(**options)
        except TypeError as exc:
            raise DriverError(f"{kind} driver {driver!r}: {exc}") from exc

    def __iter__(self) -> Iterator[DriverInfo]:
        return iter(sorted(self._drivers.values(), key=lambda d: (d.kind, d.name)))


REGISTRY = Registry()
register = REGISTRY.register


def load_all() -> Registry:
    """Import every driver module so that each registers itself, and return the registry."""
    import drivers

    for mod in pkgutil.iter_modules(drivers.__path__):
        if mod.name != "registry":
            importlib.import_module(f"drivers.{mod.name}")
    return REGISTRY

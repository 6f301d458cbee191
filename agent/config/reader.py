"""Reading a TOML document into a :class:`~agent.config.model.Config`: each setting read as its
declaration says, unknown keys rejected with their dotted name, cross-setting rules checked."""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
import tomllib
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from agent.config.model import (
    INSTANCE,
    SECTIONS,
    CameraConfig,
    Config,
    ConfigError,
    fmt_bound,
    spec_of,
)
from agent.config.writer import toml_value

T = TypeVar("T")
def resolve_path(data_dir: str | os.PathLike[str], configured: str) -> Path:
    """A configured path made absolute: relative paths are relative to the data directory."""
    path = Path(configured)
    return path if path.is_absolute() else Path(data_dir) / path


class _Missing(enum.Enum):
    MISSING = 0


_REQUIRED = _Missing.MISSING


class _Section:
    """Klipper-style reader over one TOML table: each getter pops its key with a type and bound
    check next to the default; :meth:`finish` then rejects whatever nobody asked for."""

    def __init__(self, path: str, table: Mapping[str, object], source: str) -> None:
        self._path = path
        self._rest = dict(table)
        self._source = source

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self._path}.{key}" if self._path else key, problem, self._source)

    def _pop(self, key: str, default: object) -> object:
        if key in self._rest:
            return self._rest.pop(key)
        if default is _REQUIRED:
            raise self.error(key, "required key is missing")
        return default

    def getstr(
        self,
        key: str,
        default: str | _Missing = _REQUIRED,
        *,
        choices: Sequence[str] | None = None,
        pattern: re.Pattern[str] | None = None,
        described: str = "",
        nonempty: bool = False,
    ) -> str:
        value = self._pop(key, default)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(map(repr, choices))}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.error(key, f"{value!r} is not {described or pattern.pattern}")
        if nonempty and not value:
            raise self.error(key, "must not be empty")
        if "\0" in value:
            raise self.error(key, "must not contain NUL")
        return value

    def getint(
        self,
        key: str,
        default: int | _Missing = _REQUIRED,
        *,
        minval: int | None = None,
        maxval: int | None = None,
        choices: Sequence[int] | None = None,
    ) -> int:
        value = self._pop(key, default)
        if type(value) is not int:  # bool is an int subclass, and not a number here
            raise self.error(key, f"expected an integer, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(key, f"{value} is not one of {', '.join(map(str, choices))}")
        self._check_range(key, value, minval, maxval)
        return value

    def getfloat(
        self, key: str, default: float | _Missing = _REQUIRED, *, minval: float, maxval: float
    ) -> float:
        value = self._pop(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise self.error(key, f"{value} is not a finite number")
        self._check_range(key, value, minval, maxval)
        return float(value)

    def _check_range(self, key: str, value: float, minval: float | None, maxval: float | None) -> None:
        if (minval is not None and value < minval) or (maxval is not None and value > maxval):
            lo = "" if minval is None else fmt_bound(minval)
            hi = "" if maxval is None else fmt_bound(maxval)
            raise self.error(key, f"{value} is out of range {lo}..{hi}")

    def getbool(self, key: str, default: bool | _Missing = _REQUIRED) -> bool:
        value = self._pop(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def getstrs(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """An array of non-empty strings, as a tuple."""
        value = self._pop(key, default)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected an array of strings, got {value!r}")
        for i, item in enumerate(value):
            if not item or "\0" in item:
                raise self.error(key, f"entry {i} is empty or contains NUL")
        return tuple(value)

    def gettable(self, key: str) -> dict[str, object]:
        """A sub-table as a plain dict ({} when absent), for keys read as data, not checked."""
        value = self._pop(key, {})
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {value!r}")
        return value

    def section(self, key: str) -> _Section:
        """A sub-table read with typed getters (empty when absent)."""
        path = f"{self._path}.{key}" if self._path else key
        return _Section(path, self.gettable(key), self._source)

    def has(self, key: str) -> bool:
        return key in self._rest

    def keys(self) -> list[str]:
        """The keys nobody has read yet, sorted."""
        return sorted(self._rest)

    def finish(self) -> None:
        if self._rest:
            key = sorted(self._rest)[0]
            section = not self._path and isinstance(self._rest[key], dict)
            raise self.error(key, "unknown section" if section else "unknown key")


def _freeze(value: object) -> object:
    if isinstance(value, dict):
        return _freeze_table(value)
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _freeze_table(table: Mapping[str, object]) -> Mapping[str, object]:
    return types.MappingProxyType({k: _freeze(v) for k, v in table.items()})


def _read_field(sec: _Section, f: dataclasses.Field[Any]) -> object:
    """One declared setting, read and checked as its annotation and :class:`Spec` say."""
    spec = spec_of(f)
    default: Any = _REQUIRED
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    kind = str(f.type)
    if spec.kind == "table":
        return _freeze_table(sec.gettable(f.name))
    if spec.kind == "url":
        value = sec.getstr(f.name, default)
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise sec.error(f.name, f"{value!r} is not an http(s) URL")
        return value
    if kind == "str":
        return sec.getstr(f.name, default, choices=spec.choices or None,  # type: ignore[arg-type]
                          pattern=spec.pattern, described=spec.described, nonempty=spec.nonempty)
    if kind == "int":
        return sec.getint(f.name, default, minval=spec.minval, maxval=spec.maxval,  # type: ignore[arg-type]
                          choices=spec.choices or None)  # type: ignore[arg-type]
    if kind == "float":
        assert spec.minval is not None and spec.maxval is not None, f"{f.name}: a float needs bounds"
        return sec.getfloat(f.name, default, minval=spec.minval, maxval=spec.maxval)
    if kind == "bool":
        return sec.getbool(f.name, default)
    if kind == "tuple[str, ...]":
        return sec.getstrs(f.name, default)
    raise TypeError(f"{f.name}: no reader for settings of type {kind}")


def read_section(sec: _Section, cls: type[T]) -> T:
    """Every setting ``cls`` declares, in declaration order; then unknown keys are refused."""
    values = {f.name: _read_field(sec, f) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**values)


def _cameras(root: _Section) -> Mapping[str, CameraConfig]:
    if not root.has("cameras"):
        return types.MappingProxyType({"chest": CameraConfig()})
    table = root.section("cameras")
    names = table.keys()
    for name in names:
        if not INSTANCE.fullmatch(name):
            raise table.error(name, f"instance name does not match {INSTANCE.pattern}")
    cameras = {}
    for name in names:
        sec = table.section(name)
        cameras[name] = read_section(sec, CameraConfig)
        sec.finish()
    table.finish()
    return types.MappingProxyType(cameras)


def _check(sec: _Section, name: str, values: Mapping[str, Any]) -> None:
    """The rules between settings, checked once the section ``name`` is read."""
    value = values[name]
    if name == "recording" and value.keyframe_interval_s > values["evidence"].segment_s:
        # Segments are cut at keyframes; a longer keyframe interval would stretch every segment.
        raise sec.error("keyframe_interval_s", f"{fmt_bound(value.keyframe_interval_s)} exceeds "
                        f"evidence.segment_s ({fmt_bound(values['evidence'].segment_s)})")
    if name == "console" and value.lockout_max_s < value.lockout_base_s:
        raise sec.error("lockout_max_s", f"{fmt_bound(value.lockout_max_s)} is below console.lockout_base_s "
                        f"({fmt_bound(value.lockout_base_s)})")
    if name == "storage":
        wrong = value.misordered()
        if wrong is not None:
            key, higher = wrong
            raise sec.error(key, f"{getattr(value, key)} exceeds storage.{higher} ({getattr(value, higher)})")
    if name == "live":
        if not value.min_bitrate_bps <= value.bitrate_bps <= value.max_bitrate_bps:
            raise sec.error("bitrate_bps", f"{value.bitrate_bps} is outside live.min_bitrate_bps.."
                            f"live.max_bitrate_bps ({value.min_bitrate_bps}..{value.max_bitrate_bps})")
        if value.width % 2 or value.height % 2:
            raise sec.error("width", f"live picture {value.width}x{value.height}: both must be even")


def _build(root: _Section) -> Config:
    values: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        if name == "thermal":  # the file's order: cameras come before the other sensors
            values["cameras"] = _cameras(root)
        sec = root.section(name)
        values[name] = read_section(sec, cls)
        _check(sec, name, values)
        sec.finish()
    root.finish()
    return Config(**values)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate TOML text; ``source`` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"invalid TOML: {e}", source) from None
    return _build(_Section("", doc, source))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; every failure is a :class:`ConfigError`."""
    source = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError("", f"cannot read config: {e.strerror}", source) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("", f"not UTF-8 at byte {e.start}", source) from None
    return parse_config(text, source)


def default_config(device_id: str, hq_public_key: str = "hq.pub") -> Config:
    """Every default, for a device with this id; validated like a file would be."""
    return parse_config(f"[device]\nid = {toml_value(device_id)}\n[hq]\npublic_key = {toml_value(hq_public_key)}\n",
                        "<defaults>")

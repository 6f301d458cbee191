"""``bodycam drivers``: every driver by name, its HAL kind, and whether it is usable on this machine;
then each configured camera's H.264 encoder and why it was chosen."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from agent.textsafe import safe_text

if TYPE_CHECKING:
    from agent.config import Config
    from agent.unit import DriverListing, EncoderListing

CONFIG_NAME = "bodycam.toml"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("drivers", help="list every driver, its HAL kind, and whether it is usable here (and why "
                       "not); then the H.264 encoder each camera will use and why")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("--kind", help="only drivers of this HAL kind (camera, thermal, microphone, gnss, ...)")
    p.add_argument("--data-dir", type=Path, help=f"the unit's data dir: its {CONFIG_NAME} names the cameras")
    p.add_argument("--config", type=Path, help=f"config file (default: <data-dir>/{CONFIG_NAME}; without "
                   "either, the default config's cameras)")
    p.set_defaults(func=run)


def render(rows: list[DriverListing], out: TextIO) -> None:
    """A table: kind, name, usable or why not, and the driver's one-line summary."""
    width_kind = max([len("KIND")] + [len(r.kind) for r in rows])
    width_name = max([len("DRIVER")] + [len(r.name) for r in rows])
    print(f"{'KIND':<{width_kind}}  {'DRIVER':<{width_name}}  STATUS", file=out)
    for r in rows:
        status = "usable" if r.usable else f"unavailable: {r.reason or 'no reason given'}"
        print(f"{r.kind:<{width_kind}}  {r.name:<{width_name}}  {status}", file=out)
        if r.summary:
            print(f"{'':<{width_kind}}  {'':<{width_name}}    {r.summary}", file=out)


def render_encoders(rows: list[EncoderListing], out: TextIO) -> None:
    """A table: camera, the encoder it will use (or "none"), and why; reasons may quote drivers
    and FFmpeg, so they are made printable."""
    width_camera = max([len("CAMERA")] + [len(r.camera) for r in rows])
    width_codec = max([len("ENCODER")] + [len(r.codec or "none") for r in rows])
    print(f"{'CAMERA':<{width_camera}}  {'ENCODER':<{width_codec}}  WHY", file=out)
    for r in rows:
        print(f"{r.camera:<{width_camera}}  {r.codec or 'none':<{width_codec}}  {safe_text(r.reason)}", file=out)


def _config(args: argparse.Namespace) -> Config:
    from agent.config import default_config, load_config

    path = args.config or (args.data_dir / CONFIG_NAME if args.data_dir else None)
    return load_config(path) if path is not None else default_config("drivers-listing")


def run(args: argparse.Namespace) -> int:
    from agent.config import ConfigError
    from agent.unit import list_drivers, list_encoders

    rows = list_drivers()
    if args.kind:
        rows = [r for r in rows if r.kind == args.kind]
        if not rows:
            print(f"bodycam drivers: no drivers of kind {args.kind!r}", file=sys.stderr)
            return 2
    encoders: list[EncoderListing] = []
    if args.kind in (None, "camera"):
        try:
            encoders = list_encoders(_config(args))
        except ConfigError as exc:
            print(f"bodycam drivers: {safe_text(str(exc))}", file=sys.stderr)
            return 2
    if args.json:
        doc = [{"kind": r.kind, "name": r.name, "usable": r.usable, "reason": r.reason, "summary": r.summary}
               for r in rows]  # fmt: skip
        doc += [{"kind": "encoder", "name": e.camera, "usable": e.codec is not None, "reason": e.reason,
                 "summary": e.codec or "", "choice": e.choice} for e in encoders]  # fmt: skip
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(rows, sys.stdout)
        if encoders:
            print(file=sys.stdout)
            render_encoders(encoders, sys.stdout)
    return 0

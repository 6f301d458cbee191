"""``bodycam drivers``: every driver by name, its HAL kind, and whether it is usable on this machine."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from agent.unit import DriverListing, list_drivers


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("drivers", help="list drivers and whether each is usable here (library, device, permission)")
    p.add_argument("--kind", help="only drivers of this HAL kind (camera, thermal, microphone, gnss, ...)")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
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


def run(args: argparse.Namespace) -> int:
    rows = list_drivers()
    if args.kind:
        rows = [r for r in rows if r.kind == args.kind]
        if not rows:
            print(f"bodycam drivers: no drivers of kind {args.kind!r}", file=sys.stderr)
            return 2
    if args.json:
        doc = [{"kind": r.kind, "name": r.name, "usable": r.usable, "reason": r.reason, "summary": r.summary}
               for r in rows]  # fmt: skip
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(rows, sys.stdout)
    return 0

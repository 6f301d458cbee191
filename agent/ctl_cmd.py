"""``bodycam ctl``: the local client of a running agent (kept light: it imports only the socket code)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.control import request
from agent.textsafe import safe_text


def cmd_ctl(args: argparse.Namespace) -> int:
    sock = args.socket or args.data_dir / "ctl.sock"
    payload: dict[str, Any] = {}
    if args.command in ("stealth", "mute"):
        if args.value not in ("on", "off"):
            print(f"bodycam ctl: {args.command} takes on or off", file=sys.stderr)
            return 2
        payload["on"] = args.value == "on"
    elif args.command == "mark" and args.value:
        payload["note"] = args.value
    try:
        reply = request(sock, args.command, payload)
    except (FileNotFoundError, ConnectionRefusedError):
        print(f"bodycam ctl: no agent is listening on {sock} (is 'bodycam run' running?)", file=sys.stderr)
        return 3
    except PermissionError:
        print(f"bodycam ctl: permission denied on {sock} (run as the agent's user)", file=sys.stderr)
        return 3
    if args.json or args.command == "status":  # json.dumps escapes every control: safe on a terminal
        print(json.dumps(reply, indent=2, sort_keys=True))
    elif reply["ok"]:
        print(f"{args.command}: ok {json.dumps(reply['data'], sort_keys=True)}")
    if not reply["ok"]:
        err = reply["error"]
        print(safe_text(f"bodycam ctl: {args.command} refused: {err['message']} ({err['code']})"), file=sys.stderr)
        return 1
    return 0



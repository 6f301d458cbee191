"""``bodycam-hq user add|disable|enable|reset|roles|list|link``: operations-room accounts.

There is no default account and no default password: the first admin is made here. Passwords and
TOTP secrets are generated, printed once and stored only as an argon2id hash and the secret.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time

from agent.textsafe import safe_text
from hq.accounts.records import Role
from hq.accounts.service import AccountError, AccountService, Credentials
from hq.app import open_index
from hq.audit import Auditor

ROLE_HELP = "operator (map, units, alerts), supervisor (+ evidence and playback), auditor (audit trails), " \
            "admin (users, units); repeat for several"


def _actor() -> str:
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli:unknown"


def _fail(command: str, message: str, code: int = 1) -> int:
    print(f"bodycam-hq user {command}: {message}", file=sys.stderr)
    return code


def _print_credentials(creds: Credentials, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"name": creds.name, "password": creds.password, "totp_secret": creds.totp_secret,
                          "totp_uri": creds.totp_uri}))
        return
    print(f"  password:    {creds.password}")
    print(f"  TOTP secret: {creds.totp_secret}")
    print(f"  TOTP URI:    {creds.totp_uri}")
    print(f"Give these to {creds.name} in person or over a trusted channel: they are shown once, never again. "
          "Add the secret (or the URI as a QR code) to an authenticator app.")


def cmd_user(args: argparse.Namespace) -> int:
    index = open_index(args.data_dir, args.database_url)
    try:
        accounts = AccountService(index.accounts(), Auditor(index, "hq-cli", time.time_ns), time.time_ns)
        return _run(args, accounts)
    except AccountError as exc:
        return _fail(args.user_command, str(exc))
    finally:
        index.close()


def _run(args: argparse.Namespace, accounts: AccountService) -> int:
    command, actor = args.user_command, _actor()
    if command == "add":
        roles = frozenset(Role(r) for r in args.role)
        creds = accounts.add_user(args.name, roles, actor)
        if not args.json:
            print(f"added user {creds.name} (roles: {', '.join(sorted(roles))})")
        _print_credentials(creds, args.json)
    elif command == "reset":
        creds = accounts.reset(args.name, actor)
        if not args.json:
            print(f"reset user {creds.name}: a new password and TOTP secret; their sessions ended")
        _print_credentials(creds, args.json)
    elif command == "disable":
        ended = accounts.disable(args.name, actor)
        print(f"disabled user {args.name}; {ended} session(s) ended")
    elif command == "enable":
        accounts.enable(args.name, actor)
        print(f"enabled user {args.name}")
    elif command == "roles":
        accounts.set_roles(args.name, frozenset(Role(r) for r in args.role), actor)
        print(f"user {args.name} now has roles {', '.join(sorted(args.role))}; their sessions ended")
    elif command == "link":
        token = accounts.sign_in_link(args.name, actor, args.ttl_s)
        base = args.url.rstrip("/") if args.url else ""
        print(f"{base}/ops/link/{token}")
    else:
        _list(accounts, args.json)
    return 0


def _list(accounts: AccountService, as_json: bool) -> None:
    users = accounts.users()
    rows = [{"name": u.name, "roles": sorted(u.roles), "state": "active" if u.active else "disabled",
             "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(u.created_ns // 1_000_000_000))}
            for u in users]
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        print("no users yet: bodycam-hq user add NAME --role admin --data-dir DATA_DIR")
        return
    print(f"{'NAME':<20} {'STATE':<9} {'CREATED':<21} ROLES")
    for r in rows:
        print(f"{safe_text(str(r['name'])):<20} {r['state']:<9} {r['created_utc']:<21} {' '.join(r['roles'])}")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], data: argparse.ArgumentParser
               ) -> list[argparse.ArgumentParser]:
    """Add ``user`` and its commands; return the nested ones (the caller gives them -v)."""
    p = sub.add_parser("user", help="operations-room accounts (add, disable, enable, reset, roles, list, link)",
                       description="Manage the accounts of the operations room (the web application at /ops). "
                       "Every change is audited. Exit codes: 0 done; 1 refused; 2 bad usage.")
    usub = p.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    roles = [r.value for r in Role]
    a = usub.add_parser("add", parents=[data], help="add a user; prints a generated password and TOTP secret once")
    a.add_argument("name", help="the new user's name (lower case, e.g. j.smith)")
    a.add_argument("--role", action="append", required=True, choices=roles, help=ROLE_HELP)
    a.add_argument("--json", action="store_true", help="print the credentials as one JSON object")
    r = usub.add_parser("reset", parents=[data], help="new password and TOTP secret; ends the user's sessions")
    r.add_argument("name", help="the user to reset")
    r.add_argument("--json", action="store_true", help="print the credentials as one JSON object")
    for name, text in (("disable", "stop a user signing in; ends their sessions"), ("enable", "allow again")):
        d = usub.add_parser(name, parents=[data], help=text)
        d.add_argument("name", help="the user")
    o = usub.add_parser("roles", parents=[data], help="replace a user's roles; ends their sessions")
    o.add_argument("name", help="the user")
    o.add_argument("--role", action="append", required=True, choices=roles, help=ROLE_HELP)
    k = usub.add_parser("link", parents=[data], help="print a one-time sign-in link (no password, no code)")
    k.add_argument("name", help="the user the link signs in")
    k.add_argument("--ttl-s", type=float, default=900.0, help="how long the link works (default 900 s)")
    k.add_argument("--url", help="headquarters' public origin, e.g. https://hq.example:8443, to print a whole URL")
    li = usub.add_parser("list", parents=[data], help="list users, their roles and state")
    li.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=cmd_user)
    return list(usub.choices.values())

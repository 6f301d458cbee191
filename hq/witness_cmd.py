"""``bodycam-hq witness keygen|vkey|serve`` (a transparency-log witness, hq/witness.py) and
``bodycam-hq tlog vkey`` (the verifier key of headquarters' own log, for witnesses, units and
``bodycam verify``). docs/transparency-log.md says how a witness is deployed."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent.evidence import note
from agent.evidence.keys import KeyFileError, generate_receipt_key, load_receipt_private
from agent.evidence.tlogproof import log_verifier
from hq.serve import ListenError, bind, check_listen, parse_listen
from hq.tlog import default_origin
from hq.witness import MAX_BODY_BYTES, Witness, WitnessError, state_dir_ready

log = logging.getLogger(__name__)

KEY_NAME = "witness.key"
VKEY_NAME = "witness.vkey"


def _fail(command: str, message: str, code: int = 2) -> int:
    print(f"bodycam-hq {command}: {message}", file=sys.stderr)
    return code


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    w = sub.add_parser("witness", help="a transparency-log witness with its own key (run it outside headquarters)")
    wsub = w.add_subparsers(dest="witness_command", required=True)
    p = wsub.add_parser("keygen", help="create the witness's key and print its verifier key")
    p.add_argument("--data-dir", type=Path, required=True, help="the witness's own folder (key, state)")
    p.add_argument("--name", required=True, help="the witness's name, e.g. court.example/bodycam-witness")
    p.set_defaults(func=cmd_keygen)
    p = wsub.add_parser("vkey", help="print the witness's verifier key (give it to headquarters and verifiers)")
    p.add_argument("--data-dir", type=Path, required=True, help="the witness's own folder")
    p.set_defaults(func=cmd_vkey)
    p = wsub.add_parser("serve", help="cosign checkpoints (c2sp.org/tlog-witness add-checkpoint, plain HTTP)")
    p.add_argument("--data-dir", type=Path, required=True, help="the witness's own folder (key, state, forks/)")
    p.add_argument("--listen", required=True, help="HOST:PORT (loopback only unless --allow-remote)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback address (put TLS in front)")
    p.add_argument("--log", action="append", required=True, metavar="VKEY",
                   help="the verifier key of a log to witness (bodycam-hq tlog vkey prints headquarters'); repeatable")
    p.set_defaults(func=cmd_serve)

    t = sub.add_parser("tlog", help="headquarters' transparency log")
    tsub = t.add_subparsers(dest="tlog_command", required=True)
    p = tsub.add_parser("vkey", help="print the log's verifier key (for witnesses and bodycam verify --log-key)")
    p.add_argument("--data-dir", type=Path, required=True, help="headquarters' data dir")
    p.add_argument("--keys", type=Path, help="keys dir (default: DATA_DIR/keys)")
    p.add_argument("--log-origin", help="the log's origin, as given to serve (default: from the receipt key)")
    p.set_defaults(func=cmd_tlog_vkey)


def _signer(data_dir: Path) -> note.Signer:
    key = load_receipt_private(data_dir / KEY_NAME)
    try:
        vkey = note.parse_vkey((data_dir / VKEY_NAME).read_text())
    except OSError as exc:
        raise KeyFileError(f"reading {data_dir / VKEY_NAME}: {exc.strerror}") from exc
    except note.NoteError as exc:
        raise KeyFileError(f"{data_dir / VKEY_NAME}: {exc}") from exc
    signer = note.Signer(vkey.name, key, note.SIG_COSIGNATURE)
    if signer.verifier.vkey() != vkey.vkey():
        raise KeyFileError(f"{data_dir / VKEY_NAME} is not the verifier key of {data_dir / KEY_NAME}")
    return signer


def cmd_keygen(args: argparse.Namespace) -> int:
    try:
        note.check_name(args.name)
        state_dir_ready(args.data_dir)
        key = generate_receipt_key(args.data_dir / KEY_NAME)
    except (note.NoteError, KeyFileError, OSError) as exc:
        return _fail("witness keygen", str(exc))
    vkey = note.Verifier(args.name, note.SIG_COSIGNATURE, key).vkey()
    (args.data_dir / VKEY_NAME).write_text(vkey + "\n")
    print(vkey)
    return 0


def cmd_vkey(args: argparse.Namespace) -> int:
    try:
        print(_signer(args.data_dir).verifier.vkey())
    except KeyFileError as exc:
        return _fail("witness vkey", str(exc))
    return 0


def cmd_tlog_vkey(args: argparse.Namespace) -> int:
    keys: Path = args.keys or args.data_dir / "keys"
    try:
        key = load_receipt_private(keys / "receipt.key").public_key()
        print(log_verifier(args.log_origin or default_origin(key), key).vkey())
    except (KeyFileError, note.NoteError) as exc:
        return _fail("tlog vkey", str(exc))
    return 0


def app(witness: Witness) -> Starlette:
    async def add_checkpoint(request: Request) -> Response:
        length = request.headers.get("content-length", "")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return Response(f"a body with Content-Length of at most {MAX_BODY_BYTES} bytes\n", 413)
        body = await request.body()
        answer = await run_in_threadpool(witness.add_checkpoint, body)
        return Response(answer.body, answer.status, media_type=answer.content_type)

    return Starlette(routes=[Route("/add-checkpoint", add_checkpoint, methods=["POST"])])


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        logs = [note.parse_vkey(v) for v in args.log]
        signer = _signer(args.data_dir)
        witness = Witness(signer, logs, args.data_dir, lambda: int(time.time()))
        host, port = parse_listen(args.listen)
        check_listen(host, args.allow_remote)
        sock = bind((host, port))
    except (note.NoteError, KeyFileError, WitnessError, ListenError, OSError) as exc:
        return _fail("witness serve", str(exc))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app(witness), log_level="warning", timeout_keep_alive=15, limit_concurrency=64)
    server = uvicorn.Server(config)
    print(f"bodycam-hq witness: {signer.name} listening on http://{host}:{bound}/add-checkpoint, "
          f"witnessing {', '.join(v.name for v in logs)}", flush=True)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
    print("bodycam-hq witness: stopped", flush=True)
    return 0

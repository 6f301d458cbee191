"""``bodycam diag``: the field technician's client for a unit's serial console.

It speaks the console's machine mode (one JSON object per line), logs in by signing the unit's
challenge with the technician's key when a command needs it, and prints what the unit answers
as the same tables a terminal shows, or as JSON with ``--json``. With no command it is
interactive, with line editing and history. A login opens a session on the unit that only this
client's requests carry; the client logs it out before it exits, on an error, Ctrl-C, SIGTERM
or SIGHUP too. Everything the unit sends is shown with its terminal controls escaped.

Exit codes: 0 done; 1 the unit refused or the self-test failed; 2 bad usage or key file;
3 the port is absent, busy or silent; 4 the login was refused.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from agent.console import render
from agent.diag_args import DEFAULT_TIMEOUT_S
from agent.textsafe import safe_text

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519

# Only light modules above: ``bodycam`` builds its parser from add_arguments at every start.
# The key and serial libraries load when diag runs.

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PORT, EXIT_LOGIN = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
SELFTEST_TIMEOUT_S = 60.0
LOGOUT_TIMEOUT_S = 3.0
LOGIN_CODES = ("bad-signature", "unknown-key", "bad-certificate", "certificate-expired", "locked",
               "no-challenge", "no-technicians", "session-ended")


def say(text: object, file: IO[str] | None = None) -> None:
    """Print text that may hold what the unit sent: its terminal controls are shown escaped."""
    print(safe_text(text, multiline=True), file=file or sys.stdout)


class DiagError(Exception):
    """Something the technician must fix, with the exit code to leave with."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Port(Protocol):
    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def close(self) -> None: ...


# -- keys ------------------------------------------------------------------------------------------


def load_technician_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """The technician's Ed25519 private key; refused unless only its owner can read it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise DiagError(EXIT_USAGE, f"reading key {path}: {exc.strerror}") from None
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        private = path.with_suffix("") if path.suffix == ".pub" else None
        raise DiagError(EXIT_USAGE, f"{path} is a public key; --key needs the technician's private key"
                                    + (f" ({private}?)" if private else " (the file without .pub)"))
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise DiagError(EXIT_USAGE, f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                                    f"run chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise DiagError(EXIT_USAGE, f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DiagError(EXIT_USAGE, f"{path} is not an Ed25519 key")
    return key


def generate_technician_key(path: Path, pub_path: Path | None = None) -> str:
    """Write a new key (0600) and its public key (``<path>.pub`` unless given); return the public
    key's fingerprint."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from agent.console.auth import key_fingerprint
    from agent.evidence.keys import write_private_pem, write_public_pem

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_private_pem(path, pem)
    pub = key.public_key()
    write_public_pem(pub_path or path.with_name(path.name + ".pub"),
                     pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_fingerprint(pub)


# -- the port --------------------------------------------------------------------------------------


def open_port(device: str, baud: int) -> Port:
    """Open the unit's console port 8N1, exclusively; DiagError with advice when it cannot be."""
    import serial

    try:
        port = serial.Serial(device, baud, timeout=0.2, write_timeout=5.0, exclusive=True)
    except (serial.SerialException, OSError) as exc:
        raise DiagError(EXIT_PORT, port_advice(device, getattr(exc, "errno", None), str(exc))) from None
    return port  # type: ignore[no-any-return]


def port_advice(device: str, err: int | None, text: str) -> str:
    if err == errno.ENOENT:
        return (f"no such port {device}: is the cable plugged in and the unit on? "
                f"Ports on this machine: {', '.join(_ports()) or 'none'}")
    if err in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "lock" in text.lower():
        return (f"{device} is busy: another program (screen, minicom, ModemManager, another bodycam diag) "
                "has it open; close it and try again")
    if err == errno.EACCES:
        return (f"permission denied on {device}: add yourself to the dialout group "
                "(sudo usermod -aG dialout $USER, then log in again)")
    return f"cannot open {device}: {text}"


def _ports() -> list[str]:
    try:
        from serial.tools import list_ports

        return sorted(p.device for p in list_ports.comports())
    except Exception:  # listing is advice only
        return []


class ConsoleClient:
    """Requests and answers over an open port. Lines that are not our answer (a prompt, an echo,
    a flood notice) are skipped, so the client resynchronises whatever the line held before."""

    def __init__(self, port: Port, device: str, baud: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.port = port
        self.device = device
        self.baud = baud
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        self._buf = b""
        self._synced = False
        self.session: str | None = None  # the unit's id for our login: only requests carrying it act as us

    def request(self, cmd: str, args: list[str] | dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        req_id = next(self._ids)
        doc: dict[str, Any] = {"cmd": cmd, "args": args, "id": req_id}
        if self.session is not None:
            doc["session"] = self.session
        line = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
        # Ctrl-U and a line end first: whatever half line the unit holds is dropped or ended
        prefix = b"" if self._synced else b"\x15\r\n"
        self.port.write(prefix + line)
        answer = self._read_answer(req_id, timeout_s or self.timeout_s)
        self._synced = True
        return answer

    def _read_answer(self, req_id: int, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            while b"\n" in self._buf:
                raw, self._buf = self._buf.split(b"\n", 1)
                start = raw.find(b"{")
                if start < 0:
                    continue
                try:
                    doc = json.loads(raw[start:].decode("utf-8", "replace"))
                except ValueError:
                    continue
                if isinstance(doc, dict) and doc.get("id") == req_id:
                    return doc
            try:
                self._buf += self.port.read(4096)
            except OSError as exc:
                raise DiagError(EXIT_PORT, f"{self.device}: the line failed ({exc}); was the cable pulled?") \
                    from None
            if len(self._buf) > 1 << 20:
                self._buf = self._buf[-65536:]
        raise DiagError(EXIT_PORT, f"no answer from the unit on {self.device} at {self.baud} baud within "
                                   f"{timeout_s:g} s: check the baud rate (the unit's [console] baud, default "
                                   "115200), that the agent runs with a console device, and that the cable "
                                   "carries data (a charge-only USB cable does not)")

    def login(self, key: ed25519.Ed25519PrivateKey, cert: str | None) -> dict[str, Any]:
        from agent.console.auth import login_message, raw_public

        self.session = None
        challenge = self.request("login", [])
        if not challenge.get("ok"):
            raise DiagError(EXIT_LOGIN, "login refused: " + _error_text(challenge))
        data = challenge["data"]
        signature = key.sign(login_message(str(data["device_id"]), bytes.fromhex(str(data["nonce"]))))
        args: dict[str, Any] = {"key": raw_public(key.public_key()).hex(), "signature": signature.hex()}
        if cert:
            args["cert"] = cert
        answer = self.request("login", args)
        if not answer.get("ok"):
            raise DiagError(EXIT_LOGIN, "login refused: " + _error_text(answer))
        session = (answer.get("data") or {}).get("session")
        self.session = session if isinstance(session, str) else None
        return answer

    def logout(self) -> None:
        """End our session on the unit, if we opened one. Never raises: it runs on the way out."""
        if self.session is None:
            return
        try:
            self.request("logout", [], LOGOUT_TIMEOUT_S)
        except (DiagError, OSError) as exc:
            print(f"bodycam diag: could not log out ({safe_text(exc)}); the unit ends the session when it "
                  "is idle", file=sys.stderr)
        finally:
            self.session = None

    def call(self, cmd: str, args: list[str], key: ed25519.Ed25519PrivateKey | None,
             cert: str | None) -> dict[str, Any]:
        """One command; logs in first if the unit says it needs a login (or that our session
        ended) and a key is at hand."""
        if cmd == "logout":
            answer = self.request(cmd, args)
            self.session = None
            return answer
        timeout = SELFTEST_TIMEOUT_S if cmd == "selftest" else None
        answer = self.request(cmd, args, timeout)
        code = (answer.get("error") or {}).get("code")
        if code == "session-ended":
            self.session = None
            print(f"bodycam diag: {_error_text(answer)}", file=sys.stderr)
            if not key:  # without a key, ask again as anyone: a read still works
                return self.request(cmd, args, timeout)
        if code in ("login-required", "session-ended") and key:
            self.login(key, cert)
            answer = self.request(cmd, args, timeout)
        return answer


def _error_text(answer: dict[str, Any]) -> str:
    err = answer.get("error") or {}
    return safe_text(f"{err.get('message')} ({err.get('code')})")


def show(answer: dict[str, Any], cmd: str, as_json: bool) -> int:
    """Print an answer; the exit code it means."""
    if as_json:
        # ensure_ascii: every control and non-ASCII character is a \u escape, inert on a terminal
        print(json.dumps(answer, indent=None, sort_keys=True, ensure_ascii=True))
    elif answer.get("ok"):
        say(render.render(str(answer.get("cmd") or cmd), answer.get("data") or {}))
    else:
        err = answer.get("error") or {}
        say(render.render_error(str(err.get("code")), str(err.get("message"))), file=sys.stderr)
        if err.get("code") in ("login-required", "session-ended"):
            print("hint: give your technician key with --key FILE", file=sys.stderr)
    if not answer.get("ok"):
        code = (answer.get("error") or {}).get("code")
        return EXIT_LOGIN if code in LOGIN_CODES else EXIT_FAILED
    if cmd == "selftest" and (answer.get("data") or {}).get("verdict") != "pass":
        return EXIT_FAILED
    return EXIT_OK


def _cert_for(args: argparse.Namespace) -> str | None:
    path: Path | None = args.cert
    if path is None and args.key is not None:
        candidate = args.key.with_name(args.key.name + ".cert")
        path = candidate if candidate.exists() else None
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise DiagError(EXIT_USAGE, f"reading certificate {path}: {exc.strerror}") from None


def cmd_diag(args: argparse.Namespace) -> int:
    from agent.diag_args import hoist_options

    hoist_options(args)
    try:
        if args.keygen is not None:
            fp = generate_technician_key(args.keygen)
            print(f"technician key written to {args.keygen} (0600) and {args.keygen}.pub")
            print(f"fingerprint {fp}: send {args.keygen.name}.pub (never the key) to headquarters")
            return EXIT_OK
        if not args.port:
            print("bodycam diag: --port DEVICE is required (the unit's serial port, e.g. /dev/ttyACM0)",
                  file=sys.stderr)
            return EXIT_USAGE
        key = load_technician_key(args.key) if args.key is not None else None
        cert = _cert_for(args)
        port = open_port(args.port, args.baud)
        client = ConsoleClient(port, args.port, args.baud, args.timeout)
        try:
            from agent.diag_shell import interactive, interrupted_by_signals

            with interrupted_by_signals():
                if not args.command:
                    return interactive(client, key, cert)
                return show(client.call(args.command[0], args.command[1:], key, cert), args.command[0], args.json)
        finally:
            client.logout()  # a login never outlives this run, whatever ended it
            port.close()
    except DiagError as exc:
        say(f"bodycam diag: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bodycam diag: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # keys module errors and the like: a message, not a traceback
        if type(exc).__name__ != "KeyFileError":
            raise
        print(f"bodycam diag: {exc}", file=sys.stderr)
        return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    from agent.cliargs import Parser
    from agent.diag_args import DESCRIPTION, add_arguments, commands_help

    parser = Parser(prog="bodycam diag", description=DESCRIPTION, epilog=commands_help())
    add_arguments(parser)
    return cmd_diag(parser.parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""Browser tests of the operations room: a real ``bodycam-hq serve`` on loopback, users made with
the real CLI, and Debian's chromium driven by Playwright.

API (fixtures in tests/integration/browser/conftest.py wrap it):

- ``OpsServer.start(data, users=ROLE_USERS, database_url=None, extra_args=())``: keygen, users
  (``bodycam-hq user add --json``; their passwords and TOTP secrets kept in ``server.users``),
  then ``serve`` on 127.0.0.1 with a kernel-chosen port; ``server.url`` is ``https://127.0.0.1:P``;
  ``stop()`` ends it. ``add_user(name, *roles)`` adds one more.
- ``Browser()``: chromium with the house flags and a fresh user-data-dir; ``new_page()`` gives a
  Playwright page that trusts the server's self-signed certificate; ``close()``.
- ``sign_in(page, server, user)``: through the real form, with a fresh TOTP code.
- ``http_sign_in(server, user)``: the same form without a browser: a ``requests`` session that
  trusts the server's certificate, signed in, and the page's CSRF token (for JSON routes).
- ``screenshot(page, name)``: ``test-artifacts/screenshots/NAME.png`` (CI keeps that folder).
- ``axe_violations(page)`` / ``assert_accessible(page)``: axe-core (vendored in tests/vendor,
  injected into the page) for WCAG 2.1 A and AA rules.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp

from tests.prereqs import require_tool

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
AXE = ROOT / "tests" / "vendor" / "axe.min.js"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
ROLE_USERS: dict[str, tuple[str, ...]] = {
    "olivia": ("operator",), "sam": ("supervisor",), "ada": ("auditor",), "root": ("admin",),
}
TOTP_STEP_S = 30


@dataclass
class WebUser:
    name: str
    roles: tuple[str, ...]
    password: str
    totp_secret: str
    last_step: int = -1  # the newest TOTP step used: headquarters refuses a code used before

    def next_code(self) -> str:
        """A code headquarters will accept now: the current step's, or the next step's (its window
        reaches one step ahead) when the current one was used; waits for a new step only when both
        were. Never the step before: it may leave the window before the form arrives."""
        while True:
            current = int(time.time() // TOTP_STEP_S)
            for step in (current, current + 1):
                if step > self.last_step:
                    self.last_step = step
                    return pyotp.TOTP(self.totp_secret).at(step * TOTP_STEP_S)
            time.sleep(1)


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(BIN / "bodycam-hq"), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert res.returncode == 0, f"bodycam-hq {' '.join(args)} failed: {res.stderr}"
    return res


@dataclass
class OpsServer:
    data: Path
    database_url: str | None = None
    users: dict[str, WebUser] = field(default_factory=dict)
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, data: Path, users: dict[str, tuple[str, ...]] | None = None, database_url: str | None = None,
              extra_args: Sequence[str] = ()) -> OpsServer:
        server = cls(data, database_url)
        if not (data / "keys").is_dir():
            cli("keygen", "--data-dir", str(data))
        if database_url is not None:
            cli("migrate", "--database-url", database_url)
        for name, roles in (ROLE_USERS if users is None else users).items():
            server.add_user(name, *roles)
        server.serve(extra_args)
        return server

    def _db_args(self) -> list[str]:
        return ["--data-dir", str(self.data)] + (["--database-url", self.database_url] if self.database_url else [])

    def add_user(self, name: str, *roles: str) -> WebUser:
        args = ["user", "add", name, *[a for r in roles for a in ("--role", r)], "--json", *self._db_args()]
        creds = json.loads(cli(*args).stdout)
        user = WebUser(name, tuple(roles), creds["password"], creds["totp_secret"])
        self.users[name] = user
        return user

    def serve(self, extra_args: Sequence[str] = ()) -> None:
        log = (self.data / "hq.log").open("ab")
        self.proc = subprocess.Popen(
            [str(BIN / "bodycam-hq"), "serve", *self._db_args(), "--listen", "127.0.0.1:0", *extra_args],
            stdout=subprocess.PIPE, stderr=log)
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        m = re.search(r"https://127\.0\.0\.1:(\d+)/", line)
        assert m, f"no serving line from bodycam-hq: {line!r}\n{(self.data / 'hq.log').read_text()}"
        self.url = f"https://127.0.0.1:{m.group(1)}"

    def audit(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The audit log as the index holds it (read with the index API, not through the web)."""
        from hq.index import open_index

        with open_index(self.data, self.database_url) as index:
            return [{"event": r.event_type, "actor": r.actor, "target": r.target, "outcome": r.outcome,
                     "component": r.component, "detail": r.detail} for r in index.audit_log(event_type)]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


class Browser:
    """Debian's chromium under Playwright, one fresh profile; pages trust self-signed TLS."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        executable = require_tool("chromium")
        self._profile = Path(tempfile.mkdtemp(prefix="bodycam-chromium-"))
        self._playwright = sync_playwright().start()
        try:
            self.context = self._playwright.chromium.launch_persistent_context(
                str(self._profile), executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS),
                ignore_https_errors=True, viewport={"width": 1280, "height": 800}, locale="en-GB",
                timezone_id="UTC")
        except BaseException:
            self._playwright.stop()
            shutil.rmtree(self._profile, ignore_errors=True)
            raise
        self.context.set_default_timeout(20_000)

    def new_page(self) -> Any:
        return self.context.new_page()

    def clear_cookies(self) -> None:
        self.context.clear_cookies()

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self._playwright.stop()
            shutil.rmtree(self._profile, ignore_errors=True)


def sign_in(page: Any, server: OpsServer, user: WebUser | str, path: str = "/ops/") -> None:
    """Sign ``user`` in through the form and wait for the page that names them."""
    who = server.users[user] if isinstance(user, str) else user
    page.goto(server.url + path)
    page.get_by_label("User name").fill(who.name)
    page.get_by_label("Password").fill(who.password)
    page.get_by_label("Code from your authenticator app").fill(who.next_code())
    page.get_by_role("button", name="Sign in").click()
    page.locator("#signed-in-user").wait_for()
    assert page.locator("#signed-in-user").inner_text() == who.name


def http_sign_in(server: OpsServer, user: str) -> tuple[Any, str]:
    """(session, CSRF token): ``user`` signed in through the form over plain HTTPS."""
    import requests

    http = requests.Session()
    http.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment replaces the session's verify
    http.verify = str(server.data / "keys" / "ca.pem")
    who = server.users[user]
    form = http.get(server.url + "/ops/signin")
    m = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert m, form.text
    answer = http.post(server.url + "/ops/signin", data={
        "csrf_token": m.group(1), "name": who.name, "password": who.password, "code": who.next_code(),
        "next": "/ops/"}, headers={"Origin": server.url}, allow_redirects=False)
    assert answer.status_code == 303, answer.text
    home = http.get(server.url + "/ops/")
    m = re.search(r'<meta name="csrf-token" content="([^"]+)"', home.text)
    assert m, home.text
    return http, m.group(1)


# What the unit's live encoder sends (agent/live/encoder.py): H.264 constrained baseline, which a
# WebRTC peer names by profile-level-id 42e0xx (profile_idc 0x42, constraint_set1).
LIVE_PROFILE_PREFIX = "42e0"


def webrtc_video_codecs(page: Any) -> list[tuple[str, str]]:
    """(MIME type, fmtp line) of every video codec this browser receives over WebRTC."""
    found = page.evaluate("RTCRtpReceiver.getCapabilities('video').codecs"
                          ".map(c => [c.mimeType, c.sdpFmtpLine || ''])")
    return [(str(m), str(f)) for m, f in found]


def receives_live_h264(codecs: Sequence[tuple[str, str]]) -> bool:
    """Whether ``codecs`` include H.264 constrained baseline in packetization mode 1, as the unit sends."""
    for mime, fmtp in codecs:
        params = dict(p.split("=", 1) for p in fmtp.split(";") if "=" in p)
        if mime.lower() == "video/h264" and params.get("profile-level-id", "").lower().startswith(LIVE_PROFILE_PREFIX) \
                and params.get("packetization-mode") == "1":
            return True
    return False


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page: Any, tags: Sequence[str] = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
                   ) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it stands (injected from tests/vendor; no network)."""
    page.evaluate(AXE.read_text())  # through the DevTools protocol: the page's CSP allows no inline script
    result: dict[str, Any] = page.evaluate(
        "async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})", list(tags))
    return list(result["violations"])


def assert_accessible(page: Any) -> None:
    violations = axe_violations(page)
    summary = [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
               for v in violations]
    assert not violations, "axe-core found:\n" + "\n".join(summary)

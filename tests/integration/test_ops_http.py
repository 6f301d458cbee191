"""The operations room over real HTTPS, without a browser: headers, cookies, CSRF, origin, lockout."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.browser_util import OpsServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsServer]:
    s = OpsServer.start(tmp_path_factory.mktemp("ops-http"), users={"ada": ("auditor",), "olivia": ("operator",)})
    yield s
    s.stop()


def _session(server: OpsServer) -> requests.Session:
    http = requests.Session()
    http.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment replaces the session's verify
    http.verify = str(server.data / "keys" / "ca.pem")
    return http


def _form_token(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def _sign_in(server: OpsServer, http: requests.Session, name: str) -> requests.Response:
    page = http.get(server.url + "/ops/signin")
    user = server.users[name]
    return http.post(server.url + "/ops/signin", data={
        "csrf_token": _form_token(page.text), "name": name, "password": user.password, "code": user.next_code(),
        "next": "/ops/"}, headers={"Origin": server.url}, allow_redirects=False)


def test_pages_carry_the_security_headers_and_secure_cookies(server: OpsServer) -> None:
    http = _session(server)
    page = http.get(server.url + "/ops/signin")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert page.headers["Cache-Control"] == "no-store"
    answer = _sign_in(server, http, "ada")
    assert answer.status_code == 303 and answer.headers["Location"] == "/ops/"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("__Host-bodycam-ops=")
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie and "Max-Age" not in cookie.split("__Host-bodycam-signin")[0]


def test_a_host_that_is_not_this_service_is_refused(server: OpsServer) -> None:
    answer = _session(server).get(server.url + "/ops/signin", headers={"Host": "attacker.example"})
    assert answer.status_code == 421


def test_state_changes_need_the_token_and_this_origin(server: OpsServer) -> None:
    http = _session(server)
    assert _sign_in(server, http, "olivia").status_code == 303
    home = http.get(server.url + "/ops/")
    token = _form_token(home.text)
    no_token = http.post(server.url + "/ops/signout", data={}, headers={"Origin": server.url})
    assert no_token.status_code == 403
    foreign = http.post(server.url + "/ops/signout", data={"csrf_token": token},
                        headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    refused = [r for r in server.audit("csrf-refused") if r["actor"] == "olivia"]
    assert len(refused) == 2 and refused[-1]["outcome"] == "refused"
    assert http.get(server.url + "/ops/", allow_redirects=False).status_code == 200  # still signed in
    by_header = http.post(server.url + "/ops/signout", headers={"Origin": server.url, "X-CSRF-Token": token},
                          allow_redirects=False)
    assert by_header.status_code == 303
    assert http.get(server.url + "/ops/", allow_redirects=False).status_code == 303  # signed out


def test_a_sign_in_form_from_another_site_is_refused(server: OpsServer) -> None:
    http = _session(server)
    token = _form_token(http.get(server.url + "/ops/signin").text)
    user = server.users["ada"]
    answer = http.post(server.url + "/ops/signin", data={"csrf_token": token, "name": "ada",
                       "password": user.password, "code": user.next_code()},
                       headers={"Origin": "https://evil.example"}, allow_redirects=False)
    assert answer.status_code == 403 and "__Host-bodycam-ops" not in answer.headers.get("Set-Cookie", "")


def test_repeated_failures_lock_the_account_out_with_retry_after(tmp_path: Path) -> None:
    server = OpsServer.start(tmp_path / "hq", users={"sam": ("supervisor",)})
    try:
        http = _session(server)
        statuses = []
        for _ in range(6):
            token = _form_token(http.get(server.url + "/ops/signin").text)
            answer = http.post(server.url + "/ops/signin", data={"csrf_token": token, "name": "sam",
                               "password": "not the password", "code": "000000"}, headers={"Origin": server.url})
            statuses.append(answer.status_code)
        assert statuses == [401, 401, 401, 401, 401, 429]
        assert int(answer.headers["Retry-After"]) >= 1
        assert "Too many failed sign-ins" in answer.text
        assert [r["detail"]["reason"] for r in server.audit("signin")][-1] == "locked-out"
    finally:
        server.stop()


def test_sign_in_and_roles_work_on_postgresql(tmp_path: Path, fresh_postgres_url: str) -> None:
    server = OpsServer.start(tmp_path / "hq", users={"ada": ("auditor",), "olivia": ("operator",)},
                             database_url=fresh_postgres_url)
    try:
        ada, olivia = _session(server), _session(server)
        assert _sign_in(server, ada, "ada").status_code == 303
        assert ada.get(server.url + "/ops/audit").status_code == 200
        assert _sign_in(server, olivia, "olivia").status_code == 303
        assert olivia.get(server.url + "/ops/audit").status_code == 403
        events = [(r["event"], r["actor"], r["outcome"]) for r in server.audit()]
        assert ("signin", "ada", "ok") in events and ("view-audit-trail", "ada", "ok") in events
        assert ("access-denied", "olivia", "refused") in events
    finally:
        server.stop()


def test_an_auditor_exports_a_users_trail_as_csv_and_pdf_and_the_export_is_audited(server: OpsServer) -> None:
    ada, olivia = _session(server), _session(server)
    assert _sign_in(server, olivia, "olivia").status_code == 303
    assert olivia.get(server.url + "/ops/audit/export.csv?user=olivia").status_code == 403
    assert _sign_in(server, ada, "ada").status_code == 303
    answer = ada.get(server.url + "/ops/audit/export.csv?user=olivia")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/csv")
    assert answer.headers["Content-Disposition"].startswith('attachment; filename="audit-trail-')
    lines = answer.text.splitlines()
    assert lines[0].startswith("id,time_utc,component,event_type,user,object,outcome")
    assert len(lines) > 1 and all(",olivia," in line for line in lines[1:])
    assert any(",access-denied,olivia," in line for line in lines[1:])  # her refused export is in her trail
    pdf = ada.get(server.url + "/ops/audit/export.pdf?user=olivia")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    exports = [r for r in server.audit("audit-export") if r["actor"] == "ada"]
    assert [(r["detail"]["format"], r["detail"]["user"], r["outcome"]) for r in exports] == [
        ("csv", "olivia", "ok"), ("pdf", "olivia", "ok")]
    assert ada.get(server.url + "/ops/audit/export.xls").status_code == 404


def test_watch_live_is_offered_only_where_headquarters_brokers_live_view(server: OpsServer) -> None:
    http = _session(server)
    assert _sign_in(server, http, "olivia").status_code == 303
    for page in ("/ops/units", "/ops/map"):
        answer = http.get(server.url + page)
        assert answer.status_code == 200 and "Watch live" not in answer.text and 'data-watch="yes"' not in answer.text

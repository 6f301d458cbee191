"""What every page of the operations room is built from: ``WebContext`` and ``WebSettings``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.templating import Jinja2Templates

from hq.accounts.records import User
from hq.accounts.service import AccountService
from hq.accounts.sessions import SessionPolicy
from hq.audit import Auditor
from hq.decrypt_client import DecryptClient
from hq.evidence_service import EvidenceService
from hq.guard import Origins
from hq.index import Index
from hq.ops_room import OpsRoom
from hq.service import HqService
from hq.web.nav import PREFIX, NavItem

__all__ = ["PREFIX", "STATIC", "TEMPLATES", "WebContext", "WebSettings"]

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True, slots=True)
class WebSettings:
    """``secure_cookies``: the browser reaches headquarters over HTTPS (``serve`` speaks TLS itself,
    or ``--behind-proxy`` behind a TLS-terminating proxy): cookies are ``Secure`` with the
    ``__Host-`` prefix. Off only for a test app over plain HTTP; Chromium and Firefox also accept
    Secure cookies from http://localhost, so a developer's plain loopback proxy still works."""

    sessions: SessionPolicy = field(default_factory=SessionPolicy)
    secure_cookies: bool = True
    # ``bodycam-hq decryptd``'s unix socket: playback and GNSS trails ask it to decrypt (this
    # process never holds headquarters' private key). None: search and pages work, playback 503s.
    decryptd_socket: Path | None = None


@dataclass(slots=True)
class WebContext:
    """The service, the index, the audit log, the clock and the settings, for every feature's routes;
    ``evidence`` is search, recording views and playback (hq/evidence_service.py) over them.

    ``audit`` writes as component ``hq-web``. Its methods block: call ``record``/``viewed`` (which
    run them in a worker thread) from request handlers.
    """

    service: HqService
    index: Index
    accounts: AccountService
    audit: Auditor
    now_ns: Callable[[], int]
    settings: WebSettings
    origins: Origins
    behind_proxy: bool
    evidence: EvidenceService
    ops: OpsRoom | None = None  # the map, units, alerts and live updates (hq/ops_room.py)
    nav: list[NavItem] = field(default_factory=list)
    templates: Jinja2Templates = field(default_factory=lambda: Jinja2Templates(directory=str(TEMPLATES)))

    async def record(self, event_type: str, user: User | str, target: str, outcome: str = "ok", /,
                     **detail: Any) -> None:
        """One audit record by ``user`` about ``target`` (an object id: ``device:ID``,
        ``evidence:ID/SEQ``, ``user:NAME``...). ``outcome`` is one the audit table allows: ``ok``,
        ``refused``, ``failed`` (also ``quarantined``, ``duplicate`` for ingest)."""
        actor = user if isinstance(user, str) else user.name
        await run_in_threadpool(self.audit.add, event_type, actor, target, outcome, detail)

    async def viewed(self, user: User, what: str, target: str, /, **detail: Any) -> None:
        """"User U viewed X": the one call for every view of evidence, positions or trails.
        ``what`` names the kind of view (``unit-position``, ``evidence``, ``playback``,
        ``audit-trail``...); the record's event type is ``view-<what>``."""
        await self.record(f"view-{what}", user, target, "ok", **detail)


def web_context(service: HqService, settings: WebSettings, origins: Origins, behind_proxy: bool,
                ops: OpsRoom | None = None) -> WebContext:
    """The context of one node's web application, over its service's index and clock."""
    audit = Auditor(service.index, "hq-web", service.now_ns)
    accounts = AccountService(service.index.accounts(), audit, service.now_ns, sessions=settings.sessions)
    socket = settings.decryptd_socket
    evidence = EvidenceService(service.index, service.store, None if socket is None else DecryptClient(socket), audit,
                               service.now_ns, custody=None if service.lifecycle is None else service.lifecycle.custody)
    return WebContext(service=service, index=service.index, accounts=accounts, audit=audit, now_ns=service.now_ns,
                      settings=settings, origins=origins, behind_proxy=behind_proxy, evidence=evidence, ops=ops)

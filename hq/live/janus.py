"""A small client of Janus's HTTP API (sessions, handles, the videoroom plugin), blocking, thread-safe."""

from __future__ import annotations

import json
import logging
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0
POLL_TIMEOUT_S = 30.0  # Janus answers a long poll after 30 s with a keepalive
EVENT_TIMEOUT_S = 15.0


class JanusError(Exception):
    """Janus refused a request or could not be reached (the message says which)."""


class JanusClient:
    """One Janus session, kept alive by a long-poll thread that also delivers asynchronous events.

    Requests are plain HTTP POSTs; an asynchronous plugin answer (a publisher's SDP answer, a
    subscriber's offer) arrives on the session's long poll and is matched to its request by the
    transaction id. Events not awaited (a peer hung up, media stopped) go to ``on_event``.
    Thread contract: any thread may call; the poller thread is the only reader of the long poll.
    ``close`` destroys the session. A session Janus forgot (Janus restarted) is recreated on the
    next request; handles of the old one are gone with it (``generation`` counts sessions).
    """

    def __init__(self, url: str, api_secret: str,
                 on_event: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        self._url = url.rstrip("/")
        self._secret = api_secret
        self._on_event = on_event
        self._lock = threading.Lock()
        self._waiting: dict[str, Future[dict[str, Any]]] = {}
        self._session: int | None = None
        self.generation = 0
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def _post(self, path: str, body: dict[str, Any], timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
        body = {**body, "apisecret": self._secret}
        body.setdefault("transaction", secrets.token_hex(8))
        req = urllib.request.Request(self._url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310  # configured http(s) URL
                answer: dict[str, Any] = json.load(resp)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise JanusError(f"Janus at {self._url} unreachable: {exc}") from exc
        if answer.get("janus") == "error":
            err = answer.get("error", {})
            raise JanusError(f"Janus refused {body.get('janus')}: {err.get('code')} {err.get('reason')}")
        return answer

    def session(self) -> int:
        with self._lock:
            if self._session is not None:
                return self._session
        answer = self._post("", {"janus": "create"})
        sid = int(answer["data"]["id"])
        with self._lock:
            self._session = sid
            self.generation += 1
        if self._poller is None or not self._poller.is_alive():
            self._poller = threading.Thread(target=self._poll, name="janus-poll", daemon=True)
            self._poller.start()
        return sid

    def attach(self) -> int:
        """A new handle on the videoroom plugin."""
        answer = self._post(f"/{self.session()}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        return int(answer["data"]["id"])

    def detach(self, handle: int) -> None:
        try:
            self._post(f"/{self.session()}/{handle}", {"janus": "detach"})
        except JanusError as exc:  # gone already (hung up, session lost): nothing to end
            log.debug("detach %d: %s", handle, exc)

    def request(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous videoroom request (create, exists, destroy, listparticipants): its data."""
        answer = self._post(f"/{self.session()}/{handle}", {"janus": "message", "body": body})
        data: dict[str, Any] = answer.get("plugindata", {}).get("data", {})
        if data.get("videoroom") == "event" and "error" in data:
            raise JanusError(f"videoroom refused {body.get('request')}: {data.get('error_code')} {data['error']}")
        return data

    def message(self, handle: int, body: dict[str, Any], jsep: dict[str, str] | None = None,
                timeout_s: float = EVENT_TIMEOUT_S) -> tuple[dict[str, Any], dict[str, str] | None]:
        """An asynchronous videoroom request (join, configure, start): the event that answers it
        (its plugin data and JSEP, if any)."""
        transaction = secrets.token_hex(8)
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            self._waiting[transaction] = future
        try:
            msg: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
            if jsep is not None:
                msg["jsep"] = jsep
            answer = self._post(f"/{self.session()}/{handle}", msg)
            event = answer if answer.get("janus") == "event" else future.result(timeout=timeout_s)
        except TimeoutError as exc:
            raise JanusError(f"Janus did not answer {body.get('request')} within {timeout_s:g} s") from exc
        finally:
            with self._lock:
                self._waiting.pop(transaction, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"videoroom refused {body.get('request')}: {data.get('error_code')} {data['error']}")
        return data, event.get("jsep")

    def _poll(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                sid = self._session
            if sid is None:
                return
            url = f"{self._url}/{sid}?maxev=10&apisecret={urllib.parse.quote(self._secret)}"
            try:
                with urllib.request.urlopen(url, timeout=POLL_TIMEOUT_S + 5) as resp:  # noqa: S310
                    events = json.load(resp)
            except (OSError, urllib.error.URLError, ValueError) as exc:
                if self._stop.wait(1.0):
                    return
                log.warning("Janus long poll: %s", exc)
                continue
            for event in events if isinstance(events, list) else [events]:
                self._dispatch(sid, event)

    def _dispatch(self, sid: int, event: dict[str, Any]) -> None:
        if event.get("janus") == "error" and event.get("error", {}).get("code") == 458:  # no such session
            with self._lock:
                if self._session == sid:
                    self._session = None
            log.warning("Janus forgot session %d (restarted?); a new one is made on the next request", sid)
            return
        with self._lock:
            future = self._waiting.get(str(event.get("transaction")))
        if future is not None and event.get("janus") == "event":
            future.set_result(event)
        elif event.get("janus") not in ("keepalive", "ack") and self._on_event is not None:
            try:
                self._on_event(int(event.get("sender", 0)), event)
            except Exception:
                log.exception("handling a Janus event")

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            sid, self._session = self._session, None
        if sid is not None:
            try:
                self._post(f"/{sid}", {"janus": "destroy"})
            except JanusError as exc:
                log.debug("destroying the Janus session: %s", exc)

"""WHIP (RFC 9725) for units: the signed offer in, the SDP answer and the resource out; DELETE ends it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hq.errors import ApiError
from hq.live.service import LiveError, LiveService

WHIP_PATH = "/v1/live/whip"
MAX_SDP_BYTES = 64 * 1024
SDP = "application/sdp"


def whip_answer(live: LiveService | None, route: str, resource: str | None, device_id: str,
                headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
    """Answer an authenticated unit's ``POST /v1/live/whip`` (201, the answer, ``Location``) or
    ``DELETE /v1/live/whip/<resource>`` (200) as (status, headers, body). 503 when this node has
    no media server."""
    if live is None:
        raise ApiError(503, "live-off", "live view is not configured on this headquarters (serve --janus-url)")
    try:
        if route == "whip-ice":
            return 204, {"Link": ice_links(live.unit_ice_servers(device_id)), "Cache-Control": "no-store"}, b""
        if route == "whip":
            if headers.get("content-type", "").split(";")[0].strip().lower() != SDP:
                raise ApiError(415, "unsupported-media-type", f"a WHIP offer is {SDP}")
            try:
                offer = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(400, "bad-sdp", "the SDP offer is not UTF-8") from exc
            resource_id, answer = live.publish(device_id, offer)
            return 201, {"Content-Type": SDP, "Location": f"{WHIP_PATH}/{resource_id}",
                         "Cache-Control": "no-store"}, answer.encode("utf-8")
        assert resource is not None
        live.unpublish(device_id, resource)
        return 200, {"Cache-Control": "no-store"}, b""
    except LiveError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ice_links(servers: list[dict[str, Any]]) -> str:
    """RFC 9725 section 4.6: each ICE server as a ``Link`` with ``rel="ice-server"``."""
    links = []
    for s in servers:
        for url in s["urls"]:
            link = f'<{url}>; rel="ice-server"'
            if s.get("username"):
                link += f'; username={_quoted(s["username"])}; credential={_quoted(s["credential"])}' \
                        '; credential-type="password"'
            links.append(link)
    return ", ".join(links)

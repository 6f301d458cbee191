"""Asking a time-stamping authority (RFC 3161 over HTTP, RFC 3161 section 3.4) for a token on an
export's manifest (rfc3161-client builds the request and reads the answer). The token is checked
against the request (status granted, our imprint and nonce) before it is kept; its signature is
checked by ``agent.evidence.timestamp`` against the TSA's roots."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass

from agent.textsafe import safe_text

CONTENT_TYPE_QUERY = "application/timestamp-query"
CONTENT_TYPE_REPLY = "application/timestamp-reply"
MAX_REPLY_BYTES = 64 * 1024


class TsaError(Exception):
    """The authority could not be reached or gave no usable token; the message says why."""


@dataclass(frozen=True, slots=True)
class TsaClient:
    """One authority by URL. ``timeout_s`` bounds each request (connect and read)."""

    url: str
    timeout_s: float = 30.0

    def stamp(self, data: bytes) -> bytes:
        """A granted token (the DER TimeStampResp) over SHA-256 of ``data``."""
        from rfc3161_client import HashAlgorithm, PKIStatus, TimestampRequestBuilder, decode_timestamp_response

        request = (TimestampRequestBuilder().data(data).hash_algorithm(HashAlgorithm.SHA256).nonce(nonce=True)
                   .cert_request(cert_request=True).build())
        http = urllib.request.Request(self.url, data=request.as_bytes(), method="POST",
                                      headers={"Content-Type": CONTENT_TYPE_QUERY, "Accept": CONTENT_TYPE_REPLY})
        where = f"asking {safe_text(self.url)} for a time stamp"
        try:
            with urllib.request.urlopen(http, timeout=self.timeout_s) as answer:
                kind = answer.headers.get("Content-Type", "")
                body: bytes = answer.read(MAX_REPLY_BYTES + 1)
        except (urllib.error.URLError, OSError) as exc:
            raise TsaError(f"{where}: {safe_text(str(getattr(exc, 'reason', exc)))}") from exc
        if kind.split(";")[0].strip() != CONTENT_TYPE_REPLY or len(body) > MAX_REPLY_BYTES:
            raise TsaError(f"{where}: the answer is not a time-stamp reply ({safe_text(kind) or 'no type'})")
        try:
            response = decode_timestamp_response(body)
        except ValueError as exc:
            raise TsaError(f"{where}: the reply does not decode ({exc})") from exc
        if PKIStatus(response.status) not in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS):
            raise TsaError(f"{where}: refused (status {response.status})")
        if response.tst_info.message_imprint.message != hashlib.sha256(data).digest():
            raise TsaError(f"{where}: the token stamps other data than ours")
        if response.tst_info.nonce != request.nonce:
            raise TsaError(f"{where}: the token answers another request (nonce)")
        return body

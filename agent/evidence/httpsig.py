"""HTTP Message Signatures (RFC 9421) with Ed25519 and Content-Digest (RFC 9530) for unit requests.

Both ends of the sync protocol use this module (docs/sync-protocol.md, "Authentication"): the
unit calls ``sign_request`` and adds the headers it returns; headquarters calls
``verify_request``. Only the profile the protocol needs is implemented: one signature labelled
``sig1``, algorithm ``ed25519``, derived components ``@method`` and ``@target-uri``, and the
header fields in ``COVERED_FIELDS`` that the request carries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.evidence.format import b64decode_strict
from agent.evidence.keys import verify_signature
from hal.keystore import KeyStore

LABEL = "sig1"
ALG = "ed25519"
CREATED_WINDOW_S = 300
NONCE_TTL_S = 600

# Header fields signed whenever the request carries them, in this order after the derived
# components and content-digest. Upload-Length and Upload-Metadata are covered so that nothing
# that names or sizes the evidence can be changed by a TLS-terminating proxy.
COVERED_FIELDS = ("upload-offset", "upload-length", "upload-metadata", "upload-checksum")
REQUIRED_COMPONENTS = ("@method", "@target-uri", "content-digest")

_TOKEN_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_KEYID = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")  # printable ASCII, no quote or backslash
_PARAM = re.compile(r';([a-z][a-z0-9_.*-]*)=("(?:[^"\\]|\\.)*"|-?[0-9]{1,15})')
_DIGEST = re.compile(r"(?:^|,)\s*sha-256=:([A-Za-z0-9+/=]+):\s*(?:,|$)")

PublicKeyLookup = Callable[[str], ed25519.Ed25519PublicKey | None]
NonceSeen = Callable[[str, str, int], bool]


class SignatureError(Exception):
    """A request whose signature is missing, malformed, stale, replayed or does not verify.

    ``reason`` is a short stable code (``missing``, ``malformed``, ``digest``, ``unknown-key``,
    ``bad-signature``, ``expired``, ``replay``); ``key_id`` is the claimed key id if one was read.
    """

    def __init__(self, reason: str, message: str, key_id: str | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.key_id = key_id


def new_nonce() -> str:
    """16 random bytes, base64url without padding: a fresh ``nonce`` for sign_request."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")


def content_digest(body: bytes) -> str:
    """The RFC 9530 ``Content-Digest`` value of ``body``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def normalize_target_uri(uri: str) -> str:
    """Lower-case scheme and host, drop a default port, and use ``/`` for an empty path."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"https": 443, "http": 80}.get(scheme)
    netloc = host if port is None or port == default else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header field's value by case-insensitive name, trimmed as RFC 9421 section 2.1 says."""
    found = [v for k, v in headers.items() if k.lower() == name]
    if not found:
        return None
    return ", ".join(v.strip() for v in found)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _signature_params(components: list[str], created: int, nonce: str, key_id: str) -> str:
    inner = " ".join(_quote(c) for c in components)
    return f"({inner});created={created};nonce={_quote(nonce)};keyid={_quote(key_id)};alg={_quote(ALG)}"


def _signature_base(
    components: list[str], method: str, target_uri: str, headers: Mapping[str, str], params: str
) -> bytes:
    lines = []
    for c in components:
        if c == "@method":
            value = method.upper()
        elif c == "@target-uri":
            value = normalize_target_uri(target_uri)
        else:
            found = _header(headers, c)
            if found is None:
                raise SignatureError("malformed", f"covered component {c!r} is not in the request")
            value = found
        if "\n" in value or "\r" in value:
            raise SignatureError("malformed", f"component {c!r} contains a line break")
        lines.append(f"{_quote(c)}: {value}")
    lines.append(f'"@signature-params": {params}')
    try:
        return "\n".join(lines).encode("ascii")
    except UnicodeEncodeError as exc:
        raise SignatureError("malformed", "a covered component is not ASCII") from exc


def sign_request(
    method: str,
    target_uri: str,
    headers: Mapping[str, str],
    body: bytes,
    device_id: str,
    signer: KeyStore,
    now_s: int,
    nonce: str | bytes | None = None,
) -> dict[str, str]:
    """The headers to add to a request: ``Content-Digest``, ``Signature-Input`` and ``Signature``.

    ``headers`` are the request's other header fields (any case): every field in
    ``COVERED_FIELDS`` present there is signed, so pass them all. ``target_uri`` is the absolute
    URI requested (``https://host:port/v1/uploads/<id>``). ``nonce`` is base64url text, or raw
    bytes that are encoded here, or None for a fresh random one.
    """
    if isinstance(nonce, bytes):
        nonce = base64.urlsafe_b64encode(nonce).rstrip(b"=").decode("ascii")
    nonce = nonce if nonce is not None else new_nonce()
    if not _TOKEN_NONCE.match(nonce):
        raise ValueError("nonce must be 16 to 64 base64url characters")
    if not _KEYID.match(device_id):
        raise ValueError("device_id cannot be used as a key id")
    digest = content_digest(body)
    signed_headers = {k: v for k, v in headers.items() if k.lower() != "content-digest"}
    signed_headers["Content-Digest"] = digest
    components = list(REQUIRED_COMPONENTS) + [f for f in COVERED_FIELDS if _header(signed_headers, f) is not None]
    params = _signature_params(components, int(now_s), nonce, device_id)
    base = _signature_base(components, method, target_uri, signed_headers, params)
    sig = base64.b64encode(signer.sign(base)).decode("ascii")
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{LABEL}={params}",
        "Signature": f"{LABEL}=:{sig}:",
    }


def _parse_input(value: str) -> tuple[list[str], dict[str, str | int], str]:
    """Split ``sig1=(...);params`` into components, parameters and the raw params text."""
    prefix = f"{LABEL}="
    if not value.startswith(prefix):
        raise SignatureError("malformed", f"Signature-Input must hold exactly one signature labelled {LABEL}")
    params_text = value[len(prefix) :]
    m = re.match(r'^\(((?:"[a-z0-9@_.-]+"(?: "[a-z0-9@_.-]+")*)?)\)', params_text)
    if m is None:
        raise SignatureError("malformed", "Signature-Input has no component list")
    components = [c.strip('"') for c in m.group(1).split(" ")] if m.group(1) else []
    rest = params_text[m.end() :]
    params: dict[str, str | int] = {}
    pos = 0
    for pm in _PARAM.finditer(rest):
        if pm.start() != pos:
            break
        raw = pm.group(2)
        params[pm.group(1)] = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\") if raw[0] == '"' else int(raw)
        pos = pm.end()
    if pos != len(rest):
        raise SignatureError("malformed", "Signature-Input parameters are not understood")
    return components, params, params_text


def _parse_signature(value: str) -> bytes:
    m = re.fullmatch(rf"{LABEL}=:([A-Za-z0-9+/=]+):", value)
    if m is None:
        raise SignatureError("malformed", f"Signature must be {LABEL}=:<base64>:")
    try:
        return b64decode_strict(m.group(1))
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("malformed", "Signature is not canonical base64") from exc


def verify_request(
    method: str,
    target_uri: str,
    headers: Mapping[str, str],
    body: bytes,
    public_key_lookup: PublicKeyLookup,
    now_s: int,
    nonce_seen: NonceSeen,
) -> str:
    """Authenticate a request; return the device id (``keyid``) that signed it.

    ``target_uri`` is the URI as the server reconstructs it (its configured origin + path).
    ``public_key_lookup(key_id)`` returns the enrolled, non-revoked device key or None.
    ``nonce_seen(key_id, nonce, now_s)`` records the nonce and says whether it was already seen
    within ``NONCE_TTL_S``; it is called only once the signature has verified, so unauthenticated
    requests cannot fill the cache. Raises SignatureError naming the reason.
    """
    return verify_signed_headers(
        method, target_uri, headers, public_key_lookup, now_s, nonce_seen, lambda key_id: check_digest(
            headers, body, key_id))


def verify_signed_headers(
    method: str,
    target_uri: str,
    headers: Mapping[str, str],
    public_key_lookup: PublicKeyLookup,
    now_s: int,
    nonce_seen: NonceSeen,
    before_key: Callable[[str], None] | None = None,
) -> str:
    """``verify_request`` without the body: the signature over the headers, ``Content-Digest``
    included as declared. A server calls it before reading a body, then ``check_digest`` once the
    body is in. ``before_key(key_id)`` runs after parsing, before the key lookup."""
    sig_input, sig_value = _header(headers, "signature-input"), _header(headers, "signature")
    if sig_input is None or sig_value is None:
        raise SignatureError("missing", "the request is not signed (Signature-Input and Signature required)")
    components, params, params_text = _parse_input(sig_input)
    key_id = params.get("keyid")
    if not isinstance(key_id, str) or not _KEYID.match(key_id):
        raise SignatureError("malformed", "Signature-Input has no usable keyid")
    created, nonce = params.get("created"), params.get("nonce")
    if params.get("alg") != ALG:
        raise SignatureError("malformed", f"alg must be {ALG}", key_id)
    if not isinstance(created, int) or not isinstance(nonce, str) or not _TOKEN_NONCE.match(nonce):
        raise SignatureError("malformed", "Signature-Input needs created and a base64url nonce", key_id)
    needed = list(REQUIRED_COMPONENTS) + [f for f in COVERED_FIELDS if _header(headers, f) is not None]
    uncovered = [c for c in needed if c not in components]
    if uncovered or len(set(components)) != len(components):
        raise SignatureError("malformed", f"the signature does not cover {uncovered or 'each component once'}", key_id)
    _declared_digest(headers, key_id)
    if before_key is not None:
        before_key(key_id)
    public = public_key_lookup(key_id)
    if public is None:
        raise SignatureError("unknown-key", f"key id {key_id!r} is not an enrolled, active device", key_id)
    signature = _parse_signature(sig_value)
    base = _signature_base(components, method, target_uri, headers, params_text)
    if not verify_signature(public, signature, base):
        raise SignatureError("bad-signature", "the signature does not verify with the enrolled key", key_id)
    if abs(int(now_s) - created) > CREATED_WINDOW_S:
        raise SignatureError(
            "expired",
            f"created is {int(now_s) - created} s from the server clock (window {CREATED_WINDOW_S} s)",
            key_id,
        )
    if nonce_seen(key_id, nonce, int(now_s)):
        raise SignatureError("replay", "this nonce was already used (replayed request)", key_id)
    return key_id


def _declared_digest(headers: Mapping[str, str], key_id: str | None) -> bytes:
    m = _DIGEST.search(_header(headers, "content-digest") or "")
    if m is None:
        raise SignatureError("digest", "Content-Digest with a sha-256 value is required", key_id)
    return _b64(m.group(1), key_id)


def check_digest(headers: Mapping[str, str], body: bytes, key_id: str | None = None) -> None:
    """Raise SignatureError ``digest`` unless the declared ``Content-Digest`` is the body's SHA-256."""
    if not hmac.compare_digest(_declared_digest(headers, key_id), hashlib.sha256(body).digest()):
        raise SignatureError("digest", "Content-Digest does not match the body", key_id)


def _b64(text: str, key_id: str | None) -> bytes:
    try:
        return b64decode_strict(text)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("digest", "Content-Digest is not canonical base64", key_id) from exc


class NonceCache:
    """Nonces seen in the last ``ttl_s`` seconds, in memory; ``seen`` fits ``verify_request``.

    Thread-safe (one lock). Headquarters keeps its cache in the index so a restart opens no
    replay window; this one suits tests and single-process tools.
    """

    def __init__(self, ttl_s: int = NONCE_TTL_S) -> None:
        self._ttl_s = ttl_s
        self._seen: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def seen(self, key_id: str, nonce: str, now_s: int) -> bool:
        with self._lock:
            for k in [k for k, t in self._seen.items() if t < now_s - self._ttl_s]:
                del self._seen[k]
            if (key_id, nonce) in self._seen:
                return True
            self._seen[(key_id, nonce)] = now_s
            return False

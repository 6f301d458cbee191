"""The TLS context of headquarters' public listener: TLS 1.3 preferred, TLS 1.2 with AEAD suites only.

Two profiles, named as ``bodycam-hq keygen --profile`` names them:

- ``default``: TLS 1.3 (all three of its suites, AEAD by construction) and, for older clients,
  TLS 1.2 with ECDHE key exchange and AES-GCM or ChaCha20-Poly1305 only: no CBC, no RSA key
  exchange, no SHA-1 MACs.
- ``fips``: only FIPS 140-approved algorithms: TLS 1.3 with ``TLS_AES_256_GCM_SHA384`` and
  ``TLS_AES_128_GCM_SHA256``, TLS 1.2 with ECDHE and AES-GCM, and key exchange on P-256 or P-384
  (no X25519, no ChaCha20). Python's ``ssl`` has no call for the TLS 1.3 suites, so OpenSSL's
  ``SSL_CTX_set_ciphersuites`` is called through ctypes; the result is read back and a context
  that still offers anything else is refused, never served.
"""

from __future__ import annotations

import ctypes
import ssl
import sys
from pathlib import Path

PROFILES = ("default", "fips")
TLS12_SUITES = {"default": "ECDHE+AESGCM:ECDHE+CHACHA20", "fips": "ECDHE+AESGCM"}
FIPS_TLS13_SUITES = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"
FIPS_GROUPS = "P-256:P-384"
_SSL_CTRL_SET_GROUPS_LIST = 92  # OpenSSL's SSL_CTX_set1_groups_list is this SSL_CTX_ctrl


class TlsError(Exception):
    """A TLS profile this Python and OpenSSL cannot provide exactly."""


def server_tls_context(cert: Path, key: Path, profile: str = "default") -> ssl.SSLContext:
    """A server context for ``cert``/``key`` offering only what ``profile`` allows."""
    if profile not in PROFILES:
        raise TlsError(f"unknown TLS profile {profile!r}: use one of {', '.join(PROFILES)}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.set_ciphers(TLS12_SUITES[profile])
    if profile == "fips":
        _restrict_fips(ctx)
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return ctx


def offered_suites(ctx: ssl.SSLContext) -> list[str]:
    """The suite names ``ctx`` offers (TLS 1.3 and 1.2), as OpenSSL names them."""
    return [str(c["name"]) for c in ctx.get_ciphers()]


def is_fips_suite(name: str) -> bool:
    return "AES" in name and "GCM" in name and "CHACHA" not in name


def _restrict_fips(ctx: ssl.SSLContext) -> None:
    handle = _ssl_ctx_pointer(ctx)
    lib = ctypes.CDLL(_ssl_library())
    set_suites = lib.SSL_CTX_set_ciphersuites
    set_suites.argtypes, set_suites.restype = [ctypes.c_void_p, ctypes.c_char_p], ctypes.c_int
    ctrl = lib.SSL_CTX_ctrl
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
    ctrl.restype = ctypes.c_long
    if set_suites(handle, FIPS_TLS13_SUITES.encode()) != 1:
        raise TlsError("OpenSSL refused the FIPS TLS 1.3 suites: this build cannot serve the fips profile")
    if ctrl(handle, _SSL_CTRL_SET_GROUPS_LIST, 0, FIPS_GROUPS.encode()) != 1:
        raise TlsError("OpenSSL refused the groups P-256:P-384: this build cannot serve the fips profile")
    others = [s for s in offered_suites(ctx) if not is_fips_suite(s)]
    if others:
        raise TlsError(f"the fips profile would still offer {', '.join(others)}: not served")


def _ssl_ctx_pointer(ctx: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` inside CPython's SSLContext object (the field right after PyObject_HEAD)."""
    if sys.implementation.name != "cpython":
        raise TlsError("the fips TLS profile needs CPython (it restricts OpenSSL's TLS 1.3 suites directly)")
    value = ctypes.c_void_p.from_address(id(ctx) + 2 * ctypes.sizeof(ctypes.c_void_p)).value
    if not value:
        raise TlsError("could not reach OpenSSL's context: the fips TLS profile is not available here")
    return int(value)


def _ssl_library() -> str:
    import _ssl  # the extension module is linked against the libssl that made ``ctx``

    path = getattr(_ssl, "__file__", None)
    if path is None:
        raise TlsError("Python's ssl is built in statically: the fips TLS profile is not available here")
    return str(path)

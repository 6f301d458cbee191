"""RFC 9421 HTTP Message Signatures with Ed25519, as docs/sync-protocol.md specifies them."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping

from hal.keystore import KeyStore

COMPONENTS = ("@method", "@target-uri", "content-digest", "upload-offset")


def signature_params(components: tuple[str, ...], created_s: int, nonce: str, keyid: str) -> str:
    names = " ".join(f'"{c}"' for c in components)
    return f'({names});created={created_s};nonce="{nonce}";keyid="{keyid}";alg="ed25519"'


def signature_base(method: str, target_uri: str, headers: Mapping[str, str], components: tuple[str, ...],
                   params: str) -> bytes:
    """The bytes signed: one ``"name": value`` line per component, then ``@signature-params``."""
    lower = {k.lower(): v.strip() for k, v in headers.items()}
    lines = []
    for c in components:
        value = method.upper() if c == "@method" else target_uri if c == "@target-uri" else lower[c]
        lines.append(f'"{c}": {value}')
    lines.append(f'"@signature-params": {params}')
    return "\n".join(lines).encode()


def sign_request(keystore: KeyStore, keyid: str, method: str, target_uri: str, headers: Mapping[str, str], *,
                 created_s: int) -> dict[str, str]:
    """``Signature-Input`` and ``Signature`` headers for a request (components it lacks left out)."""
    present = {k.lower() for k in headers}
    components = tuple(c for c in COMPONENTS if c.startswith("@") or c in present)
    nonce = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
    params = signature_params(components, created_s, nonce, keyid)
    sig = keystore.sign(signature_base(method, target_uri, headers, components, params))
    return {"Signature-Input": f"sig1={params}", "Signature": f"sig1=:{base64.b64encode(sig).decode()}:"}

"""RFC 3161 time-stamp tokens on an export's manifest: checking one offline against the data it
stamps and the time-stamping authority's root certificates (rfc3161-client, imported when used).
Headquarters asks for them (``hq/timestamp.py``); ``bodycam verify`` checks them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509


class TimestampError(Exception):
    """A token that does not verify; the message says why."""


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise TimestampError(f"the TSA certificates are not PEM certificates ({exc})") from exc


def check_timestamp(token: bytes, data: bytes, roots: Sequence[x509.Certificate],
                    intermediates: Sequence[x509.Certificate] = ()) -> dt.datetime:
    """The time the token says ``data`` existed, once its signature chains to one of ``roots``,
    its certificate is a time-stamping one and its imprint is ``data``'s hash; TimestampError
    naming what failed otherwise."""
    from rfc3161_client import VerificationError, VerifierBuilder, decode_timestamp_response

    if not roots:
        raise TimestampError("no TSA root certificate to check the token against")
    try:
        response = decode_timestamp_response(token)
    except ValueError as exc:
        raise TimestampError(f"the token is not an RFC 3161 time-stamp response ({exc})") from exc
    builder = VerifierBuilder()
    for root in roots:
        builder = builder.add_root_certificate(root)
    for cert in intermediates:
        if cert not in roots:
            builder = builder.add_intermediate_certificate(cert)
    try:
        builder.build().verify_message(response, data)
    except VerificationError as exc:
        raise TimestampError(f"the time-stamp token does not verify: {exc}") from exc
    when: dt.datetime = response.tst_info.gen_time
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)

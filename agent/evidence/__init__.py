"""The evidence format: encrypted, signed, hash-chained segments and their offline verifier.

This package knows nothing about cameras: it seals bytes, signs manifests and verifies chains.
``docs/evidence-format.md`` is the normative description; the constants live in ``format``.
"""

"""Sync: the unit's uploads to headquarters (tus 1.0, RFC 9421 signatures, signed receipts)."""

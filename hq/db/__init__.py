"""Headquarters' database: the schema (SQLAlchemy Core tables), engines for SQLite and PostgreSQL,
Alembic migrations shipped in the package, and the audit log's hash chain."""

from __future__ import annotations


class HqIndexError(Exception):
    """An index operation failed or was refused; the message says what was being done."""

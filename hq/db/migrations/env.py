"""Alembic's environment for the index: run programmatically by hq.db.migrate on the connection
it passes in ``config.attributes["connection"]`` (no alembic.ini, no URL here)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()

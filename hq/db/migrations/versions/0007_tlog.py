"""The transparency log (docs/transparency-log.md): entries, the hashes of its perfect subtrees,
signed checkpoints and witnesses' cosignatures; every table append-only in the database.

Revision ID: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("tlog_entries", "tlog_nodes", "tlog_checkpoints", "tlog_cosignatures")


def upgrade() -> None:
    op.create_table(
        "tlog_entries",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("device_id", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("utc_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("tlog_entries_entry", "tlog_entries", ["device_id", "kind", "seq"])
    op.create_table(
        "tlog_nodes",
        sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "tlog_checkpoints",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("utc_ns", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "tlog_cosignatures",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("witness", sa.Text, primary_key=True),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("utc_ns", sa.BigInteger, nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        for table in TABLES:
            for verb in ("update", "delete"):
                op.execute(f"CREATE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")
        return
    for table in TABLES:  # bodycam_append_only() is revision 0001's
        op.execute(f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                   "FOR EACH ROW EXECUTE FUNCTION bodycam_append_only()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION bodycam_append_only()")


def downgrade() -> None:
    raise NotImplementedError("the index is never downgraded: restore a backup taken before the upgrade")

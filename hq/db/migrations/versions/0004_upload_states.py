"""The upload states of ingest off the request path: complete, ingesting and expired join
receiving, stored, quarantined and terminated.

SQLite cannot alter a CHECK: the table is rebuilt with its rows and indexes. Index files made by
the release that added these states without migrations (PRAGMA user_version 2) are stamped 0001
like the first release's and pass through here too; the rebuild leaves their rows as they were.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPLOAD_STATES = ("receiving", "complete", "ingesting", "stored", "quarantined", "terminated", "expired")
_CHECK = "state IN ({})".format(", ".join(f"'{s}'" for s in UPLOAD_STATES))
_COLUMNS = "upload_id, device_id, seq, filename, sha256, length, state, created_utc_ns, updated_utc_ns, result"


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("ALTER TABLE uploads DROP CONSTRAINT uploads_state_check")
        op.execute(f"ALTER TABLE uploads ADD CONSTRAINT uploads_state_check CHECK ({_CHECK})")
        return
    op.execute("ALTER TABLE uploads RENAME TO uploads_before_0004")
    op.create_table(
        "uploads",
        sa.Column("upload_id", sa.Text, primary_key=True),
        sa.Column("device_id", sa.Text, sa.ForeignKey("devices.device_id"), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("length", sa.BigInteger, nullable=False),
        sa.Column("state", sa.Text, sa.CheckConstraint(_CHECK), nullable=False),
        sa.Column("created_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("updated_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("result", sa.Text),
    )
    op.execute(f"INSERT INTO uploads ({_COLUMNS}) SELECT {_COLUMNS} FROM uploads_before_0004")
    op.execute("DROP TABLE uploads_before_0004")
    op.create_index("uploads_entry", "uploads", ["device_id", "seq", "sha256", "state"])
    op.create_index("uploads_open", "uploads", ["state", "updated_utc_ns"])


def downgrade() -> None:
    raise NotImplementedError("the index is never downgraded: restore a backup taken before the upgrade")

"""The index as headquarters' first release made it (SQLite schema version 1), on both engines.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPLOAD_STATES = ("receiving", "stored", "quarantined", "terminated")
OUTCOMES = ("ok", "refused", "failed", "quarantined", "duplicate")
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", sa.Text, primary_key=True),
        sa.Column("public_pem", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False, unique=True),
        sa.Column("enrolled_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("revoked_utc_ns", sa.BigInteger),
        sa.Column("contiguous_through", sa.BigInteger, nullable=False, server_default="-1"),
        sa.Column("last_heartbeat_utc_ns", sa.BigInteger),
        sa.Column("last_status", sa.Text),
    )
    op.create_table(
        "nonces",
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("nonce", sa.Text, primary_key=True),
        sa.Column("seen_s", sa.BigInteger, nullable=False),
    )
    op.create_index("nonces_age", "nonces", ["seen_s"])
    op.create_table(
        "uploads",
        sa.Column("upload_id", sa.Text, primary_key=True),
        sa.Column("device_id", sa.Text, sa.ForeignKey("devices.device_id"), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("length", sa.BigInteger, nullable=False),
        sa.Column("state", sa.Text, sa.CheckConstraint(_in("state", UPLOAD_STATES)), nullable=False),
        sa.Column("created_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("updated_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("result", sa.Text),
    )
    op.create_index("uploads_entry", "uploads", ["device_id", "seq", "sha256", "state"])
    op.create_table(
        "evidence",
        sa.Column("device_id", sa.Text, sa.ForeignKey("devices.device_id"), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("manifest_sha256", sa.Text, nullable=False),
        sa.Column("prev", sa.Text, nullable=False),
        sa.Column("file_sha256", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("utc_start_ns", sa.BigInteger, nullable=False),
        sa.Column("utc_end_ns", sa.BigInteger, nullable=False),
        sa.Column("received_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("upload_id", sa.Text, nullable=False),
        sa.Column("warnings", sa.Text, nullable=False, server_default="[]"),
        sa.Column("receipt", sa.LargeBinary),
    )
    op.create_table(
        "quarantine",
        sa.Column("quarantine_id", sa.Text, primary_key=True),
        sa.Column("device_id", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger),
        sa.Column("upload_id", sa.Text, nullable=False),
        sa.Column("file_sha256", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("received_utc_ns", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "heartbeats",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.Text, sa.ForeignKey("devices.device_id"), nullable=False),
        sa.Column("received_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "audit",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("utc_ns", sa.BigInteger, nullable=False),
        sa.Column("component", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, sa.CheckConstraint(_in("outcome", OUTCOMES)), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    # Append-only even for someone holding a raw connection, not just through this API.
    if op.get_bind().dialect.name == "sqlite":
        for table, what in (("audit", "audit is"), ("heartbeats", "heartbeats are")):
            for verb in ("update", "delete"):
                op.execute(f"CREATE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, '{what} append-only'); END")
        return
    op.execute("""CREATE FUNCTION bodycam_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege'; END $$""")
    for table in ("audit", "heartbeats"):
        op.execute(f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                   "FOR EACH ROW EXECUTE FUNCTION bodycam_append_only()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION bodycam_append_only()")


def downgrade() -> None:
    raise NotImplementedError("the index is never downgraded: restore a backup taken before the upgrade")

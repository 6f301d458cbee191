"""The index's tables as SQLAlchemy Core objects, as the newest migration leaves them.

The migrations (``hq/db/migrations/versions``) create and change the schema; these objects only
build queries. Nanosecond times are BIGINT; ids of append-mostly tables are BIGINT on PostgreSQL
and SQLite's INTEGER PRIMARY KEY (the rowid) on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

devices = sa.Table(
    "devices", metadata,
    sa.Column("device_id", sa.Text, primary_key=True),
    sa.Column("public_pem", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False, unique=True),
    sa.Column("enrolled_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("revoked_utc_ns", sa.BigInteger),
    sa.Column("contiguous_through", sa.BigInteger, nullable=False, server_default="-1"),
    sa.Column("last_heartbeat_utc_ns", sa.BigInteger),
    sa.Column("last_status", sa.Text),
)

nonces = sa.Table(
    "nonces", metadata,
    sa.Column("key_id", sa.Text, primary_key=True),
    sa.Column("nonce", sa.Text, primary_key=True),
    sa.Column("seen_s", sa.BigInteger, nullable=False),
)

uploads = sa.Table(
    "uploads", metadata,
    sa.Column("upload_id", sa.Text, primary_key=True),
    sa.Column("device_id", sa.Text, sa.ForeignKey("devices.device_id"), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("length", sa.BigInteger, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("created_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("updated_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("result", sa.Text),
)

evidence = sa.Table(
    "evidence", metadata,
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
    sa.Column("recording_id", sa.Text),
    sa.Column("marks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("manifest", sa.Text),  # the verified manifest's canonical JSON (its sealed part still sealed)
    sa.Column("deleted_utc_ns", sa.BigInteger),  # the lifecycle deleted its bytes (the row stays)
)

quarantine = sa.Table(
    "quarantine", metadata,
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

heartbeats = sa.Table(
    "heartbeats", metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.Text, sa.ForeignKey("devices.device_id"), nullable=False),
    sa.Column("received_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("position_stripped", sa.Boolean, nullable=False, server_default=sa.false()),
)

def _chained(name: str) -> sa.Table:
    """An append-only, hash-chained log (hq.db.chain): the audit log and the custody ledger."""
    return sa.Table(
        name, metadata,
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("utc_ns", sa.BigInteger, nullable=False),
        sa.Column("component", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_sha256", sa.Text, nullable=False, server_default=""),
        sa.Column("sha256", sa.Text, nullable=False, server_default=""),
    )


audit = _chained("audit")

# One row (id 1): the heartbeat retention the database itself enforces (its triggers read it).
policy = sa.Table(
    "hq_policy", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("heartbeat_max_age_s", sa.BigInteger, nullable=False),
    sa.Column("heartbeat_max_per_unit", sa.BigInteger, nullable=False),
    sa.Column("position_max_age_s", sa.BigInteger, nullable=False),
)

# Alerts about units (hq/alerts.py, hq/alert_store.py); one standing (not cleared) per unit and kind.
alerts = sa.Table(
    "alerts", metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.Text, sa.ForeignKey("devices.device_id"), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("raised_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    sa.Column("cleared_utc_ns", sa.BigInteger),
    sa.Column("acknowledged_utc_ns", sa.BigInteger),
    sa.Column("acknowledged_by", sa.Text),
)

# The transparency log (revision 0007; docs/transparency-log.md): append-only, every table.
tlog_entries = sa.Table(
    "tlog_entries", metadata,
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("device_id", sa.Text, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("utc_ns", sa.BigInteger, nullable=False),
)

tlog_nodes = sa.Table(
    "tlog_nodes", metadata,
    sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary, nullable=False),
)

tlog_checkpoints = sa.Table(
    "tlog_checkpoints", metadata,
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("utc_ns", sa.BigInteger, nullable=False),
)

tlog_cosignatures = sa.Table(
    "tlog_cosignatures", metadata,
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("witness", sa.Text, primary_key=True),
    sa.Column("line", sa.Text, nullable=False),
    sa.Column("utc_ns", sa.BigInteger, nullable=False),
)

# Operations-room accounts (migration 0008). Roles are a space-separated list (hq.accounts.records).
users = sa.Table(
    "users", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("roles", sa.Text, nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("totp_secret", sa.Text, nullable=False),
    sa.Column("totp_last_step", sa.BigInteger),
    sa.Column("created_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("disabled_utc_ns", sa.BigInteger),
)

web_sessions = sa.Table(
    "web_sessions", metadata,
    sa.Column("id_sha256", sa.Text, primary_key=True),
    sa.Column("user_name", sa.Text, sa.ForeignKey("users.name"), nullable=False),
    sa.Column("created_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("last_seen_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("csrf_token", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("ended_utc_ns", sa.BigInteger),
    sa.Column("end_reason", sa.Text),
)

signin_failures = sa.Table(
    "signin_failures", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("failures", sa.BigInteger, nullable=False),
    sa.Column("last_utc_ns", sa.BigInteger, nullable=False),
)

signin_links = sa.Table(
    "signin_links", metadata,
    sa.Column("token_sha256", sa.Text, primary_key=True),
    sa.Column("user_name", sa.Text, sa.ForeignKey("users.name"), nullable=False),
    sa.Column("expires_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("used_utc_ns", sa.BigInteger),
)

# Requests from headquarters to units (migration 0009): kept for ever, the result set once.
unit_requests = sa.Table(
    "unit_requests", metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("device_id", sa.Text, sa.ForeignKey("devices.device_id"), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("issued_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("expires_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("signed", sa.LargeBinary, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("delivered_utc_ns", sa.BigInteger),
    sa.Column("deliveries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("outcome", sa.Text),
    sa.Column("result", sa.LargeBinary),
    sa.Column("answered_utc_ns", sa.BigInteger),
)

# The evidence lifecycle (revision 0010): recordings, retention categories, cases, custody ledger.
recordings = sa.Table(
    "recordings", metadata,
    sa.Column("device_id", sa.Text, primary_key=True),
    sa.Column("recording_id", sa.Text, primary_key=True),
    sa.Column("recorded_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("end_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("entries", sa.BigInteger, nullable=False),
    sa.Column("marks", sa.BigInteger, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("queued_utc_ns", sa.BigInteger),
    sa.Column("queued_by", sa.Text),
    sa.Column("queue_reason", sa.Text),
    sa.Column("kept_by_restore", sa.Boolean, nullable=False),
    sa.Column("deleted_utc_ns", sa.BigInteger),
    sa.Column("hold_applied", sa.Boolean, nullable=False),
    sa.Column("retain_until_ns", sa.BigInteger),
)

categories = sa.Table(
    "categories", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("retention_s", sa.BigInteger),
    sa.Column("role", sa.Text),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Column("changed_utc_ns", sa.BigInteger, nullable=False),
)

recording_categories = sa.Table(
    "recording_categories", metadata,
    sa.Column("device_id", sa.Text, primary_key=True),
    sa.Column("recording_id", sa.Text, primary_key=True),
    sa.Column("category", sa.Text, primary_key=True),
    sa.Column("assigned_by", sa.Text, nullable=False),
    sa.Column("assigned_utc_ns", sa.BigInteger, nullable=False),
)

cases = sa.Table(
    "cases", metadata,
    sa.Column("case_id", sa.Text, primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("opened_by", sa.Text, nullable=False),
    sa.Column("opened_utc_ns", sa.BigInteger, nullable=False),
    sa.Column("closed_by", sa.Text),
    sa.Column("closed_utc_ns", sa.BigInteger),
)

case_evidence = sa.Table(
    "case_evidence", metadata,
    sa.Column("case_id", sa.Text, primary_key=True),
    sa.Column("device_id", sa.Text, primary_key=True),
    sa.Column("recording_id", sa.Text, primary_key=True),
    sa.Column("added_by", sa.Text, nullable=False),
    sa.Column("added_utc_ns", sa.BigInteger, nullable=False),
)

# Same columns and chain as the audit log, its own chain (hq.db.chain, domain bodycam-custody-v1).
custody = _chained("custody")

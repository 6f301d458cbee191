"""Operations-room accounts: users (argon2id hash, TOTP secret, roles), server-side sessions,
sign-in failures for the lockout, and one-time sign-in links.

Revision ID: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("roles", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("totp_secret", sa.Text, nullable=False),
        sa.Column("totp_last_step", sa.BigInteger),
        sa.Column("created_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("disabled_utc_ns", sa.BigInteger),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id_sha256", sa.Text, primary_key=True),
        sa.Column("user_name", sa.Text, sa.ForeignKey("users.name"), nullable=False),
        sa.Column("created_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("last_seen_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("csrf_token", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("ended_utc_ns", sa.BigInteger),
        sa.Column("end_reason", sa.Text),
    )
    op.create_index("web_sessions_user", "web_sessions", ["user_name", "ended_utc_ns"])
    op.create_table(
        "signin_failures",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("failures", sa.BigInteger, nullable=False),
        sa.Column("last_utc_ns", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "signin_links",
        sa.Column("token_sha256", sa.Text, primary_key=True),
        sa.Column("user_name", sa.Text, sa.ForeignKey("users.name"), nullable=False),
        sa.Column("expires_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("used_utc_ns", sa.BigInteger),
    )


def downgrade() -> None:
    raise NotImplementedError("the index is never downgraded: restore a backup taken before the upgrade")

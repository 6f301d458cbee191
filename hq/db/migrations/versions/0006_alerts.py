"""Alerts about units (hq/alerts.py decides them): raised, cleared, acknowledged by an operator.

At most one alert of a kind stands per unit: a partial unique index over (device_id, kind) of the
rows not yet cleared, so two nodes raising the same alert at once store it once.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.Text, sa.ForeignKey("devices.device_id"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("raised_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
        sa.Column("cleared_utc_ns", sa.BigInteger),
        sa.Column("acknowledged_utc_ns", sa.BigInteger),
        sa.Column("acknowledged_by", sa.Text),
        sa.CheckConstraint("(acknowledged_utc_ns IS NULL) = (acknowledged_by IS NULL)", name="alerts_ack_whole"),
    )
    op.create_index("alerts_standing", "alerts", ["device_id", "kind"], unique=True,
                    sqlite_where=sa.text("cleared_utc_ns IS NULL"), postgresql_where=sa.text("cleared_utc_ns IS NULL"))
    op.create_index("alerts_device", "alerts", ["device_id", "id"])
    op.create_index("alerts_cleared", "alerts", ["cleared_utc_ns"])


def downgrade() -> None:
    raise NotImplementedError("the index is never downgraded: restore a backup taken before the upgrade")

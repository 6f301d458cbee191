"""Requests from headquarters to units (docs/sync-protocol.md, "Requests from headquarters"):
one row per signed request, queued until the unit's poll takes it and kept with the unit's signed
result. Rows are never deleted (a request is an audited, privileged act); the result is set once.

Revision ID: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_STATES = "state IN ('queued', 'delivered', 'answered')"
_OUTCOMES = "outcome IS NULL OR outcome IN ('done', 'partial', 'refused', 'failed')"


def upgrade() -> None:
    op.create_table(
        "unit_requests",
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("device_id", sa.Text, sa.ForeignKey("devices.device_id"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("issued_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("expires_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("signed", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.Text, sa.CheckConstraint(_STATES), nullable=False),
        sa.Column("delivered_utc_ns", sa.BigInteger),
        sa.Column("deliveries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("outcome", sa.Text, sa.CheckConstraint(_OUTCOMES)),
        sa.Column("result", sa.LargeBinary),
        sa.Column("answered_utc_ns", sa.BigInteger),
    )
    op.create_index("unit_requests_pending", "unit_requests", ["device_id", "state", "expires_utc_ns"])
    if op.get_bind().dialect.name == "sqlite":
        op.execute("""CREATE TRIGGER unit_requests_no_delete BEFORE DELETE ON unit_requests
            BEGIN SELECT RAISE(ABORT, 'requests to units are kept: never deleted'); END""")
        op.execute("""CREATE TRIGGER unit_requests_answer_once BEFORE UPDATE ON unit_requests
            WHEN OLD.state = 'answered' OR NEW.signed IS NOT OLD.signed OR NEW.request_id IS NOT OLD.request_id
            BEGIN SELECT RAISE(ABORT, 'a request is signed once and answered once'); END""")
        return
    op.execute("""CREATE FUNCTION unit_requests_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('DELETE', 'TRUNCATE') THEN
                RAISE EXCEPTION 'requests to units are kept: never deleted';
            END IF;
            IF OLD.state = 'answered' OR NEW.signed IS DISTINCT FROM OLD.signed
                    OR NEW.request_id IS DISTINCT FROM OLD.request_id THEN
                RAISE EXCEPTION 'a request is signed once and answered once';
            END IF;
            RETURN NEW;
        END $$""")
    op.execute("""CREATE TRIGGER unit_requests_guard BEFORE UPDATE OR DELETE ON unit_requests
        FOR EACH ROW EXECUTE FUNCTION unit_requests_guard()""")
    op.execute("""CREATE TRIGGER unit_requests_no_truncate BEFORE TRUNCATE ON unit_requests
        FOR EACH STATEMENT EXECUTE FUNCTION unit_requests_guard()""")


def downgrade() -> None:
    raise NotImplementedError("the index is never downgraded: restore a backup taken before the upgrade")

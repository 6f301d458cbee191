"""Heartbeats get retention instead of append-only-forever; positions in their history are kept
only for a shorter time; indexes for quotas, rate limits and expiry.

The policy is one row of ``hq_policy`` (defaults: 30 days, 10,000 heartbeats per unit, positions
7 days). The triggers that replace the append-only ones refuse any DELETE of a heartbeat younger
than the policy's age that is not beyond its count per unit, and any UPDATE other than marking a
row older than the position retention as stripped; they read the database's clock.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DEFAULT_MAX_AGE_S = 30 * 86400
DEFAULT_MAX_PER_UNIT = 10_000
DEFAULT_POSITION_MAX_AGE_S = 7 * 86400

_SQLITE_NOW_NS = "(CAST(strftime('%s', 'now') AS INTEGER) * 1000000000)"
_SQLITE_POLICY = "(SELECT {0} FROM hq_policy WHERE id = 1)"
_DELETE_REFUSED = "heartbeats are append-only: only retention deletes them (older than hq_policy allows)"
_UPDATE_REFUSED = "heartbeats are append-only: only positions older than hq_policy allows are stripped"


def upgrade() -> None:
    op.create_table(
        "hq_policy",
        sa.Column("id", sa.Integer, sa.CheckConstraint("id = 1"), primary_key=True, autoincrement=False),
        sa.Column("heartbeat_max_age_s", sa.BigInteger, sa.CheckConstraint("heartbeat_max_age_s > 0"), nullable=False),
        sa.Column("heartbeat_max_per_unit", sa.BigInteger, sa.CheckConstraint("heartbeat_max_per_unit > 0"),
                  nullable=False),
        sa.Column("position_max_age_s", sa.BigInteger, sa.CheckConstraint("position_max_age_s > 0"), nullable=False),
    )
    op.execute(sa.text("INSERT INTO hq_policy (id, heartbeat_max_age_s, heartbeat_max_per_unit, position_max_age_s) "
                       f"VALUES (1, {DEFAULT_MAX_AGE_S}, {DEFAULT_MAX_PER_UNIT}, {DEFAULT_POSITION_MAX_AGE_S})"))
    op.add_column("heartbeats", sa.Column("position_stripped", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_index("heartbeats_device", "heartbeats", ["device_id", "id"])
    op.create_index("heartbeats_device_time", "heartbeats", ["device_id", "received_utc_ns"])
    op.create_index("heartbeats_age", "heartbeats", ["received_utc_ns"])
    op.create_index("heartbeats_positions", "heartbeats", ["position_stripped", "received_utc_ns"])
    op.create_index("uploads_open", "uploads", ["state", "updated_utc_ns"])
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_triggers()
    else:
        _postgresql_triggers()


def _sqlite_triggers() -> None:
    policy = _SQLITE_POLICY.format
    op.execute("DROP TRIGGER heartbeats_no_update")
    op.execute("DROP TRIGGER heartbeats_no_delete")
    op.execute(f"""CREATE TRIGGER heartbeats_retention_delete BEFORE DELETE ON heartbeats
        WHEN NOT (OLD.received_utc_ns < {_SQLITE_NOW_NS} - {policy('heartbeat_max_age_s')} * 1000000000
                  OR (SELECT count(*) FROM (SELECT 1 FROM heartbeats h WHERE h.device_id = OLD.device_id
                      AND h.id > OLD.id LIMIT {policy('heartbeat_max_per_unit')}))
                     >= {policy('heartbeat_max_per_unit')})
        BEGIN SELECT RAISE(ABORT, '{_DELETE_REFUSED}'); END""")
    op.execute(f"""CREATE TRIGGER heartbeats_strip_only BEFORE UPDATE ON heartbeats
        WHEN NOT (NEW.id = OLD.id AND NEW.device_id = OLD.device_id AND NEW.received_utc_ns = OLD.received_utc_ns
                  AND NEW.position_stripped
                  AND OLD.received_utc_ns < {_SQLITE_NOW_NS} - {policy('position_max_age_s')} * 1000000000)
        BEGIN SELECT RAISE(ABORT, '{_UPDATE_REFUSED}'); END""")


def _postgresql_triggers() -> None:
    op.execute(f"""CREATE FUNCTION bodycam_heartbeat_retention() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            p hq_policy%ROWTYPE;
            now_ns bigint := (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint;
        BEGIN
            SELECT * INTO STRICT p FROM hq_policy WHERE id = 1;
            IF TG_OP = 'DELETE' THEN
                IF OLD.received_utc_ns < now_ns - p.heartbeat_max_age_s * 1000000000
                   OR (SELECT count(*) FROM (SELECT 1 FROM heartbeats h WHERE h.device_id = OLD.device_id
                       AND h.id > OLD.id LIMIT p.heartbeat_max_per_unit) newer) >= p.heartbeat_max_per_unit THEN
                    RETURN OLD;
                END IF;
                RAISE EXCEPTION '{_DELETE_REFUSED}' USING ERRCODE = 'insufficient_privilege';
            END IF;
            IF NEW.id = OLD.id AND NEW.device_id = OLD.device_id AND NEW.received_utc_ns = OLD.received_utc_ns
               AND NEW.position_stripped AND OLD.received_utc_ns < now_ns - p.position_max_age_s * 1000000000 THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION '{_UPDATE_REFUSED}' USING ERRCODE = 'insufficient_privilege';
        END $$""")
    op.execute("DROP TRIGGER heartbeats_no_change ON heartbeats")
    op.execute("CREATE TRIGGER heartbeats_retention BEFORE UPDATE OR DELETE ON heartbeats "
               "FOR EACH ROW EXECUTE FUNCTION bodycam_heartbeat_retention()")


def downgrade() -> None:
    raise NotImplementedError("the index is never downgraded: restore a backup taken before the upgrade")

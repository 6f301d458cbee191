"""The audit log becomes hash-chained: ``prev_sha256`` and ``sha256`` on every record; records
written before this revision are chained in id order here.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hq.db.chain import GENESIS, record_hash

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BATCH = 1000


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    op.add_column("audit", sa.Column("prev_sha256", sa.Text, nullable=False, server_default=""))
    op.add_column("audit", sa.Column("sha256", sa.Text, nullable=False, server_default=""))
    # Chaining the records already there is the one update the audit log ever gets: the
    # append-only trigger is lifted for it, inside this migration's transaction.
    if sqlite:
        op.execute("DROP TRIGGER audit_no_update")
    else:
        op.execute("ALTER TABLE audit DISABLE TRIGGER audit_no_change")
    _chain_existing(bind)
    if sqlite:
        op.execute("CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
                   "BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END")
    else:
        op.execute("ALTER TABLE audit ENABLE TRIGGER audit_no_change")


def _chain_existing(bind: sa.Connection) -> None:
    prev, last_id = GENESIS, -1
    while True:
        rows = bind.execute(
            sa.text("SELECT id, utc_ns, component, event_type, actor, target, outcome, detail FROM audit "
                    "WHERE id > :last ORDER BY id LIMIT :n"), {"last": last_id, "n": _BATCH}).all()
        if not rows:
            return
        for r in rows:
            digest = record_hash(prev, r.utc_ns, r.component, r.event_type, r.actor, r.target, r.outcome, r.detail)
            bind.execute(sa.text("UPDATE audit SET prev_sha256 = :p, sha256 = :s WHERE id = :i"),
                         {"p": prev, "s": digest, "i": r.id})
            prev, last_id = digest, r.id


def downgrade() -> None:
    raise NotImplementedError("the index is never downgraded: restore a backup taken before the upgrade")

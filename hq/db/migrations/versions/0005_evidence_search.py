"""Evidence search: each entry's recording id, its count of marks and its public manifest.

Ingest fills them from the verified manifest (the signed, unencrypted part: times, tracks, flags,
marks, the sealed metadata still sealed); entries held before this revision keep NULL and 0, and
are found by unit and time but not by recording.

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("evidence", sa.Column("recording_id", sa.Text))
    op.add_column("evidence", sa.Column("marks", sa.Integer, nullable=False, server_default="0"))
    op.add_column("evidence", sa.Column("manifest", sa.Text))
    op.create_index("evidence_recording", "evidence", ["device_id", "recording_id"])
    op.create_index("evidence_time", "evidence", ["utc_start_ns"])


def downgrade() -> None:
    raise NotImplementedError("the index is never downgraded: restore a backup taken before the upgrade")

"""The evidence lifecycle: recordings, retention categories, cases (legal hold), the deletion queue
and the custody ledger.

Every entry belongs to a recording: its ``evidence.recording_id`` (revision 0005) or, without one
(an event outside a recording, an entry held before 0005), itself alone as ``entry-<seq>``.
Triggers on both engines refuse to queue or delete a recording, or mark an entry deleted, while
an open case holds it; the custody ledger is append-only like the audit log and hash-chained the
same way (``hq/db/chain.py``).

Revision ID: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hq.lifecycle import CASE_STATES, DEFAULT_CATEGORIES, RECORDING_STATES, ROLES

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_HOLD_REFUSED = "legal hold: the recording is in an open case; close the case or take it out first"
# the open case that holds NEW's recording, if any (NEW a row of recordings, or of evidence)
_KEY = "COALESCE({0}recording_id, 'entry-' || CAST({0}seq AS TEXT))"
_HELD = ("EXISTS (SELECT 1 FROM case_evidence ce JOIN cases c ON c.case_id = ce.case_id WHERE c.state = 'open' "
         "AND ce.device_id = NEW.device_id AND ce.recording_id = {0})")
_HELD_RECORDING = _HELD.format("NEW.recording_id")
_HELD_ENTRY = _HELD.format(_KEY.format("NEW."))


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.add_column("evidence", sa.Column("deleted_utc_ns", sa.BigInteger))
    op.create_table(
        "recordings",
        sa.Column("device_id", sa.Text, sa.ForeignKey("devices.device_id"), primary_key=True),
        sa.Column("recording_id", sa.Text, primary_key=True),
        sa.Column("recorded_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("end_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("entries", sa.BigInteger, nullable=False),
        sa.Column("marks", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("state", sa.Text, sa.CheckConstraint(_in("state", RECORDING_STATES)), nullable=False,
                  server_default="kept"),
        sa.Column("queued_utc_ns", sa.BigInteger),
        sa.Column("queued_by", sa.Text),
        sa.Column("queue_reason", sa.Text),
        sa.Column("kept_by_restore", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("deleted_utc_ns", sa.BigInteger),
        sa.Column("hold_applied", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("retain_until_ns", sa.BigInteger),  # NULL: until deleted manually
    )
    op.create_index("recordings_due", "recordings", ["state", "retain_until_ns"])
    op.create_index("recordings_queued", "recordings", ["state", "queued_utc_ns"])
    default = next(c for c in DEFAULT_CATEGORIES if c.role == "default")
    until = "NULL" if default.retention_s is None else f"MIN(utc_start_ns) + {default.retention_s * 1_000_000_000}"
    op.execute("INSERT INTO recordings (device_id, recording_id, recorded_utc_ns, end_utc_ns, entries, marks, state, "
               f"retain_until_ns) SELECT device_id, {_KEY.format('')}, MIN(utc_start_ns), MAX(utc_end_ns), COUNT(*), "
               f"SUM(marks), 'kept', {until} FROM evidence GROUP BY device_id, {_KEY.format('')}")
    categories = op.create_table(
        "categories",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("retention_s", sa.BigInteger, sa.CheckConstraint("retention_s > 0")),
        sa.Column("role", sa.Text, sa.CheckConstraint(_in("role", ROLES)), unique=True),
        sa.Column("doc", sa.Text, nullable=False, server_default=""),
        sa.Column("changed_utc_ns", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.bulk_insert(categories, [{"name": c.name, "retention_s": c.retention_s, "role": c.role, "doc": c.doc,
                                 "changed_utc_ns": 0} for c in DEFAULT_CATEGORIES])
    op.create_table(
        "recording_categories",
        sa.Column("device_id", sa.Text, primary_key=True),
        sa.Column("recording_id", sa.Text, primary_key=True),
        sa.Column("category", sa.Text, sa.ForeignKey("categories.name"), primary_key=True),
        sa.Column("assigned_by", sa.Text, nullable=False),
        sa.Column("assigned_utc_ns", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(["device_id", "recording_id"], ["recordings.device_id", "recordings.recording_id"]),
    )
    op.create_table(
        "cases",
        sa.Column("case_id", sa.Text, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("state", sa.Text, sa.CheckConstraint(_in("state", CASE_STATES)), nullable=False),
        sa.Column("opened_by", sa.Text, nullable=False),
        sa.Column("opened_utc_ns", sa.BigInteger, nullable=False),
        sa.Column("closed_by", sa.Text),
        sa.Column("closed_utc_ns", sa.BigInteger),
    )
    op.create_table(
        "case_evidence",
        sa.Column("case_id", sa.Text, sa.ForeignKey("cases.case_id"), primary_key=True),
        sa.Column("device_id", sa.Text, primary_key=True),
        sa.Column("recording_id", sa.Text, primary_key=True),
        sa.Column("added_by", sa.Text, nullable=False),
        sa.Column("added_utc_ns", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(["device_id", "recording_id"], ["recordings.device_id", "recordings.recording_id"]),
    )
    op.create_index("case_evidence_recording", "case_evidence", ["device_id", "recording_id"])
    op.create_table(
        "custody",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("utc_ns", sa.BigInteger, nullable=False),
        sa.Column("component", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_sha256", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("custody_target", "custody", ["target", "id"])
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_triggers()
    else:
        _postgresql_triggers()


def _sqlite_triggers() -> None:
    op.execute(f"""CREATE TRIGGER recordings_legal_hold BEFORE UPDATE OF state ON recordings
        WHEN NEW.state IN ('queued', 'deleting', 'deleted') AND {_HELD_RECORDING}
        BEGIN SELECT RAISE(ABORT, '{_HOLD_REFUSED}'); END""")
    op.execute(f"""CREATE TRIGGER evidence_legal_hold BEFORE UPDATE OF deleted_utc_ns ON evidence
        WHEN NEW.deleted_utc_ns IS NOT NULL AND {_HELD_ENTRY}
        BEGIN SELECT RAISE(ABORT, '{_HOLD_REFUSED}'); END""")
    for verb in ("update", "delete"):
        op.execute(f"CREATE TRIGGER custody_no_{verb} BEFORE {verb.upper()} ON custody "
                   "BEGIN SELECT RAISE(ABORT, 'custody is append-only'); END")


def _postgresql_triggers() -> None:
    for what, held in (("recording", _HELD_RECORDING), ("entry", _HELD_ENTRY)):
        op.execute(f"""CREATE FUNCTION bodycam_legal_hold_{what}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF {held} THEN
                    RAISE EXCEPTION '{_HOLD_REFUSED}' USING ERRCODE = 'insufficient_privilege';
                END IF;
                RETURN NEW;
            END $$""")
    op.execute("CREATE TRIGGER recordings_legal_hold BEFORE UPDATE OF state ON recordings FOR EACH ROW "
               "WHEN (NEW.state IN ('queued', 'deleting', 'deleted')) EXECUTE FUNCTION bodycam_legal_hold_recording()")
    op.execute("CREATE TRIGGER evidence_legal_hold BEFORE UPDATE OF deleted_utc_ns ON evidence FOR EACH ROW "
               "WHEN (NEW.deleted_utc_ns IS NOT NULL) EXECUTE FUNCTION bodycam_legal_hold_entry()")
    # bodycam_append_only() is revision 0001's, as for the audit log
    op.execute("CREATE TRIGGER custody_no_change BEFORE UPDATE OR DELETE ON custody "
               "FOR EACH ROW EXECUTE FUNCTION bodycam_append_only()")
    op.execute("CREATE TRIGGER custody_no_truncate BEFORE TRUNCATE ON custody "
               "FOR EACH STATEMENT EXECUTE FUNCTION bodycam_append_only()")


def downgrade() -> None:
    raise NotImplementedError("the index is never downgraded: restore a backup taken before the upgrade")

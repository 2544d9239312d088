"""The audit log's filtered pages: an index on each filtered column then id (kind, subject,
actor, client), so a page filtered by one is a range of an index rather than a walk back along
the primary key; they replace the single-column indexes on kind and subject_id, which they
cover (docs/security.md, "Admin console")

Revision ID: 0024
Revises: 0023
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The new indexes and their columns.
INDEXES = {
    "ix_audit_events_kind_id": ["kind", "id"],
    "ix_audit_events_subject_id_id": ["subject_id", "id"],
    "ix_audit_events_actor_id_id": ["actor_id", "id"],
    "ix_audit_events_client_id_id": ["client_id", "id"],
}


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        for name, columns in INDEXES.items():
            batch_op.create_index(name, columns, unique=False)
        # Each read by kind or by subject alone is served by the new index that starts with it.
        batch_op.drop_index("ix_audit_events_kind")
        batch_op.drop_index("ix_audit_events_subject_id")


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_subject_id", ["subject_id"], unique=False)
        batch_op.create_index("ix_audit_events_kind", ["kind"], unique=False)
        for name in reversed(INDEXES):
            batch_op.drop_index(name)

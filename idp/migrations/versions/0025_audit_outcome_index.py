"""The audit log's pages filtered by an outcome other than ``success``: a partial index on
(outcome, id) of the rows whose outcome is not ``success``, so a page of failures is a range of
it rather than a walk back along the primary key past every success (docs/security.md, "Admin
console"); successful rows, most of the log's writes, add no entry to it

Revision ID: 0025
Revises: 0024
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: As idp.models.audit ``UNUSUAL_OUTCOME`` (a migration keeps the text it was written with).
UNUSUAL_OUTCOME = "outcome <> 'success'"


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_audit_events_outcome_id", ["outcome", "id"], unique=False,
            sqlite_where=sa.text(UNUSUAL_OUTCOME), postgresql_where=sa.text(UNUSUAL_OUTCOME),
        )  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_outcome_id")

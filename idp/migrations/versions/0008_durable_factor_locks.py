"""durable factor locks, and attempts counted before they are checked

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import idp.models.base

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("attempt_counters", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "previous_failure_at", idp.models.base.UTCDateTime(timezone=True), nullable=True
            )
        )
    op.create_table(
        "factor_locks",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("locked_at", idp.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_factor_locks")),
    )


def downgrade() -> None:
    op.drop_table("factor_locks")
    with op.batch_alter_table("attempt_counters", schema=None) as batch_op:
        batch_op.drop_column("previous_failure_at")

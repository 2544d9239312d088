"""sign-in policy overrides and shared maintenance runs

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import idp.models.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "policy_overrides",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", idp.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_policy_overrides")),
    )
    op.create_table(
        "maintenance_runs",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("last_run_at", idp.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_maintenance_runs")),
    )


def downgrade() -> None:
    op.drop_table("maintenance_runs")
    op.drop_table("policy_overrides")

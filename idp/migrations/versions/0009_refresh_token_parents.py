"""refresh tokens remember the token whose rotation issued them (safe refresh retries)

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_refresh_tokens_parent_hash"), ["parent_hash"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_parent_hash"))
        batch_op.drop_column("parent_hash")

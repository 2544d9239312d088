"""A session remembers whether a backup code opened it, so that new backup codes end the
sessions the old ones opened (docs/security.md, "Sessions")

Revision ID: 0028
Revises: 0027

A node of the previous version stores no value: its sessions are marked as opened some other
way (the server default), as every session stored before this revision is.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("browser_sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("backup_code", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("browser_sessions", schema=None) as batch_op:
        batch_op.drop_column("backup_code")

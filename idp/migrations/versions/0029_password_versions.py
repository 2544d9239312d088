"""Each password's version: a sign-in records the version its password check read, and the step
that opens the session refuses once the password changed since (docs/security.md, "Sign-in,
passkeys and assurance")

Revision ID: 0029
Revises: 0028

A node of the previous version neither moves a user's version when the password changes nor
records one with a sign-in waiting for its second step; such a sign-in (NULL) is finished as
before, so that an upgrade with nodes of both versions interrupts nobody's sign-in.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("password_version", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("partial_logins", schema=None) as batch_op:
        batch_op.add_column(sa.Column("password_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("partial_logins", schema=None) as batch_op:
        batch_op.drop_column("password_version")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("password_version")

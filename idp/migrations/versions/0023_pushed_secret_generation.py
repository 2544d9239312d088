"""Pushed authorization requests (RFC 9126 2): each client's ``secret_generation``, moved on by
every rotation that stops a secret at once, and the one each push authenticated under, so that
a push stored after the rotation took the client's pushes back is refused at /authorize

Revision ID: 0023
Revises: 0022
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # 0 for every existing client and push: nothing changes for them until the next rotation.
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("secret_generation", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("pushed_authorization_requests", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("secret_generation", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("pushed_authorization_requests", schema=None) as batch_op:
        batch_op.drop_column("secret_generation")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("secret_generation")

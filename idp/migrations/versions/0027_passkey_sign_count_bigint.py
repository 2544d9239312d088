"""A passkey's signature counter as a 64-bit integer on PostgreSQL: WebAuthn L3 6.1 makes
signCount a 32-bit unsigned integer (up to 2**32 - 1), past PostgreSQL's INTEGER (2**31 - 1), so
an authenticator whose counter had gone past it could neither register nor sign in (the write
failed). SQLite's INTEGER already holds 64 bits and is unchanged

Revision ID: 0027
Revises: 0026
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("passkeys", "sign_count", type_=sa.BigInteger(),
                        existing_type=sa.Integer(), existing_nullable=False)  # fmt: skip


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("passkeys", "sign_count", type_=sa.Integer(),
                        existing_type=sa.BigInteger(), existing_nullable=False)  # fmt: skip

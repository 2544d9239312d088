"""passkeys remember the attestation root their registration was verified against (none: not
verified)

Revision ID: 0021
Revises: 0020
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, and null for every existing passkey: whatever roots were configured when it was
    # registered, nothing recorded which one its attestation chained to, so it reads as not
    # verified (docs/admins.md, "Verified attestation"). A node still on the previous version
    # during a rolling upgrade inserts passkeys without it: not verified either, which is the
    # safe reading (docs/operations.md, "Upgrades and migrations").
    with op.batch_alter_table("passkeys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attestation_root", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("passkeys", schema=None) as batch_op:
        batch_op.drop_column("attestation_root")

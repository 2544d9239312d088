"""access tokens remember the SHA-256 of their compact JWT (userinfo and introspection by hash)

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: tokens issued before this revision (and by nodes still on the previous version
    # during a rolling upgrade) have no recorded hash; idp.services.tokens finds those by their
    # verified signature and jti, as before, until they expire.
    with op.batch_alter_table("access_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_access_tokens_token_hash"), ["token_hash"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("access_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_tokens_token_hash"))
        batch_op.drop_column("token_hash")

"""client apps in the admin console: kind, consent-page links, secret rotation overlap

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import idp.models.base

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), server_default="web", nullable=False)
        )
        batch_op.add_column(sa.Column("previous_secret_hash", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column(
                "previous_secret_expires_at",
                idp.models.base.UTCDateTime(timezone=True),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("logo_uri", sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column("tos_uri", sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column("policy_uri", sa.String(length=2000), nullable=True))
        batch_op.add_column(
            sa.Column("updated_at", idp.models.base.UTCDateTime(timezone=True), nullable=True)
        )
    # Public clients registered before kinds existed become single-page apps: their registered
    # redirect URIs keep matching exactly, and no loopback port variation is granted unasked.
    op.execute("UPDATE clients SET kind = 'spa' WHERE is_public")


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("updated_at")
        batch_op.drop_column("policy_uri")
        batch_op.drop_column("tos_uri")
        batch_op.drop_column("logo_uri")
        batch_op.drop_column("previous_secret_expires_at")
        batch_op.drop_column("previous_secret_hash")
        batch_op.drop_column("kind")

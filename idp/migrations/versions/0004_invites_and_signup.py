"""invites (a purpose on login links) and self-service sign-up links

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import idp.models.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("login_links", schema=None) as batch_op:
        # Existing rows are rescue links: the server default says so.
        batch_op.add_column(
            sa.Column("purpose", sa.String(length=16), server_default="login", nullable=False)
        )
    op.create_table(
        "signup_links",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("created_at", idp.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", idp.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", idp.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_signup_links")),
    )
    with op.batch_alter_table("signup_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signup_links_email"), ["email"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("signup_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signup_links_email"))
    op.drop_table("signup_links")
    with op.batch_alter_table("login_links", schema=None) as batch_op:
        batch_op.drop_column("purpose")

"""Pushed authorization requests (RFC 9126): the requests clients push, kept by the hash of their
request_uri until used once or expired, and each client's ``require_pushed_authorization_requests``
(RFC 9126 6)

Revision ID: 0020
Revises: 0019
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import idp.models.base

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pushed_authorization_requests",
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("created_at", idp.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", idp.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", idp.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
            name=op.f("fk_pushed_authorization_requests_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("secret_hash", name=op.f("pk_pushed_authorization_requests")),
    )
    with op.batch_alter_table("pushed_authorization_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pushed_authorization_requests_expires_at"), ["expires_at"], unique=False
        )
    # Off for every existing client: nothing changes for them until an admin turns it on.
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "require_pushed_authorization_requests",
                sa.Boolean(),
                server_default=sa.false(),
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("require_pushed_authorization_requests")
    with op.batch_alter_table("pushed_authorization_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pushed_authorization_requests_expires_at"))
    op.drop_table("pushed_authorization_requests")

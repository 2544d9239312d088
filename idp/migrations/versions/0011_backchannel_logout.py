"""back-channel logout: per-client logout URI, and the outbox's channel and last failure

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from idp.models.base import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("backchannel_logout_uri", sa.String(2000), nullable=True))
        batch_op.add_column(
            sa.Column(
                "backchannel_logout_session_required",
                sa.Boolean(),
                server_default=sa.false(),
                nullable=False,
            )
        )
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("channel", sa.String(16), server_default="mail", nullable=False)
        )
        batch_op.add_column(sa.Column("last_failure_at", UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_error", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.drop_column("last_error")
        batch_op.drop_column("last_failure_at")
        batch_op.drop_column("channel")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("backchannel_logout_session_required")
        batch_op.drop_column("backchannel_logout_uri")

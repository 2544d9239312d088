"""API tokens end with their creator's authority: why a token was revoked, and the tokens of
admins already gone revoked

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from idp.models.base import UTCDateTime

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: a token revoked by hand, or not revoked, has no reason.
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revoked_reason", sa.String(length=32), nullable=True))
    # A token made before this revision by an admin since disabled, demoted or deleted is revoked
    # now, as the change would have revoked it (idp.services.token_creators), rather than come
    # back to life when that admin is enabled or promoted again. Tokens made on the command line
    # (no creator; "cli" in rows written by the service's default actor) stay.
    tokens = sa.table(
        "api_tokens",
        sa.column("created_by", sa.String),
        sa.column("revoked_at", UTCDateTime()),
        sa.column("revoked_reason", sa.String),
    )
    users = sa.table(
        "users",
        sa.column("id", sa.String),
        sa.column("is_admin", sa.Boolean),
        sa.column("disabled_at", sa.DateTime),
    )
    now = datetime.now(UTC)
    live = sa.and_(
        tokens.c.revoked_at.is_(None),
        tokens.c.created_by.is_not(None),
        tokens.c.created_by != "cli",
    )
    creator = sa.select(users.c.id).where(users.c.id == tokens.c.created_by)
    for reason, gone in (
        ("creator_deleted", ~sa.exists(creator)),
        ("creator_disabled", sa.exists(creator.where(users.c.disabled_at.is_not(None)))),
        ("creator_demoted", sa.exists(creator.where(users.c.is_admin.is_(False)))),
    ):
        op.execute(tokens.update().where(live, gone).values(revoked_at=now, revoked_reason=reason))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("revoked_reason")

"""browser sessions remember the passkey that signed them in (removing it ends them)

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: a session signed in another way (a password and an app code, a login link) has
    # no passkey, and neither has one started before this revision (or by a node still on the
    # previous version during a rolling upgrade): removing a passkey cannot tell such a session
    # apart, so it lives on until it ends as before (docs/operations.md, "Upgrades and
    # migrations"). No foreign key: the record outlives the passkey, which is deleted once the
    # sessions it signed in are ended (idp.services.passkeys.PasskeyService.remove).
    with op.batch_alter_table("browser_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credential_id", sa.String(length=1400), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_browser_sessions_credential_id"), ["credential_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("browser_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_browser_sessions_credential_id"))
        batch_op.drop_column("credential_id")

"""Each grant's ``sub`` and ``sid`` as issued to its client, which its logout token names
(OpenID Connect Back-Channel Logout 1.0 2.4, 2.6) after a change of the client's subject type or
sector

Revision ID: 0019
Revises: 0018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: an existing grant's values were not recorded; its logout token is computed from
    # the client's settings at delivery, as before (idp.services.backchannel_logout).
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("issued_sub", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("issued_sid", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_column("issued_sid")
        batch_op.drop_column("issued_sub")

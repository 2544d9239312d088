"""DPoP (RFC 9449): the proofs seen, by their key and ``jti`` until their window ends (11.1), the
key a public client's refresh token is bound to (5), each client's ``dpop_bound_access_tokens``
(5.2), and the key an authorization code is bound to (10, ``dpop_jkt``)

Revision ID: 0022
Revises: 0021
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import idp.models.base

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "used_dpop_proofs",
        sa.Column("jti_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", idp.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti_hash", name=op.f("pk_used_dpop_proofs")),
    )
    with op.batch_alter_table("used_dpop_proofs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_used_dpop_proofs_expires_at"), ["expires_at"], unique=False
        )
    # Unbound (NULL) for every existing refresh token: they were issued without DPoP.
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("jkt", sa.String(length=64), nullable=True))
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dpop_jkt", sa.String(length=64), nullable=True))
    # Off for every existing client: nothing changes for them until an admin turns it on.
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "dpop_bound_access_tokens", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.drop_column("dpop_jkt")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("dpop_bound_access_tokens")
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_column("jkt")
    with op.batch_alter_table("used_dpop_proofs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_used_dpop_proofs_expires_at"))
    op.drop_table("used_dpop_proofs")

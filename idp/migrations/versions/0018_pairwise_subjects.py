"""Pairwise subject identifiers (OIDC Core 8.1): each client's subject type and sector, and the
installation's secret that keys the pairwise values

Revision ID: 0018
Revises: 0017
"""

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from idp.models.base import UTCDateTime

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every existing client stays public: its users' sub does not change at the upgrade.
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("subject_type", sa.String(length=16), server_default="public", nullable=False)
        )
        batch_op.add_column(sa.Column("sector_identifier", sa.String(length=253), nullable=True))
    secrets_table = op.create_table(
        "installation_secrets",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_installation_secrets")),
    )
    # Made here, once, so that every node reads the same one (idp.services.subjects; `idp init`
    # makes it too for a database without it, idp.services.subjects.ensure_secret).
    value = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    op.bulk_insert(
        secrets_table,
        [{"name": "pairwise-subjects", "value": value, "created_at": datetime.now(UTC)}],
    )


def downgrade() -> None:
    op.drop_table("installation_secrets")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("sector_identifier")
        batch_op.drop_column("subject_type")

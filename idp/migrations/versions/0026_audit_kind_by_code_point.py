"""The audit log's event kind compared by code point on PostgreSQL (the "C" collation), as
SQLite's BINARY does, whatever the database's locale: a filter by a kind's prefix is a range
of the index on (kind, id), which is the prefix exactly only in code point order
(idp.services.prefixes). PostgreSQL rebuilds the index on the column; SQLite is unchanged

Revision ID: 0026
Revises: 0025
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("audit_events", "kind", type_=sa.String(64, collation="C"),
                        existing_type=sa.String(64), existing_nullable=False)  # fmt: skip


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("audit_events", "kind", type_=sa.String(64, collation="default"),
                        existing_type=sa.String(64, collation="C"),
                        existing_nullable=False)  # fmt: skip

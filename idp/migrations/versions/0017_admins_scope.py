"""API tokens: acting on admin accounts needs the admins:write scope; tokens that held users:write
keep what they could do

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TOKENS = sa.table("api_tokens", sa.column("id", sa.String), sa.column("scopes", sa.JSON))


#: The scopes in the order tokens list them (idp.services.api_tokens.SCOPES at this revision).
_ORDER = ("clients:read", "clients:write", "users:read", "users:write", "admins:write",
          "groups:read", "groups:write", "audit:read", "login-links:write")  # fmt: skip


def _rewrite(change: Callable[[list[str]], list[str]]) -> None:
    found = op.get_bind().execute(sa.select(_TOKENS.c.id, _TOKENS.c.scopes)).all()
    for token_id, scopes in found:
        changed = sorted(set(change(list(scopes))), key=lambda s: (*_ORDER, s).index(s))
        if changed != list(scopes):
            op.execute(_TOKENS.update().where(_TOKENS.c.id == token_id).values(scopes=changed))


def upgrade() -> None:
    # Before this revision users:write also made admins and changed, disabled and rescued them
    # (docs/api.md). A token made then keeps that power, now named admins:write, so that no
    # automation breaks at the upgrade; the operator narrows it by making a new token.
    _rewrite(lambda scopes: [*scopes, "admins:write"] if "users:write" in scopes else scopes)


def downgrade() -> None:
    # The previous version knows no admins:write: its power was users:write's there.
    _rewrite(
        lambda scopes: (
            [*(s for s in scopes if s != "admins:write"), "users:write"]
            if "admins:write" in scopes
            else scopes
        )
    )

"""A new authorization request stored in a thin transaction (idp.thin_reads ``begin``;
idp.oidc.pending_open): the address's budget count, when it is counted in the database, and the
pending request it pays for, the statements the ``Session`` would send (docs/operations.md,
"Storage budgets")."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from idp.services.anonymous import StorageBudgets
from idp.services.pending_authorizations import PendingAuthorizations
from idp.services.rate_limits import DatabaseCounters

if TYPE_CHECKING:
    from idp.thin_reads import ThinTransaction


def open_pending_apart(
    transaction: ThinTransaction, unopened: Any, counted_elsewhere: StorageBudgets | None, *,
    per_address: int, client_id: str, params: dict[str, Any], address: str, now: datetime,
    ttl: int,
) -> str | None:  # fmt: skip
    """The new pending request's id, or None when ``address`` spent its budget; the caller
    commits ``transaction``. ``counted_elsewhere``: the budgets in Redis, which count at once;
    None counts in ``transaction``. ``unopened`` is the scoped Session, never opened here."""
    budgets = counted_elsewhere or StorageBudgets(
        DatabaseCounters(unopened, commit=False, transaction=transaction), per_address
    )
    if not budgets.pending_authorization(address, now):
        return None
    return PendingAuthorizations(unopened).open(client_id, params, now, ttl, transaction)

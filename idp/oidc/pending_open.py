"""A new authorization request's storage: the address's budget count and the pending request it
pays for (docs/operations.md, "Storage budgets"), committed together; as one transaction on the
thread's own connection, apart from the ORM ``Session`` (idp.thin_reads ``begin``;
docs/performance.md), when nothing in the request opened a ``Session`` before it.

The statements are the ones the ``Session`` sends (the budget's conditional upsert, the pending
request's INSERT), and the rule is the same: the count is committed with the request it pays
for, or alone when the budget is spent. Counters in Redis count at once, as always; the pending
request is then the transaction's only statement.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from idp.composition import runtime, services
from idp.extensions import db
from idp.services.pending_apart import open_pending_apart


def open_pending(
    client_id: str, params: dict[str, Any], address: str, now: datetime, ttl: int
) -> str | None:
    """The new pending request's id, or None when ``address`` spent its budget (RFC 6749
    4.1.2.1 ``temporarily_unavailable``); committed either way."""
    reads = runtime().reads
    transaction = None if reads is None or db.session.registry.has() else reads.begin()
    if transaction is None:
        return _in_session(client_id, params, address, now, ttl)
    redis = services().container.redis is not None
    try:
        pending_id = open_pending_apart(
            transaction, db.session, services().storage_budgets if redis else None,
            per_address=runtime().settings.anonymous_requests_per_address, client_id=client_id,
            params=params, address=address, now=now, ttl=ttl,
        )  # fmt: skip
    except BaseException:
        transaction.rollback()
        raise
    transaction.commit()
    return pending_id


def _in_session(
    client_id: str, params: dict[str, Any], address: str, now: datetime, ttl: int
) -> str | None:
    pending_id = None
    if services().storage_budgets_with_rows.pending_authorization(address, now):
        pending_id = services().pending_authorizations.open(client_id, params, now, ttl)
    db.session.commit()
    return pending_id

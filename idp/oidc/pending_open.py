"""A new authorization request's storage, where it must wait stored: a pushed request's (RFC 9126
4), or one that needs the consent page. The address's budget count and the pending request it pays
for are committed together (docs/operations.md, "Storage budgets"): the count is committed with
the request it pays for, or alone when the budget is spent. Counters in Redis count at once, as
always. A request whose sign-in page the authorization endpoint shows is not stored here: the
page carries it (idp.services.carried_requests)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from idp.composition import services
from idp.extensions import db


def open_pending(
    client_id: str, params: dict[str, Any], address: str, now: datetime, ttl: int
) -> str | None:
    """The new pending request's id, or None when ``address`` spent its budget (RFC 6749
    4.1.2.1 ``temporarily_unavailable``); committed either way."""
    pending_id = None
    if services().storage_budgets_with_rows.pending_authorization(address, now):
        pending_id = services().pending_authorizations.open(client_id, params, now, ttl)
    db.session.commit()
    return pending_id

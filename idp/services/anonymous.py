"""Storage budgets for anonymous requests (docs/operations.md, "Storage budgets"), and the
per-client budget of a confidential client's pushed authorization requests.

Whoever can reach idp can make it write: a pending authorization request per ``/authorize``, a
WebAuthn challenge per passkey options request, an audit row per refused answer. Each of those
writes is bounded three ways: per request (parameters capped where they are checked), per client
address (an ``AddressBudget`` per kind of write), and in time (every such row expires and the
prune job deletes it). Refused anonymous requests are counted (a metric, and one audit row per
address and window), not audited one row each.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from idp import metrics
from idp.services import audit
from idp.services.audit import RequestContext
from idp.services.client_addresses import budget_address
from idp.services.rate_limits import AddressBudget, CounterStore, WindowBudget, window_end

#: The window of the per-address budgets of pending authorization requests and of passkey
#: sign-in options (each stores a challenge); how many each address may open in it is the
#: ``anonymous_requests_per_address`` setting.
PENDING_AUTHORIZATIONS_WINDOW = timedelta(minutes=15)
PASSKEY_OPTIONS_WINDOW = timedelta(minutes=15)
#: The window of a confidential client's budget of pushed authorization requests; how many it
#: may push in it is the ``par_requests_per_client`` setting.
CLIENT_PUSHES_WINDOW = timedelta(minutes=1)
#: The window of the per-address budget of DPoP proofs recorded for public clients.
DPOP_PROOFS_WINDOW = timedelta(minutes=15)
#: Audit rows for refused anonymous requests: one per address, kind and window; the rest are
#: counted in ``idp_anonymous_rejections_total``.
REJECTION_AUDIT_WINDOW = timedelta(minutes=15)


def retry_after(window: timedelta, now: datetime) -> int:
    """The seconds until a budget counted in ``window`` frees a slot for a request refused at
    ``now``: a refusal's ``Retry-After`` (RFC 6585 4, RFC 9110 10.2.3). Budgets count in fixed
    windows whose start is part of the counter's key (idp.services.rate_limits ``window_key``),
    in the database and in Redis alike, so the count starts again from nothing exactly when the
    window holding ``now`` ends, and no earlier."""
    return wait_seconds(window_end(now, window) - now)


def wait_seconds(wait: timedelta) -> int:
    """``wait`` as ``Retry-After`` says it: rounded up, so a client that waits as told is never
    early, and at least 1 (``delay-seconds`` is a non-negative integer, RFC 9110 10.2.3)."""
    return max(1, math.ceil(wait.total_seconds()))


def budget_refused(budget: str, window: timedelta, now: datetime) -> int:
    """A request refused at ``now`` past the budget named ``budget`` (a fixed name), counted in
    window ``window``: counted in ``idp_budget_refusals_total`` (so an operator sees an office
    behind one NAT address reach its budget, docs/operations.md), and its ``Retry-After``. Every
    budget's 429, the protocol endpoints' (idp.oidc.errors ``BudgetSpentError``) and the pages',
    goes through here, or through ``refused_for``."""
    count_refusal(budget)
    return retry_after(window, now)


def refused_for(budget: str, wait: timedelta) -> int:
    """``budget_refused`` for a refusal whose wait is not only a window's end (an attempt
    counter's: idp.services.rate_limits ``Verdict.retry_after``, the address's window or the
    account's backoff, whichever is later): counted, and ``wait`` as ``Retry-After``."""
    count_refusal(budget)
    return wait_seconds(wait)


def count_refusal(budget: str) -> None:
    """Count a refusal past the budget ``budget`` (``idp_budget_refusals_total``): the one place
    every budget's refusal is counted; called directly by one that names no time
    (``/authorize``'s ``temporarily_unavailable`` redirect, RFC 6749 4.1.2.1, carries no
    header)."""
    metrics.budget_refusal(budget)


class StorageBudgets:
    """The per-address budgets of anonymous writes, in the shared counter store."""

    def __init__(self, store: CounterStore, per_address: int) -> None:
        self.store = store
        self.per_address = per_address

    def pending_authorization(self, address: str, now: datetime) -> bool:
        budget = AddressBudget(self.store, self.per_address, PENDING_AUTHORIZATIONS_WINDOW)
        return budget.spend("pending_authorization", budget_address(address), now)

    def pushed_request(self, address: str, now: datetime) -> bool:
        """A public client's pushed authorization request (RFC 9126 2): anyone can push as a
        public client, whose client_id authenticates nothing, so it is an anonymous write."""
        budget = AddressBudget(self.store, self.per_address, PENDING_AUTHORIZATIONS_WINDOW)
        return budget.spend("pushed_request", budget_address(address), now)

    def client_pushed_request(self, client_id: str, per_minute: int, now: datetime) -> bool:
        """A confidential client's pushed authorization request (RFC 9126 2), counted before it
        is checked: it authenticated, so it is no anonymous write, but each push, taken or
        refused, writes an audit row kept for ``audit_retention_days``, and one client (or
        whoever holds its secret) must not write without bound. Per client, not per address: a
        client's backend pushes for all its users from a few addresses."""
        budget = WindowBudget(self.store, per_minute, CLIENT_PUSHES_WINDOW)
        return budget.spend("client_pushed_request", client_id, now)

    def dpop_proof(self, address: str, now: datetime) -> bool:
        """A DPoP proof of a public client's request (RFC 9449 11.1: remembered, a row, until
        its window ends): the token and PAR endpoints take a public client's client_id without
        authenticating anyone, and UserInfo that client's tokens, so each proof recorded for one
        is an anonymous write."""
        budget = AddressBudget(self.store, self.per_address, DPOP_PROOFS_WINDOW)
        return budget.spend("dpop_proof", budget_address(address), now)

    def passkey_options(self, address: str, now: datetime) -> bool:
        budget = AddressBudget(self.store, self.per_address, PASSKEY_OPTIONS_WINDOW)
        return budget.spend("passkey_options", budget_address(address), now)

    def rejection_audited(self, kind: str, address: str, now: datetime) -> bool:
        """True for the first refused anonymous request of this kind from this address in the
        window: that one is audited, the others only counted."""
        budget = AddressBudget(self.store, 1, REJECTION_AUDIT_WINDOW)
        return budget.spend(f"audit:{kind}", budget_address(address), now)

    def client_refusal_audited(self, kind: str, client_id: str, now: datetime) -> bool:
        """``rejection_audited`` for a refusal of a client that authenticated (past its own
        budget): the first of this kind for this client in the window is audited, the others
        only counted, so a client that floods writes no audit row a refusal."""
        budget = WindowBudget(self.store, 1, REJECTION_AUDIT_WINDOW)
        return budget.spend(f"audit-client:{kind}", client_id, now)


class AnonymousRejections:
    """Refused requests that name no account (a malformed passkey answer, an unknown credential,
    a stale challenge): counted, and audited once per address, kind and window. ``budgets`` None
    counts them only (no audit row at all)."""

    def __init__(self, db: Session, budgets: StorageBudgets | None) -> None:
        self.db = db
        self.budgets = budgets

    def refused(
        self, kind: str, reason: str, context: RequestContext, now: datetime, detail: str = ""
    ) -> None:
        metrics.anonymous_rejection(kind, reason)
        if self.budgets is not None and self.budgets.rejection_audited(
            kind, context.ip_address, now
        ):
            audit.record(
                self.db, kind, outcome="failure", context=context, reason=reason,
                detail=detail[:200], aggregated=True,
                note=(f"further refusals of this kind from {budget_address(context.ip_address)} "
                      f"for {int(REJECTION_AUDIT_WINDOW.total_seconds() // 60)} minutes are "
                      "counted in idp_anonymous_rejections_total, not audited one by one"),
            )  # fmt: skip
            return
        # Counted as audit.record would have: idp_sign_in_attempts_total sees every failure.
        metrics.audit_event_recorded(kind, "failure", {"reason": reason})

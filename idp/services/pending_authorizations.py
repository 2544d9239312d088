"""Authorization requests waiting for a sign-in or a consent (OIDC Core 3.1.2.3, 3.1.2.4).

A request that cannot be answered at once is stored, and the browser comes back to it by id
after signing in or consenting. Each is spent once: a replayed "continue" URL cannot mint a
second code, and a refused or denied request cannot be resumed.

A request a client pushed (RFC 9126 2) waits apart, by the hash of its ``request_uri``, until the
browser brings that request_uri to ``/authorize`` once (RFC 9126 4): from there it is an
authorization request as any other, stored as pending when it needs a sign-in or a consent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from idp.models import Client, Consent, PendingAuthorization, PushedAuthorizationRequest
from idp.models.base import random_id
from idp.services import audit
from idp.services.anonymous import REJECTION_AUDIT_WINDOW, AnonymousRejections, StorageBudgets
from idp.services.audit import RequestContext
from idp.services.carried_requests import CarriedRequest
from idp.services.client_cache import CLIENT_COLUMNS, client_from
from idp.services.consume import consume_once_statement, consume_prepared
from idp.services.crypto import new_secret, token_hash
from idp.session_statements import statements_of
from idp.thin_statements import Inserts, insert_unless_exists

if TYPE_CHECKING:
    from idp.thin_reads import ThinReads

#: The longest pending id a URL may carry (ids are 32 characters; longer input is cut).
MAX_PENDING_ID = 64
_INSERT = insert(PendingAuthorization)  # built once (``open``)
_PENDING = cast(Table, PendingAuthorization.__table__)
_CLIENTS = cast(Table, Client.__table__)
#: Built once (``spend``): the consume-once UPDATE with bind parameters, so that SQLAlchemy
#: reuses its compiled form instead of building and keying a statement per sign-in.
_SPEND = consume_once_statement(
    _PENDING, _PENDING.c.id == bindparam("pending_id"), columns=(_PENDING.c.id,)
)
#: Built once (``live_request``): the request and its client's registration in one SELECT.
_LOAD_WITH_CLIENT = (
    select(_PENDING, *CLIENT_COLUMNS)
    .join(_CLIENTS, _CLIENTS.c.client_id == _PENDING.c.client_id)
    .where(_PENDING.c.id == bindparam("pending_id"))
)

#: Built once (``_store``): a carried request's row, inserted unless its id exists (both
#: dialects): the primary key decides between two answers of one page, as for a challenge.
_STORE_CARRIED = insert_unless_exists(_PENDING, _PENDING.c.id, returning=_PENDING.c.id)

#: RFC 9126 2.2: the request_uri's form; what follows it is 256 random bits (RFC 9126 7.1 and
#: 10.2: it must not be guessable; only its SHA-256 is stored).
REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
#: The longest request_uri that can be one of idp's (the prefix and a 43-character secret).
MAX_REQUEST_URI = 128
_PUSHED = cast(Table, PushedAuthorizationRequest.__table__)
#: The audit events of the PAR endpoint (docs/admins.md, "The audit log").
PUSHED_EVENT = "authorization.pushed"
PUSH_REFUSED_EVENT = "authorization.push_refused"
#: Built once (``spend_pushed``): the consume-once UPDATE of a pushed request, for its client,
#: unexpired, its parameters returned to the one caller that spent it. Its parameters are not
#: named after columns: an UPDATE reserves those names for its SET clause.
_SPEND_PUSHED = consume_once_statement(
    _PUSHED,
    _PUSHED.c.secret_hash == bindparam("pushed_hash"),
    _PUSHED.c.client_id == bindparam("pushing_client"),
    _PUSHED.c.expires_at > bindparam("spent_at"),
    columns=(_PUSHED.c.params, _PUSHED.c.secret_generation),
)


@dataclass(frozen=True)
class LivePending:
    """A live pending request as the sign-in pages read it: its parameters and its client (a
    ``Client`` of no session, read with it), without an ORM load. The consent page, which
    changes the request, keeps the mapped object (``PendingAuthorizations.live``)."""

    id: str
    client_id: str
    params: dict[str, Any]
    created_at: datetime
    consented_by: str | None
    client: Client
    #: A request its sign-in page carries, not stored yet (idp.services.carried_requests).
    carried: CarriedRequest | None = None

    @classmethod
    def carrying(cls, carried: CarriedRequest, client: Client) -> LivePending:
        """The request ``carried`` holds, of ``client``: not stored yet, and so not consented."""
        return cls(id=carried.id, client_id=carried.client_id, params=carried.params,
                   created_at=carried.created_at, consented_by=None, client=client,
                   carried=carried)  # fmt: skip

    @property
    def sent_back(self) -> str:
        """What the sign-in page's forms send back for it: the carried request, or the id."""
        return self.carried.carried if self.carried is not None else self.id


class PendingAuthorizations:
    """The pending requests, and the consents that decide whether one needs the user."""

    def __init__(self, db: Session) -> None:
        self.db = db

    def live(self, pending_id: str, now: datetime) -> PendingAuthorization | None:
        """The request by id if it is neither spent nor expired."""
        pending = self.db.get(PendingAuthorization, pending_id[:MAX_PENDING_ID])
        if pending is None or pending.consumed_at is not None or pending.expires_at <= now:
            return None
        return pending

    def live_request(
        self, pending_id: str, now: datetime, reads: ThinReads | None = None
    ) -> LivePending | None:
        """``live`` for the sign-in pages: one prepared Core SELECT of the request and its client
        (docs/performance.md: an ORM load with a joined relation costs more than the statement).
        With ``reads``, for a request that writes nothing (showing the sign-in page), it is sent
        as a thin read (idp.thin_reads): no ``Session``, no pool checkout, no transaction."""
        parameters = {"pending_id": pending_id[:MAX_PENDING_ID]}
        if reads is not None:
            row = reads.first(_LOAD_WITH_CLIENT, parameters)
        else:
            row = statements_of(self.db).first(_LOAD_WITH_CLIENT, parameters)
        if row is None or row.consumed_at is not None or row.expires_at <= now:
            return None
        return LivePending(id=row.id, client_id=row.client_id, params=row.params,
                           created_at=row.created_at, consented_by=row.consented_by,
                           client=client_from(row, "client_"))  # fmt: skip

    def open(self, client_id: str, params: dict[str, Any], now: datetime, ttl: int) -> str:
        """Store a request for ``ttl`` seconds; its id (the caller commits)."""
        # The id is chosen here, not at flush: read from the row after the commit, it would
        # cost a SELECT (a commit expires what the session loaded).
        pending_id = random_id()
        row = {
            "id": pending_id, "client_id": client_id, "params": params, "created_at": now,
            "expires_at": now + timedelta(seconds=ttl), "consumed_at": None, "consented_by": None,
        }  # fmt: skip
        # One prepared Core INSERT in the request's transaction: nothing here reads the row back.
        statements_of(self.db).write(_INSERT, row)
        return pending_id

    def spend(self, pending: PendingAuthorization | LivePending, now: datetime) -> bool:
        """Mark the request used; False when another request spent it first. A carried request
        is stored spent, one INSERT; when its row was stored before (its page's password step),
        that row is spent as any other."""
        carried = getattr(pending, "carried", None)
        if carried is not None and self._store(carried, consumed_at=now):
            return True
        return consume_prepared(self.db, _SPEND, now=now, pending_id=pending.id) is not None

    def store_carried(self, pending: LivePending) -> None:
        """Store a carried request live, under the id it carries, where it must wait (the second
        step, the consent page, a page of idp's): the URLs that name it find it. Nothing when
        stored already (spent or not: spent stays spent)."""
        if pending.carried is not None:
            self._store(pending.carried, consumed_at=None)

    def _store(self, carried: CarriedRequest, consumed_at: datetime | None) -> bool:
        """Insert ``carried``'s row unless it exists; whether this call inserted it. Kept
        ``KEPT_PAST_EXPIRY`` past its expiry (idp.services.retention) though the request ends
        then: ``RequestSigner.read`` refuses it from then on."""
        return statements_of(self.db).inserted(_STORE_CARRIED, {  # the request's transaction
            "id": carried.id, "client_id": carried.client_id, "params": carried.params,
            "created_at": carried.created_at, "expires_at": carried.expires_at,
            "consumed_at": consumed_at, "consented_by": None,
        })  # fmt: skip

    def push(
        self, client_id: str, params: dict[str, Any], now: datetime, ttl: int,
        context: RequestContext, secret_generation: int = 0,
    ) -> str:  # fmt: skip
        """Keep a validated pushed request (RFC 9126 2.2) for ``ttl`` seconds, audited as
        ``authorization.pushed`` as the device flow's request is (the row and its event: one
        statement on PostgreSQL, audit.write's ``after``); its request_uri, whose random part
        only the client and the browser see (the caller commits). ``secret_generation``: the
        client's, as read when the push authenticated (``spend_pushed``)."""
        secret = new_secret()
        row = {
            "secret_hash": token_hash(secret), "client_id": client_id, "params": params,
            "created_at": now, "expires_at": now + timedelta(seconds=ttl), "consumed_at": None,
            "secret_generation": secret_generation,
        }  # fmt: skip
        audit.write(self.db, PUSHED_EVENT, client_id=client_id, context=context,
                    after=[Inserts(_PUSHED, (row,))], scope=params.get("scope"))  # fmt: skip
        return REQUEST_URI_PREFIX + secret

    def push_refused(
        self, client: Client, error: str, description: str, context: RequestContext,
        now: datetime, budgets: StorageBudgets,
    ) -> None:  # fmt: skip
        """A push refused after its client authenticated (RFC 9126 2.3: a check of the
        authorization endpoint failed, or it named another client), audited as
        ``authorization.push_refused`` with the error sent: an operator sees a client that
        pushes what its registration does not allow (a redirect URI, a scope), or probes with a
        stolen secret. A confidential client authenticated: one row each, as each push of its
        has one. A public client's client_id authenticates nobody, so its refusal is an anonymous
        one (docs/operations.md, "Storage budgets"): counted, and audited once per address and
        window (idp.services.anonymous)."""
        if not client.is_public:
            audit.record(self.db, PUSH_REFUSED_EVENT, outcome="failure", context=context,
                         client_id=client.client_id, error=error,
                         description=description[:200])  # fmt: skip
            return
        AnonymousRejections(self.db, budgets).refused(
            PUSH_REFUSED_EVENT, error, context, now, f"{client.client_id}: {description}"
        )

    def push_over_budget(
        self, client_id: str, context: RequestContext, now: datetime, budgets: StorageBudgets
    ) -> None:
        """A confidential client's push refused past ``par_requests_per_client`` (RFC 9126 2.3,
        429): audited as ``authorization.push_refused`` once per client and window, the first
        refusal's, so an operator sees a client (or whoever holds its secret) over its budget;
        every refusal is counted in ``idp_budget_refusals_total`` (``client_pushed_request``).
        Not a row each: the budget bounds what a client writes to the audit log."""
        if not budgets.client_refusal_audited(PUSH_REFUSED_EVENT, client_id, now):
            return
        minutes = int(REJECTION_AUDIT_WINDOW.total_seconds() // 60)
        audit.record(self.db, PUSH_REFUSED_EVENT, outcome="failure", context=context,
                     client_id=client_id, error="temporarily_unavailable",
                     reason="client_budget", aggregated=True,
                     note=(f"further pushes of this client refused past its budget for {minutes} "
                           "minutes are counted in idp_budget_refusals_total "
                           "(client_pushed_request), not audited one by one"))  # fmt: skip

    def spend_pushed(
        self, request_uri: str, client_id: str, now: datetime, secret_generation: int = 0
    ) -> dict[str, Any] | None:
        """The parameters pushed under ``request_uri`` by ``client_id``, spent once through the
        consume-once primitive (RFC 9126 4: "one-time use"); None when it is no request_uri of
        idp's, another client's, expired or spent already, or pushed under a secret a rotation
        stopped since: stored before the client's ``secret_generation`` (read now) moved on. A
        push authenticated by the old secret can be stored after the rotation's
        ``withdraw_pushed`` (it was on its way), and must not outlive that secret either."""
        if not request_uri.startswith(REQUEST_URI_PREFIX) or len(request_uri) > MAX_REQUEST_URI:
            return None
        secret_hash = token_hash(request_uri[len(REQUEST_URI_PREFIX) :])
        spent = consume_prepared(self.db, _SPEND_PUSHED, now=now,
                                 pushed_hash=secret_hash, pushing_client=client_id)  # fmt: skip
        if spent is None or spent.secret_generation < secret_generation:
            return None
        return dict(spent.params)

    def consent_given(self, pending: PendingAuthorization, user_id: str) -> None:
        """The user allowed the request on the consent page; the resumed request issues a code
        for that user only (``interaction.InteractionState.consent_given``)."""
        pending.consented_by = user_id

    def consent_stands(self, user_id: str, client_id: str, scope: str) -> bool:
        """Whether the user's consent to ``client_id`` still covers ``scope``, its row locked
        until this transaction ends (``SELECT ... FOR SHARE``; SQLite's write lock): asked before
        a third-party client's grant is opened, as ``session_stands`` is for the session. A
        Disconnect (idp.services.portal.disconnect_app) deletes the consent, then revokes the
        client's grants: one that came first leaves no consent here, one that comes second waits
        for this grant's commit and then revokes it, so no grant outlives the Disconnect."""
        scopes = self.db.scalar(
            select(Consent.scopes)
            .where(Consent.user_id == user_id, Consent.client_id == client_id)
            .with_for_update(read=True)
        )
        return scopes is not None and set(scope.split()) <= set(scopes)

    def consented_scopes(self, user_id: str, client_id: str) -> set[str] | None:
        """The scopes the user agreed to share with the client before (None: never asked)."""
        consent = self.db.scalar(
            select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id)
        )
        return set(consent.scopes) if consent else None


def push_lifetime(ttl: int, now: datetime, secret_ends: datetime | None) -> int | None:
    """The seconds a push lives (its ``expires_in``, RFC 9126 2.2): ``ttl``, but no longer than
    the secret that authenticated it, when that secret ends (``secret_ends``: a rotation's old
    secret in its overlap, ``Client.previous_secret_ends_for``). A rotation that stops a secret
    early takes its pushes back (``withdraw_pushed``); an overlap that ends by time takes
    nothing back, so a request_uri the old secret pushed in the overlap's last ``ttl`` seconds
    would have outlived it (RFC 9126 2: the push is authenticated by that secret). Whole
    seconds, rounded down: never a moment past the secret's end.

    None when less than a second of that secret is left: RFC 9126 2.2 makes ``expires_in`` a
    positive integer, so the answer cannot be ``0``, and one second would outlive the secret.
    The secret has ended for a push, which is refused as its authentication would be a moment
    later (idp.oidc.pushed); the client pushes again with its new secret."""
    if secret_ends is None:
        return ttl
    left = int((secret_ends - now).total_seconds())
    return min(ttl, left) if left >= 1 else None


def withdraw_pushed(db: Session, client_id: str) -> int:
    """Take back every request ``client_id`` pushed that ``/authorize`` has not spent; how many.
    For a rotation that stops the client's secret at once (idp.services.clients): a push was
    authenticated by that secret (RFC 9126 2), and its request_uri must not outlive it for its
    ``par_request_ttl``. ``/authorize`` then answers it as an expired one (RFC 9126 4). The
    client's ``secret_generation`` moves on, in the rotation's transaction: a push that
    authenticated before, and is stored after this DELETE, carries the earlier one, and
    ``spend_pushed`` refuses it."""
    db.execute(
        update(Client)
        .where(Client.client_id == client_id)
        .values(secret_generation=Client.secret_generation + 1)
        .execution_options(synchronize_session=False)
    )
    withdrawn = db.execute(
        delete(PushedAuthorizationRequest)
        .where(
            PushedAuthorizationRequest.client_id == client_id,
            PushedAuthorizationRequest.consumed_at.is_(None),
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(withdrawn, "rowcount", 0))

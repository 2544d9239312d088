"""The refresh grant's rotation (RFC 6749 6, RFC 9700 4.14.2), and the code grant's redemption
(RFC 6749 4.1.3), as one transaction on the thread's own connection, apart from the ORM
``Session`` (idp.thin_reads ``begin``; docs/performance.md, "Refresh with rotation").

The usual rotation is the request's only work on the database: the refresh token's spend (one
``UPDATE ... RETURNING``), the new access token's and refresh token's INSERTs. When nothing in
the request opened a ``Session`` before it (the client came from the cache), these three are
sent as one transaction of their own, the same statements as through the ``Session``, and
committed before the answer. Every path that writes more keeps the ``Session``:

- a token that spent nothing (unknown, another client's, a replay that revokes its grant, a
  retry of a lost answer that is audited): the transaction is rolled back first, so on SQLite it
  no longer holds the one write lock when the ``Session`` writes;
- a client restricted to groups, whose check may revoke the grant (docs/admins.md): the
  ``Session`` from the start.

A code is the same shape (``redeem_code``): its spend, then the access and refresh token INSERTs;
a code that spent nothing (unknown, another client's, a replay that revokes its grant, RFC 6749
4.1.2) is decided in the ``Session`` once the transaction is rolled back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from authlib.oauth2 import OAuth2Error

from idp import checkpoints
from idp.composition import runtime, services
from idp.extensions import db
from idp.models import Client
from idp.oidc.code_refusals import remember_spend
from idp.services.grants import SpentCode
from idp.services.refresh_tokens import (
    RefreshRedemption,
    refresh_token_digest,
    spend_refresh_token_apart,
)
from idp.services.spent_codes import SPEND_CODE, code_digest, spent_code
from idp.thin_reads import ThinTransaction

#: Where a code exchange is held, in tests, after it read its clock (``now``) and before its spend
#: (idp.checkpoints): a session's ending can then take the code's row lock first.
SPEND_CODE_CHECKPOINT = "token.code_spend"
#: Where a code exchange is held, in tests, once its spend was sent and before anything else
#: (idp.checkpoints): the code's row locked, its tokens not yet recorded nor committed.
SPENT_CODE_CHECKPOINT = "token.code_spent"


def in_rotation(request: Any, rotate: Callable[[], Any]) -> Any:
    """``rotate()``'s answer. The transaction ``redeem`` opened for it, if any
    (``request.rotation``), is committed as soon as the tokens are recorded in it
    (idp.oidc.token_issue ``save_token``), or else after ``rotate()``; on an OAuth error answer
    too, as the token view commits the ``Session`` then (a scope wider than the grant's is refused
    before anything is spent, ``RefreshTokenGrant``). Any other error before the tokens were
    recorded rolls it back."""
    request.rotation = None
    try:
        answer = rotate()
    except OAuth2Error:
        if request.rotation is not None:
            request.rotation.commit()
        raise
    except BaseException:
        if request.rotation is not None:
            request.rotation.rollback()
        raise
    if request.rotation is not None:
        request.rotation.commit()
    return answer


def _transaction_apart(client: Client) -> ThinTransaction | None:
    """A transaction of its own for a spend of ``client``'s, begun now; None when the spend must
    go through the ``Session``: a client restricted to groups, a request that already opened a
    ``Session`` (SQLite's one write lock), no connection apart from the pool's (in-memory
    SQLite: ``ThinReads.begin``)."""
    reads = runtime().reads
    if reads is None or client.restricted_to_groups or db.session.registry.has():
        return None
    return reads.begin()


def redeem(
    request: Any, token: str, now: datetime, grace: timedelta, jkt: str | None = None
) -> RefreshRedemption:
    """``GrantService.redeem_refresh_token`` for ``request.client``, its spend sent in a
    transaction of its own (``request.rotation``) when the request has no ``Session``: opened
    here, for a token that can be one, so that nothing else takes SQLite's write lock. A token
    that spent nothing is decided, and written, in the ``Session`` once that transaction is
    rolled back. ``jkt``: the request's DPoP key (RFC 9449 5), which a bound token must match."""
    redemption = _redeemed(request, token, now, grace, jkt)
    if redemption.spent_grant is not None:
        # Spent: a refusal from now on takes its grant back (idp.oidc.code_refusals).
        remember_spend(request, redemption.spent_grant)
    return redemption


def _redeemed(
    request: Any, token: str, now: datetime, grace: timedelta, jkt: str | None
) -> RefreshRedemption:
    client: Client = request.client
    digest = refresh_token_digest(token)
    if digest is None or (rotation := _transaction_apart(client)) is None:
        return services().grants.redeem_refresh_token(
            token, client.client_id, now, retry_grace=grace, jkt=jkt
        )
    request.rotation = rotation
    spent = spend_refresh_token_apart(rotation, digest, client.client_id, now, jkt)
    if spent is not None:
        return spent
    rotation.rollback()
    return services().grants.refused_refresh_token(digest, client.client_id, now, grace, jkt)


def redeem_code(
    request: Any, code: str, client: Client, now: datetime, jkt: str | None = None
) -> SpentCode | None:
    """``GrantService.redeem_code`` for ``client``, its spend sent in a transaction of its own
    (``request.rotation``, committed by ``in_rotation`` with the tokens the code issues) when the
    request has no ``Session``, as ``redeem`` does for a refresh token."""
    digest = code_digest(code)
    lifetime = timedelta(seconds=runtime().settings.code_ttl)
    checkpoints.reached(SPEND_CODE_CHECKPOINT)
    if digest is None or (transaction := _transaction_apart(client)) is None:
        spent = services().grants.redeem_code(code, client.client_id, now, lifetime, jkt)
        checkpoints.reached(SPENT_CODE_CHECKPOINT)
        return spent
    request.rotation = transaction
    row = transaction.first(
        SPEND_CODE, {"spent_at": now, "digest": digest, "client": client.client_id, "jkt": jkt}
    )
    checkpoints.reached(SPENT_CODE_CHECKPOINT)
    if row is not None:
        return spent_code(row, client.client_id, now, lifetime, transaction.write)
    transaction.rollback()
    services().grants.refused_code(digest, client.client_id, now)
    return None

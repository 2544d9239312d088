"""The rows of a token response: the access token (recorded by the hash of its compact string,
which the bearer endpoints look it up by, idp.services.tokens) and the refresh token, written in
the request's transaction, in a rotation's thin transaction, or alone (idp.oidc.token_issue)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, insert

from idp.models import AccessToken, RefreshToken
from idp.services.crypto import token_hash
from idp.thin_statements import Inserts

if TYPE_CHECKING:
    from idp.thin_reads import ThinReads, ThinTransaction

#: Built once: its compiled form is cached, and executed on the session's connection it skips
#: the ORM's flush (``record_access_token_alone``).
_ACCESS_TOKENS = cast(Table, AccessToken.__table__)
_INSERT_ACCESS_TOKEN = insert(_ACCESS_TOKENS)
_REFRESH_TOKENS = RefreshToken.__table__


@dataclass(frozen=True)
class IssuedAccessToken:
    """An access token as it is recorded: the hash of its compact string and its claims' facts."""

    token: str
    jti: str
    client_id: str
    grant_id: str | None
    user_id: str | None
    scope: str
    expires_at: datetime
    now: datetime

    def row(self) -> dict[str, Any]:
        return {
            "jti": self.jti,
            "token_hash": token_hash(self.token),
            "client_id": self.client_id,
            "grant_id": self.grant_id,
            "user_id": self.user_id,
            "scope": self.scope,
            "issued_at": self.now,
            "expires_at": self.expires_at,
            "revoked_at": None,
        }


def record_access_token_alone(statements: ThinReads, issued: IssuedAccessToken) -> None:
    """Record an access token that is its request's only write, committed on its own
    (idp.thin_reads ``write_alone``): a client-credentials grant whose client came from the cache
    opened no Session, and its token needs nothing else in its transaction (RFC 6749 4.4.3: no
    refresh token, no grant). The same row as ``token_rows``."""
    statements.write_alone(_INSERT_ACCESS_TOKEN, issued.row())


def record_rotation_apart(
    transaction: ThinTransaction, issued: IssuedAccessToken, refresh_token: dict[str, Any] | None
) -> None:
    """The new access token, and refresh token if any (``refresh_token_row``), of a rotation
    spent by ``spend_refresh_token_apart``, in its transaction (``token_rows``)."""
    transaction.write_together(token_rows(issued, refresh_token))


def token_rows(issued: IssuedAccessToken, refresh_token: dict[str, Any] | None) -> list[Inserts]:
    """The rows of a token response: the access token, recorded with the hash of its compact
    string, which the bearer endpoints look it up by (idp.services.tokens.find_access_token), and
    the refresh token if any (``refresh_token_row``). Inserted together, one statement on
    PostgreSQL (idp.thin_statements ``inserts_together``); nothing in the request reads them
    back, so the ORM's unit of work would only add cost."""
    parts = [Inserts(_ACCESS_TOKENS, (issued.row(),))]
    if refresh_token is not None:
        parts.append(Inserts(_REFRESH_TOKENS, (refresh_token,)))
    return parts

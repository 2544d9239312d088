"""Grants and the secrets issued from them: authorization codes, access and refresh tokens.

Replay handling lives here, once (node-oidc-provider's habit): a code or refresh token presented
a second time revokes the grant, and with it every token issued from it. One exception, for
refresh tokens only: a retry whose first answer was lost (``redeem_refresh_token``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from idp.models import (
    AccessToken,
    AuthorizationCode,
    BrowserSession,
    Client,
    Consent,
    Grant,
    RefreshToken,
    User,
)
from idp.models.base import random_id
from idp.services.consume import consume_once
from idp.services.crypto import new_secret, token_hash

#: Built once (``GrantService.issue_code``).
_INSERT_GRANT = insert(Grant)
_INSERT_CODE = insert(AuthorizationCode)


def _grant_values(
    user: User, client: Client, session: BrowserSession, scope: str
) -> dict[str, Any]:
    """What a grant keeps of the sign-in (``GrantService.open_grant``)."""
    return {"user_id": user.id, "client_id": client.client_id, "scope": scope,
            "sid": session.sid, "auth_time": session.auth_time, "amr": list(session.amr),
            "acr": session.acr}  # fmt: skip


CODE_REPLAY = "code_replay"
REFRESH_TOKEN_REPLAY = "refresh_token_replay"


@dataclass(frozen=True)
class RefreshRedemption:
    """What presenting a refresh token gave: the token to rotate (None: refused, ``invalid_grant``)
    and whether this was a retry of a rotation whose answer was lost."""

    token: RefreshToken | None
    retried: bool = False


@dataclass(frozen=True)
class CodeRequest:
    """What an authorization code remembers of the authorization request."""

    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None


class GrantService:
    def __init__(self, db: Session) -> None:
        self.db = db

    # -- authorization codes --------------------------------------------------------------------
    def issue_code(
        self,
        *,
        user: User,
        client: Client,
        session: BrowserSession,
        request: CodeRequest,
        ttl: int,
        now: datetime,
    ) -> str:
        """A code for ``request`` and its grant (``open_grant``'s row): two prepared Core INSERTs
        in the request's transaction, no ORM objects (nothing here reads them back)."""
        grant_id = random_id()
        code = new_secret(32)
        connection = self.db.connection()
        connection.execute(_INSERT_GRANT, {
            "id": grant_id, "created_at": now,
            **_grant_values(user, client, session, request.scope),
        })  # fmt: skip
        connection.execute(_INSERT_CODE, {
            "code_hash": token_hash(code), "grant_id": grant_id, "client_id": client.client_id,
            "redirect_uri": request.redirect_uri, "scope": request.scope, "nonce": request.nonce,
            "code_challenge": request.code_challenge,
            "code_challenge_method": request.code_challenge_method,
            "expires_at": now + timedelta(seconds=ttl),
        })  # fmt: skip
        return code

    def open_grant(
        self, *, user: User, client: Client, session: BrowserSession, scope: str, now: datetime
    ) -> Grant:
        """One authorization by ``user`` for ``client`` in ``session``: what the ID token reports
        of the sign-in (``sid``, ``auth_time``, ``amr``, ``acr``), and the family every token
        issued from it belongs to (the code flow's and the device flow's alike)."""
        grant = Grant(created_at=now, **_grant_values(user, client, session, scope))
        self.db.add(grant)
        self.db.flush()
        return grant

    def remember_consent(
        self, user_id: str, client_id: str, scopes: list[str], now: datetime
    ) -> None:
        """What the user agreed to share with a third-party client (OIDC Core 3.1.2.4), added to
        what they agreed to before."""
        row = self.db.scalar(
            select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id)
        )
        if row is None:
            self.db.add(Consent(user_id=user_id, client_id=client_id, scopes=scopes))
        else:
            row.scopes = sorted(set(row.scopes) | set(scopes))
            row.granted_at = now

    def redeem_code(self, code: str, client_id: str, now: datetime) -> AuthorizationCode | None:
        """Spend a code once. A second presentation revokes the grant (RFC 6749 4.1.2); the code
        is bound to the client it was issued to (RFC 6749 4.1.3)."""
        row: AuthorizationCode | None = self._redeem(
            AuthorizationCode, AuthorizationCode.code_hash, code, client_id, CODE_REPLAY, now
        )
        return row

    def _redeem(
        self,
        model: Any,
        key: Any,
        secret: str,
        client_id: str,
        replay: str,
        now: datetime,
        forgive: Callable[[str], bool] | None = None,
    ) -> Any:
        """The one replay rule for codes and refresh tokens: spent through the consume-once
        primitive; presented again, it revokes its grant and everything issued from it, unless
        ``forgive`` (given the secret's hash) says this presentation is a safe retry."""
        if not secret or len(secret) > 200:
            return None
        digest = token_hash(secret)
        row = self.db.get(model, digest)
        if row is None or row.client_id != client_id:
            return None
        spent_now = consume_once(self.db, model, key == digest, now=now)
        if not spent_now and (forgive is None or not forgive(digest)):
            self.revoke_grant(row.grant_id, replay, now)
            return None
        if row.expires_at <= now or row.grant.revoked_at is not None:
            return None
        if not row.grant.user.is_active:
            return None
        return row

    # -- refresh tokens -------------------------------------------------------------------------
    def record_refresh_token(
        self,
        token: str,
        grant: Grant,
        scope: str,
        ttl: int,
        now: datetime,
        parent_hash: str | None = None,
    ) -> RefreshToken:
        """Store a refresh token (its hash) under its grant: the family a replay revokes.
        ``parent_hash``: the refresh token whose rotation issued it."""
        row = RefreshToken(
            token_hash=token_hash(token),
            grant_id=grant.id,
            client_id=grant.client_id,
            scope=scope,
            issued_at=now,
            expires_at=now + timedelta(seconds=ttl),
            parent_hash=parent_hash,
        )
        self.db.add(row)
        return row

    def redeem_refresh_token(
        self, token: str, client_id: str, now: datetime, retry_grace: timedelta = timedelta(0)
    ) -> RefreshRedemption:
        """Spend a refresh token once (rotation). Presenting a spent one revokes the whole family
        (RFC 9700 4.14.2); presenting one issued to another client fails (RFC 6749 6).

        A lost answer is not a replay: the rotation was committed, the response was cut (a proxy
        timeout, a killed node, a mobile network) and the client, which never saw the successor,
        retries with the token it has. Within ``retry_grace`` of the rotation, while the
        successor has not been used, the retry is answered instead: the unused successor is
        spent (so it is refused, and a later presentation of it counts as a replay) and the
        caller issues a fresh one. RFC 9700 4.14.2's reasoning still holds: a stolen token
        is detected when *both* parties use the family, and here one of them always ends up
        holding an invalidated token (the superseded successor, or the old token once its
        successor was used or the window passed), whose next presentation revokes the grant.
        A zero grace disables the exception."""
        retried = False

        def forgive(digest: str) -> bool:
            nonlocal retried
            retried = self._supersede_unused_successor(digest, now, retry_grace)
            return retried

        row: RefreshToken | None = self._redeem(
            RefreshToken, RefreshToken.token_hash, token, client_id, REFRESH_TOKEN_REPLAY, now,
            forgive=forgive if retry_grace > timedelta(0) else None,
        )  # fmt: skip
        return RefreshRedemption(row, retried=retried and row is not None)

    def _supersede_unused_successor(self, digest: str, now: datetime, grace: timedelta) -> bool:
        """True when the spent refresh token ``digest`` was rotated at most ``grace`` ago and its
        successor was still unused: that successor is spent here, atomically (one conditional
        UPDATE: of parallel retries, exactly one wins; a successor already used, or superseded
        by a parallel retry, makes this False and the presentation a replay)."""
        # Read again, not from the row loaded before the spend: under PostgreSQL's READ COMMITTED
        # the rotation may have committed between that load and the spend.
        rotated_at = self.db.scalar(
            select(RefreshToken.consumed_at).where(RefreshToken.token_hash == digest)
        )
        # A retry may even arrive before the rotation it repeats committed (the client gave up
        # first): its clock then reads earlier than ``rotated_at``, which is inside the window.
        if rotated_at is None or now - rotated_at > grace:
            return False
        superseded = self.db.execute(
            update(RefreshToken)
            .where(RefreshToken.parent_hash == digest, RefreshToken.consumed_at.is_(None))
            .values(consumed_at=now)
            .execution_options(synchronize_session=False)
        )
        assert isinstance(superseded, CursorResult)
        return superseded.rowcount >= 1

    def find_refresh_token(self, token: str) -> RefreshToken | None:
        if not token or len(token) > 200:
            return None
        return self.db.get(RefreshToken, token_hash(token))

    # -- access tokens --------------------------------------------------------------------------
    def record_access_token(
        self,
        *,
        jti: str,
        client_id: str,
        grant_id: str | None,
        user_id: str | None,
        scope: str,
        expires_at: datetime,
        now: datetime,
    ) -> AccessToken:
        row = AccessToken(
            jti=jti,
            client_id=client_id,
            grant_id=grant_id,
            user_id=user_id,
            scope=scope,
            issued_at=now,
            expires_at=expires_at,
        )
        self.db.add(row)
        return row

    def active_access_token(self, jti: str, now: datetime) -> AccessToken | None:
        """The recorded token if it is neither expired nor revoked (nor its grant, nor its user)."""
        row = self.db.get(AccessToken, jti)
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            return None
        if row.grant is not None and (
            row.grant.revoked_at is not None or not row.grant.user.is_active
        ):
            return None
        return row

    def revoke_access_token(self, row: AccessToken, now: datetime) -> None:
        row.revoked_at = now

    # -- grants ---------------------------------------------------------------------------------
    def revoke_grant(self, grant_id: str, reason: str, now: datetime) -> None:
        self.db.execute(
            update(Grant)
            .where(Grant.id == grant_id, Grant.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .execution_options(synchronize_session=False)
        )

    def end_session_grants(self, sid: str, reason: str, now: datetime) -> None:
        """A session ended: what it authorised ends with it (OIDC RP-Initiated Logout 2). Grants
        with offline_access keep their refresh tokens: OIDC Core 11 offline access exists to
        outlive the user's session; their access tokens still end now."""
        for grant in self.db.scalars(
            select(Grant).where(Grant.sid == sid, Grant.revoked_at.is_(None))
        ):
            if "offline_access" in grant.scope.split():
                self.db.execute(
                    update(AccessToken)
                    .where(AccessToken.grant_id == grant.id, AccessToken.revoked_at.is_(None))
                    .values(revoked_at=now)
                    .execution_options(synchronize_session=False)
                )
            else:
                self.revoke_grant(grant.id, reason, now)

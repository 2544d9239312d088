"""Grants and the secrets issued from them: authorization codes, access and refresh tokens.

Replay handling lives here, once (node-oidc-provider's habit): a code or refresh token presented
a second time revokes the grant, and with it every token issued from it. One exception, for
refresh tokens only: a retry whose first answer was lost (``redeem_refresh_token``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from idp import checkpoints
from idp.clock import stamped_ahead
from idp.models import (
    AccessToken,
    AuthorizationCode,
    BrowserSession,
    Client,
    Consent,
    DeviceAuthorization,
    Grant,
    RefreshToken,
    User,
)
from idp.models.base import random_id
from idp.services import audit
from idp.services.consume import consume_prepared
from idp.services.crypto import new_secret, token_hash
from idp.services.issued_tokens import IssuedAccessToken, token_rows
from idp.services.refresh_tokens import (
    FIND_REFRESH_TOKEN,
    SPEND_REFRESH_TOKEN,
    SPENT_REFRESH_TOKEN,
    RefreshRedemption,
    refresh_token_digest,
    rotated,
)
from idp.services.spent_codes import FIND_CODE, SPEND_CODE, SpentCode, code_digest, spent_code
from idp.services.subjects import Issued, SubjectIdentifiers
from idp.session_statements import statements_of
from idp.thin_statements import Inserts

if TYPE_CHECKING:
    from idp.thin_reads import ThinTransaction

#: The tables ``GrantService.new_code`` inserts into.
_GRANTS = Grant.__table__
_CODES = AuthorizationCode.__table__


def _grant_values(
    user: User, client: Client, session: BrowserSession, scope: str
) -> dict[str, Any]:
    """What a grant keeps of the sign-in (``GrantService.open_grant``)."""
    return {"user_id": user.id, "client_id": client.client_id, "scope": scope,
            "sid": session.sid, "auth_time": session.auth_time, "amr": list(session.amr),
            "acr": session.acr}  # fmt: skip


#: Where a consent is held, in tests, once it read (and locked) what the user agreed to before
#: (idp.checkpoints).
CONSENT_CHECKPOINT = "grants.remember_consent"
#: Where a session's ending is held, in tests, once it expired the session's unexchanged codes
#: and before it commits, their rows locked (idp.checkpoints).
END_CODES_CHECKPOINT = "grants.session_codes_ended"

CODE_REPLAY = "code_replay"
REFRESH_TOKEN_REPLAY = "refresh_token_replay"

#: ``record_issued``'s statement, built once (its compiled form is cached).
_RECORD_ISSUED = (
    update(cast(Table, _GRANTS))
    .where(_GRANTS.c.id == bindparam("grant"))
    .values(issued_sub=bindparam("new_sub"), issued_sid=bindparam("new_sid"))
)


def record_issued_apart(transaction: ThinTransaction, grant_id: str, issued: Issued) -> None:
    """``GrantService.record_issued`` in the transaction of a code's spend apart from the
    ``Session`` (idp.oidc.rotation)."""
    transaction.write(_RECORD_ISSUED, _issued_values(grant_id, issued))


def _issued_values(grant_id: str, issued: Issued) -> dict[str, str | None]:
    return {"grant": grant_id, "new_sub": issued.sub, "new_sid": issued.sid}


@dataclass(frozen=True)
class CodeRequest:
    """What an authorization code remembers of the authorization request."""

    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    dpop_jkt: str | None = None  # RFC 9449 10


class GrantService:
    def __init__(self, db: Session, subjects: SubjectIdentifiers | None = None) -> None:
        self.db = db
        self.subjects = subjects or SubjectIdentifiers()

    # -- authorization codes --------------------------------------------------------------------
    def new_code(
        self,
        *,
        user: User,
        client: Client,
        session: BrowserSession,
        request: CodeRequest,
        ttl: int,
        now: datetime,
    ) -> tuple[str, list[Inserts]]:
        """A code for ``request`` and the rows that store it and its grant (``open_grant``'s
        row), for the caller to insert with the event that audits the code (``audit.write``'s
        ``after``): one statement on PostgreSQL, prepared Core INSERTs on SQLite, in the request's
        transaction, no ORM objects (nothing here reads them back)."""
        grant_id = random_id()
        code = new_secret(32)
        # The sub and sid the code's ID token will name, unless the client's subjects change
        # before its exchange, which records its own then (``record_issued``).
        issued = self.subjects.issued(self.db, client, user.id, session.sid)
        grant = {
            "id": grant_id, "created_at": now, "revoked_at": None, "revoked_reason": None,
            **_grant_values(user, client, session, request.scope),
            "issued_sub": issued.sub, "issued_sid": issued.sid,
        }  # fmt: skip
        stored = {
            "code_hash": token_hash(code), "grant_id": grant_id, "client_id": client.client_id,
            "redirect_uri": request.redirect_uri, "scope": request.scope, "nonce": request.nonce,
            "code_challenge": request.code_challenge,
            "code_challenge_method": request.code_challenge_method, "dpop_jkt": request.dpop_jkt,
            "expires_at": now + timedelta(seconds=ttl), "consumed_at": None,
        }  # fmt: skip
        return code, [Inserts(_GRANTS, (grant,)), Inserts(_CODES, (stored,))]

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
        what they agreed to before.

        Two consents at once (two tabs, a double click on Allow) each read that there was none
        and inserted one: the second broke the unique (user, client) row, a 500. The row is made
        first, unless it exists (``INSERT ... ON CONFLICT DO NOTHING``: a parallel one waits for
        the other's commit, then does nothing), then read locked (``FOR UPDATE``; SQLite's write
        lock), so each consent adds its scopes to what the other stored, none lost."""
        dialect = self.db.get_bind().dialect.name
        insert_new: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self.db.execute(
            insert_new(Consent)
            .values(user_id=user_id, client_id=client_id, scopes=[], granted_at=now)
            .on_conflict_do_nothing(index_elements=[Consent.user_id, Consent.client_id])
        )
        row = self.db.scalars(
            select(Consent)
            .where(Consent.user_id == user_id, Consent.client_id == client_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        checkpoints.reached(CONSENT_CHECKPOINT)
        row.scopes = sorted(set(row.scopes) | set(scopes))
        row.granted_at = now

    def redeem_code(
        self, code: str, client_id: str, now: datetime, lifetime: timedelta, jkt: str | None = None
    ) -> SpentCode | None:
        """Spend a code once. A second presentation revokes the grant (RFC 6749 4.1.2); the code
        is bound to the client it was issued to (RFC 6749 4.1.3): presented by another client it
        is refused and spends nothing.

        The spend is one ``UPDATE ... RETURNING`` that also reads, by subqueries, what the token
        response needs of the grant and its user (the ID token's claims, OIDC Core 2 and 5.4) and
        what the checks need (revoked, disabled): a sign-in's code makes no other read. Only a
        refusal reads the row again, to tell a replay from an unknown code. ``lifetime``: the
        code's (``code_ttl``), which dates its issue (``spent_code``); ``jkt``: the request's DPoP
        key, which a code bound to one must match (RFC 9449 10)."""
        digest = code_digest(code)
        if digest is None:
            return None
        params = {"digest": digest, "client": client_id, "jkt": jkt}
        row: Any = consume_prepared(self.db, SPEND_CODE, now=now, **params)
        if row is None:
            self.refused_code(digest, client_id, now)
            return None
        return spent_code(row, client_id, now, lifetime, statements_of(self.db).write)

    def refused_code(self, digest: str, client_id: str, now: datetime) -> None:
        """A code whose spend changed nothing: unknown, another client's, unspent as bound to
        another DPoP key (nothing happens), or spent before by its own client, a replay that
        revokes the grant (RFC 6749 4.1.2)."""
        found = self.db.connection().execute(FIND_CODE, {"digest": digest}).first()
        if found is not None and found.client_id == client_id and found.consumed_at is not None:
            self.revoke_grant(found.grant_id, CODE_REPLAY, now)

    # -- refresh tokens -------------------------------------------------------------------------
    def redeem_refresh_token(
        self,
        token: str,
        client_id: str,
        now: datetime,
        retry_grace: timedelta = timedelta(0),
        jkt: str | None = None,
    ) -> RefreshRedemption:
        """Spend a refresh token once (rotation). Presenting a spent one revokes the whole family
        (RFC 9700 4.14.2); presenting one issued to another client fails and spends nothing
        (RFC 6749 6).

        The spend is one ``UPDATE ... RETURNING`` that also reads, by subqueries, what the checks
        need of the grant and its user (revoked, disabled); the usual rotation makes no other
        read. Only a refusal reads the row again, to tell a replay from an unknown token.

        A lost answer is not a replay: the rotation was committed, the response was cut (a proxy
        timeout, a killed node, a mobile network) and the client, which never saw the successor,
        retries with the token it has. Within ``retry_grace`` of the rotation, while the
        successor has not been used, the retry is answered instead: the unused successor is
        spent (so it is refused, and a later presentation of it counts as a replay) and the
        caller issues a fresh one. RFC 9700 4.14.2's reasoning still holds: a stolen token
        is detected when *both* parties use the family, and here one of them always ends up
        holding an invalidated token (the superseded successor, or the old token once its
        successor was used or the window passed), whose next presentation revokes the grant.
        A zero grace disables the exception.

        ``jkt``: the thumbprint of the request's DPoP proof, if any; a token bound to a key
        (RFC 9449 5) is spent only with a proof of that key."""
        digest = refresh_token_digest(token)
        if digest is None:
            return RefreshRedemption(None)
        row: Any = consume_prepared(
            self.db, SPEND_REFRESH_TOKEN, now=now, digest=digest, client=client_id, jkt=jkt
        )
        if row is None:
            return self.refused_refresh_token(digest, client_id, now, retry_grace, jkt)
        return RefreshRedemption(rotated(row, digest, client_id, now), spent_grant=row.grant_id)

    def refused_refresh_token(
        self,
        digest: str,
        client_id: str,
        now: datetime,
        retry_grace: timedelta,
        jkt: str | None = None,
    ) -> RefreshRedemption:
        """After a spend of the refresh token ``digest`` that changed nothing: an unknown token or
        another client's (nothing happens), one bound to another DPoP key than ``jkt`` (nothing
        happens), a replay (its grant revoked), or a retry within ``retry_grace`` with the
        token's own key (``redeem_refresh_token``)."""
        connection = self.db.connection()
        found = connection.execute(FIND_REFRESH_TOKEN, {"digest": digest}).first()
        if found is None or found.client_id != client_id:
            return RefreshRedemption(None)
        if found.consumed_at is None:
            # Unspent, so the spend's key condition refused it: RFC 9449 5, invalid_grant, and
            # the token stays its holder's (SPEND_REFRESH_TOKEN).
            return RefreshRedemption(None)
        if found.jkt is not None and found.jkt != jkt:
            # A spent bound token presented with another key: a replay all the same, never the
            # retry of a lost answer, which only the key's holder can send.
            retry_grace = timedelta(0)
        # Read after the failed spend, so under PostgreSQL's READ COMMITTED as under SQLite's
        # write lock this is the rotation that won, committed.
        retried = retry_grace > timedelta(0) and self._supersede_unused_successor(
            digest, found.consumed_at, now, retry_grace
        )
        if not retried:
            # RFC 9700 4.14.2: an invalidated refresh token presented again tells that two
            # parties hold the family; the grant, and with it its active refresh token and every
            # access token issued from it, is revoked, and the replay audited for the user.
            self.revoke_grant(found.grant_id, REFRESH_TOKEN_REPLAY, now)
            audit.record(self.db, "token.refresh_replayed", outcome="failure",
                         subject_id=found.user_id, client_id=client_id)  # fmt: skip
            return RefreshRedemption(None)
        params = {"digest": digest, "client": client_id}
        row = connection.execute(SPENT_REFRESH_TOKEN, params).first()
        assert row is not None
        return RefreshRedemption(
            rotated(row, digest, client_id, now), retried=True, spent_grant=found.grant_id
        )

    def _supersede_unused_successor(
        self, digest: str, rotated_at: datetime | None, now: datetime, grace: timedelta
    ) -> bool:
        """True when the spent refresh token ``digest``, rotated at ``rotated_at``, was rotated
        at most ``grace`` ago and its successor was still unused: that successor is spent here,
        atomically (one conditional UPDATE: of parallel retries, exactly one wins; a successor
        already used, or superseded by a parallel retry, makes this False and the presentation a
        replay)."""
        # Bounded both ways. A retry may read a time before ``rotated_at``: it read its clock,
        # then waited for the rotation's lock, or the node that rotated runs a little ahead. But
        # a rotation stamped ahead (idp.clock ``stamped_ahead``) means the clock
        # was stepped back since (NTP, a restored VM) or the nodes disagree by minutes: its age
        # is unknown, and taking it for young would keep a stolen, already rotated token
        # answered for as long as the step (RFC 9700 4.14.2 asks for the replay; the window is
        # the one exception, and short).
        if rotated_at is None or now - rotated_at > grace:
            return False
        if stamped_ahead(rotated_at, now):
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
    def record_tokens(
        self, issued: IssuedAccessToken, refresh_token: dict[str, Any] | None
    ) -> None:
        """A token response's rows (``token_rows``) in the request's transaction; the access
        token's grant is already stored (a code's, a refresh token's, a device authorization's)
        or None."""
        statements_of(self.db).write_together(token_rows(issued, refresh_token))

    def record_issued(self, grant_id: str, issued: Issued) -> None:
        """Record ``issued`` as the ``sub`` and ``sid`` grant ``grant_id``'s client was given (its
        ID token's), with the token response's rows: the latest a grant issued is the one its
        logout token names (idp.services.backchannel_logout)."""
        statements_of(self.db).write(_RECORD_ISSUED, _issued_values(grant_id, issued))

    def revoke_access_token(self, jti: str, now: datetime) -> None:
        """RFC 7009 2.2: the token is refused from now on; a second revocation keeps the first
        time."""
        self.db.execute(
            update(AccessToken)
            .where(AccessToken.jti == jti, AccessToken.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )

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
        outlive the user's session; their access tokens still end now.

        Every code the session issued and nobody exchanged yet expires now, whatever its scope
        (RFC 6749 5.2 ``invalid_grant`` when presented): the client holds nothing until it
        redeems the code. Expired, not spent: a later presentation is not a replay. So does a
        device approval the device has not polled yet, offline or not: the device would get an
        ID token naming a ``sid`` whose logout token was just queued (Back-Channel Logout 1.0
        2.4, 2.7), a relying-party session no logout ever ends; it answers ``expired_token``
        from now on (RFC 8628 3.5). A grant whose code or approval expired here ends with it,
        offline too: it holds no token and never will.

        The order is the rule (docs/security.md, "OAuth and OpenID Connect endpoints"). The codes
        and approvals are expired first, by UPDATEs that lock their rows: an exchange or poll
        that spent one first holds its row until it committed its tokens, so the UPDATE waits
        for them, and the grants' and the access tokens' revocations, later statements, see
        those tokens (under PostgreSQL's READ COMMITTED each statement reads what was committed
        when it began; SQLite's writers go one at a time). One that comes second waits on this
        ending's lock, then finds its code expired as of its issue. Revoking the grants or the
        access tokens first let an exchange spend its code, unlocked, after them and commit a
        token on a grant this ending took back, or an offline access token it never revoked."""
        live = self.db.execute(
            select(Grant.id, Grant.scope).where(Grant.sid == sid, Grant.revoked_at.is_(None))
        ).all()
        if not live:
            return
        ended = [grant_id for grant_id, _ in live]
        # Expired as of its issue (its grant's ``created_at``, written with the code by
        # ``new_code``), not ``now``: an exchange that read its clock before this ending did and
        # waits on the row's lock spends it once this commits, and its ``expires_at > now``
        # (idp.services.spent_codes) would still pass against ``now``; no exchange's clock is
        # before the code's issue (RFC 6749 5.2 invalid_grant).
        issued = select(Grant.created_at).where(Grant.id == AuthorizationCode.grant_id)
        expired = self._expire_unspent(AuthorizationCode, ended, now, issued.scalar_subquery())
        # An approval expired as of its making, not ``now``, for the same reason: a poll that
        # read the row before this ending committed, and spends it after, read the earlier time.
        made = DeviceAuthorization.created_at
        expired |= self._expire_unspent(DeviceAuthorization, ended, now, made)
        checkpoints.reached(END_CODES_CHECKPOINT)
        offline = []
        for grant_id, scope in live:
            # An offline grant outlives its session for the refresh token it holds (OIDC Core
            # 11); one whose code or approval expired here holds none and never will, so it
            # ends too, and no live grant without tokens stays behind.
            if "offline_access" in scope.split() and grant_id not in expired:
                offline.append(grant_id)
            else:
                self.revoke_grant(grant_id, reason, now)
        if offline:  # one statement for every offline grant of the session
            self.db.execute(
                update(AccessToken)
                .where(AccessToken.grant_id.in_(offline), AccessToken.revoked_at.is_(None))
                .values(revoked_at=now)
                .execution_options(synchronize_session=False)
            )

    def _expire_unspent(
        self, model: type[AuthorizationCode] | type[DeviceAuthorization], grant_ids: list[str],
        now: datetime, expires_at: Any,
    ) -> set[str | None]:  # fmt: skip
        """Expire the unspent, unexpired rows of ``model`` of ``grant_ids`` (their row locks
        taken); the grants they belonged to."""
        return set(self.db.execute(
            update(model)
            .where(model.grant_id.in_(grant_ids), model.consumed_at.is_(None),
                   model.expires_at > now)
            .values(expires_at=expires_at)
            .returning(model.grant_id)
            .execution_options(synchronize_session=False)
        ).scalars())  # fmt: skip

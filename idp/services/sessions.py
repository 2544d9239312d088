"""Server-side browser sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from functools import lru_cache
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Select, bindparam, func, insert, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from idp.models import BrowserSession, User
from idp.models.base import from_values, random_id
from idp.services import backchannel_logout
from idp.services.assurance import acr_for_amr
from idp.services.audit import MAX_USER_AGENT, RequestContext
from idp.services.crypto import new_secret, token_hash
from idp.services.grants import GrantService
from idp.services.login_links import (
    end_rescue_links,
    ending_rescue_links,
    rescue_links_ended,
    rescue_links_to_end,
)
from idp.services.session_locks import inserted_in_this_transaction, session_stands
from idp.session_statements import statements_of

if TYPE_CHECKING:
    from idp.thin_reads import ThinReads

# Writing last_seen_at on every request would turn every page view into a database write.
LAST_SEEN_RESOLUTION = timedelta(seconds=60)

#: Built once (``SessionService.create``).
_INSERT = insert(BrowserSession)


@lru_cache(maxsize=2)
def _insert_ending_rescue_links(columns: tuple[str, ...]) -> Select[int]:
    """PostgreSQL: the new session's INSERT of ``columns`` and the end of its user's unspent
    rescue links (idp.services.login_links ``ending_rescue_links``) as one statement of two
    data-modifying ``WITH`` clauses (PostgreSQL's manual, 7.8.4 "Data-Modifying Statements in
    WITH": each runs exactly once, to completion, in the statement's snapshot, whether or not
    the query reads it), answering how many links ended: a full sign-in's two writes in one round
    trip where there were two. Built once per set of columns."""
    inserted = insert(BrowserSession).values({name: bindparam(name) for name in columns})
    ended = ending_rescue_links().cte("ended")
    return select(func.count()).select_from(ended).add_cte(inserted.cte("inserted"))


@dataclass(frozen=True)
class NewSession:
    cookie_value: str
    session: BrowserSession


class SessionService:
    def __init__(
        self, db: Session, *, idle_ttl: int, absolute_ttl: int, restricted_ttl: int
    ) -> None:
        self.db = db
        self.idle_ttl = timedelta(seconds=idle_ttl)
        self.absolute_ttl = timedelta(seconds=absolute_ttl)
        #: A restricted session (login link, invite, sign-up confirmation, backup-code recovery)
        #: ends this long after it started, whatever the lifetimes above (docs/security.md,
        #: Sessions): it stands in for a lost or missing sign-in method only long enough to add
        #: one, so an abandoned one on a shared computer, or a stolen cookie, soon stops working.
        self.restricted_ttl = timedelta(seconds=restricted_ttl)

    def create(
        self,
        user: User | str,
        amr: list[str],
        context: RequestContext,
        now: datetime,
        *,
        restricted: bool = False,
        passkey_only: bool = False,
        previous: BrowserSession | None = None,
        credential_id: str | None = None,
        backup_code: bool = False,
    ) -> NewSession:
        """A new session; ``restricted``: its only way forward is adding a sign-in method (a
        passkey alone with ``passkey_only``). ``user``: the user, or only their id when the
        request holds no ORM object of them (the second step of a password sign-in): the
        session's ``user`` is then loaded if something asks for it. ``previous``: the browser's
        session this sign-in replaces (``_replaced``). ``credential_id``: the passkey that signed
        in, which ends the session when it is removed (``end_passkey_sessions``).
        ``backup_code``: a backup code opened it, and new codes end it
        (``end_backup_code_sessions``)."""
        user_id = user if isinstance(user, str) else user.id
        sid = None
        if previous is not None:
            sid = self._replaced(previous, user_id, restricted or passkey_only, now)
        # Chosen here, not at flush: a code issued in this request (a passkey sign-in for an
        # authorization request) reads it for the grant before anything is flushed.
        sid = sid or random_id()
        cookie_value = new_secret(32)
        row = {
            "id_hash": token_hash(cookie_value),
            "sid": sid,
            "user_id": user_id,
            "auth_time": now,
            "amr": amr,
            "acr": acr_for_amr(amr),
            "created_at": now,
            "last_seen_at": now,
            "expires_at": now + self.absolute_ttl,
            "ip_address": context.ip_address[:64],
            "user_agent": context.user_agent[:MAX_USER_AGENT],
            "restricted": restricted or passkey_only,
            "passkey_only": passkey_only,
            "credential_id": credential_id,
            "backup_code": backup_code,
            "revoked_at": None,
        }
        # One prepared Core INSERT of every column; the object then joins the database session
        # as a row that exists (loaded, unchanged), so the flush adds nothing. A full sign-in
        # also ends its user's rescue links: the user is in by a way of their own, and a rescue
        # link left unspent is no longer needed (docs/admins.md, "Rescuing a user with a one-time
        # login link"); on PostgreSQL in the INSERT's own statement.
        statements = statements_of(self.db)
        if row["restricted"]:
            statements.write(_INSERT, row)
        elif statements.joins_writes:
            together = _insert_ending_rescue_links(tuple(row))
            ended = statements.first(together, {**row, **rescue_links_to_end(user_id, now)})
            rescue_links_ended(self.db, user_id, context, ended[0] if ended else 0)
        else:
            statements.write(_INSERT, row)
            end_rescue_links(self.db, user_id, context, now)
        inserted_in_this_transaction(self.db, sid)
        session = from_values(
            BrowserSession, row if isinstance(user, str) else {**row, "user": user}
        )
        make_transient_to_detached(session)
        self.db.add(session)
        return NewSession(cookie_value=cookie_value, session=session)

    def cookie_lifetime(self, session: BrowserSession) -> int:
        """Seconds the browser keeps the cookie: no longer than the session can live."""
        ttl = self.restricted_ttl if session.restricted else self.absolute_ttl
        return int(ttl.total_seconds())

    def is_live(self, session: BrowserSession, now: datetime) -> bool:
        """Would ``load`` accept this session? The one rule for the loader and for every list
        of a user's sessions (the portal shows exactly the sessions that would be accepted)."""
        if session.revoked_at is not None or session.expires_at <= now:
            return False
        if session.last_seen_at + self.idle_ttl <= now:
            return False
        if session.restricted and session.created_at + self.restricted_ttl <= now:
            return False
        return session.user.is_active

    def promote(
        self,
        restricted: BrowserSession,
        context: RequestContext,
        now: datetime,
        *,
        credential_id: str | None = None,
    ) -> NewSession | None:
        """A restricted session that added a sign-in method becomes a full one under a NEW
        session id; the restricted id stops working, as every sign-in renews the id
        (docs/security.md, Sessions). The sign-in it stood for is unchanged: same amr, acr and
        auth_time, so the step-up window still runs from the link's use. ``credential_id``: the
        passkey it added, which made it a full session and ends it when removed (a stolen login
        link's holder adds a passkey of their own: removing it ends their session too). None:
        the restricted session ended since the request accepted it, and nothing is opened."""
        # Conditional, as every ending is (``end_sessions``), and its row count decides: the
        # restricted session may have ended while the method was being added (signed out in
        # another tab, ended by an admin, its user disabled). A plain write ended it a second
        # time and opened a full session in its place, under a new id that no ending had seen:
        # the logout undone (OWASP ASVS 3.3.1, logout invalidates the session; RP-Initiated
        # Logout 1.0 section 2). Ended, it opens nothing, and the caller keeps nothing it added.
        ended = self.db.execute(
            update(BrowserSession)
            .where(
                BrowserSession.id_hash == restricted.id_hash, BrowserSession.revoked_at.is_(None)
            )
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        if getattr(ended, "rowcount", 0) != 1:
            return None
        set_committed_value(restricted, "revoked_at", now)
        # Opened by a backup code, it stays a session a backup code opened: new codes end it
        # (``end_backup_code_sessions``), whatever way in it added.
        new = self.create(
            restricted.user, list(restricted.amr), context, now, credential_id=credential_id,
            backup_code=restricted.backup_code,
        )  # fmt: skip
        new.session.auth_time = restricted.auth_time
        new.session.acr = restricted.acr
        return new

    def load(self, cookie_value: str | None, now: datetime) -> BrowserSession | None:
        """The live session behind a cookie, or None (expired, idle, revoked, user disabled, or a
        restricted session past its short lifetime)."""
        if not cookie_value or len(cookie_value) > 200:
            return None
        session = self.db.get(BrowserSession, token_hash(cookie_value))
        if session is None or not self.is_live(session, now):
            return None
        return session

    def stands(self, session: BrowserSession) -> bool:
        """Whether ``session`` is still live, its row locked (``session_stands``)."""
        return session_stands(self.db, session)

    def _replaced(
        self, previous: BrowserSession, user_id: str, restricted: bool, now: datetime
    ) -> str | None:
        """A sign-in in a browser that has a session always gets a new cookie (no fixation), and:

        - the same user signing in again (a step-up, ``prompt=login``) into a full session from a
          full one continues the session at idp: the new one takes over its public ``sid`` (the
          answer), so the grants and ID tokens issued in it stay its own, and ending it later
          ends them and tells their clients (Back-Channel Logout 1.0 names the session by
          ``sid``);
        - anyone else, or a restricted session on either side, ends the previous session as
          every ending does (``end_sessions``: its grants end and its clients are told)."""
        if previous.user_id != user_id or previous.restricted or restricted:
            end_sessions(
                self.db, BrowserSession.id_hash == previous.id_hash, "signed_in_again", now
            )
            return None
        sid = previous.sid
        # The public id moves to the new row (it is unique): the ended row keeps a fresh one.
        # Conditional, as every ending is: of two sign-ins racing in one browser (a double
        # submit), the second finds the session already replaced and starts a session of its own.
        moved = self.db.execute(
            update(BrowserSession)
            .where(BrowserSession.id_hash == previous.id_hash, BrowserSession.revoked_at.is_(None))
            .values(revoked_at=now, sid=random_id())
            .execution_options(synchronize_session=False)
        )
        self.db.expire(previous)
        return sid if getattr(moved, "rowcount", 0) == 1 else None


#: Built once (``record_last_seen``): a session's last request, never moved back.
_LAST_SEEN = (
    update(BrowserSession)
    .where(BrowserSession.id_hash == bindparam("id_hash"))
    .where(BrowserSession.last_seen_at < bindparam("seen"))
    .values(last_seen_at=bindparam("seen"))
)


def last_seen_due(session: BrowserSession, now: datetime) -> bool:
    """Whether a request of ``session`` at ``now`` moves its ``last_seen_at`` (the idle
    lifetime counts from it, OWASP ASVS 3.3.2), at most once a ``LAST_SEEN_RESOLUTION``."""
    return now - session.last_seen_at >= LAST_SEEN_RESOLUTION


def record_last_seen(reads: ThinReads, id_hash: str, now: datetime) -> None:
    """Write a session's last request by itself (``ThinReads.write_alone``), whether or not the
    request writes anything else: a page view that commits nothing still counts as activity."""
    reads.write_alone(_LAST_SEEN, {"id_hash": id_hash, "seen": now})


def end_sessions(db: Session, condition: ColumnElement[bool], reason: str, now: datetime) -> int:
    """End every live session matching ``condition``; returns how many this call ended.

    Every way a session ends goes through here (sign-out, RP-initiated logout, a session revoked
    in the portal or the console, a user disabled or deleted), so each one does the same: the
    session's non-offline grants end (``GrantService.end_session_grants``), and the clients that
    received tokens in it are told (OpenID Connect Back-Channel Logout 1.0, queued in this
    transaction: idp.services.backchannel_logout). Each session is ended by its own conditional
    UPDATE: of two requests (or nodes) ending the same session, exactly one does, so it is
    announced once."""
    grants = GrantService(db)
    candidates = db.execute(
        select(BrowserSession.sid, BrowserSession.user_id).where(
            condition, BrowserSession.revoked_at.is_(None)
        )
    ).all()
    ended = 0
    for sid, user_id in candidates:
        result = db.execute(
            update(BrowserSession)
            .where(BrowserSession.sid == sid, BrowserSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        if getattr(result, "rowcount", 0) != 1:
            continue  # another request ended it first, and announced it
        ended += 1
        grants.end_session_grants(sid, reason, now)
        backchannel_logout.announce(db, sid, user_id, now)
    return ended


#: Why a session ended when the passkey that signed it in was removed.
PASSKEY_REMOVED = "passkey_removed"


def end_passkey_sessions(db: Session, user_id: str, credential_id: str, now: datetime) -> int:
    """End every live session of ``user_id`` that the passkey ``credential_id`` signed in (or
    made full), as every ending does (``end_sessions``: its grants end, its clients are told);
    how many this call ended. A removed passkey may be a lost phone's: the sessions it opened
    are the phone's, and must not outlive it (OWASP ASVS 4.0 3.3, session termination: a
    session ends when what authenticated it is taken away).

    The session that removes it is no exception when that passkey signed it in: its sign-in now
    rests on a credential the user disowned (its acr and amr name a passkey that no longer
    exists), and that browser may be the one the user is giving up. It is ended and the portal
    says so and sends the user to sign in another way (a way in always remains:
    idp.services.method_removal). A session that signed in again with another method (the
    step-up before the removal, say) records that method and lives on: the user just proved
    themselves without the passkey."""
    signed_in_with_it = (BrowserSession.user_id == user_id) & (
        BrowserSession.credential_id == credential_id
    )
    return end_sessions(db, signed_in_with_it, PASSKEY_REMOVED, now)


#: Why a session ended when the password it signed in with was changed or removed.
PASSWORD_REPLACED = "password_replaced"


def end_password_sessions(db: Session, user_id: str, keep: str, now: datetime) -> int:
    """End every live session of ``user_id`` whose sign-in used the password (amr ``pwd``, RFC
    8176), but the session ``keep`` (its id hash) that changed or removed it, as every ending
    does (``end_sessions``: its grants end, its clients are told); how many this call ended.

    A password is changed or removed because someone else may know it: whoever signed in with
    it must not stay signed in for the sessions' lifetime, as a removed passkey's sessions end
    with it (``end_passkey_sessions``; OWASP ASVS 4.0 3.3, a session ends when what authenticated
    it is taken away), and as the sign-ins still waiting for their second step end
    (``PartialLogins.end_for``). The browser that made the change just passed the step-up and
    stays; the sessions signed in another way stay too. The amr is a JSON list, read with the
    user's live sessions (a handful) and matched here rather than in SQL, the same on SQLite
    and PostgreSQL."""
    live = db.execute(
        select(BrowserSession.id_hash, BrowserSession.amr).where(
            BrowserSession.user_id == user_id,
            BrowserSession.revoked_at.is_(None),
            BrowserSession.id_hash != keep,
        )
    ).all()
    signed_in_with_it = [id_hash for id_hash, amr in live if "pwd" in (amr or ())]
    if not signed_in_with_it:
        return 0
    return end_sessions(db, BrowserSession.id_hash.in_(signed_in_with_it), PASSWORD_REPLACED, now)


#: Why a session ended when new backup codes replaced the code that opened it.
BACKUP_CODES_REPLACED = "backup_codes_replaced"


def end_backup_code_sessions(db: Session, user_id: str, keep: str, now: datetime) -> int:
    """End every live session of ``user_id`` that a backup code opened (a recovery's restricted
    session, the full one it was promoted to, a password's second step), but the session
    ``keep`` (its id hash) that asked for new codes, as every ending does (``end_sessions``:
    its grants end, its clients are told); how many this call ended.

    New codes are asked for because the old ones may be known to someone else: the sessions the
    old codes opened must not outlive them, as a password's sessions end with it
    (``end_password_sessions``; OWASP ASVS 4.0 3.3, a session ends when what authenticated it
    is taken away). The browser that asked passed the step-up and stays."""
    opened_with_a_code = (
        (BrowserSession.user_id == user_id)
        & BrowserSession.backup_code.is_(True)
        & (BrowserSession.id_hash != keep)
    )
    return end_sessions(db, opened_with_a_code, BACKUP_CODES_REPLACED, now)


class RpLogout(Enum):
    """What an RP-initiated logout request with a valid ``id_token_hint`` may end."""

    #: The requesting browser's own session (the hint's user is the one signed in here).
    END_THIS_BROWSER = "end_this_browser"
    #: The browser holds no session here: nothing to end, whatever the hint names.
    NOTHING = "nothing"
    #: The browser's session belongs to someone other than the hint's subject: ask first.
    CONFIRM = "confirm"


def rp_logout(
    browser_user_id: str | None, hint_subject: object, *, of_this_session: bool
) -> RpLogout:
    """RP-Initiated Logout 1.0 section 2: the OP logs out the End-User *of this user agent*; the
    id_token_hint is a hint about that user, not a capability over sessions elsewhere. An ID
    token is held by relying parties (and whoever they leaked it to), so without the browser's
    own session cookie it ends nothing: no session of another device, no grant of another
    relying party. A hint for a different user than the one signed in here is treated as no
    valid hint at all (section 6: confirm first); so is one issued in another session than this
    browser's (``of_this_session`` false: its ``sid`` names another): section 2 has the OP treat
    a hint whose ``sid`` is not the relying party's current session as suspect, and such a token
    (a session long ended, a token leaked from a relying party's logs) ended this browser's
    session unasked."""
    if browser_user_id is None:
        return RpLogout.NOTHING
    if hint_subject != browser_user_id or not of_this_session:
        return RpLogout.CONFIRM
    return RpLogout.END_THIS_BROWSER

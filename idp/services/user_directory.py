"""Finding users, and what the console shows of one: the search, the look-ups by id and email,
and the detail page's passkeys, sessions, connected apps and live links. No Flask, and no change:
``idp.services.user_admin.UserAdmin``, which acts on what is found here, is one of these."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from idp.models import BrowserSession, LoginLink, Passkey, TotpCredential, User
from idp.services import portal
from idp.services.login_links import LoginLinkService
from idp.services.pages import CONSOLE_PAGE, Page, keyset_page
from idp.services.passwords import PasswordService
from idp.services.users import UserService

#: The users ``each_batch`` reads per statement (``idp users list``).
LIST_BATCH = 200


def has_passkey(db: Session, user_id: str) -> bool:
    """Whether the user has a passkey at all (flagged or not: the account was set up)."""
    query = select(Passkey.credential_id).where(Passkey.user_id == user_id)
    return db.scalar(query.limit(1)) is not None


def has_way_in(db: Session, user: User) -> bool:
    """A passkey, a password or an enrolled authenticator app: an account that was set up."""
    if user.password_hash is not None or has_passkey(db, user.id):
        return True
    totp = db.get(TotpCredential, user.id)
    return totp is not None and totp.confirmed_at is not None


def _criteria(query: str, unverified_by: frozenset[str] | None) -> list[ColumnElement[bool]]:
    """Whose email or name contains ``query`` (case-insensitive); with ``unverified_by``, who
    has a passkey whose attestation none of these root fingerprints verified."""
    criteria: list[ColumnElement[bool]] = []
    if unverified_by is not None:
        unverified = or_(Passkey.attestation_root.is_(None),
                         Passkey.attestation_root.not_in(sorted(unverified_by)))  # fmt: skip
        criteria.append(
            select(Passkey.credential_id).where(Passkey.user_id == User.id, unverified).exists()
        )
    needle = " ".join(query.split())[:200].lower()
    if needle:
        # LIKE's wildcards in the query are literal characters.
        escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        criteria.append(
            or_(
                User.email.like(pattern, escape="\\"),
                func.lower(User.name).like(pattern, escape="\\"),
            )
        )
    return criteria


class UserDirectory:
    """The users as an admin finds and reads them."""

    def __init__(self, db: Session, *, passwords: PasswordService) -> None:
        self.db = db
        self.passwords = passwords

    # -- finding ----------------------------------------------------------------------------------
    def each_batch(
        self, query: str = "", unverified_by: frozenset[str] | None = None,
        batch: int | None = None,
    ) -> Iterator[list[User]]:  # fmt: skip
        """Every user whose email or name contains ``query`` (case-insensitive), by email then
        id, in batches of ``batch`` (``LIST_BATCH``) read by keyset (idp.services.pages): each
        batch one statement from the last key of the one before, never an OFFSET (which reads
        every row before the batch) nor a count of them all. ``unverified_by``: only those with
        a passkey whose attestation none of these root fingerprints verified (docs/admins.md,
        "Verified attestation"). For the ``idp users list`` command."""
        statement = select(User).where(*_criteria(query, unverified_by))
        cursor: str | None = None
        while True:
            page = keyset_page(self.db, statement, (User.email, User.id), cursor=cursor,
                               limit=batch or LIST_BATCH)  # fmt: skip
            if page.items:
                yield list(page.items)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def listing(self, query: str, cursor: str | None, limit: int = CONSOLE_PAGE) -> Page[User]:
        """The console's list: the users matching ``query`` as ``search`` finds them, a page by
        email then id (keyset, idp.services.pages), so each page costs the same statements
        whichever it is, however many users there are (docs/security.md); ``count`` says how
        many there are in all."""
        statement = select(User).where(*_criteria(query, None))
        return keyset_page(self.db, statement, (User.email, User.id), cursor=cursor, limit=limit)

    def count(self, query: str) -> int:
        """How many users match ``query`` as ``listing`` finds them: the total the console's list
        shows beside its pages, one ``count(*)`` over the users table alone (no join, no sort)."""
        counted = select(func.count()).select_from(User).where(*_criteria(query, None))
        return int(self.db.scalar(counted) or 0)

    def not_set_up(self, users: Sequence[User]) -> frozenset[str]:
        """Which of ``users`` (a page of them) have no way in yet: one statement."""
        return self._not_set_up(users)

    def _not_set_up(self, users: Sequence[User]) -> frozenset[str]:
        """``has_way_in`` for a page of users, in one query: no password, passkey or app."""
        bare = [u.id for u in users if u.password_hash is None]
        if not bare:
            return frozenset()
        with_passkey = select(Passkey.user_id).where(Passkey.user_id.in_(bare))
        with_app = select(TotpCredential.user_id).where(
            TotpCredential.user_id.in_(bare), TotpCredential.confirmed_at.is_not(None)
        )
        set_up = set(self.db.scalars(with_passkey.union(with_app)))
        return frozenset(user_id for user_id in bare if user_id not in set_up)

    def get(self, user_id: str, *, locked: bool = False) -> User | None:
        """``locked``: read anew, the row held until the transaction ends (idp.database)."""
        if not user_id or len(user_id) > 64:
            return None
        return self.db.get(User, user_id, with_for_update=locked or None, populate_existing=locked)

    def find(self, email_or_id: str) -> User | None:
        """By email (the CLI's usual handle) or by id (``sub``)."""
        return UserService(self.db, self.passwords).find_by_email(email_or_id) or self.get(
            email_or_id
        )

    # -- what the detail page shows -----------------------------------------------------------
    def has_way_in(self, user: User) -> bool:
        return has_way_in(self.db, user)

    def passkeys(self, user: User) -> list[Passkey]:
        return list(
            self.db.scalars(
                select(Passkey).where(Passkey.user_id == user.id).order_by(Passkey.created_at)
            )
        )

    def sessions(self, user: User, now: datetime) -> list[BrowserSession]:
        return list(
            self.db.scalars(
                select(BrowserSession)
                .where(
                    BrowserSession.user_id == user.id,
                    BrowserSession.revoked_at.is_(None),
                    BrowserSession.expires_at > now,
                )
                .order_by(BrowserSession.last_seen_at.desc())
            )
        )

    def consents(self, user: User, now: datetime) -> list[portal.ConnectedApp]:
        """The user's connected apps, as their portal lists them (first-party apps holding a
        live refresh token included)."""
        return portal.connected_apps(self.db, user, now)

    def live_links(self, user: User, now: datetime) -> list[LoginLink]:
        return LoginLinkService(self.db).live_links(user, now)

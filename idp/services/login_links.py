"""One-time login links: single-use, short-lived, stored hashed, revocable, audited.

Opening a link shows a confirmation page; only its POST spends the link, so mail scanners that
prefetch URLs cannot use it up. The session it gives is restricted: the user must register a new
passkey before anything else (sign-in methods).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from idp import checkpoints
from idp.models import LoginLink, User
from idp.services import audit
from idp.services.anonymous import AnonymousRejections
from idp.services.audit import RequestContext
from idp.services.consume import consume_once
from idp.services.crypto import new_secret, token_hash
from idp.services.unspent_links import end_unspent_links
from idp.session_statements import statements_of

MAX_TOKEN_LENGTH = 200

#: A rescue link (``/login/link/...``) or an invite to a new account (``/invite/...``). A link is
#: only honoured at the page of its own purpose: an invite cannot be replayed as a rescue link.
LOGIN = "login"
INVITE = "invite"
#: An invite that only idp's mail delivered to the account's address (its URL was handed to no
#: admin, API caller or terminal): accepting it proves control of the mailbox, so it alone marks
#: the address verified (OIDC Core 5.1 ``email_verified``). It is an invite in every other way.
MAILED_INVITE = "invite-mailed"
#: The purposes each page honours (``find_live``, ``spend``) and ``revoke_all`` ends.
_KINDS = {LOGIN: (LOGIN,), INVITE: (INVITE, MAILED_INVITE), MAILED_INVITE: (MAILED_INVITE,)}
#: What the audit log calls issuing and spending each kind.
_ISSUED = {LOGIN: "login_link.issued", INVITE: "invite.issued", MAILED_INVITE: "invite.issued"}
_SPENT = {LOGIN: "login.link", INVITE: "invite.accepted"}
#: Shown to admins and accepted by ``revoke``: a prefix of the hash, never the secret.
LINK_ID_LENGTH = 16
#: Where a link is about to be issued, whom to issue it to decided (tests hold it here).
ISSUE_CHECKPOINT = "login_link.issuing"


def link_path(purpose: str, secret: str) -> str:
    """Where a link of each purpose is opened (``idp.login`` and ``idp.signup``)."""
    return f"/login/link/{secret}" if purpose == LOGIN else f"/invite/{secret}"


_LINKS: Table = LoginLink.__table__  # type: ignore[assignment]
#: Ending a user's unspent rescue links (``end_rescue_links``): Core on the table, built once.
_END_RESCUE_LINKS = (
    update(_LINKS)
    .where(
        _LINKS.c.user_id == bindparam("rescued_user"),
        _LINKS.c.purpose == LOGIN,
        _LINKS.c.consumed_at.is_(None),
        _LINKS.c.revoked_at.is_(None),
    )
    .values(revoked_at=bindparam("ended_at"))
)


def end_rescue_links(db: Session, user_id: str, context: RequestContext, now: datetime) -> int:
    """A full sign-in of ``user_id`` (a passkey, a password and its second step, or a restricted
    session that added a way in) ends every unspent rescue link of theirs, audited: a rescue
    link stands in for a lost way in (docs/admins.md, "Rescuing a user with a one-time login
    link"), and once the user is in by a way of their own it only waits, for up to a day, in a
    mailbox or the chat it was passed on in, as a bearer secret that opens a session which adds
    a passkey: the account. One conditional UPDATE; how many links it ended."""
    ended = statements_of(db).write(_END_RESCUE_LINKS, rescue_links_to_end(user_id, now))
    return rescue_links_ended(db, user_id, context, ended)


def ending_rescue_links() -> Any:
    """``end_rescue_links``' UPDATE returning a row per link it ended, for a statement that
    sends it with another write (``SessionService.create`` on PostgreSQL); its parameters are
    ``rescue_links_to_end``', and what it ended goes to ``rescue_links_ended``."""
    return _END_RESCUE_LINKS.returning(_LINKS.c.id_hash)


def rescue_links_to_end(user_id: str, now: datetime) -> dict[str, Any]:
    return {"rescued_user": user_id, "ended_at": now}


def rescue_links_ended(db: Session, user_id: str, context: RequestContext, ended: int) -> int:
    """The audit of ``ended`` rescue links that a sign-in of ``user_id`` ended, if any."""
    if ended:
        audit.record(db, "login_link.revoked", subject_id=user_id, context=context,
                     reason="signed_in", links=ended)  # fmt: skip
    return ended


def end_links_issued_by(db: Session, issuers: list[str], now: datetime) -> int:
    """End every unspent link (rescue link or invite, of any user) that one of ``issuers`` (an
    admin's id, ``api-token:<name>``) issued: a link is a bearer secret minted from its issuer's
    authority, and ends with it, as the API tokens an admin created do (OWASP ASVS 4.0 4.1.3,
    idp.services.token_creators). One conditional UPDATE; how many links it ended."""
    if not issuers:
        return 0
    return end_unspent_links(db, LoginLink.created_by.in_(issuers), now=now)


def link_id(link: LoginLink) -> str:
    """A short public name for a link (a prefix of its hash): enough to revoke it by."""
    return link.id_hash[:LINK_ID_LENGTH]


class LoginLinkService:
    def __init__(self, db: Session, rejections: AnonymousRejections | None = None) -> None:
        """``rejections``: where a link that was never issued is refused (a request, not the
        CLI); without it each refusal is an audit row."""
        self.db = db
        self.rejections = rejections

    def issue(
        self,
        user: User,
        *,
        ttl: int,
        now: datetime,
        created_by: str | None = None,
        purpose: str = LOGIN,
        context: RequestContext | None = None,
        via: str | None = None,
    ) -> tuple[LoginLink, str]:
        checkpoints.reached(ISSUE_CHECKPOINT)
        # The audit row says which invites only idp's mail delivered (``MAILED_INVITE``).
        mailed: dict[str, Any] = {"mailed_only": True} if purpose == MAILED_INVITE else {}
        secret = new_secret(32)
        link = LoginLink(
            id_hash=token_hash(secret),
            user_id=user.id,
            user=user,
            purpose=purpose,
            created_by=created_by,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
        self.db.add(link)
        audit.record(
            self.db,
            _ISSUED[purpose],
            actor_id=created_by,
            subject_id=user.id,
            context=context,
            link_id=link_id(link),
            expires_at=link.expires_at.isoformat(),
            via=via,
            **mailed,
        )
        return link, secret

    def find_live(self, secret: str, now: datetime, purpose: str = LOGIN) -> LoginLink | None:
        """The link behind a secret if it can still be used (the confirmation page)."""
        if not secret or len(secret) > MAX_TOKEN_LENGTH:
            return None
        link = self.db.get(LoginLink, token_hash(secret))
        if link is None or link.consumed_at or link.revoked_at or link.expires_at <= now:
            return None
        if link.purpose not in _KINDS[purpose]:
            return None
        return link if link.user.is_active else None

    def spend(
        self, secret: str, context: RequestContext, now: datetime, purpose: str = LOGIN
    ) -> User | None:
        """Spend the link once through the consume-once primitive; the user, or None."""
        link = self.spend_link(secret, context, now, purpose)
        return link.user if link is not None else None

    def spend_link(
        self, secret: str, context: RequestContext, now: datetime, purpose: str = LOGIN
    ) -> LoginLink | None:
        """``spend``, answering the spent link (its ``purpose`` says how it was delivered)."""
        if not secret or len(secret) > MAX_TOKEN_LENGTH:
            return None
        digest = token_hash(secret)
        spent = consume_once(
            self.db,
            LoginLink,
            LoginLink.id_hash == digest,
            LoginLink.purpose.in_(_KINDS[purpose]),
            LoginLink.revoked_at.is_(None),
            LoginLink.expires_at > now,
            now=now,
        )
        link = self.db.get(LoginLink, digest)
        if link is None and self.rejections is not None:
            # A secret never issued names no account, and anyone can post them as fast as they
            # like: counted, and audited once per address and window, not a row each.
            self.rejections.refused(_SPENT[purpose], "link_invalid", context, now)
            return None
        if not spent or link is None or not link.user.is_active:
            audit.record(
                self.db,
                _SPENT[purpose],
                outcome="failure",
                subject_id=link.user_id if link else None,
                context=context,
                reason="link_invalid",
            )
            return None
        audit.record(
            self.db, _SPENT[purpose], subject_id=link.user_id, context=context,
            link_id=link_id(link), issued_by=link.created_by,
        )  # fmt: skip
        return link

    def revoke_all(self, user: User, now: datetime, purpose: str | None = None) -> int:
        criteria = [LoginLink.user_id == user.id]
        if purpose is not None:
            criteria.append(LoginLink.purpose.in_(_KINDS[purpose]))
        return end_unspent_links(self.db, *criteria, now=now)

    def revoke(self, user: User, public_id: str, now: datetime) -> bool:
        """Revoke one of the user's unspent links by its public id (``link_id``)."""
        if len(public_id) != LINK_ID_LENGTH:
            return False
        return bool(end_unspent_links(
            self.db,
            LoginLink.user_id == user.id,
            LoginLink.id_hash.startswith(public_id, autoescape=True),
            now=now,
        ))  # fmt: skip

    def live_links(self, user: User, now: datetime, purpose: str | None = None) -> list[LoginLink]:
        criteria = [
            LoginLink.user_id == user.id,
            LoginLink.consumed_at.is_(None),
            LoginLink.revoked_at.is_(None),
            LoginLink.expires_at > now,
        ]
        if purpose is not None:
            criteria.append(LoginLink.purpose.in_(_KINDS[purpose]))
        return list(
            self.db.scalars(select(LoginLink).where(*criteria).order_by(LoginLink.created_at))
        )

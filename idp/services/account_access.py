"""Ending everything a user is signed in with: their sessions, grants and tokens. The admin's
disable, enable and delete share it (idp.services.user_admin). No Flask.

A disabled account has no live session, grant or token: disabling ends them, and nothing new is
made for it (the sign-in, the code exchange, the refresh and the device poll refuse a disabled
user). But a request that read the account as active just before the disable committed can
still commit after it: a sign-in's new session (and its authorization request's grant), a device
approval's grant. The session loader and the token endpoint refuse them while the account stays
disabled; enabling it would bring them back to life. So enabling ends every session, grant and
token the user has at that moment: none of them can have been made legitimately while the
account was disabled (docs/security.md, "Sessions").
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, update
from sqlalchemy.orm import Session

from idp.models import AccessToken, BrowserSession, Grant, User
from idp.services.sessions import end_sessions
from idp.services.users import SIGNED_OUT, EmailChanges

#: Why a grant made by a request racing the disable was revoked when the account was enabled.
MADE_WHILE_DISABLED = "made_while_disabled"


def end_user_sessions(db: Session, user: User, now: datetime, reason: str) -> int:
    """End every live session of ``user`` (as every ending does: its grants end, its clients are
    told); how many this call ended."""
    # A pending email change may be the work of one of these sessions: it ends with them, as
    # with the user's own "sign out everywhere" (docs/security.md, "Mail and email addresses").
    EmailChanges(db).end_pending(user, now, SIGNED_OUT)
    return end_sessions(db, BrowserSession.user_id == user.id, reason, now)


def revoke_user_tokens(db: Session, user: User, now: datetime, reason: str) -> None:
    """Revoke every grant of ``user`` (with it, its refresh and access tokens: idp.models.oauth)
    and every access token of theirs, offline ones included."""
    db.execute(
        update(Grant)
        .where(Grant.user_id == user.id, Grant.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    db.execute(
        update(AccessToken)
        .where(AccessToken.user_id == user.id, AccessToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


def end_everything(db: Session, user: User, now: datetime, reason: str) -> int:
    """Sessions, grants and tokens of ``user``, all ended; how many sessions this call ended."""
    ended = end_user_sessions(db, user, now, reason)
    revoke_user_tokens(db, user, now, reason)
    return ended


def end_link_sessions(db: Session, user: User, now: datetime, reason: str) -> int:
    """End the live restricted sessions a one-time link opened for ``user`` (a rescue link, an
    invite or a sign-up confirmation: ``passkey_only``, whose one way forward is adding a passkey);
    a backup-code recovery's session, the user's own, stays. How many this call ended."""
    opened_by_a_link = and_(
        BrowserSession.user_id == user.id,
        BrowserSession.restricted.is_(True),
        BrowserSession.passkey_only.is_(True),
    )
    return end_sessions(db, opened_by_a_link, reason, now)

"""The first admin of an empty install (bootstrap).

No default password is ever created: the first run makes the admin account without any sign-in
method and hands out a one-time login link, whose session can only register a passkey
(idp.services.login_links). Until that admin has a passkey, a run with no live link hands out a
fresh one; a run while one is live (``idp init`` then ``idp serve``) keeps it, since only its hash
is stored and the printed link must keep working.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import Passkey, User
from idp.services.login_links import LoginLinkService
from idp.services.passwords import PasswordService
from idp.services.users import UserService


@dataclass(frozen=True)
class FirstAdminLink:
    user: User
    #: None: the link printed earlier is still live (its secret is not stored, only its hash).
    secret: str | None
    expires_at: datetime
    created: bool


def bootstrap_first_admin(
    db: Session,
    passwords: PasswordService,
    email: str,
    *,
    ttl: int,
    now: datetime,
    allow_local_domains: bool,
) -> FirstAdminLink | None:
    """A login link for the first admin, or None once an admin can sign in with a passkey."""
    if admin_can_sign_in(db):
        return None
    admins = list(db.scalars(select(User).where(User.is_admin.is_(True)).order_by(User.created_at)))
    existing = [admin for admin in admins if admin.is_active]
    if existing:
        admin, created = existing[0], False
    else:
        users = UserService(db, passwords)
        admin = users.find_by_email(email) or users.create(
            email, admin=True, allow_local_domains=allow_local_domains
        )
        admin.is_admin, created = True, admin not in admins
        db.flush()  # the link and its audit event name the new admin's id
    links = LoginLinkService(db)
    earlier = [link for link in links.live_links(admin, now) if link.created_by == "bootstrap"]
    if earlier:
        return FirstAdminLink(admin, None, max(link.expires_at for link in earlier), created)
    link, secret = links.issue(admin, ttl=ttl, now=now, created_by="bootstrap")
    return FirstAdminLink(admin, secret, link.expires_at, created)


def admin_can_sign_in(db: Session) -> bool:
    """Has any admin a passkey (the console's only way in)?"""
    with_passkey = (
        select(Passkey.credential_id)
        .join(User, Passkey.user_id == User.id)
        .where(User.is_admin.is_(True))
        .limit(1)
    )
    return db.scalar(with_passkey) is not None

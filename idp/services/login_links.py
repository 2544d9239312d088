"""One-time login links: single-use, short-lived, stored hashed, revocable, audited.

Opening a link shows a confirmation page; only its POST spends the link, so mail scanners that
prefetch URLs cannot use it up. The session it gives is restricted: the user must register a new
passkey before anything else (DESIGN.md, sign-in methods).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp.models import LoginLink, User
from idp.services import audit
from idp.services.audit import RequestContext
from idp.services.consume import consume_once
from idp.services.crypto import new_secret, token_hash

MAX_TOKEN_LENGTH = 200


class LoginLinkService:
    def __init__(self, db: Session) -> None:
        self.db = db

    def issue(
        self, user: User, *, ttl: int, now: datetime, created_by: str | None = None
    ) -> tuple[LoginLink, str]:
        secret = new_secret(32)
        link = LoginLink(
            id_hash=token_hash(secret),
            user_id=user.id,
            user=user,
            created_by=created_by,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
        self.db.add(link)
        audit.record(
            self.db,
            "login_link.issued",
            actor_id=created_by,
            subject_id=user.id,
            expires_at=link.expires_at.isoformat(),
        )
        return link, secret

    def find_live(self, secret: str, now: datetime) -> LoginLink | None:
        """The link behind a secret if it can still be used (the confirmation page)."""
        if not secret or len(secret) > MAX_TOKEN_LENGTH:
            return None
        link = self.db.get(LoginLink, token_hash(secret))
        if link is None or link.consumed_at or link.revoked_at or link.expires_at <= now:
            return None
        return link if link.user.is_active else None

    def spend(self, secret: str, context: RequestContext, now: datetime) -> User | None:
        """Spend the link once through the consume-once primitive; the user, or None."""
        if not secret or len(secret) > MAX_TOKEN_LENGTH:
            return None
        digest = token_hash(secret)
        spent = consume_once(
            self.db,
            LoginLink,
            LoginLink.id_hash == digest,
            LoginLink.revoked_at.is_(None),
            LoginLink.expires_at > now,
            now=now,
        )
        link = self.db.get(LoginLink, digest)
        if not spent or link is None or not link.user.is_active:
            audit.record(
                self.db,
                "login.link",
                outcome="failure",
                subject_id=link.user_id if link else None,
                context=context,
                reason="link_invalid",
            )
            return None
        audit.record(self.db, "login.link", subject_id=link.user_id, context=context)
        return link.user

    def revoke_all(self, user: User, now: datetime) -> int:
        result = self.db.execute(
            update(LoginLink)
            .where(
                LoginLink.user_id == user.id,
                LoginLink.consumed_at.is_(None),
                LoginLink.revoked_at.is_(None),
            )
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0))

    def live_links(self, user: User, now: datetime) -> list[LoginLink]:
        return list(
            self.db.scalars(
                select(LoginLink).where(
                    LoginLink.user_id == user.id,
                    LoginLink.consumed_at.is_(None),
                    LoginLink.revoked_at.is_(None),
                    LoginLink.expires_at > now,
                )
            )
        )

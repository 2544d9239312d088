"""Server-side browser sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from idp.models import BrowserSession, User
from idp.services.audit import RequestContext
from idp.services.crypto import new_secret, token_hash
from idp.services.policy import acr_for_amr

# Writing last_seen_at on every request would turn every page view into a database write.
LAST_SEEN_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class NewSession:
    cookie_value: str
    session: BrowserSession


class SessionService:
    def __init__(self, db: Session, *, idle_ttl: int, absolute_ttl: int) -> None:
        self.db = db
        self.idle_ttl = timedelta(seconds=idle_ttl)
        self.absolute_ttl = timedelta(seconds=absolute_ttl)

    def create(
        self, user: User, amr: list[str], context: RequestContext, now: datetime
    ) -> NewSession:
        cookie_value = new_secret(32)
        session = BrowserSession(
            id_hash=token_hash(cookie_value),
            user_id=user.id,
            user=user,
            auth_time=now,
            amr=amr,
            acr=acr_for_amr(amr),
            created_at=now,
            last_seen_at=now,
            expires_at=now + self.absolute_ttl,
            ip_address=context.ip_address[:64],
            user_agent=context.user_agent[:512],
        )
        self.db.add(session)
        return NewSession(cookie_value=cookie_value, session=session)

    def load(self, cookie_value: str | None, now: datetime) -> BrowserSession | None:
        """The live session behind a cookie, or None (expired, idle, revoked, user disabled)."""
        if not cookie_value or len(cookie_value) > 200:
            return None
        session = self.db.get(BrowserSession, token_hash(cookie_value))
        if session is None or session.revoked_at is not None:
            return None
        if session.expires_at <= now or session.last_seen_at + self.idle_ttl <= now:
            return None
        if not session.user.is_active:
            return None
        if now - session.last_seen_at >= LAST_SEEN_RESOLUTION:
            session.last_seen_at = now
        return session

    def revoke(self, session: BrowserSession, now: datetime) -> None:
        session.revoked_at = now

    def revoke_all_for_user(self, user_id: str, now: datetime) -> None:
        self.db.execute(
            update(BrowserSession)
            .where(BrowserSession.user_id == user_id, BrowserSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )

"""The partial sign-in: a correct password waiting for its second step (docs/security.md,
"Sign-in, passkeys and assurance").

The browser holds only a random secret (in its signed session cookie); the server keeps its hash
with the user, the authorization request the sign-in serves and where to go next. It lives ten
minutes and is spent once, by whichever second step finishes first.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from idp.models import PartialLogin
from idp.services.consume import consume_once
from idp.services.crypto import new_secret, token_hash

#: How long the second step may take after a correct password.
PARTIAL_LOGIN_TTL = timedelta(minutes=10)


class PartialLogins:
    def __init__(self, db: Session) -> None:
        self.db = db

    def begin(
        self, user_id: str, pending_request_id: str | None, next_path: str, now: datetime
    ) -> str:
        """After a correct password: the secret the browser keeps (the caller commits)."""
        raw = new_secret(32)
        self.db.add(
            PartialLogin(
                id_hash=token_hash(raw),
                user_id=user_id,
                amr=["pwd"],
                pending_request_id=pending_request_id,
                next_path=next_path,
                created_at=now,
                expires_at=now + PARTIAL_LOGIN_TTL,
            )
        )
        return raw

    def live(self, raw: str, now: datetime) -> PartialLogin | None:
        """The partial sign-in the secret names, if neither spent nor expired."""
        partial = self.db.get(PartialLogin, token_hash(raw))
        if partial is None or partial.consumed_at is not None or partial.expires_at <= now:
            return None
        return partial

    def spend(self, partial: PartialLogin, now: datetime) -> bool:
        """Finish it once; False when another second step finished it first."""
        return consume_once(self.db, PartialLogin, PartialLogin.id_hash == partial.id_hash, now=now)

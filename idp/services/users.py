"""Users: creation and look-up by email."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import User
from idp.services.passwords import PasswordService


class UserError(ValueError):
    """The user cannot be created as asked; the message says why."""


def normalise_email(email: str) -> str:
    return email.strip().lower()


class UserService:
    def __init__(self, db: Session, passwords: PasswordService) -> None:
        self.db = db
        self.passwords = passwords

    def find_by_email(self, email: str) -> User | None:
        email = normalise_email(email)
        if not email or len(email) > 320:
            return None
        return self.db.scalar(select(User).where(User.email == email))

    def create(
        self, email: str, *, name: str = "", password: str | None = None, admin: bool = False
    ) -> User:
        email = normalise_email(email)
        if "@" not in email or len(email) > 320 or email.startswith("@") or email.endswith("@"):
            raise UserError(f"not an email address: {email!r}")
        if self.find_by_email(email) is not None:
            raise UserError(f"a user with email {email} already exists")
        user = User(
            email=email,
            name=name.strip(),
            is_admin=admin,
            password_hash=self.passwords.hash(password) if password else None,
        )
        self.db.add(user)
        return user


class EmailChange:
    """Email changes confirmed from the new address (itsdangerous signed, time-limited tokens).

    The token names the old address, so it works once: after the change it no longer matches.
    """

    MAX_AGE = 24 * 3600

    def __init__(self, secret_key: bytes) -> None:
        from itsdangerous import URLSafeTimedSerializer

        self.serializer = URLSafeTimedSerializer(secret_key, salt="idp email change")

    def token(self, user: User, new_email: str) -> str:
        return self.serializer.dumps({"u": user.id, "old": user.email, "new": new_email})

    def confirm(self, db: Session, token: str) -> tuple[User, str] | None:
        """Change the email; the user and the address it replaced, or None."""
        from itsdangerous import BadSignature

        try:
            data = self.serializer.loads(token[:2000], max_age=self.MAX_AGE)
        except (BadSignature, ValueError, TypeError):
            return None
        if not isinstance(data, dict):
            return None
        user = db.get(User, str(data.get("u")))
        new_email = str(data.get("new", ""))
        if user is None or user.email != data.get("old"):
            return None
        if db.scalar(select(User.id).where(User.email == new_email)) is not None:
            return None
        old_email = user.email
        user.email = new_email
        user.email_verified = True
        return user, old_email

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

"""The user's row locked until the transaction ends, so that changes of one user's sign-in methods
(removing a passkey or the password, new backup codes, confirming an authenticator app, a restricted
session promoted by the way in it added) are decided one after the other: PostgreSQL's row lock;
SQLite's write lock, taken by ``SELECT ... FOR UPDATE`` (idp.database). Without it two tabs each
decided on what the other was about to change (docs/security.md, "Sign-in, passkeys and
assurance")."""

from __future__ import annotations

from sqlalchemy.orm import Session

from idp.models import User


def lock_user_row(db: Session, user: User) -> None:
    """Lock ``user``'s row and read it anew (a change committed while this one waited counts)."""
    db.flush()  # a refresh drops what is not flushed
    db.refresh(user, with_for_update=True)

"""The user's row locked until the transaction ends, so that changes of one user's sign-in methods
(removing a passkey or the password, new backup codes, confirming an authenticator app, a restricted
session promoted by the way in it added) are decided one after the other: PostgreSQL's row lock;
SQLite's write lock, taken by ``SELECT ... FOR UPDATE`` (idp.database). Without it two tabs each
decided on what the other was about to change (docs/security.md, "Sign-in, passkeys and
assurance")."""

from __future__ import annotations

from sqlalchemy import and_, case, select
from sqlalchemy.orm import Session

from idp.models import User


def lock_user_row(db: Session, user: User) -> None:
    """Lock ``user``'s row and read it anew (a change committed while this one waited counts)."""
    db.flush()  # a refresh drops what is not flushed
    db.refresh(user, with_for_update=True)


def lock_in_admin_order(db: Session, user_ids: set[str]) -> dict[str, User]:
    """Lock the rows of ``user_ids`` and read them anew (PostgreSQL's row locks, SQLite's write
    lock), the active admins' first by id, then the others by id: the order of every change in
    idp.services.user_admin, whose ``_locking_admins`` holds the active admins' rows by id before
    it writes its user's row. Two transactions that take their rows in one order never wait for
    each other in a cycle (PostgreSQL's deadlock, a 503). The rows found, by id (a deleted user is
    missing)."""
    db.flush()  # populate_existing drops what is not flushed
    active_admin = and_(User.is_admin.is_(True), User.disabled_at.is_(None))
    rows = db.scalars(
        select(User)
        .where(User.id.in_(sorted(user_ids)))
        .order_by(case((active_admin, 0), else_=1), User.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {user.id: user for user in rows}

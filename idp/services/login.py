"""Password sign-in: one decision, the same answer for unknown and known emails."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from idp.models import User
from idp.services import audit
from idp.services.audit import RequestContext
from idp.services.passwords import PasswordService
from idp.services.users import UserService

#: One message for every failure: it never says whether the account exists (DESIGN.md).
GENERIC_FAILURE = "The email or password is incorrect."


@dataclass(frozen=True)
class PasswordLoginResult:
    user: User | None
    amr: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.user is not None


def login_with_password(
    db: Session, passwords: PasswordService, email: str, password: str, context: RequestContext
) -> PasswordLoginResult:
    user = UserService(db, passwords).find_by_email(email)
    # An unknown email still pays for one Argon2id verification (similar timing).
    check = passwords.verify(user.password_hash if user else None, password)
    if user is None or not check.ok or not user.is_active:
        audit.record(
            db,
            "login.password",
            outcome="failure",
            subject_id=user.id if user else None,
            context=context,
            reason="bad_credentials" if user is None or not check.ok else "disabled",
        )
        return PasswordLoginResult(user=None)
    if check.needs_rehash:
        # Argon2 parameters changed since this hash was made: upgrade it transparently.
        user.password_hash = passwords.hash(password)
    audit.record(db, "login.password", subject_id=user.id, context=context)
    return PasswordLoginResult(user=user, amr=("pwd",))

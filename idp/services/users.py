"""Users: creation and look-up by email, and changes of a user's email address."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp import checkpoints
from idp.errors import DomainError
from idp.models import EmailChangeRequest, LoginLink, User
from idp.services.consume import consume_once_returning
from idp.services.crypto import new_secret, token_hash
from idp.services.email_addresses import EmailAddressError, normalise_email, parse_email_address
from idp.services.passwords import PasswordService
from idp.services.rate_limits import DatabaseCounters, WindowBudget
from idp.services.unspent_links import end_unspent_links

__all__ = [
    "EmailChangeLimitError",
    "EmailChanges",
    "UserError",
    "UserExistsError",
    "UserService",
    "normalise_email",
]


#: A link secret is 43 characters; anything much longer is not one.
MAX_SECRET_LENGTH = 200
#: Where a new user is held, in tests, after the look-up found the address free (idp.checkpoints).
EMAIL_FREE_CHECKPOINT = "user-email-free"
#: Where confirming an email change has found the new address free, before it takes it.
EMAIL_CHANGE_FREE_CHECKPOINT = "email-change-free"


class UserError(DomainError):
    """The user cannot be created as asked; the message says why."""


class UserExistsError(UserError):
    """Another user has the email address."""


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
        self,
        email: str,
        *,
        name: str = "",
        password: str | None = None,
        admin: bool = False,
        allow_local_domains: bool,
    ) -> User:
        """``allow_local_domains``: development only (idp.services.email_addresses)."""
        try:
            email = parse_email_address(email, allow_local_domains=allow_local_domains)
        except EmailAddressError as error:
            raise UserError(f"not an email address: {email!r} ({error})") from error
        taken = UserExistsError(f"a user with email {email} already exists")
        if self.find_by_email(email) is not None:
            raise taken
        checkpoints.reached(EMAIL_FREE_CHECKPOINT)
        user = User(
            email=email,
            name=name.strip(),
            is_admin=admin,
            password_hash=self.passwords.hash(password) if password else None,
        )
        try:
            # The look-up above does not hold the address (PostgreSQL's READ COMMITTED): of two
            # parallel creations (two admins' invites, an invite and a sign-up) the unique email
            # decides, in a savepoint, and the other is told the address is taken, as it would
            # have been a moment later (idp.services.signup ``_create`` does the same).
            with self.db.begin_nested():
                self.db.add(user)
        except IntegrityError:
            raise taken from None
        return user


def replace_password(user: User, password_hash: str | None) -> None:
    """Set, change or remove ``user``'s password (``password_hash`` None): the hash, and the
    version moved on in the same UPDATE, by the database (``password_version + 1``, so that two
    changes never write one version). A sign-in whose check read the password before it finds
    the version moved, and opens no session on the replaced password (OWASP ASVS 4.0 3.3: a
    credential change ends what the old one opened; idp.services.sign_in
    ``SignInService.password_unchanged``, idp.services.partial_logins ``PartialLogins.spend``)."""
    user.password_hash = password_hash
    user.password_version = User.password_version + 1


#: How long a confirmation link sent to the new address works.
EMAIL_CHANGE_TTL = timedelta(hours=24)
#: Email changes one account may ask for in a fixed hour. Each one mails a link to an address
#: the user types (anyone's) and a notice to the old one: uncapped, one signed-in account sent
#: mail to strangers as fast as it could post, where sign-up caps its mail (docs/security.md,
#: "Attempt counters, lockouts and sign-up limits"; OWASP Forgot Password Cheat Sheet).
MAX_EMAIL_CHANGES_PER_HOUR = 5
EMAIL_CHANGE_WINDOW = timedelta(hours=1)
#: Confirmation links for the account's own address ("Send me a confirmation link") one account
#: may ask for in a fixed hour: a budget of its own, so that asking for them cannot use up the
#: email changes' (nor the other way round), and each mail to the account's own address is
#: still capped.
MAX_EMAIL_VERIFICATIONS_PER_HOUR = 5


class EmailChangeLimitError(DomainError):
    """This hour's email changes of the account are used up; nothing was sent or stored."""


class EmailVerificationLimitError(EmailChangeLimitError):
    """This hour's confirmation links for the account's own address are used up; nothing was
    sent or stored."""


#: The budgets of ``EmailChanges.request``: the counter's name, its limit and the refusal.
_CHANGE_BUDGET = (
    "email-change",
    MAX_EMAIL_CHANGES_PER_HOUR,
    EmailChangeLimitError,
    "Too many email changes were asked for in the last hour. Try again later.",
)
_VERIFICATION_BUDGET = (
    "email-verification",
    MAX_EMAIL_VERIFICATIONS_PER_HOUR,
    EmailVerificationLimitError,
    "Too many confirmation links were asked for in the last hour. Try again later.",
)


#: Why a pending change ended (``EmailChangeRequest.outcome``).
CONFIRMED = "confirmed"
CANCELLED = "cancelled"
SUPERSEDED = "superseded"
PASSWORD_CHANGED = "password_changed"
PASSWORD_REMOVED = "password_removed"
SIGNED_OUT = "signed_out"


class Confirmed(NamedTuple):
    """A confirmed email-change link (``EmailChanges.confirm``)."""

    user: User
    #: The address it replaced (the same address for a confirmation of the account's own).
    old_email: str
    #: The user's unspent one-time links the change ended (mailed to the old address).
    links_ended: int


class EmailChanges:
    """Email changes: a stored, single-use request per change, confirmed from
    the new address. Only its secret's hash is stored; ``confirm`` spends it in one conditional
    UPDATE, so it works once, and never again even if the address returns to its old value."""

    def __init__(self, db: Session) -> None:
        self.db = db

    def request(
        self, user: User, new_email: str, now: datetime, *, allow_local_domains: bool
    ) -> tuple[EmailChangeRequest, str]:
        """A new pending change (ending any earlier one) and its link secret. ``new_email`` goes
        through the one parser (idp.services.email_addresses): ``EmailAddressError`` if it is
        not a single plain address; ``EmailChangeLimitError`` past the hour's cap (counted, and
        committed at once, in the statement that checks it: parallel requests cannot all fit)."""
        return self._request(user, new_email, now, allow_local_domains, _CHANGE_BUDGET)

    def request_verification(
        self, user: User, now: datetime, *, allow_local_domains: bool
    ) -> tuple[EmailChangeRequest, str]:
        """``request`` for the account's own address ("Send me a confirmation link"), counted in
        a budget of its own: ``EmailVerificationLimitError`` past its hour's cap."""
        return self._request(user, user.email, now, allow_local_domains, _VERIFICATION_BUDGET)

    def _request(
        self,
        user: User,
        new_email: str,
        now: datetime,
        allow_local_domains: bool,
        budget_of: tuple[str, int, type[EmailChangeLimitError], str],
    ) -> tuple[EmailChangeRequest, str]:
        address = parse_email_address(new_email, allow_local_domains=allow_local_domains)
        name, limit, refusal, message = budget_of
        budget = WindowBudget(DatabaseCounters(self.db), limit=limit, window=EMAIL_CHANGE_WINDOW)
        if not budget.spend(name, user.id, now):
            raise refusal(message)
        self.end_pending(user, now, SUPERSEDED)
        secret = new_secret(32)
        change = EmailChangeRequest(
            id_hash=token_hash(secret), user_id=user.id, old_email=user.email,
            new_email=address, created_at=now, expires_at=now + EMAIL_CHANGE_TTL,
        )  # fmt: skip
        self.db.add(change)
        return change, secret

    def pending(self, user: User, now: datetime) -> EmailChangeRequest | None:
        return self.db.scalar(
            select(EmailChangeRequest)
            .where(
                EmailChangeRequest.user_id == user.id,
                EmailChangeRequest.consumed_at.is_(None),
                EmailChangeRequest.expires_at > now,
            )
            .order_by(EmailChangeRequest.created_at.desc())
            .limit(1)
        )

    def end_pending(self, user: User, now: datetime, outcome: str) -> int:
        """End every pending change of ``user`` (cancel, a new request, a password change, "sign
        out everywhere"); returns how many there were."""
        result = self.db.execute(
            update(EmailChangeRequest)
            .where(EmailChangeRequest.user_id == user.id, EmailChangeRequest.consumed_at.is_(None))
            .values(consumed_at=now, outcome=outcome)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def find(self, secret: str, now: datetime) -> EmailChangeRequest | None:
        """The live request behind a link (its page; a GET spends nothing)."""
        if not secret or len(secret) > MAX_SECRET_LENGTH:
            return None
        return self.db.scalar(
            select(EmailChangeRequest).where(
                EmailChangeRequest.id_hash == token_hash(secret),
                EmailChangeRequest.consumed_at.is_(None),
                EmailChangeRequest.expires_at > now,
            )
        )

    def confirm(self, secret: str, user_id: str, now: datetime) -> Confirmed | None:
        """Spend the link of ``user_id``'s change and change the email; the user, the address
        it replaced and how many of the user's unspent one-time links the change ended, or None
        (unknown, another user's, expired, ended, already used, or the address is taken by now).
        Another user's link is not spent: its own user may still confirm it."""
        if not secret or len(secret) > MAX_SECRET_LENGTH:
            return None
        spent = consume_once_returning(
            self.db, EmailChangeRequest,
            EmailChangeRequest.id_hash == token_hash(secret), EmailChangeRequest.expires_at > now,
            EmailChangeRequest.user_id == user_id,
            now=now,
            columns=(EmailChangeRequest.user_id, EmailChangeRequest.old_email,
                     EmailChangeRequest.new_email),
        )  # fmt: skip
        if spent is None:
            return None
        user_id, old_email, new_email = spent.user_id, spent.old_email, spent.new_email
        self.db.execute(
            update(EmailChangeRequest)
            .where(EmailChangeRequest.id_hash == token_hash(secret))
            .values(outcome=CONFIRMED)
            .execution_options(synchronize_session=False)
        )
        user = self.db.get(User, user_id)
        if user is None or not user.is_active or user.email != old_email:
            return None
        if new_email == old_email:
            # The portal's "confirm this address" (an account an invite handed out made): the
            # link reached the address, which is proven (OIDC Core 5.1 email_verified).
            user.email_verified = True
            return Confirmed(user, old_email, 0)
        if self.db.scalar(select(User.id).where(User.email == new_email)) is not None:
            return None
        checkpoints.reached(EMAIL_CHANGE_FREE_CHECKPOINT)
        try:
            # The look-up above does not hold the address (PostgreSQL's READ COMMITTED): another
            # account may take it meanwhile (a sign-up, an admin's creation, another change).
            # The unique email decides, in a savepoint, and this change ends as one confirmed a
            # moment later would: the address is taken (as ``UserService.create`` does).
            with self.db.begin_nested():
                user.email = new_email
                user.email_verified = True
        except IntegrityError:
            return None
        # A rescue link or an invite was mailed to the address at issue (idp.services.user_admin):
        # once the account's address is another, the old mailbox (often the reason for the
        # change: lost, shared or taken over) must hold no bearer secret to the account, whose
        # session adds a passkey. They end with the change, in its transaction.
        ended = end_unspent_links(self.db, LoginLink.user_id == user.id, now=now)
        return Confirmed(user, old_email, ended)

"""New accounts: accepting an admin's invite, and self-service sign-up.

Both end the same way: the address was proven by a one-time link (spent by a POST through the
consume-once primitive, so a mail scanner's prefetch spends nothing), the user chose a name, and
the account's first way in comes next: a passkey, or a password where the policy allows one.

Sign-up never tells who has an account (account-enumeration safe): a known address gets
the same answer as a new one, and its owner gets a "someone tried to sign up" notice instead of a
link.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, not_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp import checkpoints
from idp.errors import DomainError
from idp.models import AuditEvent, BackupCode, Passkey, SignupLink, TotpCredential, User
from idp.services import audit
from idp.services.anonymous import AnonymousRejections, count_refusal
from idp.services.audit import RequestContext
from idp.services.consume import consume_once
from idp.services.crypto import new_secret, token_hash
from idp.services.display_names import display_name
from idp.services.email_addresses import EmailAddressError, parse_email_address
from idp.services.login_links import INVITE, MAILED_INVITE, MAX_TOKEN_LENGTH, LoginLinkService
from idp.services.notifications import Notifier
from idp.services.passwords import PasswordService
from idp.services.rate_limits import DatabaseCounters, WindowBudget
from idp.services.user_directory import has_way_in
from idp.services.users import UserService, replace_password

#: The audit events of a sign-in method added to an account (idp.services.passkeys, the portal).
METHOD_ADDED_EVENTS = ("passkey.registered", "totp.enabled", "password.changed")

#: A sign-up link is meant to be opened right away.
SIGNUP_LINK_TTL = timedelta(minutes=30)
#: Mail sent to one address per hour, at most (typing someone's address repeatedly must not
#: flood their mailbox): live links for a new address, notices for a known one.
MAX_MESSAGES_PER_ADDRESS = 3
MAIL_WINDOW = timedelta(hours=1)
#: Where a sign-up whose mail was counted is held, in tests, before the mail is written.
MAIL_CHECKPOINT = "signup.mail"
MAX_NAME_LENGTH = 200


class SignupError(DomainError):
    """The request cannot go on as sent; the message is safe to show (it names no account)."""


@dataclass(frozen=True)
class NewAccount:
    """What the person joining chose on the confirmation page."""

    name: str
    #: Only where the policy allows passwords; None: a passkey comes next.
    password: str | None = None


def valid_email(email: str, *, allow_local_domains: bool) -> str:
    try:
        return parse_email_address(email, allow_local_domains=allow_local_domains)
    except EmailAddressError as error:
        raise SignupError(str(error)) from error


class Joining:
    """Invites and sign-up, decided without Flask."""

    def __init__(
        self,
        db: Session,
        passwords: PasswordService,
        notifier: Notifier,
        *,
        allow_local_domains: bool = False,
        rejections: AnonymousRejections | None = None,
    ) -> None:
        """``allow_local_domains``: development addresses (idp.services.email_addresses).
        ``rejections``: where a POST to a link never issued is refused (``refused_link``)."""
        self.allow_local_domains = allow_local_domains
        self.rejections = rejections
        self.db = db
        self.passwords = passwords
        self.notifier = notifier

    # -- invites --------------------------------------------------------------------------------
    def find_invite(self, secret: str, now: datetime) -> User | None:
        """Whom a live invite is for (the confirmation page; a GET spends nothing)."""
        link = LoginLinkService(self.db).find_live(secret, now, purpose=INVITE)
        if link is None or has_way_in(self.db, link.user):
            return None
        return link.user

    def accept_invite(
        self, secret: str, account: NewAccount, context: RequestContext, now: datetime
    ) -> User | None:
        """Spend the invite once and apply the invitee's choices; the user, or None."""
        password_hash = self._password_hash(account.password)  # before anything is spent
        link = LoginLinkService(self.db, self.rejections).spend_link(
            secret, context, now, purpose=INVITE
        )
        if link is None:
            return None
        user = link.user
        if has_way_in(self.db, user):
            # Set up meanwhile (another invite, a login link): an invite never replaces a method.
            audit.record(self.db, "invite.accepted", outcome="failure", subject_id=user.id,
                         context=context, reason="already_set_up")  # fmt: skip
            return None
        # Only an invite that idp's mail alone delivered proves the address (OIDC Core 5.1
        # email_verified): one whose URL an admin, an API caller or a terminal was handed proves
        # only that its holder had the URL, and the user confirms the address from the portal.
        self._apply(user, account, password_hash, proven=link.purpose == MAILED_INVITE)
        return user

    # -- self-service sign-up -------------------------------------------------------------------
    def request_signup(
        self,
        email: str,
        *,
        context: RequestContext,
        now: datetime,
        url_for_secret: Any,
        login_url: str,
    ) -> None:
        """Send a sign-up link, or a notice to an existing account's owner. Returns nothing on
        purpose: the caller shows one answer for both (no enumeration).

        The same work for every address, as the password step's (docs/security.md): one
        statement reads the address's account and what it has (``_account_of``), and a link is
        stored whether or not one is mailed. For an existing account nobody ever holds that
        link's secret, and ``complete_signup`` would refuse it; on PostgreSQL each statement is a
        round trip, so a link stored for new addresses only, or an account's ways in read one at
        a time, said by the answer's time whether the address has an account and a password
        (OWASP ASVS 4.0 2.2.1; Forgot Password Cheat Sheet: "ensure that the same amount of time
        is taken")."""
        email = valid_email(email, allow_local_domains=self.allow_local_domains)
        user, unfinished = self._account_of(email)
        existing = user if user is not None and not unfinished else None
        if not self._mail_allowed(email, "signup_link" if existing is None else "signup_existing",
                                  now):  # fmt: skip
            if existing is not None:
                audit.record(self.db, "signup.requested", outcome="existing_account",
                             subject_id=existing.id, context=context)  # fmt: skip
            else:
                audit.record(self.db, "signup.requested", outcome="throttled", context=context,
                             email=email)  # fmt: skip
            return
        checkpoints.reached(MAIL_CHECKPOINT)
        secret = new_secret(32)
        link = SignupLink(id_hash=token_hash(secret), email=email, created_at=now,
                          expires_at=now + SIGNUP_LINK_TTL)  # fmt: skip
        self.db.add(link)
        if existing is not None:
            self.notifier.notify(existing, "signup_existing", login_url=login_url)
            audit.record(self.db, "signup.requested", outcome="existing_account",
                         subject_id=existing.id, context=context)  # fmt: skip
            return
        self.notifier.notify_address(
            email, "signup_link", link=url_for_secret(secret),
            expires_at=link.expires_at,
        )  # fmt: skip
        audit.record(self.db, "signup.requested", context=context, email=email)

    def _account_of(self, email: str) -> tuple[User | None, bool]:
        """The account of a parsed address and whether it is an unfinished sign-up
        (``_unfinished``), in one statement whatever the account has."""
        way_in = or_(
            User.password_hash.is_not(None),
            exists().where(Passkey.user_id == User.id),
            exists().where(TotpCredential.user_id == User.id,
                           TotpCredential.confirmed_at.is_not(None)),
        )  # fmt: skip
        ever_set_up = or_(
            exists().where(BackupCode.user_id == User.id),
            exists().where(AuditEvent.subject_id == User.id,
                           AuditEvent.kind.in_(METHOD_ADDED_EVENTS),
                           AuditEvent.outcome == "success"),
        )  # fmt: skip
        unfinished = and_(
            User.disabled_at.is_(None), User.is_admin.is_(False), not_(way_in), not_(ever_set_up)
        )
        row = self.db.execute(select(User, unfinished).where(User.email == email)).first()
        if row is None:
            return None, False
        return row[0], bool(row[1])

    def find_signup(self, secret: str, now: datetime) -> SignupLink | None:
        """The live sign-up link behind a secret (the confirmation page; a GET spends nothing)."""
        if not secret or len(secret) > MAX_TOKEN_LENGTH:
            return None
        link = self.db.get(SignupLink, token_hash(secret))
        if link is None or link.consumed_at is not None or link.expires_at <= now:
            return None
        return link

    def complete_signup(
        self, secret: str, account: NewAccount, context: RequestContext, now: datetime
    ) -> User | None:
        """Spend the sign-up link once and create the account; the user, or None."""
        password_hash = self._password_hash(account.password)  # before anything is spent
        if not secret or len(secret) > MAX_TOKEN_LENGTH:
            return None
        digest = token_hash(secret)
        spent = consume_once(self.db, SignupLink, SignupLink.id_hash == digest,
                             SignupLink.expires_at > now, now=now)  # fmt: skip
        link = self.db.get(SignupLink, digest)
        if link is None and self.rejections is not None:
            # Never issued: it names no account, and anyone can post such links as fast as they
            # like, so it is counted and audited once per address and window, not a row each.
            self.rejections.refused("signup.completed", "link_invalid", context, now)
            return None
        if not spent or link is None:
            audit.record(self.db, "signup.completed", outcome="failure", context=context,
                         reason="link_invalid")  # fmt: skip
            return None
        user = UserService(self.db, self.passwords).find_by_email(link.email)
        if user is not None and not self._unfinished(user):
            # Someone set up this address after the link was sent (an invite, an earlier link).
            audit.record(self.db, "signup.completed", outcome="failure", subject_id=user.id,
                         context=context, reason="account_exists")  # fmt: skip
            return None
        if user is None:
            user = self._create(link.email)
        if user is None:
            audit.record(self.db, "signup.completed", outcome="failure", context=context,
                         reason="account_exists")  # fmt: skip
            return None
        self._apply(user, account, password_hash)
        audit.record(self.db, "signup.completed", subject_id=user.id, context=context)
        return user

    # -- shared ---------------------------------------------------------------------------------
    def _create(self, email: str) -> User | None:
        """The new account; if a parallel sign-up (a second link to the same address) created it
        first, that account when it is still unfinished, else None."""
        try:
            with self.db.begin_nested():  # a savepoint: the unique email decides the race
                user = User(email=email)
                self.db.add(user)
        except IntegrityError:
            existing = UserService(self.db, self.passwords).find_by_email(email)
            return existing if existing is not None and self._unfinished(existing) else None
        return user

    def _unfinished(self, user: User) -> bool:
        """An account whose sign-up stopped before its first passkey: proving the address again
        finishes it. Never an admin's (their way in is an admin's login link) or a disabled one,
        nor one that had a way in once and lost it (a revoked passkey, a lost phone): proving the
        address is not enough to take it over; its owner recovers with a backup code or an
        admin's login link (docs/users/recovery.md)."""
        if not user.is_active or user.is_admin or has_way_in(self.db, user):
            return False
        return not self._ever_set_up(user)

    def _ever_set_up(self, user: User) -> bool:
        """Whether the account ever had a sign-in method: its first one came with backup codes,
        and adding one is audited (kept as long as ``audit_retention_days`` says)."""
        codes = select(BackupCode.id).where(BackupCode.user_id == user.id).limit(1)
        added = select(AuditEvent.id).where(
            AuditEvent.subject_id == user.id,
            AuditEvent.kind.in_(METHOD_ADDED_EVENTS),
            AuditEvent.outcome == "success",
        )
        return self.db.scalar(codes) is not None or self.db.scalar(added.limit(1)) is not None

    def _password_hash(self, password: str | None) -> str | None:
        # PasswordPolicyError (too short, too common) reaches the caller with nothing spent.
        return self.passwords.hash(password) if password else None

    def _apply(
        self, user: User, account: NewAccount, password_hash: str | None, *, proven: bool = True
    ) -> None:
        name = display_name(account.name, MAX_NAME_LENGTH)
        if name:
            user.name = name
        if proven:
            # The link reached this address: it is proven (OIDC Core 5.1 email_verified).
            user.email_verified = True
        if password_hash is not None:
            replace_password(user, password_hash)

    def _mail_allowed(self, email: str, kind: str, now: datetime) -> bool:
        """Count one ``kind`` mail to ``email`` if this hour's cap has room (docs/security.md):
        the count and its check are one statement, committed at once, so parallel sign-ups for
        one address cannot all find room (nor wait on each other while mail is written); a
        refusal counts nothing, and the hour is a fixed window that no refusal extends. A mail
        counted whose request then fails errs on the strict side."""
        budget = WindowBudget(DatabaseCounters(self.db),
                              limit=MAX_MESSAGES_PER_ADDRESS, window=MAIL_WINDOW)  # fmt: skip
        if budget.spend(f"mail-{kind}", token_hash(email), now):
            return True
        # idp_budget_refusals_total, as every budget's refusal (docs/operations.md): a budget
        # of its own per kind of mail, ``mail_signup_link`` and ``mail_signup_existing``.
        count_refusal(f"mail_{kind}")
        return False

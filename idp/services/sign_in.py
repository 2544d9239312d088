"""Sign-in decisions: the password step, the second step, recovery; the same answers for unknown
and known emails (account-enumeration safe)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from idp import checkpoints
from idp.models import User
from idp.services import audit
from idp.services.audit import RequestContext
from idp.services.backup_codes import BackupCodeService
from idp.services.email_addresses import normalise_email
from idp.services.notifications import Notifier
from idp.services.partial_logins import (
    SecondStepChoices,
    flagged_passkey_column,
    second_factor_columns,
)
from idp.services.passwords import PasswordService
from idp.services.rate_limits import AttemptLimiter, Verdict
from idp.services.sign_in_policy import SignInPolicy
from idp.services.totp import StoredTotp, TotpService
from idp.services.users import UserService

if TYPE_CHECKING:
    from idp.thin_reads import ThinReads

#: Where a counted attempt is held, in tests, before its secret is checked (idp.checkpoints).
CHECKPOINT = "sign_in.check"
#: Where a password step is held, in tests, once its hash was verified (idp.checkpoints).
PASSWORD_CHECKED_CHECKPOINT = "sign_in.password_checked"

#: One message per kind of failure, never saying whether the account exists.
GENERIC_FAILURE = "The email or password is incorrect."
CODE_FAILURE = "That code is not valid. Check it and try again."
RECOVERY_FAILURE = "The email or backup code is incorrect."
THROTTLED = "Too many attempts. Wait a moment, then try again."
PASSWORDS_OFF = "This site signs in with passkeys only. Use your passkey, or ask an administrator."
LOCKED = (
    "Too many failed attempts: this way of signing in is locked. Use a passkey or a backup code, "
    "or ask your administrator to unlock it."
)
#: What the owner's notice of a lock (``factor_locked``) calls each locked second factor.
LOCKED_FACTORS = {
    "otp": "Signing in with your authenticator app",
    "backup": "Signing in with a backup code",
    "recovery": "Account recovery with a backup code",
}


@dataclass(frozen=True)
class StepResult:
    user: User | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.user is not None


@dataclass(frozen=True)
class Account:
    """The account a password step names, as values (no ORM object): what checking the password
    and choosing the way on need."""

    id: str
    password_hash: str | None
    is_active: bool
    is_admin: bool
    passkey_prompt_disabled: bool
    passkey_prompt_snoozed_until: datetime | None
    #: The user's ``password_version`` read with the hash that was checked: the session opens
    #: only while it is still the user's (``SignInService.password_unchanged``).
    password_version: int = 0


@dataclass(frozen=True)
class PasswordResult:
    account: Account | None
    error: str | None = None
    #: After a correct password: the second step that follows, as its page shows it (an
    #: authenticator app or a working passkey; backup codes only back these up, a flagged
    #: passkey's too); None when none can follow.
    second_step: SecondStepChoices | None = None
    #: After a correct password: the account's second step was a passkey, now flagged as a
    #: possible clone, and nothing else can pass it (no app, no backup code left). The password
    #: then opens only a session that adds a way in (``SignInService.password``).
    second_factor_lost: bool = False


def _refusal(verdict: Verdict) -> str:
    return LOCKED if verdict.locked else THROTTLED


_USERS: Table = User.__table__  # type: ignore[assignment]


@lru_cache(maxsize=1)
def _account_statement() -> Any:
    """The password step's one read: the account of an email (``Account``'s columns, Core: no
    ORM object, docs/performance.md) and the second steps it offers (an authenticator app, a
    passkey, a backup code; ``SignInService._account`` decides whether one can follow), as the
    second-step page the password step answers with shows them."""
    totp, passkey, backup_code = second_factor_columns(_USERS.c.id)
    flagged = flagged_passkey_column(_USERS.c.id)
    return select(
        _USERS.c.id,
        _USERS.c.password_hash,
        _USERS.c.disabled_at,
        _USERS.c.is_admin,
        _USERS.c.passkey_prompt_disabled,
        _USERS.c.passkey_prompt_snoozed_until,
        _USERS.c.password_version,
        totp.label("totp"),
        passkey.label("passkey"),
        backup_code.label("backup_code"),
        flagged.label("flagged"),
    ).where(_USERS.c.email == bindparam("email"))


#: The upgrade of an outdated hash (``SignInService.password``): Core, built once. Only of the
#: password that was checked: a change committed since keeps its own hash.
_REHASH = (
    update(_USERS)
    .where(_USERS.c.id == bindparam("user_id"), _USERS.c.password_version == bindparam("version"))
    .values(password_hash=bindparam("new"))
)
#: The version of the user's password now, the row held until the transaction ends
#: (``SignInService.password_unchanged``): Core, built once.
_VERSION_HELD = (
    select(_USERS.c.password_version)
    .where(_USERS.c.id == bindparam("user_id"))
    .with_for_update(read=True)
)


class SignInService:
    def __init__(
        self,
        db: Session,
        *,
        passwords: PasswordService,
        limiter: AttemptLimiter,
        address_key: Callable[[str], str],
        totp: TotpService,
        backup_codes: BackupCodeService,
        notifier: Notifier,
        policy: SignInPolicy | None = None,
        reads: ThinReads | None = None,
    ) -> None:
        self.db = db
        #: The account's read is the password step's one read, made before the step writes
        #: anything (its count goes alone: idp.services.rate_limits): a thin read when given.
        self.reads = reads
        self.policy = policy or SignInPolicy(passwords_allowed=True, signup_enabled=False)
        self.passwords = passwords
        self.limiter = limiter
        #: The rate-limit subject of a normalised address (``Container.address_key``).
        self.address_key = address_key
        self.totp = totp
        self.backup_codes = backup_codes
        self.notifier = notifier

    # -- first step -----------------------------------------------------------------------------
    def password(
        self, email: str, password: str, context: RequestContext, now: datetime
    ) -> PasswordResult:
        if not self.policy.passwords_allowed:
            # Passwordless-only deployment: the same answer for every email, nothing verified.
            audit.write(self.db, "login.password", outcome="failure", context=context,
                         reason="passwords_disabled")  # fmt: skip
            return PasswordResult(account=None, error=PASSWORDS_OFF)
        # Normalised once: the counter's subject and the account's look-up are the same address.
        email = normalise_email(email)
        key = self.limiter.account_key("pwd", self.address_key(email))
        # Counted before it is checked (docs/security.md): parallel guesses find each other.
        attempt = self.limiter.reserve(key, context.ip_address, now)
        user, second_step, flagged = self._account(email)
        if not attempt.verdict.allowed:
            # A refused attempt still counts (its reservation stands), and still costs one hash
            # so that timing says nothing either.
            self.passwords.verify(None, password)
            self._audit_failure("login.password", user.id if user else None, context, "throttled")
            return PasswordResult(account=None, error=_refusal(attempt.verdict))
        checkpoints.reached(CHECKPOINT)
        # An unknown email still pays for one Argon2id verification (similar timing).
        check = self.passwords.verify(user.password_hash if user else None, password)
        checkpoints.reached(PASSWORD_CHECKED_CHECKPOINT)
        # Policy "passkey required for admins": an admin's password opens nothing; answered like
        # a wrong password (as for a disabled account), so it is no oracle for admin passwords.
        admin_refused = user is not None and user.is_admin and self.policy.admin_passkey_required
        if user is None or not check.ok or not user.is_active or admin_refused:
            self.limiter.failed(attempt, now)
            reason = (
                "bad_credentials" if user is None or not check.ok
                else "disabled" if not user.is_active else "admin_passkey_required"
            )  # fmt: skip
            self._audit_failure("login.password", user.id if user else None, context, reason)
            return PasswordResult(account=None, error=GENERIC_FAILURE)
        self.limiter.succeeded(attempt)
        if check.needs_rehash:
            # Argon2 parameters changed since this hash was made: upgrade it transparently, without
            # the policy for new passwords (rehash when parameters change).
            new_hash = self.passwords.rehash(password)
            self.db.connection().execute(
                _REHASH, {"user_id": user.id, "new": new_hash, "version": user.password_version}
            )
        audit.write(self.db, "login.password", subject_id=user.id, context=context)
        # The account had a passkey as its second step and it was flagged: a second step nobody
        # can pass would lock the user out (docs/architecture.md), and a full session on the
        # password alone would drop a step the account had. The caller opens the restricted
        # session that may only add a way in (as ``require_second_factor`` does), so the user
        # gets back in without an admin and gets no more than a new way in (docs/security.md).
        lost = flagged and second_step is None
        return PasswordResult(account=user, second_step=second_step, second_factor_lost=lost)

    def password_unchanged(self, account: Account, context: RequestContext) -> str | None:
        """Before a session opens on the password alone (no second step follows): the error to
        show when the password that was checked is no longer the user's, else None.

        A change that committed while the check ran (Argon2 takes its time) ended the user's
        password sessions and waiting second steps before this sign-in had any (OWASP ASVS 4.0
        3.3: a credential change ends what the old one opened), so the version is read again,
        the user's row held (``SELECT ... FOR SHARE``; SQLite's write lock, idp.database): a
        change that came first is seen and refuses the session; one that comes second waits
        for this sign-in's commit, then ends its session as it ends every other. Audited as a
        failure; answered as a wrong password (nothing said about the change)."""
        # A Core execution, whose compiled FOR SHARE idp.database turns into SQLite's write lock.
        found = self.db.connection().execute(_VERSION_HELD, {"user_id": account.id}).first()
        if found is not None and int(found[0] or 0) == account.password_version:
            return None
        self._audit_failure("login.password", account.id, context, "password_changed")
        return GENERIC_FAILURE

    def _account(self, email: str) -> tuple[Account | None, SecondStepChoices | None, bool]:
        """The account of a normalised address (``UserService.find_by_email``), the second step
        that can follow (None if none can) and whether the account has a flagged passkey, in
        one statement."""
        if not email or len(email) > 320:
            return None, None, False
        if self.reads is not None:
            row = self.reads.first(_account_statement(), {"email": email})
        else:
            row = self.db.connection().execute(_account_statement(), {"email": email}).first()
        if row is None:
            return None, None, False
        (user_id, password_hash, disabled_at, is_admin, prompt_off, snoozed, version, totp,
         passkey, backup_code, flagged) = row  # fmt: skip
        account = Account(id=user_id, password_hash=password_hash,
                          is_active=disabled_at is None, is_admin=bool(is_admin),
                          passkey_prompt_disabled=bool(prompt_off),
                          passkey_prompt_snoozed_until=snoozed,
                          password_version=int(version or 0))  # fmt: skip
        # A flagged passkey's backup codes still back it up: the second step takes them.
        second = totp or passkey or (flagged and backup_code)
        choices = SecondStepChoices(email=email, totp=bool(totp), passkey=bool(passkey),
                                    backup_code=bool(backup_code))  # fmt: skip
        return account, (choices if second else None), bool(flagged)

    # -- second step ----------------------------------------------------------------------------
    def totp_code(
        self,
        user_id: str,
        active: bool,
        code: str,
        context: RequestContext,
        now: datetime,
        stored: StoredTotp | None,
    ) -> str | None:
        """A code from the authenticator app ``stored`` (None: the user has none) of the user
        ``user_id`` (``active``: not disabled), as the second step read them with the partial
        sign-in (``PartialLogins.live_for_code``): no ORM object is needed. The error to show,
        or None when the code passed."""

        def verify() -> bool:
            return self.totp.verify_stored(stored, code, now)

        return self._second_step(user_id, active, context, now, factor="otp", verify=verify)

    def backup_code(
        self, user: User, code: str, context: RequestContext, now: datetime
    ) -> StepResult:
        def spend() -> bool:
            return self.backup_codes.consume(user, code, now)

        error = self._second_step(user.id, user.is_active, context, now, factor="backup",
                                  verify=spend)  # fmt: skip
        if error is not None:
            return StepResult(user=None, error=error)
        self._backup_code_used(user, context)
        return StepResult(user=user)

    def _second_step(
        self,
        user_id: str,
        active: bool,
        context: RequestContext,
        now: datetime,
        *,
        factor: str,
        verify: Callable[[], bool],
    ) -> str | None:
        """Count, check and audit one second step; the error to show, or None when it passed."""
        key = self.limiter.account_key(factor, user_id)
        attempt = self.limiter.reserve(key, context.ip_address, now)
        event = "login.totp" if factor == "otp" else "login.backup_code"
        if not attempt.verdict.allowed:
            self._audit_failure(event, user_id, context, "throttled")
            self._announce_lock(attempt.locked_now, user_id, factor, now)
            return _refusal(attempt.verdict)
        checkpoints.reached(CHECKPOINT)
        if not active or not verify():
            locked_now = self.limiter.failed(attempt, now)
            self._audit_failure(event, user_id, context, "bad_code")
            self._announce_lock(locked_now, user_id, factor, now)
            return CODE_FAILURE
        self.limiter.succeeded(attempt)
        audit.write(self.db, event, subject_id=user_id, context=context)
        return None

    def owner_proved(self, user_id: str, email: str, context: RequestContext) -> None:
        """A passkey signed the account's owner in: forget the failures of their authenticator
        app, their backup codes as a second step and their recovery with a backup code, and
        lift those factors' locks, audited (``factor_locks.cleared``), in the sign-in's
        transaction.

        NIST SP 800-63B 5.2.2 (rate limiting): once the subscriber authenticates successfully,
        the verifier SHOULD disregard the failed attempts before it. Taken as far as it is sound
        here: the success must be the owner's, by a way in at least as strong as the factors it
        clears. A passkey is (a phishing-resistant cryptographic authenticator, where a backup
        code is a look-up secret and the app's code a one-time password), so whoever typed
        wrong codes at a recovery, which anyone who knows the address can do, no longer keeps
        its owner out until an admin steps in. A weaker success clears nothing beyond its own
        factor (``AttemptLimiter.succeeded``), and the threshold stays the policy's (at most
        100, the same clause): whoever guesses is still stopped by it. The password's counter
        is left as it is: its failures name the address, not a second factor."""
        recovery = self.address_key(normalise_email(email))
        keys = {
            self.limiter.account_key("otp", user_id): "otp",
            self.limiter.account_key("backup", user_id): "backup",
            self.limiter.account_key("backup", recovery): "recovery",
        }
        failures, locks = self.limiter.clear(list(keys))
        if failures or locks:
            audit.write(self.db, "factor_locks.cleared", subject_id=user_id, context=context,
                        failures_cleared=[keys[key] for key in failures],
                        locks_lifted=[keys[key] for key in locks], method="passkey")  # fmt: skip

    def unlock(self, user: User) -> None:
        """An admin lifts every lock and delay on the user's factors (limits)."""
        subject = self.address_key(normalise_email(user.email))
        for key in (
            self.limiter.account_key("pwd", subject),
            self.limiter.account_key("backup", subject),
            self.limiter.account_key("otp", user.id),
            self.limiter.account_key("backup", user.id),
        ):
            self.limiter.unlock(key)

    # -- recovery -------------------------------------------------------------------------------
    def recover(self, email: str, code: str, context: RequestContext, now: datetime) -> StepResult:
        """ "Can't access your account?": email + backup code, counted per email like passwords."""
        key = self.limiter.account_key("backup", self.address_key(normalise_email(email)))
        attempt = self.limiter.reserve(key, context.ip_address, now)
        user = UserService(self.db, self.passwords).find_by_email(email)
        if not attempt.verdict.allowed:
            self._audit_failure("login.recovery", user, context, "throttled")
            self._announce_lock(attempt.locked_now, user, "recovery", now)
            return StepResult(user=None, error=_refusal(attempt.verdict))
        checkpoints.reached(CHECKPOINT)
        # The same work for an unknown or disabled email as for a known one (no timing oracle):
        # the code is hashed and looked up either way, against no account's codes then.
        usable = user if user is not None and user.is_active else None
        spent = self.backup_codes.consume(usable, code, now)
        if usable is None or not spent:
            locked_now = self.limiter.failed(attempt, now)
            self._audit_failure("login.recovery", user, context, "bad_code")
            self._announce_lock(locked_now, usable, "recovery", now)
            return StepResult(user=None, error=RECOVERY_FAILURE)
        user = usable
        self.limiter.succeeded(attempt)
        audit.write(self.db, "login.recovery", subject_id=user.id, context=context)
        self._backup_code_used(user, context)
        return StepResult(user=user)

    def _announce_lock(
        self, locked_now: bool, user: User | str | None, factor: str, now: datetime
    ) -> None:
        """Tell the owner that this attempt locked their second factor ``factor`` (a key of
        ``LOCKED_FACTORS``): which one, when, and the ways in that are left. Only the attempt
        that wrote the lock (``locked_now``: one of however many parallel wrong codes reached
        it, idp.services.factor_locks) sends it, so each lock is announced once, never each
        wrong code; in the lock's transaction, so a rollback announces nothing. An unknown or
        disabled account gets nothing: nobody would act on it (``user`` None, or no longer
        active)."""
        if not locked_now or user is None:
            return
        owner = self.db.get(User, user) if isinstance(user, str) else user
        if owner is None or not owner.is_active:
            return
        self.notifier.notify(owner, "factor_locked", factor=LOCKED_FACTORS[factor], locked_at=now)

    def _backup_code_used(self, user: User, context: RequestContext) -> None:
        remaining = self.backup_codes.remaining(user)
        audit.write(self.db, "backup_code.used", subject_id=user.id, context=context,
                     remaining=remaining)  # fmt: skip
        self.notifier.notify(user, "backup_code_used", remaining=remaining)

    def _audit_failure(
        self, kind: str, user: User | str | None, context: RequestContext, reason: str
    ) -> None:
        """``user``: the account (or its id) the attempt named, None when none."""
        subject = user.id if isinstance(user, User) else user
        audit.write(self.db, kind, outcome="failure", subject_id=subject, context=context,
                    reason=reason)  # fmt: skip

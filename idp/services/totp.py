"""Authenticator apps (TOTP, RFC 6238) with pyotp; QR codes with segno."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Table, bindparam, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from idp import checkpoints
from idp.models import TotpCredential, User
from idp.services.user_locks import lock_user_row
from idp.session_statements import statements_of

STEP_SECONDS = 30
SECRET_BYTES = 20  # 160 bits: RFC 4226 4 recommends at least 128, ideally 160
DIGITS = 6


#: How long a started enrolment (the QR code on the page) may wait for its first code: the same
#: key is shown on every reload and after every wrong code until then (or until Cancel).
ENROLMENT_TTL_SECONDS = 900
#: A code from this many steps around now (10 minutes either way) but outside the accepted window
#: is the right key on a phone whose clock is off: only then is the clock worth mentioning.
CLOCK_HINT_STEPS = 20

#: Why a first code was refused: what the set-up page says (each names what happened).
CODE_FORMAT = "format"
CODE_CLOCK = "clock"
CODE_MISMATCH = "mismatch"
#: Where ``confirm_enrolment`` has read the user's app, before it stores the new one (tests hold
#: a request here: idp.checkpoints).
CONFIRM_CHECKPOINT = "totp.confirm"


class Confirmation(Enum):
    """What ``confirm_enrolment`` did with a first code."""

    #: The code did not confirm the started enrolment: nothing stored.
    REFUSED = "refused"
    #: The account has an app already (another browser's, set up meanwhile): it stays.
    TAKEN = "taken"
    #: The account's app, stored.
    ADDED = "added"
    #: Stored over the app the account had (a recovery session's): that one stopped working,
    #: which is its removal, announced and audited as one (docs/security.md).
    REPLACED = "replaced"


@dataclass(frozen=True)
class StoredTotp:
    """A user's authenticator app as checking a code needs it, read as values (no ORM object):
    the second step reads it with the partial sign-in (``PartialLogins.live_for_code``)."""

    user_id: str
    secret_encrypted: str
    #: Whether its enrolment was proved by a first code (an unconfirmed one accepts nothing).
    confirmed: bool

    @classmethod
    def of(cls, credential: TotpCredential) -> StoredTotp:
        return cls(credential.user_id, credential.secret_encrypted,
                   credential.confirmed_at is not None)  # fmt: skip


@dataclass(frozen=True)
class TotpEnrolment:
    secret: str  # base32, shown as text beside the QR code
    uri: str  # otpauth:// for the QR code
    qr_svg: str
    #: The secret and its user, encrypted: the browser holds it until the first code comes back,
    #: so showing the set-up page (a GET) writes nothing on the server (RFC 9110 9.2.1).
    sealed: str


class TotpService:
    def __init__(self, db: Session, fernet: Fernet, issuer_name: str) -> None:
        self.db = db
        self.fernet = fernet
        self.issuer_name = issuer_name
        # The session's identity map holds its objects weakly: without a reference here, the
        # credential that ``is_enabled`` loaded is gone by ``verify`` and read again. Holding it
        # makes the second ``get`` of a request a lookup in the identity map, no query (the
        # session still expires it at commit, and then reads it afresh).
        self._loaded: dict[str, TotpCredential] = {}

    def get(self, user: User) -> TotpCredential | None:
        credential = self.db.get(TotpCredential, user.id)
        if credential is not None:
            self._loaded[user.id] = credential
        return credential

    def is_enabled(self, user: User) -> bool:
        credential = self.get(user)
        return credential is not None and credential.confirmed_at is not None

    def begin_enrolment(self, user: User, now: datetime) -> TotpEnrolment:
        """A new secret for the set-up page; nothing is stored until the first code proves it."""
        secret = pyotp.random_base32(length=SECRET_BYTES * 8 // 5)
        sealed = self.fernet.encrypt_at_time(
            f"{user.id}:{secret}".encode(), int(now.timestamp())
        ).decode()
        return self._enrolment(user, secret, sealed)

    def pending_enrolment(self, user: User, sealed: object, now: datetime) -> TotpEnrolment:
        """The enrolment this browser started, while it is valid; else a new one. A reload shows
        the key already scanned instead of a new one that would refuse the app's codes."""
        return self.resume_enrolment(user, sealed, now) or self.begin_enrolment(user, now)

    def refusal(self, user: User, sealed: object, code: str, now: datetime) -> str:
        """Why ``confirm_enrolment`` refused ``code``: not six digits, a code of this key from a
        phone whose clock is off by more than a step (RFC 6238 6: the validation window), or a
        code that does not belong to this key at all."""
        code = "".join(code.split())
        if len(code) != DIGITS or not code.isdigit():
            return CODE_FORMAT
        secret = self._unseal(user, sealed, now)
        if secret is None:
            return CODE_MISMATCH
        totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
        current = int(now.timestamp()) // STEP_SECONDS
        for step in range(current - CLOCK_HINT_STEPS, current + CLOCK_HINT_STEPS + 1):
            if pyotp.utils.strings_equal(totp.generate_otp(step), code):
                return CODE_CLOCK
        return CODE_MISMATCH

    def resume_enrolment(self, user: User, sealed: object, now: datetime) -> TotpEnrolment | None:
        """The enrolment a page started (shown again after a wrong code), if still valid."""
        secret = self._unseal(user, sealed, now)
        return None if secret is None else self._enrolment(user, secret, str(sealed))

    def confirm_enrolment(
        self, user: User, sealed: object, code: str, now: datetime, *, replace: bool = False
    ) -> Confirmation:
        """Store the started enrolment's secret, confirmed, once a first code matches it.
        ``TAKEN``: the user has an app already and ``replace`` (a recovery session, whose app was
        lost) is not given: a confirmed app is replaced only by removing it first (its step-up,
        notice and audit), so another browser's enrolment that won the race is kept; with
        ``replace`` it is ``REPLACED``, which the caller announces as the old app's removal. The
        user's row is locked before the app is read, until the transaction ends (as for the
        backup codes and removals, idp.services.method_removal): two browsers confirming at once
        each found no app, and the second's INSERT failed on the first's row."""
        secret = self._unseal(user, sealed, now)
        step = None if secret is None else _matching_step(secret, code, now)
        if secret is None or step is None:
            return Confirmation.REFUSED
        lock_user_row(self.db, user)
        credential = self.get(user)
        checkpoints.reached(CONFIRM_CHECKPOINT)
        had_app = credential is not None and credential.confirmed_at is not None
        if had_app and not replace:
            return Confirmation.TAKEN
        if credential is None:
            credential = TotpCredential(user_id=user.id, secret_encrypted="")
            self.db.add(credential)
        credential.secret_encrypted = self.fernet.encrypt(secret.encode()).decode()
        credential.confirmed_at = now
        # RFC 6238 5.2: the code just used is spent.
        credential.last_used_step = step
        return Confirmation.REPLACED if had_app else Confirmation.ADDED

    def _enrolment(self, user: User, secret: str, sealed: str) -> TotpEnrolment:
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=self.issuer_name)
        buffer = io.BytesIO()
        segno.make(uri, error="m").save(buffer, kind="svg", scale=5, xmldecl=False, svgns=True)
        return TotpEnrolment(secret=secret, uri=uri, qr_svg=buffer.getvalue().decode(),
                             sealed=sealed)  # fmt: skip

    def _unseal(self, user: User, sealed: object, now: datetime) -> str | None:
        if not isinstance(sealed, str) or len(sealed) > 1000:
            return None
        try:
            plain = self.fernet.decrypt_at_time(
                sealed.encode(), ENROLMENT_TTL_SECONDS, int(now.timestamp())
            ).decode()
        except (InvalidToken, UnicodeDecodeError):
            return None
        owner, _, secret = plain.partition(":")
        return secret if owner == user.id and secret else None

    def verify(self, user: User, code: str, now: datetime) -> bool:
        credential = self.get(user)
        if credential is None or credential.confirmed_at is None:
            return False
        step = self._accept(StoredTotp.of(credential), code, now)
        if step is None:
            return False
        # The claim wrote the step: the loaded object learns it as committed state, so the ORM
        # does not write it a second time at the next flush.
        set_committed_value(credential, "last_used_step", step)
        return True

    def verify_stored(self, stored: StoredTotp | None, code: str, now: datetime) -> bool:
        """``verify`` with the user's authenticator app already read, as values (None: none)."""
        if stored is None or not stored.confirmed:
            return False
        return self._accept(stored, code, now) is not None

    def remove(self, user: User) -> None:
        credential = self.get(user)
        if credential is not None:
            self._loaded.pop(user.id, None)
            self.db.delete(credential)

    def _secret(self, stored: StoredTotp) -> str:
        return self.fernet.decrypt(stored.secret_encrypted.encode()).decode()

    def _accept(self, stored: StoredTotp, code: str, now: datetime) -> int | None:
        """RFC 6238 5.2: accept the current and the previous step only, and never a step at or
        before the last accepted one. The step is claimed with one conditional UPDATE whose row
        count decides, so two parallel uses of one code cannot both pass. The step claimed, or
        None."""
        step = _matching_step(self._secret(stored), code, now)
        if step is None:
            return None
        claimed = statements_of(self.db).write(
            _CLAIM_STEP, {"claimed_user": stored.user_id, "step": step}
        )
        return step if claimed == 1 else None


_CREDENTIALS: Table = TotpCredential.__table__  # type: ignore[assignment]
#: The claim of a step (``_accept``): Core on the table, built once.
_CLAIM_STEP = (
    update(_CREDENTIALS)
    .where(
        _CREDENTIALS.c.user_id == bindparam("claimed_user"),
        _CREDENTIALS.c.last_used_step < bindparam("step"),
    )
    .values(last_used_step=bindparam("step"))
)


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    """RFC 6238 5.2: the current or the previous time step whose code this is, or None."""
    code = "".join(code.split())
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = int(now.timestamp()) // STEP_SECONDS
    for step in (current, current - 1):
        if pyotp.utils.strings_equal(totp.generate_otp(step), code):
            return step
    return None

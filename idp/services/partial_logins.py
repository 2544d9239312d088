"""The partial sign-in: a correct password waiting for its second step (docs/security.md,
"Sign-in, passkeys and assurance").

The browser holds only a random secret (in its signed session cookie); the server keeps its hash
with the user, the authorization request the sign-in serves and where to go next. It lives ten
minutes and is spent once, by whichever second step finishes first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, bindparam, exists, insert, or_, select, update
from sqlalchemy.orm import Session

from idp.models import BackupCode, PartialLogin, Passkey, TotpCredential, User
from idp.services.consume import consume_once_statement, consume_prepared
from idp.services.crypto import new_secret, token_hash
from idp.services.totp import StoredTotp
from idp.session_statements import statements_of

if TYPE_CHECKING:
    from idp.thin_reads import ThinReads

#: How long the second step may take after a correct password.
PARTIAL_LOGIN_TTL = timedelta(minutes=10)

_PARTIALS: Table = PartialLogin.__table__  # type: ignore[assignment]
_USERS: Table = User.__table__  # type: ignore[assignment]
_TOTP: Table = TotpCredential.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class SecondStepChoices:
    """What the second-step page shows: whose sign-in it finishes and which second steps the
    user can take (an authenticator app, a passkey, a backup code)."""

    email: str
    totp: bool
    passkey: bool
    backup_code: bool


@dataclass(frozen=True)
class PartialForCode:
    """A live partial sign-in as checking an authenticator app's code and finishing the sign-in
    need it, read as values: no ORM object of the partial sign-in, its user or their app."""

    id_hash: str
    user_id: str
    #: Whether the account is enabled (``User.is_active``).
    user_active: bool
    next_path: str | None
    #: The authorization request the sign-in is for (None: none).
    pending_request_id: str | None
    #: The user's authenticator app (None: none).
    totp: StoredTotp | None


def second_factor_columns(user_id: Any) -> tuple[Any, Any, Any]:
    """Whether the user ``user_id`` (a column or a value) has a confirmed authenticator app, a
    working passkey and an unused backup code: three ``EXISTS`` for one statement. A passkey
    flagged as a possible clone is refused at every sign-in until removed (WebAuthn L3 6.1.1),
    so it is no second step either (docs/security.md, "Sign-in, passkeys and assurance")."""
    return (
        exists().where(TotpCredential.user_id == user_id, TotpCredential.confirmed_at.is_not(None)),
        exists().where(Passkey.user_id == user_id, Passkey.flagged_at.is_(None)),
        exists().where(BackupCode.user_id == user_id, BackupCode.consumed_at.is_(None)),
    )


def flagged_passkey_column(user_id: Any) -> Any:
    """Whether the user ``user_id`` has a passkey flagged as a possible clone: an ``EXISTS``."""
    return exists().where(Passkey.user_id == user_id, Passkey.flagged_at.is_not(None))


@lru_cache(maxsize=1)
def _begin_statement() -> Any:
    # Core on the table: nothing reads the row back in this request, so no ORM object is made.
    return insert(_PARTIALS)


#: The spend (the consume-once primitive's prepared form): Core on the table, built once. It
#: finishes only a sign-in whose password is still the user's: the version its check read is
#: the user's version now (None: begun before revision 0029, finished as before).
_SPEND = consume_once_statement(
    _PARTIALS,
    _PARTIALS.c.id_hash == bindparam("spent_id"),
    or_(
        _PARTIALS.c.password_version.is_(None),
        _PARTIALS.c.password_version
        == select(_USERS.c.password_version)
        .where(_USERS.c.id == _PARTIALS.c.user_id)
        .scalar_subquery(),
    ),
    columns=[_PARTIALS.c.id_hash],
)
#: Ending a user's unspent partial sign-ins (``PartialLogins.end_for``): Core, built once.
_END = (
    update(_PARTIALS)
    .where(_PARTIALS.c.user_id == bindparam("ended_user"), _PARTIALS.c.consumed_at.is_(None))
    .values(consumed_at=bindparam("ended_at"))
)


@lru_cache(maxsize=1)
def _choices_statement() -> Any:
    # Core, the columns the page needs: a page that shows an address loads no ORM object (about
    # a third of the ORM load of the partial sign-in and its user, docs/performance.md).
    return (
        select(
            _PARTIALS.c.consumed_at,
            _PARTIALS.c.expires_at,
            _USERS.c.email,
            *(
                column.label(name)
                for column, name in zip(
                    second_factor_columns(_PARTIALS.c.user_id),
                    ("totp", "passkey", "backup_code"),
                    strict=True,
                )
            ),
        )
        .join(_USERS, _USERS.c.id == _PARTIALS.c.user_id)
        .where(_PARTIALS.c.id_hash == bindparam("id_hash"))
    )


@lru_cache(maxsize=1)
def _for_code_statement() -> Any:
    # Core, the columns the check and the finish need (``PartialForCode``).
    return (
        select(
            _PARTIALS.c.consumed_at,
            _PARTIALS.c.expires_at,
            _PARTIALS.c.id_hash,
            _PARTIALS.c.user_id,
            _PARTIALS.c.next_path,
            _PARTIALS.c.pending_request_id,
            _USERS.c.disabled_at,
            _TOTP.c.secret_encrypted,
            _TOTP.c.confirmed_at,
        )
        .join(_USERS, _USERS.c.id == _PARTIALS.c.user_id)
        .outerjoin(_TOTP, _TOTP.c.user_id == _PARTIALS.c.user_id)
        .where(_PARTIALS.c.id_hash == bindparam("id_hash"))
    )


class PartialLogins:
    """``reads``: the second step's reads of a partial sign-in are single statements made before
    the request writes anything, so they go as thin reads (idp.thin_reads) when given: the page
    then opens no ``Session`` at all, and the code's check begins none before its attempt is
    counted (idp.services.rate_limits ``DatabaseCounters``). Whether the partial sign-in is still
    live is decided again by its spend, one conditional UPDATE (``spend``)."""

    def __init__(self, db: Session | Callable[[], Session], reads: ThinReads | None = None) -> None:
        # A callable (the scoped session) is called only when a Session is needed: with thin
        # reads, the page makes none.
        self._db: Callable[[], Session] = db if callable(db) else lambda: db
        self.reads = reads

    @property
    def db(self) -> Session:
        return self._db()

    def _first(self, statement: Any, raw: str) -> Any:
        parameters = {"id_hash": token_hash(raw)}
        if self.reads is not None:
            return self.reads.first(statement, parameters)
        return statements_of(self.db).first(statement, parameters)

    def begin(
        self,
        user_id: str,
        pending_request_id: str | None,
        next_path: str,
        now: datetime,
        password_version: int,
    ) -> str:
        """After a correct password: the secret the browser keeps (the caller commits).
        ``password_version``: the user's version the password check read (``spend``)."""
        raw = new_secret(32)
        statements_of(self.db).write(
            _begin_statement(),
            {
                "id_hash": token_hash(raw),
                "user_id": user_id,
                "amr": ["pwd"],
                "pending_request_id": pending_request_id,
                "next_path": next_path,
                "created_at": now,
                "expires_at": now + PARTIAL_LOGIN_TTL,
                "consumed_at": None,
                "password_version": password_version,
            },
        )
        return raw

    def live(self, raw: str, now: datetime) -> PartialLogin | None:
        """The partial sign-in the secret names, if neither spent nor expired."""
        partial = self.db.get(PartialLogin, token_hash(raw))
        return partial if _is_live(partial, now) else None

    def live_choices(self, raw: str, now: datetime) -> SecondStepChoices | None:
        """What the second-step page offers for the partial sign-in the secret names, if neither
        spent nor expired (``live``), in one statement."""
        found = self._first(_choices_statement(), raw)
        if found is None or found[0] is not None or found[1] <= now:
            return None
        return SecondStepChoices(email=found[2], totp=bool(found[3]), passkey=bool(found[4]),
                                 backup_code=bool(found[5]))  # fmt: skip

    def live_for_code(self, raw: str, now: datetime) -> PartialForCode | None:
        """``live``, its user's state and their authenticator app, in one statement: what
        checking a code and finishing the sign-in need."""
        found = self._first(_for_code_statement(), raw)
        if found is None or found[0] is not None or found[1] <= now:
            return None
        (_consumed, _expires, id_hash, user_id, next_path, pending_request_id, disabled_at, secret,
         confirmed) = found  # fmt: skip
        stored = None if secret is None else StoredTotp(user_id, secret, confirmed is not None)
        return PartialForCode(id_hash=id_hash, user_id=user_id, user_active=disabled_at is None,
                              next_path=next_path, pending_request_id=pending_request_id,
                              totp=stored)  # fmt: skip

    def spend(self, id_hash: str, now: datetime) -> bool:
        """Finish the partial sign-in ``id_hash`` once; False when another second step finished
        it first, or when the password it checked was replaced since (a change that committed
        after the check and before ``begin``, which ``end_for`` could not see: the password is
        no longer the user's, and whoever knew it opens no session, OWASP ASVS 4.0 3.3)."""
        return consume_prepared(self.db, _SPEND, now=now, spent_id=id_hash) is not None

    def end_for(self, user_id: str, now: datetime) -> int:
        """End every unspent partial sign-in of ``user_id`` when their password changes or goes:
        each rests on the old password, and whoever knew it must not finish one with a second
        factor (OWASP ASVS 4.0 2.1 and 3.3: a credential change ends what the old one opened).
        One conditional UPDATE, as ``spend`` is, so a second step racing it either finished
        first or finds its partial sign-in spent and opens no session. How many it ended (the
        caller commits)."""
        return statements_of(self.db).write(_END, {"ended_user": user_id, "ended_at": now})


def _is_live(partial: PartialLogin | None, now: datetime) -> bool:
    return partial is not None and partial.consumed_at is None and partial.expires_at > now

"""The credential record a passkey sign-in reads and updates (WebAuthn L3 7.2: "the credential
record"), as prepared Core statements on the request's connection: one SELECT of the passkey and
its owner, one UPDATE of what the ceremony changed. No ORM load with a joined relation and no
unit-of-work flush for the hottest page of a sign-in (docs/performance.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session, make_transient_to_detached

from idp.models import Passkey, User
from idp.models.base import from_values
from idp.session_statements import statements_of

_PASSKEYS = cast(Table, Passkey.__table__)
_USERS = cast(Table, User.__table__)
_p = _PASSKEYS.c
_USER_KEYS = tuple(column.key for column in _USERS.columns)

#: Built once: the passkey's own columns that a sign-in checks, and its owner's row.
_LOAD = (
    select(
        _p.credential_id,
        _p.user_id,
        _p.public_key,
        _p.sign_count,
        _p.backup_eligible,
        _p.flagged_at,
        *(column.label(f"owner_{column.key}") for column in _USERS.columns),
    )
    .join(_USERS, _USERS.c.id == _p.user_id)
    .where(_p.credential_id == bindparam("credential_id"))
)
#: A verified assertion: the counter, the backup state (L3 6.1.3: BS may change) and the last use.
_USED = (
    update(_PASSKEYS)
    .where(_p.credential_id == bindparam("passkey"))
    .values(
        sign_count=bindparam("counter"),
        backed_up=bindparam("backup_state"),
        last_used_at=bindparam("now"),
    )
)
#: A credential that looked cloned (L3 6.1.1): refused until the user removes it.
_FLAGGED = (
    update(_PASSKEYS)
    .where(_p.credential_id == bindparam("passkey"))
    .values(flagged_at=bindparam("now"), flagged_reason=bindparam("reason"))
)


@dataclass(frozen=True)
class StoredPasskey:
    """What a sign-in reads of a credential record, and its owner."""

    credential_id: str
    user_id: str
    public_key: bytes
    sign_count: int
    backup_eligible: bool
    flagged_at: datetime | None
    user: User


def load_for_sign_in(db: Session, credential_id: str) -> StoredPasskey | None:
    """The passkey ``credential_id`` and its owner, by one SELECT. The owner is a ``User`` of
    ``db`` (the session started next refers to it) that costs no statement: the one this session
    already holds, or one made from the row and attached as loaded, unchanged."""
    row: Any = statements_of(db).first(_LOAD, {"credential_id": credential_id})
    if row is None:
        return None
    held = db.identity_map.get(db.identity_key(User, row.user_id))
    if isinstance(held, User):
        user = held
    else:
        user = from_values(User, {key: getattr(row, f"owner_{key}") for key in _USER_KEYS})
        make_transient_to_detached(user)
        db.add(user)
    return StoredPasskey(credential_id=row.credential_id, user_id=row.user_id,
                         public_key=row.public_key, sign_count=row.sign_count,
                         backup_eligible=row.backup_eligible, flagged_at=row.flagged_at,
                         user=user)  # fmt: skip


def record_use(
    db: Session, passkey: StoredPasskey, sign_count: int, backed_up: bool, now: datetime
) -> None:
    statements_of(db).write(_USED, {"passkey": passkey.credential_id, "counter": sign_count,
                                    "backup_state": backed_up, "now": now})  # fmt: skip


def flag(db: Session, passkey: StoredPasskey, reason: str, now: datetime) -> None:
    statements_of(db).write(
        _FLAGGED, {"passkey": passkey.credential_id, "reason": reason, "now": now}
    )

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

from idp import checkpoints
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
#: The same for a device-bound passkey's counter (L3 6.1.1; 7.2's signCount step): only where the
#: stored count is still below the new one. Another sign-in may have stored a count since this
#: one read it (PostgreSQL waits for its row lock and checks the committed row; SQLite's reads
#: come before the write lock): no row changed is a count that did not increase, never a lower
#: count written over a higher one.
_COUNTED = _USED.where(_p.sign_count < bindparam("counter"))
#: A credential that looked cloned (L3 6.1.1): refused until the user removes it. The count
#: stored when it was flagged, or none if the passkey was removed meanwhile.
_FLAGGED = (
    update(_PASSKEYS)
    .where(_p.credential_id == bindparam("passkey"))
    .values(flagged_at=bindparam("now"), flagged_reason=bindparam("reason"))
    .returning(_p.sign_count)
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


#: Where a sign-in has read the passkey and its owner, before it writes anything (tests hold it).
LOADED = "passkey.loaded"


def load_for_sign_in(db: Session, credential_id: str) -> StoredPasskey | None:
    """The passkey ``credential_id`` and its owner, by one SELECT. The owner is a ``User`` of
    ``db`` (the session started next refers to it) that costs no statement: the one this session
    already holds, or one made from the row and attached as loaded, unchanged."""
    row: Any = statements_of(db).first(_LOAD, {"credential_id": credential_id})
    if row is None:
        return None
    checkpoints.reached(LOADED)
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
    db: Session,
    passkey: StoredPasskey,
    sign_count: int,
    backed_up: bool,
    now: datetime,
    counted: bool = False,
) -> bool:
    """Store a verified assertion; ``counted``: only if the stored count is below ``sign_count``
    (``_COUNTED``). Whether the row changed."""
    changed = statements_of(db).write(_COUNTED if counted else _USED, {
        "passkey": passkey.credential_id, "counter": sign_count, "backup_state": backed_up,
        "now": now,
    })  # fmt: skip
    return changed > 0


def flag(db: Session, passkey: StoredPasskey, reason: str, now: datetime) -> int | None:
    """Flag ``passkey``; the count stored, None if it is gone."""
    row: Any = statements_of(db).first(
        _FLAGGED, {"passkey": passkey.credential_id, "reason": reason, "now": now}
    )
    return None if row is None else int(row.sign_count)

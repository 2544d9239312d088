"""Backup codes: generated server-side, shown once, stored as keyed hashes, spent once."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from idp import checkpoints
from idp.models import BackupCode, User
from idp.services.consume import consume_once
from idp.services.crypto import KeyedHasher
from idp.services.user_locks import lock_user_row

CODE_COUNT = 10
# Crockford-style alphabet without look-alikes (no 0/o, 1/i/l, u): 30 symbols -> 4.9 bits each.
ALPHABET = "23456789abcdefghjkmnpqrstvwxyz"
GROUPS, GROUP_LENGTH = 4, 4  # 16 symbols = 78 bits, above the 64 the issue asks for


#: The user id no account has (ids are random hex): the codes an unknown email's recovery
#: looks up.
NO_ACCOUNT = "no-account"

#: Where ``first_set`` has decided whether the account needs its first codes, before it writes
#: them (tests hold a request here: idp.checkpoints).
FIRST_SET_CHECKPOINT = "backup_codes.first_set"
#: Where new codes have replaced the old ones (``regenerate``, ``first_set``), before the commit
#: (tests hold a request here).
REGENERATE_CHECKPOINT = "backup_codes.regenerate"


def normalise(code: str) -> str:
    return "".join(c for c in code.lower() if c in ALPHABET)


def _new_code() -> str:
    symbols = "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP_LENGTH))
    return "-".join(symbols[i : i + GROUP_LENGTH] for i in range(0, len(symbols), GROUP_LENGTH))


class BackupCodeService:
    def __init__(self, db: Session, hasher: KeyedHasher) -> None:
        self.db = db
        self.hasher = hasher

    def regenerate(self, user: User, now: datetime) -> list[str]:
        """A new set of codes; the previous set is void. The user's row is locked first
        (``lock_user_row``): two tabs (or a double submit) getting new codes at once each
        deleted the codes it saw and added ten, and on PostgreSQL the second's DELETE, which
        waited for the first's, did not see the first's new codes: twenty stayed live, ten of
        them perhaps never seen, while each page said the codes before it stopped working.
        Held, the second deletes the first's (docs/security.md, "Sign-in, passkeys and
        assurance")."""
        lock_user_row(self.db, user)
        return self._replace(user, now)

    def first_set(self, user: User, now: datetime) -> list[str]:
        """The account's first codes, when its first passkey or authenticator app arrives; none
        when it has codes already. The user's row is locked first (``lock_user_row``): two tabs
        adding a first method at once each found no codes, and the second set voided the first,
        which its tab had just shown as the codes to keep."""
        lock_user_row(self.db, user)
        missing = not self.has_codes(user)
        checkpoints.reached(FIRST_SET_CHECKPOINT)
        return self._replace(user, now) if missing else []

    def _replace(self, user: User, now: datetime) -> list[str]:
        self.db.execute(delete(BackupCode).where(BackupCode.user_id == user.id))
        codes = [_new_code() for _ in range(CODE_COUNT)]
        for code in codes:
            self.db.add(
                BackupCode(user_id=user.id, code_hash=self._hash(user.id, code), created_at=now)
            )
        self.db.flush()
        checkpoints.reached(REGENERATE_CHECKPOINT)
        return codes

    def remaining(self, user: User) -> int:
        return int(
            self.db.scalar(
                select(func.count())
                .select_from(BackupCode)
                .where(BackupCode.user_id == user.id, BackupCode.consumed_at.is_(None))
            )
            or 0
        )

    def has_codes(self, user: User) -> bool:
        return self.remaining(user) > 0

    def consume(self, user: User | None, code: str, now: datetime) -> bool:
        """Spend one code through the consume-once primitive: of two parallel uses, one wins.

        ``user`` None (recovery for an unknown or disabled email): the same keyed hash and the
        same look-up are done for ``NO_ACCOUNT``, which owns no code, so the answer takes the same
        work whether or not the email has a usable account (docs/security.md)."""
        user_id = user.id if user is not None else NO_ACCOUNT
        normalised = normalise(code)
        if len(normalised) != GROUPS * GROUP_LENGTH:
            return False
        return consume_once(
            self.db,
            BackupCode,
            BackupCode.user_id == user_id,
            BackupCode.code_hash == self._hash(user_id, normalised),
            now=now,
        )

    def void(self, user: User) -> None:
        self.db.execute(delete(BackupCode).where(BackupCode.user_id == user.id))

    def _hash(self, user_id: str, code: str) -> str:
        # Keyed by the server secret and salted by the user: a leaked table is useless, and one
        # user's code never matches another's.
        return self.hasher.hash(f"{user_id}:{normalise(code)}")

"""Which sign-in method a user may remove: the rules that keep a way in (docs/configuration.md,
``passwords_allowed`` and ``admin_passkey_required``).

Two rules, decided here and nowhere else, for the portal (idp.account) and any other surface
(the removal itself, the portal's and the console's alike, is ``remove_passkey``):

- **Never remove the last way in.** A passkey is a way in unless idp flagged it as a possible
  clone (refused at every sign-in until removed, WebAuthn L3 6.1.1); a password is one only where
  the sign-in policy allows passwords. An authenticator app is a second step after a password,
  never a way in alone, so removing it never locks anyone out.
- **Admins keep a passkey** where the policy says ``admin_passkey_required``: such an admin
  signs in with a passkey only, so their last one stays whatever else they have.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from idp import checkpoints
from idp.models import Passkey, User
from idp.services.sessions import end_passkey_sessions
from idp.services.sign_in_policy import SignInPolicy
from idp.services.user_locks import lock_user_row

#: Where a removal has decided, before it acts (tests hold parallel removals here).
CHECKPOINT = "method_removal.decided"
#: Where the console's removal of a passkey has read it, before ``remove_passkey`` (tests hold
#: it here while another removal, the user's or another admin's, comes first).
CONSOLE_CHECKPOINT = "method_removal.console_removing"


class Refusal(Enum):
    """Why a removal is refused (None: it is allowed)."""

    #: The method is the user's only way in.
    LAST_WAY_IN = "last_way_in"
    #: The passkey is an admin's last one, and the policy requires admins to keep a passkey.
    ADMIN_PASSKEY = "admin_passkey"


class MethodRemoval:
    """Answers whether removing one of a user's sign-in methods is allowed."""

    def __init__(self, db: Session, policy: SignInPolicy) -> None:
        self.db = db
        self.policy = policy

    def _working_passkeys(self, user: User, *, locked: bool = True) -> list[Passkey]:
        """``user``'s passkeys that sign in: a flagged one is refused until it is removed.

        ``locked``: the user's row is locked first, until the transaction ends (PostgreSQL's row
        lock; SQLite's write lock, taken by ``SELECT ... FOR UPDATE``, idp.database): two
        removals in parallel (two tabs, the last passkey and the password) each saw the other's
        method still there and together left no way in. Held, the second decides after the
        first committed, on the user as it stands then (the password too: ``refresh``). A page
        that only says what a removal would do reads without it (it changes nothing)."""
        if locked:
            lock_user_row(self.db, user)
        query = select(Passkey).where(Passkey.user_id == user.id, Passkey.flagged_at.is_(None))
        return list(self.db.scalars(query))

    def _other_working_passkeys(
        self, user: User, passkey: Passkey, *, locked: bool = True
    ) -> list[Passkey]:
        return [p for p in self._working_passkeys(user, locked=locked)
                if p.credential_id != passkey.credential_id]  # fmt: skip

    def password_is_a_way_in(self, user: User) -> bool:
        """Whether ``user``'s password signs them in (with its second step, or into a session
        that adds one). Where policy turned passwords off, a password is no way in at all, and
        neither is an admin's where admins sign in with a passkey only: a backup-code recovery
        of such an admin may add a passkey only (an authenticator app would promote the session
        while the account still has no way in)."""
        return user.password_hash is not None and self.policy.password_signs_in(user.is_admin)

    def passkey_refusal(self, user: User, passkey: Passkey) -> Refusal | None:
        """Removing ``passkey`` (one of ``user``'s): refused when it is the last passkey of an
        admin who must keep one, or the last working passkey with no usable password beside
        it. A flagged passkey signs nobody in, so removing it takes no way in away."""
        refusal = self._passkey_refusal(user, passkey)
        checkpoints.reached(CHECKPOINT)
        return refusal

    def _passkey_refusal(self, user: User, passkey: Passkey) -> Refusal | None:
        if passkey.flagged_at is not None or self._other_working_passkeys(user, passkey):
            return None
        if user.is_admin and self.policy.admin_passkey_required:
            return Refusal.ADMIN_PASSKEY
        if not self.password_is_a_way_in(user):
            return Refusal.LAST_WAY_IN
        return None

    def leaves_no_way_in(self, user: User, passkey: Passkey) -> bool:
        """Whether removing ``passkey`` leaves ``user`` no way in, as a confirmation page says
        it: read without the lock (a page changes nothing), which a refusal's own decision takes.
        An admin may still remove it (a lost device), and then sends a login link."""
        return (
            passkey.flagged_at is None
            and not self._other_working_passkeys(user, passkey, locked=False)
            and not self.password_is_a_way_in(user)
        )

    def password_refusal(self, user: User) -> Refusal | None:
        """Going passwordless: only when a working passkey remains."""
        refusal = None if self._working_passkeys(user) else Refusal.LAST_WAY_IN
        checkpoints.reached(CHECKPOINT)
        return refusal

    def totp_refusal(self, user: User) -> Refusal | None:
        """An authenticator app is never a way in alone, so its removal is never refused."""
        return None


def remove_passkey(db: Session, passkey: Passkey, now: datetime) -> int | None:
    """Delete ``passkey`` and end every session it signed in (``end_passkey_sessions``): the
    one removal of the portal (``PasskeyService.remove``) and the console
    (``UserAdmin.revoke_passkey``). How many sessions that ended, or None if the passkey was gone
    already (another removal, the user's or an admin's, came first while this request decided):
    a conditional DELETE whose row count decides, so of removals racing each other one removes
    it and the caller audits and announces it, and the others nothing."""
    gone = db.execute(delete(Passkey).where(
        Passkey.credential_id == passkey.credential_id, Passkey.user_id == passkey.user_id
    ))  # fmt: skip
    if not getattr(gone, "rowcount", 0):
        return None
    return end_passkey_sessions(db, passkey.user_id, passkey.credential_id, now)

"""The signature-counter policy of a passkey sign-in (WebAuthn L3 6.1.1 "Signature Counter
Considerations" and 7.2, its signCount step): a device-bound credential whose counter does not
grow may be a clone; synced passkeys report 0 forever and are never held to it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, NoReturn

from sqlalchemy.orm import Session

from idp import checkpoints
from idp.services import audit
from idp.services.audit import RequestContext
from idp.services.passkey_checks import PasskeyError
from idp.services.passkey_records import StoredPasskey, flag, record_use

if TYPE_CHECKING:
    from idp.services.notifications import Notifier

#: Where a sign-in has checked the count it read and is about to store its own (tests hold it).
CHECKPOINT = "passkey.counter_checked"


def checked_sign_count(
    db: Session,
    passkey: StoredPasskey,
    new_count: int,
    context: RequestContext,
    now: datetime,
    notifier: Notifier | None = None,
) -> int:
    """WebAuthn L3 6.1.1 and 7.2 (signature counter). Synced passkeys report 0 forever: never
    held against them. A device-bound credential whose counter does not grow may be a clone:
    flag it, audit it, tell its owner (``notifier``) and refuse this sign-in. The count to
    store."""
    regressed = (new_count or passkey.sign_count) and new_count <= passkey.sign_count
    if regressed and not passkey.backup_eligible:
        flag(db, passkey, "sign_count_regression", now)
        _refused_as_a_clone(db, passkey, passkey.sign_count, new_count, context, notifier)
    return max(passkey.sign_count, new_count)


def store_use(
    db: Session,
    passkey: StoredPasskey,
    sign_count: int,
    backed_up: bool,
    context: RequestContext,
    now: datetime,
    notifier: Notifier | None = None,
) -> None:
    """Store the count ``checked_sign_count`` gave, the backup state and the last use, in the one
    UPDATE of the credential record. A device-bound counter is raised only where the stored
    count is still below it: another sign-in (the real key, or a clone racing it) that read the
    same count and stored its own first leaves this one a count that did not increase (WebAuthn
    L3 6.1.1; 7.2's signCount step), flagged and refused as ``checked_sign_count`` does."""
    counted = sign_count > 0 and not passkey.backup_eligible
    checkpoints.reached(CHECKPOINT)
    if record_use(db, passkey, sign_count, backed_up, now, counted=counted):
        return
    if not counted:
        # The uncounted UPDATE matches the row whatever its count: none matched, so the passkey
        # was removed (in the portal or the console) since this sign-in read it, and a removed
        # passkey signs nobody in (WebAuthn L3 7.2: the credential must be registered; the
        # sessions it signed in were ended with it, docs/security.md, Sessions).
        raise PasskeyError("unknown_credential")
    stored = flag(db, passkey, "sign_count_regression", now)
    if stored is None:  # removed since it was read: no clone to flag
        raise PasskeyError("unknown_credential")
    _refused_as_a_clone(db, passkey, stored, sign_count, context, notifier)


def _refused_as_a_clone(
    db: Session,
    passkey: StoredPasskey,
    stored: int,
    received: int,
    context: RequestContext,
    notifier: Notifier | None,
) -> NoReturn:
    """The flagged passkey's audit row and its owner's notice, then the sign-in's refusal. The
    passkey is no way in from now on (idp.services.method_removal) and whoever holds a copy may
    have signed in with it already: the owner hears of it at once (docs/security.md, "Mail and
    email addresses"), not at their next sign-in with the real key. Once flagged, a passkey is
    refused before its counter is read (``PasskeyService.authenticate``), so this is said once;
    the notice names no passkey, whose name whoever added or renamed it chose (as
    idp.services.passkey_names ``in_notice`` keeps out of every notice)."""
    audit.record(
        db, "passkey.flagged", outcome="failure", subject_id=passkey.user_id, context=context,
        credential_id=passkey.credential_id, stored_count=stored, received_count=received,
    )  # fmt: skip
    if notifier is not None:
        notifier.notify(passkey.user, "passkey_flagged")
    raise PasskeyError("sign_count_regression")

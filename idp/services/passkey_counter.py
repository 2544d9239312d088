"""The signature-counter policy of a passkey sign-in (WebAuthn L3 6.1.1 "Signature Counter
Considerations" and 7.2 steps 21/22): a device-bound credential whose counter does not grow may
be a clone; synced passkeys report 0 forever and are never held to it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from idp.services import audit
from idp.services.audit import RequestContext
from idp.services.passkey_checks import PasskeyError
from idp.services.passkey_records import StoredPasskey, flag


def checked_sign_count(
    db: Session, passkey: StoredPasskey, new_count: int, context: RequestContext, now: datetime
) -> int:
    """WebAuthn L3 6.1.1 and 7.2 (signature counter). Synced passkeys report 0 forever: never
    held against them. A device-bound credential whose counter does not grow may be a clone:
    flag it, audit it and refuse this sign-in. The count to store."""
    regressed = (new_count or passkey.sign_count) and new_count <= passkey.sign_count
    if regressed and not passkey.backup_eligible:
        flag(db, passkey, "sign_count_regression", now)
        audit.record(
            db, "passkey.flagged", outcome="failure", subject_id=passkey.user_id,
            context=context, credential_id=passkey.credential_id,
            stored_count=passkey.sign_count, received_count=new_count,
        )  # fmt: skip
        raise PasskeyError("sign_count_regression")
    return max(passkey.sign_count, new_count)

"""Who may use the admin console, decided without Flask.

Admin pages need the admin role **and** a passkey sign-in within the last ten minutes: an admin's
powers (issuing login links, disabling users, onboarding clients) are worth phishing for, so only a
recent phishing-resistant sign-in opens them (NIST SP 800-63B-4 AAL3-style re-authentication).
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from idp.models import BrowserSession

#: How recent the passkey sign-in behind an admin page must be.
ADMIN_REAUTH_WINDOW = timedelta(minutes=10)
#: amr values (RFC 8176) that a passkey sign-in records: hardware- or software-protected key.
PASSKEY_AMR = frozenset({"hwk", "swk"})


class AdminAccess(enum.Enum):
    GRANTED = "granted"
    #: No session: sign in first.
    SIGN_IN = "sign_in"
    #: Signed in, but not an admin: 403, whatever the route.
    FORBIDDEN = "forbidden"
    #: An admin whose session is not a passkey sign-in of the last ten minutes: sign in again.
    REAUTHENTICATE = "reauthenticate"


def admin_access(session: BrowserSession | None, now: datetime) -> AdminAccess:
    if session is None:
        return AdminAccess.SIGN_IN
    user = session.user
    if not user.is_admin or not user.is_active or session.restricted:
        return AdminAccess.FORBIDDEN
    # "user" (RFC 8176): the authenticator verified the user (WebAuthn L3 UV flag). Without it a
    # passkey is one factor, possession; the console needs it even where the sign-in policy
    # lets users sign in with "preferred" user verification.
    amr = set(session.amr)
    if not (PASSKEY_AMR & amr and "user" in amr) or now - session.auth_time > ADMIN_REAUTH_WINDOW:
        return AdminAccess.REAUTHENTICATE
    return AdminAccess.GRANTED

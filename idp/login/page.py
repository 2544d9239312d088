"""The sign-in page, shown by ``/login`` and, for a new authorization request that needs the
user, by the authorization endpoint itself (docs/architecture.md, a passkey sign-in step by step):
the browser then loads the page in the same round trip as the request, not after a redirect."""

from __future__ import annotations

from flask import render_template
from flask import session as flask_session

from idp.composition import clock, services
from idp.services.pending_authorizations import LivePending
from idp.web.sessions import FORGET_CREDENTIAL, browser_binding


def login_page(
    pending: LivePending | None, email: str, error: str | None, next_path: str | None
) -> str:
    policy = services().policy
    # The passkey request options travel with the page (idp/static/login.js starts conditional
    # mediation on load): no options request first, and a signed challenge, so that showing the
    # page reads and stores nothing (idp.services.challenges.ChallengeSigner).
    ceremony = services().sign_in_page_options(browser_binding(), clock().now())
    # A passkey this browser's user just removed (idp.account.passkeys, ``passkey_remove``): the
    # page tells the credential manager first, so that its autofill does not offer it here
    # (WebAuthn L3 5.1.10, signalUnknownCredential). Read only when there: a pop would rewrite
    # the cookie of every sign-in page.
    forget = flask_session.pop(FORGET_CREDENTIAL) if FORGET_CREDENTIAL in flask_session else None
    return render_template(
        "login/login.html",
        pending=pending,
        email=email,
        error=error,
        next_path=next_path,
        passwords_allowed=policy.passwords_allowed,
        signup_enabled=policy.signup_enabled,
        passkey_options={"challenge_id": ceremony.challenge_id, "publicKey": ceremony.options},
        forget_credential=forget,
    )

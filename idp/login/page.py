"""The sign-in page, shown by ``/login`` and, for a new authorization request that needs the
user, by the authorization endpoint itself (docs/architecture.md, a passkey sign-in step by step):
the browser then loads the page in the same round trip as the request, not after a redirect."""

from __future__ import annotations

from flask import render_template

from idp.composition import clock, services
from idp.services.pending_authorizations import LivePending
from idp.web.sessions import browser_binding


def login_page(
    pending: LivePending | None, email: str, error: str | None, next_path: str | None
) -> str:
    policy = services().policy
    # The passkey request options travel with the page (idp/static/login.js starts conditional
    # mediation on load): no options request first, and a signed challenge, so that showing the
    # page reads and stores nothing (idp.services.challenges.ChallengeSigner).
    ceremony = services().sign_in_page_options(browser_binding(), clock().now())
    return render_template(
        "login/login.html",
        pending=pending,
        email=email,
        error=error,
        next_path=next_path,
        passwords_allowed=policy.passwords_allowed,
        signup_enabled=policy.signup_enabled,
        passkey_options={"challenge_id": ceremony.challenge_id, "publicKey": ceremony.options},
    )

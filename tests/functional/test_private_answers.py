"""What an answer lets a cache or another person keep: every answer that carries a secret (backup
codes, an authorization code) is ``Cache-Control: no-store`` (OWASP ASVS 4.0 8.2.1), whatever its
media type; the portal's activity page shows a user no one else's address or browser."""

from __future__ import annotations

import html

from flask import Flask

from tests.support.admin import passkey_browser
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import CreatedUser, create_client
from tests.support.flow import RelyingParty, query_of, sign_in_address, start_session
from tests.support.passkey_flow import PasskeyPages


def _synced() -> SoftAuthenticator:
    return SoftAuthenticator(backup_eligible=True, backed_up=True, counter_step=0)


def test_json_answers_carrying_backup_codes_or_a_code_are_not_stored(
    app: Flask, user: CreatedUser
) -> None:
    """The first passkey's answer (JSON, its backup codes) and a passkey sign-in's answer for an
    authorization request (JSON, the client's redirect URI with the code) are secrets as much as
    the pages that show them: the answers say ``no-store`` (OWASP ASVS 4.0 8.2.1; RFC 9111
    5.2.2.5), not only the HTML ones."""
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    authenticator = _synced()
    added = pages.add_passkey(authenticator)
    assert added.status_code == 201
    assert len(added.get_json()["backup_codes"]) == 10
    assert added.headers.get("Cache-Control") == "no-store"

    rp = RelyingParty(app.test_client(), create_client(app))
    location = sign_in_address(rp.authorize())
    assert location is not None
    pending = query_of(location)["request"]
    signed_in = PasskeyPages(rp.browser).sign_in_with_passkey(authenticator, request=pending)
    assert signed_in.status_code == 200, signed_in.text
    assert "code" in query_of(signed_in.get_json()["redirect"])
    assert signed_in.headers.get("Cache-Control") == "no-store"


ADMIN_ADDRESS, ADMIN_BROWSER = "203.0.113.77", "AdminDesk/9.1 (Linux; the admin's own machine)"
USER_ADDRESS = "198.51.100.23"


def test_the_activity_page_shows_no_administrators_address_or_browser(
    app: Flask, user: CreatedUser
) -> None:
    """An administrator's action on an account (here: signing out all its sessions) is on the
    user's activity page, but the address and browser it came from are the administrator's
    personal data, not the user's: a user an admin acted on learned the admin's home address
    (OWASP ASVS 4.0 8.3.4, sensitive data identified and protected; 8.3.1, the least that the
    page needs). The user's own sign-ins, and attempts by someone else on the account, keep
    their address: that is what the page is for."""
    admin = passkey_browser(app, "admin@example.com")
    admin.browser.environ_base.update(REMOTE_ADDR=ADMIN_ADDRESS, HTTP_USER_AGENT=ADMIN_BROWSER)
    assert admin.post(f"/admin/users/{user.id}/sessions/revoke-all").status_code == 303
    browser = app.test_client()
    browser.environ_base.update(REMOTE_ADDR=USER_ADDRESS)
    start_session(browser, user)
    page = html.unescape(browser.get("/account/activity").text)
    assert "An administrator signed you out everywhere" in page, page
    assert USER_ADDRESS in page  # the user's own sign-in
    assert ADMIN_ADDRESS not in page
    assert "AdminDesk" not in page

"""What an answer lets a cache, a log or another party keep: every answer that carries a secret
(backup codes, an authorization code) is ``Cache-Control: no-store`` (OWASP ASVS 4.0 8.2.1),
whatever its media type."""

from __future__ import annotations

from flask import Flask

from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import CreatedUser, create_client
from tests.support.flow import RelyingParty, query_of, sign_in_address
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

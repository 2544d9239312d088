"""Assurance follows user verification: where the policy only prefers UV, a passkey assertion
without the UV flag (WebAuthn L3 6.1) proves possession alone. It never earns the phishing-resistant
acr values (``phr``, ``phrh``), ``mfa``, the ``user`` amr (RFC 8176), nor step-up credit in the
portal or the admin console."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient

from idp.services.assurance import ACR_MFA, ACR_PASSWORD
from tests.functional.test_admin_policy import policy_app, set_policy  # noqa: F401
from tests.support.authenticator import FLAG, SoftAuthenticator
from tests.support.factories import CreatedUser, create_client, create_user
from tests.support.flow import RelyingParty, csrf_token, jwt_parts, query_of, shown_address
from tests.support.passkey_flow import PasskeyPages


@dataclass
class PasskeyUser:
    user: CreatedUser
    authenticator: SoftAuthenticator


@pytest.fixture
def preferred(policy_app: Flask) -> Flask:  # noqa: F811
    set_policy(policy_app, user_verification="preferred")
    return policy_app


def passkey_user(app: Flask, email: str, *, admin: bool = False) -> PasskeyUser:
    """A user with a password and a passkey whose authenticator does not verify the user."""
    user = create_user(app, email=email, admin=admin)
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    authenticator = SoftAuthenticator(user_verified=False)
    assert pages.add_passkey(authenticator).status_code == 201
    return PasskeyUser(user, authenticator)


def passkey_sign_in(
    app: Flask, who: PasskeyUser, *, uv: bool, browser: FlaskClient | None = None
) -> PasskeyPages:
    pages = PasskeyPages(browser or app.test_client())
    ceremony = pages.authentication_options()
    flags = FLAG.UP | FLAG.UV if uv else FLAG.UP
    credential = who.authenticator.get(ceremony["publicKey"], flags=flags)
    verified = pages.verify(ceremony["challenge_id"], credential)
    assert verified.status_code == 200, verified.text
    return pages


def test_a_passkey_without_uv_earns_no_phishing_resistant_acr_and_no_user_amr(
    preferred: Flask,
) -> None:
    who = passkey_user(preferred, "ada@example.com")
    pages = passkey_sign_in(preferred, who, uv=False)
    rp = RelyingParty(pages.browser, create_client(preferred))
    # OIDC Core 3.1.2.1 acr_values: a request for phr(h) is not met by this session.
    for acr in ("phr", "phrh", ACR_MFA):
        refused = query_of(rp.authorize(acr_values=acr, prompt="none").headers["Location"])
        assert refused.get("error") == "login_required", (acr, refused)
    _header, claims = jwt_parts(rp.tokens_for(who.user)["id_token"])
    assert claims["acr"] == ACR_PASSWORD
    assert claims["amr"] == ["hwk"]

    # The same passkey with UV earns it all.
    passkey_sign_in(preferred, who, uv=True, browser=pages.browser)
    granted = query_of(rp.authorize(acr_values="phrh", prompt="none").headers["Location"])
    assert "code" in granted, granted


def test_a_passkey_without_uv_after_a_password_earns_no_mfa(preferred: Flask) -> None:
    """The second step after a password: a passkey without UV adds no "mfa" and no acr."""
    who = passkey_user(preferred, "ada@example.com")
    browser = preferred.test_client()
    page = browser.get("/login")
    form = {"csrf_token": csrf_token(page.text), "email": who.user.email,
            "password": who.user.password}  # fmt: skip
    assert shown_address(browser.post("/login", data=form)) == "/login/second-step"
    pages = PasskeyPages(browser)
    ceremony = pages.authentication_options()
    credential = who.authenticator.get(ceremony["publicKey"], flags=FLAG.UP)
    body = {"challenge_id": ceremony["challenge_id"], "credential": credential, "partial": True}
    assert pages.post_json("/login/passkey/verify", body).status_code == 200
    rp = RelyingParty(browser, create_client(preferred))
    refused = query_of(rp.authorize(acr_values=ACR_MFA, prompt="none").headers["Location"])
    assert refused.get("error") == "login_required", refused
    _header, claims = jwt_parts(rp.tokens_for(who.user)["id_token"])
    assert claims["amr"] == ["pwd", "hwk"]
    assert claims["acr"] == ACR_PASSWORD


def test_a_passkey_without_uv_earns_no_portal_step_up(preferred: Flask) -> None:
    """The step-up (docs/architecture.md, "Invariants"): a sensitive action needs a recent
    sign-in as strong as the user's strongest method (a passkey: phr). A sign-in just now
    without UV is not."""
    who = passkey_user(preferred, "ada@example.com")
    pages = passkey_sign_in(preferred, who, uv=False)
    refused = pages.post_json("/account/passkeys/options", {}, page="/account")
    assert refused.status_code == 403
    assert refused.get_json()["error"] == "reauthenticate"
    pages = passkey_sign_in(preferred, who, uv=True, browser=pages.browser)
    assert pages.post_json("/account/passkeys/options", {}, page="/account").status_code == 200


def test_a_passkey_without_uv_does_not_open_the_admin_console(preferred: Flask) -> None:
    who = passkey_user(preferred, "root@example.com", admin=True)
    pages = passkey_sign_in(preferred, who, uv=False)
    refused = pages.browser.get("/admin")
    assert refused.status_code == 302
    assert refused.headers["Location"].startswith("/login")
    passkey_sign_in(preferred, who, uv=True, browser=pages.browser)
    assert pages.browser.get("/admin").status_code == 200

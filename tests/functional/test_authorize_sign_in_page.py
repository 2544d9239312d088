"""The sign-in page the authorization endpoint answers with (docs/architecture.md, a passkey
sign-in step by step): its address holds the client's request (state, nonce, PKCE challenge), so
the page must not leak or keep it, and it must sign in for that request as /login's page does."""

from __future__ import annotations

from flask import Flask

from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import CreatedUser
from tests.support.flow import RelyingParty, csrf_token, query_of, shown_pending_id
from tests.support.passkey_flow import PasskeyPages, csrf_meta, page_options


def test_the_page_at_authorize_sends_no_referrer_is_not_stored_and_is_not_framed(
    rp: RelyingParty,
) -> None:
    page = rp.authorize()
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    # Referrer Policy (W3C) no-referrer: the page's own requests (its script, its style, the verify)
    # carry no Referer with the client's state and nonce; nothing keeps the page.
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    # Not echoed into the page: the stored request's id stands for them.
    assert rp.state not in page.text
    assert rp.nonce not in page.text


def test_the_password_form_of_the_page_at_authorize_signs_in_for_its_request(
    rp: RelyingParty, user: CreatedUser
) -> None:
    page = rp.authorize()
    pending_id = shown_pending_id(page.text)
    assert pending_id
    form = {"csrf_token": csrf_token(page.text), "email": user.email,
            "password": user.password, "request": pending_id}  # fmt: skip
    signed_in = rp.browser.post("/login", data=form)
    callback = rp.follow_to_callback(signed_in)
    assert callback["state"] == rp.state
    assert rp.exchange(callback["code"]).status_code == 200


def test_the_passkey_options_of_the_page_at_authorize_sign_in_for_its_request(
    app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    authenticator = SoftAuthenticator(backup_eligible=True, backed_up=True, counter_step=0)
    assert pages.add_passkey(authenticator).status_code == 201
    page = rp.authorize()
    ceremony = page_options(page.text)
    body = {"challenge_id": ceremony["challenge_id"], "next": "",
            "credential": authenticator.get(ceremony["publicKey"]),
            "request": shown_pending_id(page.text)}  # fmt: skip
    verified = rp.browser.post("/login/passkey/verify", json=body,
                               headers={"X-CSRFToken": csrf_meta(page.text)})  # fmt: skip
    assert verified.status_code == 200, verified.text
    callback = query_of(verified.get_json()["redirect"])
    assert callback["state"] == rp.state
    assert rp.exchange(callback["code"]).status_code == 200

"""The device authorization grant (RFC 8628) end to end: a device polls the token endpoint in a
thread while a person, in a real browser, signs in with a passkey on the verification page and
approves; the poll returns an ID token, an access token and a refresh token."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import Accounts, BrowserUser
from tests.browser.test_passkey_sign_in import _add_passkey, _sign_in_with_password
from tests.support.flow import jwt_parts
from tests.support.live import LiveIdp

pytestmark = pytest.mark.browser

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: The most polls the device makes: the browser's part takes seconds, each poll waits the
#: interval the server gives (5 s, more after a slow_down), so this bounds the thread, not the test.
MAX_POLLS = 60
PASSKEY_AMR = {"hwk", "swk"}


def poll_until_answered(
    token_url: str, auth: tuple[str, str], codes: dict[str, Any], stop: threading.Event
) -> Any:
    """What a device does (RFC 8628 3.4, 3.5): poll at the interval, 5 s slower after each
    slow_down, until the answer is tokens or a final error (or the test gives up: ``stop``)."""
    interval = codes["interval"]
    form = {"grant_type": DEVICE_GRANT, "device_code": codes["device_code"]}
    for _ in range(MAX_POLLS):
        response = requests.post(token_url, data=form, auth=auth, timeout=30)
        error = response.json().get("error") if response.status_code != 200 else None
        if error == "slow_down":
            interval += 5
        elif error != "authorization_pending":
            return response
        if stop.wait(interval):  # the protocol's pace, not a wait for the browser
            break
    raise AssertionError("the device was never answered")


def test_device_polls_while_the_user_approves_with_a_passkey(
    live_idp: LiveIdp, accounts: Accounts, new_user: Callable[..., BrowserUser]
) -> None:
    client = live_idp.create_client(name="Living Room TV", redirect_uris=[], first_party=True,
                                    grant_types=[DEVICE_GRANT, "refresh_token"])  # fmt: skip
    auth = (client["client_id"], client["client_secret"])
    discovery = live_idp.discovery()
    codes = requests.post(discovery["device_authorization_endpoint"], auth=auth, timeout=10,
                          data={"scope": "openid profile email offline_access"}).json()  # fmt: skip

    # The person has a passkey (added after a password sign-in) and is signed out.
    email = accounts.new()
    user = new_user(conditional_mediation=False)
    page = user.page
    page.goto(f"{live_idp.url}/account")
    _sign_in_with_password(page, email)
    _add_passkey(user)
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()

    stop = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="device") as device:
        answer = device.submit(poll_until_answered, discovery["token_endpoint"], auth, codes, stop)
        try:
            approve_on_the_verification_page(live_idp, user, codes)
            response = answer.result(timeout=120)
        finally:
            stop.set()

    assert response.status_code == 200, response.text
    tokens = response.json()
    assert {"id_token", "access_token", "refresh_token"} <= set(tokens)
    _, claims = jwt_parts(tokens["id_token"])
    assert claims["aud"] == client["client_id"]
    assert set(claims["amr"]) & PASSKEY_AMR, claims  # signed in with the passkey
    assert claims["sid"]
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    userinfo = requests.get(discovery["userinfo_endpoint"], headers=bearer, timeout=10)
    assert userinfo.json()["preferred_username"] == email


def approve_on_the_verification_page(
    live_idp: LiveIdp, user: BrowserUser, codes: dict[str, Any]
) -> None:
    """The person's part: open verification_uri_complete (the QR code), sign in with the
    passkey, confirm the code, review and approve; screenshots at 1280x800 and 390x844."""
    page = user.page
    # The QR code / link: the verification page sends the stranger to sign in first.
    page.goto(codes["verification_uri_complete"])
    expect(page).to_have_url(f"{live_idp.url}/login?next=/device?user_code%3D{codes['user_code']}")
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("heading", name="Sign in on a device")).to_be_visible()
    # RFC 8628 5.4: the code is filled in, and the person still confirms it.
    expect(page.locator("#user_code")).to_have_value(codes["user_code"])
    expect(page.locator("#own-device-warning")).to_be_visible()
    page.set_viewport_size({"width": 1280, "height": 800})
    user.screenshot("1-enter-code")
    page.get_by_role("button", name="Continue").click()

    expect(page.locator("#device-client")).to_have_text("Living Room TV")
    expect(page.locator("#device-scopes li")).to_have_count(4)
    expect(page.locator("#device-requested-at")).to_contain_text("UTC")
    user.screenshot("2-review")
    page.set_viewport_size({"width": 390, "height": 844})
    user.screenshot("2-review-phone")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#device-approved")).to_be_visible()
    user.screenshot("3-approved-phone")

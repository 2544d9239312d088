"""The passkey parts of the sign-in and account pages, driven through the Flask test client.

What ``idp/static/webauthn.js`` does in a browser: read the page's CSRF meta token, POST JSON with
it in ``X-CSRFToken``, hand the options to the authenticator and post its ``toJSON()`` back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import CreatedUser
from tests.support.flow import password_sign_in, shown_address

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
PAGE_OPTIONS = re.compile(r'<script type="application/json" id="passkey-options">(.*?)</script>')


def csrf_meta(html: str) -> str:
    match = CSRF_META.search(html)
    assert match, "no csrf-token meta tag on the page"
    return match.group(1)


def page_options(html: str) -> dict[str, Any]:
    """The passkey request options the sign-in page embeds (``challenge_id``, ``publicKey``), as
    idp/static/login.js reads them."""
    match = PAGE_OPTIONS.search(html)
    assert match, "no passkey options on the page"
    options: dict[str, Any] = json.loads(match.group(1))
    return options


@dataclass
class PasskeyPages:
    browser: FlaskClient

    def sign_in_with_password(self, user: CreatedUser) -> TestResponse:
        """The password at /login: a session (a redirect) or the second step's page."""
        response = password_sign_in(self.browser, user)
        second_step = shown_address(response) == "/login/second-step"
        assert response.status_code == 302 or second_step, response.text
        return response

    def csrf(self, path: str = "/login") -> str:
        page = self.browser.get(path)
        assert page.status_code == 200, (path, page.status_code)
        return csrf_meta(page.text)

    def post_json(self, url: str, body: dict[str, Any], page: str = "/login") -> TestResponse:
        return self.browser.post(url, json=body, headers={"X-CSRFToken": self.csrf(page)})

    # -- the account page: add a passkey --------------------------------------------------------
    def registration_options(self) -> TestResponse:
        return self.post_json("/account/passkeys/options", {})

    def register(
        self, challenge_id: str, credential: dict[str, Any], name: str | None = None
    ) -> TestResponse:
        body: dict[str, Any] = {"challenge_id": challenge_id, "credential": credential}
        if name is not None:
            body["name"] = name
        return self.post_json("/account/passkeys", body)

    def add_passkey(
        self, authenticator: SoftAuthenticator, name: str | None = None, **tamper: Any
    ) -> TestResponse:
        """Options, ``navigator.credentials.create()``, then store: the "Add a passkey" button."""
        options = self.registration_options()
        assert options.status_code == 200, options.text
        ceremony = options.get_json()
        credential = authenticator.create(ceremony["publicKey"], **tamper)
        return self.register(ceremony["challenge_id"], credential, name)

    # -- the sign-in page: sign in with a passkey -----------------------------------------------
    def authentication_options(
        self, email: str | None = None, *, partial: bool = False, page: str = "/login"
    ) -> dict[str, Any]:
        """The sign-in page's options request: ``email`` as an older page sent it (the server
        ignores it), ``partial`` as the second step after a password asks."""
        body: dict[str, Any] = {"email": email} if email else {}
        if partial:
            body["partial"] = True
        response = self.post_json("/login/passkey/options", body, page=page)
        assert response.status_code == 200, response.text
        ceremony: dict[str, Any] = response.get_json()
        return ceremony

    def page_ceremony(self, page: str = "/login") -> tuple[dict[str, Any], str]:
        """The sign-in page's embedded options and its CSRF token: what a browser starts
        conditional mediation (and the first button press) with."""
        shown = self.browser.get(page)
        assert shown.status_code == 200, (page, shown.status_code)
        return page_options(shown.text), csrf_meta(shown.text)

    def verify(
        self,
        challenge_id: str,
        credential: dict[str, Any],
        request: str | None = None,
        next_path: str | None = None,
    ) -> TestResponse:
        body = {"challenge_id": challenge_id, "credential": credential,
                "request": request or "", "next": next_path or ""}  # fmt: skip
        return self.post_json("/login/passkey/verify", body)

    def sign_in_with_passkey(
        self,
        authenticator: SoftAuthenticator,
        email: str | None = None,
        request: str | None = None,
        **tamper: Any,
    ) -> TestResponse:
        """The page's options (or, with ``email``, the options endpoint as an older page asked
        it), ``navigator.credentials.get()``, verify."""
        if email is not None:
            ceremony = self.authentication_options(email)
            credential = authenticator.get(ceremony["publicKey"], **tamper)
            return self.verify(ceremony["challenge_id"], credential, request=request)
        page = f"/login?request={request}" if request else "/login"
        ceremony, csrf = self.page_ceremony(page)
        credential = authenticator.get(ceremony["publicKey"], **tamper)
        body = {"challenge_id": ceremony["challenge_id"], "credential": credential,
                "request": request or "", "next": ""}  # fmt: skip
        return self.browser.post("/login/passkey/verify", json=body, headers={"X-CSRFToken": csrf})

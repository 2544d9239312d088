"""A relying party driven through the Flask test client: the protocol as a browser sees it."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask.testing import FlaskClient
from joserfc import jwt
from werkzeug.test import TestResponse

from tests.support.factories import CreatedUser, RegisteredClient

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_token(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


PENDING_FIELD = re.compile(r'name="request" value="([^"]+)"')
RESUBMISSION_FORM = re.compile(r'<form method="post" action="([^"]*)" id="same-site-resubmission">')
HIDDEN_FIELD = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')
#: What a browser sends on a form posted from another site's page (Fetch Metadata).
CROSS_SITE = {"Sec-Fetch-Site": "cross-site"}
#: ...and on one posted from idp's own page.
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


def resubmission(response: TestResponse) -> tuple[str, list[tuple[str, str]]]:
    """The action and fields of idp's page that posts a cross-site POST again from its own origin
    (idp.web.same_site), in order, repeated names kept."""
    assert response.status_code == 200, (response.status_code, response.text[:300])
    form = RESUBMISSION_FORM.search(response.text)
    assert form is not None, response.text[:300]
    fields = [(html.unescape(n), html.unescape(v)) for n, v in HIDDEN_FIELD.findall(response.text)]
    return html.unescape(form.group(1)), fields


def shown_pending_id(html: str) -> str | None:
    """The stored authorization request a sign-in page names (its forms' hidden field)."""
    match = PENDING_FIELD.search(html)
    return match.group(1) if match else None


SHOWN_ADDRESS = re.compile(r'data-address="([^"]+)"')


def shown_address(response: Any) -> str | None:
    """The address a page another request answered with names as its own (the password step
    answers with the second step's page, which takes /login/second-step in the history:
    login/second_step.html); None for any other answer."""
    if response.status_code != 200:
        return None
    match = SHOWN_ADDRESS.search(response.text)
    return html.unescape(match.group(1)) if match else None


def sign_in_address(response: Any) -> str | None:
    """Where the authorization endpoint asked the user to sign in, as /login's address: the
    sign-in page it showed itself (200, docs/architecture.md) names its stored request, and
    ``/login?request=ID`` shows the same page; a redirect to /login (a resumed request) is
    its own address. None when the answer is neither."""
    if response.status_code == 200 and 'id="login-form"' in response.text:
        pending_id = shown_pending_id(response.text)
        return f"/login?request={pending_id}" if pending_id else "/login"
    if response.status_code in (302, 303) and "/login" in response.headers.get("Location", ""):
        return str(response.headers["Location"])
    return None


@dataclass
class RelyingParty:
    browser: FlaskClient
    registered: RegisteredClient
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    state: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def authorize_params(self, **overrides: Any) -> dict[str, Any]:
        params: dict[str, Any] = {
            "response_type": "code",
            "client_id": self.registered.client_id,
            "redirect_uri": self.registered.redirect_uri,
            "scope": "openid profile email offline_access",
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": s256(self.verifier),
            "code_challenge_method": "S256",
        }
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}

    def authorize(self, **overrides: Any) -> TestResponse:
        return self.browser.get("/authorize", query_string=self.authorize_params(**overrides))

    def sign_in_page(self, **overrides: Any) -> str:
        """Authorize, expecting the sign-in page: its /login address (``sign_in_address``)."""
        response = self.authorize(**overrides)
        address = sign_in_address(response)
        assert address is not None, (response.status_code, response.text[:300])
        return address

    def sign_in(
        self, location: str, user: CreatedUser, password: str | None = None
    ) -> TestResponse:
        """Fill the login page the authorization request was sent to."""
        page = self.browser.get(location)
        assert page.status_code == 200, page.text
        form = {
            "csrf_token": csrf_token(page.text),
            "email": user.email,
            "password": password if password is not None else user.password,
        }
        pending = query_of(location).get("request")
        if pending:
            form["request"] = pending
        return self.browser.post("/login", data=form)

    def follow_to_callback(self, response: TestResponse) -> dict[str, str]:
        """Follow idp's redirects until one leaves for the client's redirect URI."""
        for _ in range(10):
            assert response.status_code in (302, 303), (response.status_code, response.text)
            location = response.headers["Location"]
            if location.startswith(self.registered.redirect_uri):
                return query_of(location)
            response = self.browser.get(location)
        raise AssertionError("too many redirects")

    def obtain_code(self, user: CreatedUser, **overrides: Any) -> dict[str, str]:
        response = self.authorize(**overrides)
        address = sign_in_address(response)
        if address is not None:
            response = self.sign_in(address, user)
        return self.follow_to_callback(response)

    def token(
        self, data: dict[str, Any], *, authenticate: bool = True, dpop: str | None = None
    ) -> TestResponse:
        """A token request; ``dpop``: the DPoP proof it carries (RFC 9449 4.1)."""
        headers = {} if dpop is None else {"DPoP": dpop}
        if authenticate and self.registered.client_secret:
            raw = f"{self.registered.client_id}:{self.registered.client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        elif authenticate:
            data = {"client_id": self.registered.client_id, **data}
        return self.browser.post("/token", data=data, headers=headers)

    def exchange(self, code: str, **overrides: Any) -> TestResponse:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.registered.redirect_uri,
            "code_verifier": self.verifier,
        }
        data.update(overrides)
        return self.token({k: v for k, v in data.items() if v is not None})

    def tokens_for(self, user: CreatedUser, **overrides: Any) -> dict[str, Any]:
        callback = self.obtain_code(user, **overrides)
        response = self.exchange(callback["code"])
        assert response.status_code == 200, response.text
        tokens: dict[str, Any] = response.get_json()
        return tokens

    def refresh(self, refresh_token: str, dpop: str | None = None, **extra: Any) -> TestResponse:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
        return self.token(data, dpop=dpop)

    def userinfo(self, access_token: str) -> TestResponse:
        return self.browser.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})


def password_sign_in(browser: FlaskClient, user: CreatedUser) -> TestResponse:
    """The email and password at /login (no authorization request): a redirect with a session,
    or the second step's page when one follows."""
    page = browser.get("/login")
    form = {"csrf_token": csrf_token(page.text), "email": user.email, "password": user.password}
    return browser.post("/login", data=form)


def start_session(browser: FlaskClient, user: CreatedUser) -> TestResponse:
    """Sign in directly at /login (no authorization request): the browser now has a session."""
    response = password_sign_in(browser, user)
    assert response.status_code == 302, response.text
    return response


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWT, unverified (for asserting on what was issued)."""
    header, payload, _ = token.split(".")
    return _b64json(header), _b64json(payload)


def _b64json(segment: str) -> dict[str, Any]:
    value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    assert isinstance(value, dict)
    return value


def client_assertion(
    client_id: str, key: Any, audience: str, alg: str = "RS256", **overrides: Any
) -> str:
    """A private_key_jwt client assertion (RFC 7523 3) of ``client_id``, signed with ``key``
    for ``audience`` (idp's issuer: draft-ietf-oauth-rfc7523bis 4), valid for a minute."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": secrets.token_urlsafe(16),
        "iat": now,
        "exp": now + 60,
        **overrides,
    }
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])

"""The scene the property-based tests fuzz on: one app on a real SQLite database, a user with a
browser session, and a registered client for each way a client authenticates at the token
endpoint (RFC 6749 2.3.1 basic and post body, RFC 7523 private_key_jwt, none), with real codes,
refresh tokens, device codes and access tokens on demand so that fuzzed requests reach past the
first checks."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pyotp
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import RSAKey

from idp.composition import services
from idp.extensions import db
from idp.models import User
from idp.models.base import utcnow
from idp.services.audit import RequestContext
from idp.services.device import DEVICE_CODE_GRANT_TYPE
from idp.services.login_links import INVITE, LoginLinkService
from idp.services.users import UserService
from idp.web.sessions import session_cookie_name
from tests.conftest import _build_app as build_app
from tests.conftest import sqlite_app
from tests.support.factories import (
    POST_LOGOUT_URI,
    REDIRECT_URI,
    CreatedUser,
    RegisteredClient,
    create_client,
    create_user,
)
from tests.support.flow import client_assertion, query_of, s256
from tests.support.fuzzing import basic, fresh_address

ISSUER = "http://localhost"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
GRANTS = ("authorization_code", "refresh_token", "client_credentials", DEVICE_CODE_GRANT_TYPE)
#: The origins a fuzzed request may be redirected to: the registered URIs'.
RP_ORIGINS = ("https://rp.example",)


def fuzz_app(directory: Path, database_url: str | None = None) -> Flask:
    """An app whose per-address budgets do not end the run early, with its forms' CSRF check off
    so that fuzzed fields reach the views behind it (the check itself has its own tests); on a
    new SQLite database in ``directory``, or on ``database_url``."""
    if database_url is None:
        app = sqlite_app(directory, anonymous_requests_per_address=1_000_000)
    else:
        app = build_app(database_url, directory, anonymous_requests_per_address=1_000_000)
    app.config["WTF_CSRF_ENABLED"] = False
    return app


@dataclass
class Rig:
    app: Flask
    user: CreatedUser
    clients: dict[str, RegisteredClient]
    key: RSAKey
    cookie: str
    verifier: str = "v" * 43
    _access_token: str | None = None

    @classmethod
    def build(cls, app: Flask) -> Rig:
        key = RSAKey.generate_key(2048, parameters={"kid": "fuzz-key"})
        grants = ["authorization_code", "refresh_token", DEVICE_CODE_GRANT_TYPE]
        confidential = [*grants, "client_credentials"]
        uris = {"redirect_uris": [REDIRECT_URI], "post_logout_redirect_uris": [POST_LOGOUT_URI]}
        clients = {
            "client_secret_basic": create_client(app, grant_types=confidential, **uris),
            "client_secret_post": create_client(
                app, auth_method="client_secret_post", grant_types=confidential, **uris
            ),
            "private_key_jwt": create_client(
                app,
                auth_method="private_key_jwt",
                grant_types=confidential,
                jwks={"keys": [key.as_dict(private=False)]},
                **uris,
            ),
            "none": create_client(app, public=True, grant_types=grants, **uris),
        }
        user = create_user(app)
        return cls(app, user, clients, key, session_cookie(app, user.id))

    def session_cookie(self) -> str:
        """A new passkey session of the user, for a request that may end it."""
        return session_cookie(self.app, self.user.id)

    def link(self, purpose: str) -> str:
        """The secret of a fresh one-time link: a login link of the user, or an invite to a new
        account with no way in yet."""
        with self.app.test_request_context():
            if purpose == INVITE:
                email = f"invitee-{secrets.token_hex(6)}@example.com"
                created = UserService(db.session(), self.app.extensions["idp"].passwords).create(
                    email, allow_local_domains=True
                )
                user = created
            else:
                found = db.session.get(User, self.user.id)
                assert found is not None
                user = found
            _, secret = LoginLinkService(db.session()).issue(
                user, ttl=900, now=utcnow(), purpose=purpose
            )
            db.session.commit()
            return secret

    def http(self) -> FlaskClient:
        """A client without a cookie jar: each request names its cookies."""
        return self.app.test_client(use_cookies=False)

    def authorize_params(self, method: str, **extra: str) -> dict[str, str]:
        return {
            "response_type": "code",
            "client_id": self.clients[method].client_id,
            "redirect_uri": REDIRECT_URI,
            "scope": "openid profile email offline_access",
            "state": "s1",
            "nonce": "n1",
            "code_challenge": s256(self.verifier),
            "code_challenge_method": "S256",
            **extra,
        }

    def code(self, method: str, cookie: str | None = None) -> str:
        """A fresh authorization code for the client of ``method``, from the signed-in browser
        (the user's, or the one whose session ``cookie`` is given)."""
        answer = self.http().get(
            "/authorize?" + urlencode(self.authorize_params(method)),
            headers={"Cookie": cookie or self.cookie},
            environ_base=fresh_address(),
        )
        assert answer.status_code == 302, answer.text[:300]
        return query_of(answer.headers["Location"])["code"]

    def authentication(self, method: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """The body pairs and headers that authenticate the client of ``method``."""
        registered = self.clients[method]
        if method == "client_secret_basic":
            assert registered.client_secret
            return [], {"Authorization": basic(registered.client_id, registered.client_secret)}
        if method == "client_secret_post":
            assert registered.client_secret
            pairs = [
                ("client_id", registered.client_id),
                ("client_secret", registered.client_secret),
            ]
            return pairs, {}
        if method == "private_key_jwt":
            return [
                ("client_id", registered.client_id),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", self.assertion(registered.client_id)),
            ], {}
        return [("client_id", registered.client_id)], {}

    def assertion(self, client_id: str, **claims: Any) -> str:
        return client_assertion(client_id, self.key, ISSUER, **claims)

    def token(self, method: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        auth_pairs, headers = self.authentication(method)
        answer = self.http().post(
            "/token",
            data=urlencode([*pairs, *auth_pairs]),
            content_type="application/x-www-form-urlencoded",
            headers=headers,
            environ_base=fresh_address(),
        )
        assert answer.status_code == 200, answer.text[:300]
        document: dict[str, Any] = answer.get_json()
        return document

    def tokens(self, method: str, cookie: str | None = None) -> dict[str, Any]:
        """Fresh tokens (access, refresh, ID) for the client of ``method``, of the user or of
        the browser whose session ``cookie`` is given."""
        return self.token(
            method,
            [
                ("grant_type", "authorization_code"),
                ("code", self.code(method, cookie)),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", self.verifier),
            ],
        )

    def access_token(self) -> str:
        """An access token of the user for the first client, the same one each time (userinfo
        neither spends nor revokes it)."""
        if self._access_token is None:
            self._access_token = str(self.tokens("client_secret_basic")["access_token"])
        return self._access_token

    def device_code(self, method: str) -> str:
        auth_pairs, headers = self.authentication(method)
        answer = self.http().post(
            "/device_authorization",
            data=urlencode([("scope", "openid"), *auth_pairs]),
            content_type="application/x-www-form-urlencoded",
            headers=headers,
            environ_base=fresh_address(),
        )
        assert answer.status_code == 200, answer.text[:300]
        return str(answer.get_json()["device_code"])


def session_cookie(app: Flask, user_id: str) -> str:
    """The cookie of a new passkey session of ``user_id``, made directly (a sign-in per example
    would cost an Argon2 hash and count towards the address's limits)."""
    with app.test_request_context():
        row = db.session.get(User, user_id)
        assert row is not None
        new = services().sessions.create(row, ["hwk", "user", "mfa"], RequestContext(), utcnow())
        db.session.commit()
        return f"{session_cookie_name()}={new.cookie_value}"


TOTP_SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
BACKUP_CODE = re.compile(r"<li><code>([a-z0-9-]+)</code></li>")


@dataclass(frozen=True)
class TotpUser:
    user: CreatedUser
    secret: str
    backup_codes: list[str]


def totp_user(app: Flask, email: str) -> TotpUser:
    """A user with a password and an authenticator app (and so backup codes), set up through
    the account pages as a person would (the fuzz app takes forms without a CSRF token)."""
    user = create_user(app, email=email)
    browser = app.test_client()
    signed_in = browser.post("/login", data={"email": email, "password": user.password})
    assert signed_in.status_code == 302, signed_in.text[:300]
    page = browser.get("/account/totp")
    found = TOTP_SECRET.search(page.text)
    assert found, page.text[:300]
    confirmed = browser.post("/account/totp", data={"code": pyotp.TOTP(found.group(1)).now()})
    assert confirmed.status_code == 200, confirmed.text[:300]
    return TotpUser(user, found.group(1), BACKUP_CODE.findall(confirmed.text))

"""Sign-in and token flows over real HTTP against a live idp (``tests.support.live``), the way a
browser and a relying party would: the login form with its CSRF field, the second step, the
account page's TOTP and passkey enrolment, the passkey ceremony with a software authenticator,
the authorization code flow with PKCE and the token endpoint.

``Visitor.seen`` collects every secret value sent or received on the way (passwords, codes,
tokens, cookies, TOTP secrets and codes, backup codes, login-link secrets), for the log scan.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pyotp
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ProtocolError
from urllib3.util.retry import Retry

from tests.support.authenticator import SoftAuthenticator
from tests.support.flow import sign_in_address

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
TOTP_SECRET = re.compile(r'<code id="totp-secret">([^<]+)</code>')
BACKUP_CODE = re.compile(r"<li><code>([^<]+)</code></li>")
PAGE_OPTIONS = re.compile(r'<script type="application/json" id="passkey-options">(.*?)</script>')
TIMEOUT = 60


class FlowError(AssertionError):
    """A step did not answer as a browser or relying party expects; the message says which."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise FlowError(message)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@dataclass
class Authorization:
    """A pending authorization request: where /authorize sent the browser, and its PKCE secret."""

    location: str
    verifier: str
    state: str

    @property
    def pending_id(self) -> str:
        return query_of(self.location).get("request", "")


class ResendWhenDropped(Retry):
    """What a browser does when a kept-alive connection closes before any byte of the answer
    (RFC 9112 9.3.1 lets a server close a connection at any time): the request is sent again, once,
    on a new connection. Only that: a timeout, a refused connection or an answer is never retried,
    so a request the server did answer is never sent twice."""

    def increment(self, *args: Any, **kwargs: Any) -> Retry:
        error = kwargs.get("error")
        # urllib3 wraps a connection closed or reset before the status line as ProtocolError(...,
        # RemoteDisconnected or ConnectionResetError); a malformed answer is a ProtocolError too,
        # and is not resent.
        dropped = isinstance(error, ProtocolError) and isinstance(
            error.args[-1] if error.args else None, ConnectionResetError
        )
        if error is not None and not dropped:
            return NO_RETRY.increment(*args, **kwargs)  # raises, as requests' default does
        return super().increment(*args, **kwargs)


#: requests' own default: nothing is retried.
NO_RETRY = Retry(0, read=False)


def browser_session(*, resend_dropped: bool = True) -> requests.Session:
    session = requests.Session()
    if not resend_dropped:
        return session
    once = ResendWhenDropped(
        total=1, connect=0, read=1, status=0, other=0, allowed_methods=None,
        # An answer is the answer, whatever its status: a 503's Retry-After is for the test to read.
        respect_retry_after_header=False, raise_on_status=False,
    )  # fmt: skip
    for prefix in ("http://", "https://"):
        session.mount(prefix, HTTPAdapter(max_retries=once))
    return session


@dataclass
class Visitor:
    """One browser (its own cookie jar) talking to ``base_url``."""

    base_url: str
    seen: set[str] = field(default_factory=set)
    headers: dict[str, str] = field(default_factory=dict)
    #: False for a test whose point is a request the server never answers (a killed worker).
    resend_dropped: bool = True

    def __post_init__(self) -> None:
        self.http = browser_session(resend_dropped=self.resend_dropped)
        self.http.headers.update(self.headers)

    def close(self) -> None:
        self.remember_cookies()
        self.http.close()

    def remember(self, *values: str | None) -> None:
        self.seen.update(v for v in values if v)

    def remember_cookies(self) -> None:
        self.remember(*(cookie.value for cookie in self.http.cookies))

    def url(self, path: str) -> str:
        return urljoin(self.base_url, path)

    # -- pages ----------------------------------------------------------------------------------
    def get(self, path: str, **kwargs: Any) -> requests.Response:
        response = self.http.get(self.url(path), allow_redirects=False, timeout=TIMEOUT, **kwargs)
        self.remember_cookies()
        return response

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        response = self.http.post(self.url(path), allow_redirects=False, timeout=TIMEOUT, **kwargs)
        self.remember_cookies()
        return response

    def csrf_field(self, path: str) -> str:
        page = self.get(path)
        match = CSRF_FIELD.search(page.text)
        expect(
            page.status_code == 200 and match is not None, f"no form at {path}: {page.status_code}"
        )
        assert match is not None
        self.remember(match.group(1))
        return html.unescape(match.group(1))

    def csrf_header(self, path: str) -> dict[str, str]:
        page = self.get(path)
        match = CSRF_META.search(page.text)
        expect(match is not None, f"no csrf meta tag at {path}: {page.status_code}")
        assert match is not None
        self.remember(match.group(1))
        return {"X-CSRFToken": html.unescape(match.group(1))}

    def page_ceremony(self, path: str = "/login") -> tuple[dict[str, str], dict[str, Any]]:
        """The sign-in page's CSRF header and the passkey options it embeds."""
        page = self.get(path)
        match, options = CSRF_META.search(page.text), PAGE_OPTIONS.search(page.text)
        expect(match is not None and options is not None, f"no passkey options at {path}")
        assert match is not None
        assert options is not None
        self.remember(match.group(1))
        ceremony: dict[str, Any] = json.loads(options.group(1))
        return {"X-CSRFToken": html.unescape(match.group(1))}, ceremony

    # -- sign-in --------------------------------------------------------------------------------
    def password_step(
        self, email: str, password: str, pending_id: str = "", form_path: str = "/login"
    ) -> requests.Response:
        """The email and password form (the first step)."""
        self.remember(password)
        data = {"csrf_token": self.csrf_field(form_path), "email": email, "password": password}
        if pending_id:
            data["request"] = pending_id
        return self.post("/login", data=data)

    def second_step(self, code: str, method: str = "totp") -> requests.Response:
        self.remember(code)
        data = {"csrf_token": self.csrf_field("/login/second-step"), "method": method, "code": code}
        return self.post("/login/second-step", data=data)

    def sign_in_with_password(self, email: str, password: str) -> None:
        response = self.password_step(email, password)
        expect(response.status_code in (302, 303), f"password sign-in: {response.status_code}")

    def passkey_step(
        self, authenticator: SoftAuthenticator, pending_id: str = "", page: str = "/login"
    ) -> requests.Response:
        """The sign-in page's embedded options (idp/static/login.js), the assertion, verify."""
        if pending_id and page == "/login":
            page = f"/login?request={pending_id}"
        headers, ceremony = self.page_ceremony(page)
        credential = authenticator.get(ceremony["publicKey"], origin=self.base_url)
        self.remember(credential["response"]["signature"])
        body = {"challenge_id": ceremony["challenge_id"], "credential": credential,
                "request": pending_id, "next": ""}  # fmt: skip
        verified = self.post("/login/passkey/verify", json=body, headers=headers)
        expect(verified.status_code == 200, f"passkey verify: {verified.status_code}")
        return verified

    # -- the account page -----------------------------------------------------------------------
    def enrol_totp(self) -> tuple[pyotp.TOTP, list[str]]:
        """Set up an authenticator app; the first one also hands out backup codes."""
        page = self.get("/account/totp")
        match = TOTP_SECRET.search(page.text)
        expect(match is not None, f"no TOTP secret on /account/totp: {page.status_code}")
        assert match is not None
        secret = html.unescape(match.group(1)).replace(" ", "")
        self.remember(secret, match.group(1))
        csrf = CSRF_FIELD.search(page.text)
        assert csrf is not None
        code = pyotp.TOTP(secret).now()
        self.remember(code)
        done = self.post("/account/totp", data={"csrf_token": html.unescape(csrf.group(1)),
                                                "code": code})  # fmt: skip
        expect(done.status_code == 200, f"TOTP confirmation: {done.status_code}")
        codes = [html.unescape(c) for c in BACKUP_CODE.findall(done.text)]
        expect(len(codes) == 10, f"expected 10 backup codes, got {len(codes)}")
        self.remember(*codes)
        return pyotp.TOTP(secret), codes

    def register_passkey(self) -> SoftAuthenticator:
        headers = self.csrf_header("/account")
        options = self.post("/account/passkeys/options", json={}, headers=headers)
        expect(options.status_code == 200, f"registration options: {options.status_code}")
        ceremony = options.json()
        # A synced passkey (counter 0), as most passkeys are.
        authenticator = SoftAuthenticator(backup_eligible=True, backed_up=True, counter_step=0)
        credential = authenticator.create(ceremony["publicKey"], origin=self.base_url)
        stored = self.post(
            "/account/passkeys",
            json={"challenge_id": ceremony["challenge_id"], "credential": credential},
            headers=headers,
        )
        expect(stored.status_code == 201, f"passkey registration: {stored.status_code}")
        self.remember(*(stored.json().get("backup_codes") or []))
        return authenticator

    # -- the authorization code flow --------------------------------------------------------------
    def authorize(
        self, client_id: str, redirect_uri: str, scope: str = "openid offline_access"
    ) -> Authorization:
        verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(12)
        self.remember(verifier)
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                  "scope": scope, "state": state, "nonce": secrets.token_urlsafe(12),
                  "code_challenge": s256(verifier), "code_challenge_method": "S256"}  # fmt: skip
        response = self.get("/authorize", params=params)
        # The sign-in page itself (200), or a redirect: to the client when already signed in.
        address = sign_in_address(response) or response.headers.get("Location")
        expect(address is not None, f"authorize: {response.status_code}")
        assert address is not None
        return Authorization(address, verifier, state)

    def follow_to(self, response: requests.Response, stop_at: str) -> str:
        """Follow redirects (GET) until one points at ``stop_at``; that URL."""
        for _ in range(10):
            location = response.headers.get("Location") or (
                response.json().get("redirect") if response.status_code == 200 else None
            )
            expect(bool(location), f"no redirect: {response.status_code} {response.text[:200]}")
            assert location is not None
            url = self.url(location)
            if url.startswith(stop_at):
                code = query_of(url).get("code")
                self.remember(code)
                return url
            response = self.get(url)
        raise FlowError(f"no redirect to {stop_at}")


@dataclass
class RelyingParty:
    """A confidential client at the token, introspection and revocation endpoints."""

    base_url: str
    client_id: str
    client_secret: str
    redirect_uri: str
    seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.seen.add(self.client_secret)

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> requests.Response:
        response = requests.post(
            urljoin(self.base_url, path), data=data, auth=(self.client_id, self.client_secret),
            timeout=TIMEOUT, **kwargs,
        )  # fmt: skip
        if response.headers.get("Content-Type", "").startswith("application/json"):
            body = response.json()
            self.seen.update(
                str(body[k]) for k in ("access_token", "refresh_token", "id_token") if k in body
            )
        return response

    def exchange(self, callback_url: str, authorization: Authorization) -> dict[str, Any]:
        code = query_of(callback_url)["code"]
        self.seen.update({code, authorization.verifier})
        response = self.post("/token", {
            "grant_type": "authorization_code", "code": code,
            "redirect_uri": self.redirect_uri, "code_verifier": authorization.verifier,
        })  # fmt: skip
        expect(
            response.status_code == 200, f"code exchange: {response.status_code} {response.text}"
        )
        tokens: dict[str, Any] = response.json()
        return tokens

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        response = self.post("/token", {"grant_type": "refresh_token",
                                        "refresh_token": refresh_token})  # fmt: skip
        expect(response.status_code == 200, f"refresh: {response.status_code} {response.text}")
        tokens: dict[str, Any] = response.json()
        return tokens

    def client_credentials(self) -> requests.Response:
        return self.post("/token", {"grant_type": "client_credentials"})


@dataclass
class ParallelPasskeyAnswer:
    """One passkey assertion for ``email`` (a password user who registers a passkey first),
    ready to be sent many times at once: the spend-once tests of the WebAuthn challenge."""

    url: str
    issued: dict[str, Any]
    body: dict[str, Any]
    headers: dict[str, str]
    cookies: dict[str, str]

    @classmethod
    def prepare(
        cls, url: str, email: str, password: str, *, from_page: bool = False
    ) -> ParallelPasskeyAnswer:
        """``from_page``: the challenge the sign-in page embeds (signed, stored only when spent)
        rather than one from ``/login/passkey/options``."""
        registering = Visitor(url)
        registering.sign_in_with_password(email, password)
        authenticator = registering.register_passkey()
        registering.close()
        browser = Visitor(url)
        if from_page:
            headers, issued = browser.page_ceremony("/login")
        else:
            headers = browser.csrf_header("/login")
            options = browser.post("/login/passkey/options", json={}, headers=headers)
            assert options.status_code == 200, options.text
            issued = options.json()
        credential = authenticator.get(issued["publicKey"], origin=url)
        body = {"challenge_id": issued["challenge_id"], "credential": credential,
                "request": "", "next": ""}  # fmt: skip
        cookies = {cookie.name: cookie.value or "" for cookie in browser.http.cookies}
        browser.close()
        return cls(url, issued, body, headers, cookies)

    def send(self, times: int) -> list[requests.Response]:
        """The same answer ``times`` times, all at once."""

        def one(_: int) -> requests.Response:
            return requests.post(self.url + "/login/passkey/verify", json=self.body,
                                 headers=self.headers, cookies=self.cookies,
                                 timeout=30)  # fmt: skip

        with ThreadPoolExecutor(times) as pool:
            return list(pool.map(one, range(times)))

"""The flows the benchmark drives against a live idp, each as a browser (or an RP back end) would.

- passkey sign-in through the whole authorization code flow: ``/authorize`` (PKCE S256), which
  shows the sign-in page (it embeds the passkey request options) -> assertion by the software
  authenticator -> ``/login/passkey/verify``, which answers with the redirect URI and the code ->
  ``/token`` (client_secret_basic) -> RS256 ID token verified; fresh cookies for every flow;
- password + TOTP sign-in: ``/login`` page, email and password (answered with the second-step
  page), the TOTP code; a session cookie at the end (one seeded user per sign-in, see
  ``bench.seed``);
- refresh-token grants, each browser following its own rotated chain;
- userinfo, client credentials, introspection: one request each.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pyotp
from joserfc import jwt
from joserfc.jwk import KeySet

from bench.client import Browser
from tests.support.authenticator import SoftAuthenticator
from tests.support.flow import shown_pending_id
from tests.support.http_flows import expect, query_of, s256
from tests.support.live import LiveIdp

REDIRECT_URI = "http://localhost:9/callback"
#: Every simulated browser comes from 127.0.0.1: one address, which the storage budget of
#: anonymous requests would stop after 120 sign-ins per 15 minutes (docs/operations.md,
#: "Storage budgets"). The benchmark raises it as an office behind one NAT would.
BENCH_ENV = {"IDP_ANONYMOUS_REQUESTS_PER_ADDRESS": "1000000"}
SCOPE = "openid profile email offline_access"
PASSWORD = "correct horse battery staple 42"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
PAGE_OPTIONS = re.compile(r'<script type="application/json" id="passkey-options">(.*?)</script>')


@dataclass
class Fixture:
    idp: LiveIdp
    client_id: str
    client_secret: str
    cc_client_id: str
    cc_client_secret: str
    authenticator: SoftAuthenticator
    jwks: KeySet
    auth_lock: threading.Lock = field(default_factory=threading.Lock)
    #: What the passkey sign-in asks for: with ``--groups`` also ``groups`` (bench/README.md).
    scope: str = SCOPE
    #: With ``--groups``: an unrestricted first-party client, for the same user's sign-ins without
    #: groups (the baseline of ``bench.run.compare_groups``).
    plain_client: tuple[str, str] | None = None

    def without_groups(self) -> Fixture:
        """The same user and passkey signing in at the plain client without the groups scope."""
        assert self.plain_client is not None
        client_id, client_secret = self.plain_client
        return replace(self, client_id=client_id, client_secret=client_secret, scope=SCOPE)

    @property
    def url(self) -> str:
        return self.idp.url

    def basic(self) -> tuple[str, str]:
        return (self.client_id, self.client_secret)


def csrf_field(html: str) -> str:
    found = CSRF_FIELD.search(html)
    expect(found is not None, "no csrf_token field")
    assert found is not None
    return found.group(1)


def register_passkey(idp: LiveIdp, email: str, password: str) -> SoftAuthenticator:
    """Password sign-in at /login, then "Add a passkey" on the account page, all over HTTP."""
    browser = Browser(idp.url)
    page = browser.get("/login")
    form = {"csrf_token": csrf_field(page.text), "email": email, "password": password}
    signed_in = browser.post("/login", form=form)
    expect(signed_in.status in (302, 303), f"password sign-in: {signed_in.status}")
    account = browser.get("/account")
    meta = CSRF_META.search(account.text)
    expect(meta is not None, f"no csrf meta on /account ({account.status})")
    assert meta is not None
    headers = {"X-CSRFToken": meta.group(1)}
    options = browser.post("/account/passkeys/options", json_body={}, headers=headers)
    expect(options.status == 200, f"registration options: {options.text[:200]}")
    ceremony = options.json()
    # A synced passkey (counter 0): concurrent sign-ins with one credential stay valid.
    authenticator = SoftAuthenticator(backup_eligible=True, backed_up=True, counter_step=0)
    credential = authenticator.create(ceremony["publicKey"], origin=idp.url)
    stored = browser.post(
        "/account/passkeys",
        json_body={"challenge_id": ceremony["challenge_id"], "credential": credential},
        headers=headers,
    )
    expect(stored.status == 201, f"passkey registration: {stored.status} {stored.text}")
    return authenticator


def setup(idp: LiveIdp, groups: int = 0, claim_maps: int = 0) -> Fixture:
    """The bench user (a passkey) and clients. With ``groups``, the user is in that many groups,
    the sign-in client admits only members of the last one (per-app access is checked on every
    sign-in), maps ``claim_maps`` of them to values of a ``roles`` claim, and the sign-in asks for
    the ``groups`` scope: the ID token carries every group and the mapped roles."""
    email = "bench@example.com"
    idp.create_user(email, PASSWORD, name="Bench User")
    client = idp.create_client(name="bench", redirect_uris=[REDIRECT_URI], first_party=True)
    scope = SCOPE
    plain_client: tuple[str, str] | None = None
    if groups:
        plain = idp.create_client(
            name="bench-plain", redirect_uris=[REDIRECT_URI], first_party=True
        )
        plain_client = (plain["client_id"], plain["client_secret"])
        names = [f"bench-{n:02}" for n in range(groups)]
        for name in names:
            idp.cli("groups", "create", name, "--json")
            idp.cli("groups", "add", name, email, "--json")
        maps = [f"--claim-map=roles:{name}=role-{n}" for n, name in enumerate(names[:claim_maps])]
        idp.cli(
            "clients", "edit", client["client_id"], "--scope", "openid", "--scope", "profile",
            "--scope", "email", "--scope", "offline_access", "--scope", "groups",
            f"--allowed-group={names[-1]}", *maps, "--json",
        )  # fmt: skip
        scope = f"{SCOPE} groups"
    cc = idp.cli(
        "clients",
        "create",
        "--name",
        "bench-m2m",
        "--grant-type",
        "client_credentials",
        "--redirect-uri",
        REDIRECT_URI,
        "--json",
    )
    jwks = Browser(idp.url).get("/jwks").json()
    return Fixture(
        idp=idp,
        client_id=client["client_id"],
        client_secret=client["client_secret"],
        cc_client_id=cc["client_id"],
        cc_client_secret=cc["client_secret"],
        authenticator=register_passkey(idp, email, PASSWORD),
        jwks=KeySet.import_key_set(jwks),
        scope=scope,
        plain_client=plain_client,
    )


# -- passkey sign-in through the code flow --------------------------------------------------------
def passkey_flow(fx: Fixture, browser: Browser) -> dict[str, Any]:
    """One browser, no cookies: authorize, sign in with the passkey, code, tokens, ID token."""
    browser.forget_cookies()
    verifier, state, nonce = (secrets.token_urlsafe(n) for n in (48, 12, 12))
    params = {
        "response_type": "code",
        "client_id": fx.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": fx.scope,
        "state": state,
        "nonce": nonce,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    login = browser.get("/authorize", params=params)
    if login.status == 302:
        # A revision before /authorize showed the sign-in page itself (bench.compare serves
        # older ones): its redirect to /login.
        expect("/login" in login.location, f"authorize: {login.location}")
        pending_id = query_of(login.location).get("request", "")
        login = browser.get(urljoin(fx.url, login.location))
    else:
        shown = shown_pending_id(login.text)
        expect(login.status == 200 and shown is not None, f"authorize: {login.status}")
        assert shown is not None
        pending_id = shown
    meta, embedded = CSRF_META.search(login.text), PAGE_OPTIONS.search(login.text)
    expect(login.status == 200 and meta is not None, f"login page: {login.status}")
    assert meta is not None
    headers = {"X-CSRFToken": meta.group(1)}
    if embedded is not None:
        # What idp/static/login.js does: the page's own options, no options request first.
        ceremony = json.loads(embedded.group(1))
    else:
        # A revision before the page embedded them (bench.compare serves older ones): the
        # options request its sign-in page made.
        asked = browser.post("/login/passkey/options", json_body={}, headers=headers)
        expect(asked.status == 200, f"passkey options: {asked.status}")
        ceremony = asked.json()
    with fx.auth_lock:
        credential = fx.authenticator.get(ceremony["publicKey"], origin=fx.url)
    body = {
        "challenge_id": ceremony["challenge_id"],
        "credential": credential,
        "request": pending_id,
        "next": "",
    }
    verified = browser.post("/login/passkey/verify", json_body=body, headers=headers)
    expect(verified.status == 200, f"passkey verify: {verified.status} {verified.text[:200]}")
    location = verified.json()["redirect"]
    if not location.startswith(REDIRECT_URI):
        # An older revision's verify sent the browser to /authorize/continue first.
        resumed = browser.get(urljoin(fx.url, location))
        location = resumed.location
    expect(location.startswith(REDIRECT_URI), f"verify: {location}")
    callback = query_of(location)
    expect(callback.get("state") == state and "code" in callback, f"callback: {callback}")
    data = {
        "grant_type": "authorization_code",
        "code": callback["code"],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    token = browser.post("/token", form=data, basic=fx.basic())
    expect(token.status == 200, f"token: {token.status} {token.text[:200]}")
    tokens: dict[str, Any] = token.json()
    claims = jwt.decode(tokens["id_token"], fx.jwks, algorithms=["RS256"]).claims
    jwt.JWTClaimsRegistry(exp={"essential": True}, iss={"value": fx.url}).validate(claims)
    expect(claims["nonce"] == nonce and claims["aud"] == fx.client_id, "ID token claims")
    expect("refresh_token" in tokens, "no refresh token")
    if "groups" in fx.scope.split():
        expect(bool(claims.get("groups")) and "roles" in claims, f"groups claims: {claims}")
    return tokens


# -- the tools' server settings -------------------------------------------------------------------
def add_server_env_option(parser: argparse.ArgumentParser) -> None:
    """``--env NAME=VALUE``, repeatable: an ``IDP_*`` setting for the server a tool starts
    (``server_env``), e.g. ``IDP_ARGON2_MEMORY_KIB=64`` to see what a password sign-in costs
    around its hash."""
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an IDP_* setting for the server, e.g. IDP_ARGON2_MEMORY_KIB=64 to see what a "
        "password sign-in costs around its hash",
    )


def server_env(args: argparse.Namespace) -> dict[str, str]:
    """The benchmark's server environment with the ``--env`` settings given."""
    return BENCH_ENV | dict(item.split("=", 1) for item in args.env)


# -- password + TOTP sign-in ----------------------------------------------------------------------
def seed_totp_users(idp: LiveIdp, count: int) -> list[tuple[str, str]]:
    """``count`` users with PASSWORD and a confirmed TOTP secret, written to idp's database."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.seed", str(count), PASSWORD],
        env=idp.env,
        # The seed writes rows with the served code's models: a deployment served from another
        # checkout (``PYTHONPATH``: bench.compare) is seeded by that checkout, whose schema the
        # database has, not by this one (``python -m`` looks in its working directory first).
        cwd=idp.env.get("PYTHONPATH") or Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return [(email, secret) for email, secret in json.loads(completed.stdout.splitlines()[-1])]


def users_in_turn(users: list[tuple[str, str]]) -> Callable[[], tuple[str, str]]:
    """The seeded users one at a time, across the generator's forked processes: a TOTP step is
    accepted once per user (bench/seed.py), so the next index is shared memory, not an iterator
    that each fork would copy and start again."""
    next_user = multiprocessing.get_context("fork").Value("l", 0)

    def take_user() -> tuple[str, str]:
        with next_user.get_lock():
            index = next_user.value
            next_user.value += 1
        return users[index]

    return take_user


def password_totp_sign_in(fx: Fixture, browser: Browser, email: str, secret: str) -> None:
    browser.forget_cookies()
    page = browser.get("/login")
    expect(page.status == 200, f"login page: {page.status}")
    form = {"csrf_token": csrf_field(page.text), "email": email, "password": PASSWORD}
    second = browser.post("/login", form=form)
    if second.status in (302, 303):
        # A revision before the password step answered with the second step's page redirected
        # to it (bench.compare serves older revisions with these flows).
        expect(
            second.location.endswith("/login/second-step"),
            f"password step: {second.status} {second.location}",
        )
        second = browser.get("/login/second-step")
    expect(second.status == 200, f"second-step page: {second.status}")
    code = pyotp.TOTP(secret).now()
    done = browser.post(
        "/login/second-step", form={"csrf_token": csrf_field(second.text), "code": code}
    )
    expect(done.status in (302, 303), f"TOTP step: {done.status} {done.text[:200]}")
    expect(any(name.endswith("idp_session") for name in browser.cookies), "no session cookie")


# -- token endpoint and resource requests ---------------------------------------------------------
@dataclass
class TokenHolder:
    browser: Browser
    tokens: dict[str, Any]


def refresh(fx: Fixture, holder: TokenHolder) -> None:
    data = {"grant_type": "refresh_token", "refresh_token": holder.tokens["refresh_token"]}
    response = holder.browser.post("/token", form=data, basic=fx.basic())
    expect(response.status == 200, f"refresh: {response.status} {response.text[:200]}")
    rotated = response.json()
    expect(rotated["refresh_token"] != holder.tokens["refresh_token"], "refresh token not rotated")
    holder.tokens = rotated


def userinfo(fx: Fixture, holder: TokenHolder) -> None:
    bearer = {"Authorization": "Bearer " + holder.tokens["access_token"]}
    response = holder.browser.get("/userinfo", headers=bearer)
    expect(response.status == 200 and "sub" in response.json(), f"userinfo: {response.status}")


def introspect(fx: Fixture, holder: TokenHolder) -> None:
    response = holder.browser.post(
        "/introspect", form={"token": holder.tokens["access_token"]}, basic=fx.basic()
    )
    expect(
        response.status == 200 and response.json().get("active") is True,
        f"introspection: {response.status} {response.text[:200]}",
    )


def client_credentials(fx: Fixture, browser: Browser) -> None:
    response = browser.post(
        "/token",
        form={"grant_type": "client_credentials"},
        basic=(fx.cc_client_id, fx.cc_client_secret),
    )
    expect(
        response.status == 200 and "access_token" in response.json(),
        f"client_credentials: {response.status} {response.text[:200]}",
    )

"""From an empty install to a client app whose users sign in with passkeys, all from the command
line ("Done when"; tests/browser/test_admin.py walks the console's road).

Only ``idp ...`` commands and what a browser and its authenticator would send over HTTP, against
a live ``idp serve --production`` on SQLite and on a throwaway PostgreSQL database:

1. ``idp init --admin-email`` on an empty database prints a one-time link; the admin opens it
   (GET shows a confirmation, the POST spends it), lands on the restricted recovery page,
   registers a passkey, signs in with it and opens /admin: the CLI made a real console admin.
2. ``idp clients create`` registers a confidential client; ``idp clients show`` reads it back.
3. ``idp users invite`` prints an invite URL; the invitee, in a browser of their own, accepts it,
   registers a passkey and is signed in.
4. The invitee signs in to the client with that passkey: /authorize (PKCE S256, state, nonce),
   the login page's passkey ceremony, consent, the code, /token with client_secret_basic; the ID
   token is checked against /jwks and /userinfo answers.
5. ``idp users disable``: a new authorization request gets no code, the refresh token is refused,
   and ``idp audit export`` holds the invite, the passkey sign-in, the code and the disable.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import create_engine, inspect

from tests.conftest import throwaway_postgres_database
from tests.support.authenticator import SoftAuthenticator
from tests.support.browserless import parse_forms
from tests.support.flow import sign_in_address
from tests.support.http_flows import (
    Authorization,
    RelyingParty,
    Visitor,
    expect,
    query_of,
    s256,
)
from tests.support.live import LiveIdp, free_port, idp_env

pytestmark = pytest.mark.minutes(3)

ADMIN_EMAIL = "admin@example.com"
USER_EMAIL = "grace@example.com"
USER_NAME = "Grace Hopper"
CLIENT_NAME = "Team wiki"
#: RFC 8176 values of a passkey sign-in (hardware- or software-bound key).
PASSKEY_AMR = {"hwk", "swk"}
HTTP_TIMEOUT = 30


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def empty_install(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveIdp]:
    """A fresh directory and an empty database, nothing run yet: the test's ``idp init`` is the
    first command and it starts the server itself. ``IDP_PRODUCTION=true`` and no
    ``IDP_ADMIN_EMAIL``: no start creates anyone (in development it would bootstrap
    ``admin@localhost``), as in tests/browser's ``empty_idp``. Stopped by PID afterwards."""
    directory = tmp_path_factory.mktemp(f"cli-onboarding-{request.param}")
    (directory / "instance").mkdir()
    with contextlib.ExitStack() as stack:
        database_url = (
            stack.enter_context(throwaway_postgres_database())
            if request.param == "postgresql"
            else None
        )
        port = free_port()
        issuer = f"http://localhost:{port}"
        env = idp_env(directory, issuer, database_url) | {"IDP_PRODUCTION": "true"}
        idp = LiveIdp(
            url=issuer, port=port, directory=directory, env=env,
            log_path=directory / "server.log", production=True,
        )  # fmt: skip
        stack.callback(idp.stop)
        yield idp


def _tables(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


# -- what a browser does --------------------------------------------------------------------------
def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _add_passkey(visitor: Visitor, page: str, authenticator: SoftAuthenticator) -> dict[str, Any]:
    """The "Add a passkey" button on ``page`` (a restricted session's only page): registration
    options, ``navigator.credentials.create()``, then store. The stored passkey's JSON."""
    headers = visitor.csrf_header(page)
    options = visitor.post("/account/passkeys/options", json={}, headers=headers)
    expect(options.status_code == 200, f"registration options: {options.status_code}")
    ceremony = options.json()
    credential = authenticator.create(ceremony["publicKey"], origin=visitor.base_url)
    stored = visitor.post(
        "/account/passkeys",
        json={"challenge_id": ceremony["challenge_id"], "credential": credential},
        headers=headers,
    )
    expect(stored.status_code == 201, f"passkey registration: {stored.status_code} {stored.text}")
    body: dict[str, Any] = stored.json()
    return body


def _submit_form(visitor: Visitor, page_path: str, **fields: str) -> requests.Response:
    """GET ``page_path`` and submit its POST form as a browser would, with ``fields`` filled."""
    page = visitor.get(page_path)
    expect(page.status_code == 200, f"GET {page_path}: {page.status_code}")
    [form] = [f for f in parse_forms(page.text) if f.method == "post"]
    action = form.action or page_path
    return visitor.post(action, data=form.fields(**fields))


def _authorize(visitor: Visitor, client_id: str, redirect_uri: str) -> tuple[Authorization, str]:
    """The relying party sends the browser to /authorize; where it went, and the nonce."""
    verifier, state, nonce = (secrets.token_urlsafe(n) for n in (48, 16, 16))
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
              "scope": "openid profile email offline_access", "state": state, "nonce": nonce,
              "code_challenge": s256(verifier), "code_challenge_method": "S256",
              "prompt": "consent"}  # fmt: skip
    response = visitor.get("/authorize", params=params)
    shown = sign_in_address(response)  # the sign-in page, shown by /authorize itself
    expect(shown is not None, f"authorize: {response.status_code} {response.text[:200]}")
    assert shown is not None
    return Authorization(shown, verifier, state), nonce


def _follow_to_callback(
    visitor: Visitor, response: requests.Response, redirect_uri: str
) -> tuple[str, int]:
    """Follow idp's redirects, allowing the app on the consent page, until the browser would
    leave for ``redirect_uri``: that URL, and how many consent pages were shown."""
    consents = 0
    for _ in range(10):
        if response.status_code == 200 and response.headers.get("Content-Type", "").startswith(
            "application/json"
        ):
            location = response.json().get("redirect")  # the passkey verify answer
        elif response.status_code == 200:
            forms = [f for f in parse_forms(response.text) if f.has_button("decision", "allow")]
            expect(len(forms) == 1, f"neither a redirect nor a consent page: {response.text[:300]}")
            consents += 1
            response = visitor.post(forms[0].action, data=forms[0].fields(decision="allow"))
            continue
        else:
            expect(response.status_code in (302, 303), f"HTTP {response.status_code}")
            location = response.headers.get("Location")
        expect(bool(location), f"no redirect: {response.status_code} {response.text[:200]}")
        url = visitor.url(str(location))
        if url.startswith(redirect_uri):
            return url, consents
        response = visitor.get(url)
    raise AssertionError(f"no redirect to {redirect_uri}")


def _passkey_ceremony(
    visitor: Visitor, authenticator: SoftAuthenticator, authorization: Authorization
) -> requests.Response:
    """The login page's passkey button for a pending authorization request: options (no email:
    a discoverable credential), ``navigator.credentials.get()``, verify. The verify answer."""
    headers = visitor.csrf_header(_path(authorization.location))
    options = visitor.post("/login/passkey/options", json={}, headers=headers)
    expect(options.status_code == 200, f"passkey options: {options.status_code}")
    ceremony = options.json()
    credential = authenticator.get(ceremony["publicKey"], origin=visitor.base_url)
    body = {"challenge_id": ceremony["challenge_id"], "credential": credential,
            "request": authorization.pending_id, "next": ""}  # fmt: skip
    return visitor.post("/login/passkey/verify", json=body, headers=headers)


def _verified_id_token(idp: LiveIdp, id_token: str, client_id: str, nonce: str) -> dict[str, Any]:
    """OIDC Core 3.1.3.7: the signature against the published keys, then iss, aud, exp, nonce."""
    jwks = requests.get(idp.discovery()["jwks_uri"], timeout=HTTP_TIMEOUT).json()
    token = jwt.decode(id_token, KeySet.import_key_set(jwks))
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": idp.url},
        aud={"essential": True, "value": client_id},
        nonce={"essential": True, "value": nonce},
        exp={"essential": True},
        sub={"essential": True},
    ).validate(token.claims)
    claims: dict[str, Any] = dict(token.claims)
    return claims


def _audit(idp: LiveIdp, email: str) -> list[dict[str, Any]]:
    printed = idp.run("audit", "export", "--format", "jsonl", "--user", email).stdout
    return [json.loads(line) for line in printed.splitlines() if line.strip().startswith("{")]


# -- the walk -------------------------------------------------------------------------------------
def test_from_an_empty_install_to_passkey_sign_ins_all_from_the_cli(
    empty_install: LiveIdp,
) -> None:
    idp = empty_install
    assert _tables(idp.env["IDP_DATABASE_URL"]) == []  # an empty install

    # 1. The first admin: `idp init` on the empty database prints a one-time link.
    printed = idp.run("init", "--admin-email", ADMIN_EMAIL).stdout
    assert f"Created {ADMIN_EMAIL}" in printed, printed
    [link] = re.findall(rf"{re.escape(idp.url)}/login/link/[A-Za-z0-9_-]{{20,}}", printed)
    [admin_row] = idp.cli("users", "list", "--json")
    assert admin_row["email"] == ADMIN_EMAIL
    assert admin_row["admin"] is True
    idp.start()

    admin = Visitor(idp.url)
    admin_key = SoftAuthenticator()
    try:
        # GET only shows a confirmation (mail scanners prefetch links); the POST spends it.
        confirmation = admin.get(_path(link))
        assert confirmation.status_code == 200
        assert f"Sign in as {ADMIN_EMAIL}?" in confirmation.text
        spent = _submit_form(admin, _path(link))
        assert spent.status_code == 302, spent.text
        assert spent.headers["Location"] == "/account/recover"
        assert admin.get("/account").headers.get("Location") == "/account/recover"
        stored = _add_passkey(admin, "/account/recover", admin_key)
        assert len(stored["backup_codes"]) == 10  # the first passkey comes with backup codes

        # The link's session proved the mailbox, not a passkey: the console asks for one.
        guarded = admin.get("/admin")
        assert guarded.status_code == 302
        assert guarded.headers["Location"] == "/login?next=/admin"
        headers = admin.csrf_header("/login?next=/admin")
        options = admin.post("/login/passkey/options", json={}, headers=headers).json()
        assertion = admin_key.get(options["publicKey"], origin=idp.url)
        verified = admin.post(
            "/login/passkey/verify",
            json={"challenge_id": options["challenge_id"], "credential": assertion,
                  "request": "", "next": "/admin"},
            headers=headers,
        )  # fmt: skip
        assert verified.status_code == 200, verified.text
        assert verified.json()["redirect"] == "/admin"
        console = admin.get("/admin")
        assert console.status_code == 200, console.headers.get("Location")
        assert "Admin console" in console.text
    finally:
        admin.close()
    # An admin has a passkey now: `idp init` prints no link any more.
    assert "/login/link/" not in idp.run("init").stdout

    # 2. A confidential client app.
    redirect_uri = f"http://localhost:{free_port()}/cb"
    created = idp.cli(
        "clients", "create", "--name", CLIENT_NAME, "--kind", "web",
        "--redirect-uri", redirect_uri, "--auth-method", "client_secret_basic",
        "--scope", "openid", "--scope", "profile", "--scope", "email",
        "--scope", "offline_access",
        "--grant-type", "authorization_code", "--grant-type", "refresh_token", "--json",
    )  # fmt: skip
    client_id, client_secret = created["client_id"], created["client_secret"]
    assert client_id
    assert len(client_secret) >= 32
    shown = idp.cli("clients", "show", client_id, "--json")
    assert shown["client_id"] == client_id
    assert shown["name"] == CLIENT_NAME
    assert shown["redirect_uris"] == [redirect_uri]
    assert client_secret not in json.dumps(shown)  # shown once, at creation
    app = RelyingParty(idp.url, client_id, client_secret, redirect_uri)

    # 3. An invited user, in a browser of their own, with an authenticator of their own.
    invite = idp.cli("users", "invite", USER_EMAIL, "--name", USER_NAME, "--json")
    assert re.fullmatch(rf"{re.escape(idp.url)}/invite/[A-Za-z0-9_-]{{20,}}", invite["url"])
    user_key = SoftAuthenticator()
    invitee = Visitor(idp.url)
    try:
        page = invitee.get(_path(invite["url"]))
        assert page.status_code == 200
        assert "Create your account" in page.text
        accepted = _submit_form(invitee, _path(invite["url"]), name=USER_NAME)
        assert accepted.status_code == 302, accepted.text
        assert accepted.headers["Location"] == "/signup/passkey"
        assert f"Welcome, {USER_NAME}." in invitee.get("/signup/passkey").text
        _add_passkey(invitee, "/signup/passkey", user_key)
        account = invitee.get("/account")
        assert account.status_code == 200, account.headers.get("Location")  # signed in
        assert USER_EMAIL in account.text
    finally:
        invitee.close()
    assert len(user_key.credential_ids()) == 1
    shown_user = idp.cli("users", "show", USER_EMAIL, "--json")
    user_sub = shown_user["id"]
    assert user_sub == invite["sub"]
    assert [p["credential_id"] for p in shown_user["passkeys"]] == user_key.credential_ids()
    # The CLI printed the invite's URL: it proves nothing about the mailbox until the user
    # confirms the address (docs/security.md).
    assert shown_user["email_verified"] is False

    # 4. The invitee signs in to the app with the passkey (a new browser: no session yet).
    browser = Visitor(idp.url)
    try:
        authorization, nonce = _authorize(browser, client_id, redirect_uri)
        assert _path(authorization.location).startswith("/login?"), authorization.location
        verified = _passkey_ceremony(browser, user_key, authorization)
        assert verified.status_code == 200, verified.text
        callback, consents = _follow_to_callback(browser, verified, redirect_uri)
        assert consents == 1  # a third-party app (no --first-party): the user is asked
        received = query_of(callback)
        assert received["state"] == authorization.state
        assert received.get("iss") == idp.url  # RFC 9207
        tokens = app.exchange(callback, authorization)
        assert tokens["token_type"].lower() == "bearer"
        assert tokens.get("refresh_token"), f"no refresh token for offline_access: {tokens}"
        claims = _verified_id_token(idp, tokens["id_token"], client_id, nonce)
        assert claims["sub"] == user_sub
        assert len(set(claims["amr"]) & PASSKEY_AMR) == 1, claims
        userinfo = requests.get(
            idp.discovery()["userinfo_endpoint"],
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
            timeout=HTTP_TIMEOUT,
        )
        assert userinfo.status_code == 200, userinfo.text
        assert userinfo.json()["sub"] == user_sub
        assert userinfo.json()["email"] == USER_EMAIL
        assert userinfo.json()["name"] == USER_NAME

        # 5. The admin disables the user from the command line.
        assert idp.cli("users", "disable", USER_EMAIL, "--json")["disabled"] is True
        retry, _ = _authorize(browser, client_id, redirect_uri)
        # The session ended with the disable: /authorize asks for a sign-in again, no code.
        assert _path(retry.location).startswith("/login?"), retry.location
        assert "code" not in query_of(retry.location)
        refused = _passkey_ceremony(browser, user_key, retry)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "passkey_failed"  # the same calm answer as any failure
        assert "code=" not in refused.text
        assert not str(refused.headers.get("Location", "")).startswith(redirect_uri)
        refresh = app.post(
            "/token", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        )
        assert refresh.status_code == 400, refresh.text
        assert refresh.json()["error"] == "invalid_grant"
        after = requests.get(
            idp.discovery()["userinfo_endpoint"],
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
            timeout=HTTP_TIMEOUT,
        )
        assert after.status_code == 401
    finally:
        browser.close()

    # The audit log, from the command line: who did what to whom, in order. Events a user
    # causes themselves carry no separate actor (actor_id null, the subject acted); the
    # command line's are ``cli``.
    events = sorted(_audit(idp, USER_EMAIL), key=lambda e: e["id"])
    assert all(e["subject_id"] == user_sub for e in events), events
    assert all(e["subject_email"] == USER_EMAIL for e in events), events

    def one(kind: str, outcome: str = "success") -> dict[str, Any]:
        matching = [e for e in events if e["kind"] == kind and e["outcome"] == outcome]
        assert len(matching) == 1, (kind, outcome, [(e["kind"], e["outcome"]) for e in events])
        return matching[0]

    invite_issued, invite_accepted = one("invite.issued"), one("invite.accepted")
    passkey_sign_in, code_issued = one("login.passkey"), one("authorization.code_issued")
    disabled, blocked = one("admin.user_disabled"), one("login.passkey", "failure")
    assert invite_issued["actor_id"] == "cli"
    assert disabled["actor_id"] == "cli"
    assert invite_accepted["details"]["link_id"] == invite_issued["details"]["link_id"]
    assert passkey_sign_in["actor_id"] is None
    assert passkey_sign_in["ip_address"] == "127.0.0.1"
    assert passkey_sign_in["details"]["credential_id"] == user_key.credential_ids()[0]
    assert code_issued["actor_id"] is None
    assert code_issued["client_id"] == client_id
    assert "offline_access" in code_issued["details"]["scope"]
    assert blocked["details"]["reason"] == "user_disabled"
    order = [
        e["id"]
        for e in (invite_issued, invite_accepted, passkey_sign_in, code_issued, disabled, blocked)
    ]
    assert order == sorted(order), events

    # The admin's own road is in the log too: the link spent, then the passkey sign-in.
    admin_kinds = [e["kind"] for e in sorted(_audit(idp, ADMIN_EMAIL), key=lambda e: e["id"])]
    assert admin_kinds.index("login.link") < admin_kinds.index("login.passkey"), admin_kinds

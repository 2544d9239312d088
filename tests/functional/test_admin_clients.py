"""Client apps in the admin console and on the command line, through the real endpoints.

Every client here is registered through the console's forms (or ``idp clients``), and then used
where it matters: the authorization endpoint, the token endpoint, userinfo and the consent page.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from werkzeug.test import TestResponse

from idp.extensions import db
from idp.models import AccessToken, AuditEvent, Client, Consent, Grant, RefreshToken
from idp.models.base import utcnow
from tests.functional import test_cli
from tests.functional.test_cli import Idp
from tests.support.admin import VERSION, ConsoleBrowser, passkey_browser
from tests.support.factories import (
    POST_LOGOUT_URI,
    CreatedUser,
    RegisteredClient,
    create_client,
    create_user,
)
from tests.support.flow import RelyingParty, query_of
from tests.support.passkey_flow import csrf_meta

REDIRECT = "https://wiki.example/callback"
SECRET = re.compile(r'id="client-secret" class="secret">([^<]+)<')
CLIENT_ID = re.compile(r'id="client-id">([^<]+)<')
#: The `idp` command against a deployment of its own (tests/functional/test_cli.py).
initialised_database = test_cli.initialised_database
idp = test_cli.idp


def client_form(**overrides: Any) -> dict[str, Any]:
    """The console's client form as a browser submits it (field names as in client_form.html)."""
    form: dict[str, Any] = {
        "name": "Wiki",
        "kind": "web",
        "redirect_uris": REDIRECT,
        "post_logout_redirect_uris": "https://wiki.example/",
        "scopes": ["openid", "profile", "email", "offline_access"],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_method": "",
        "id_token_signed_response_alg": "RS256",
        "logo_uri": "",
        "tos_uri": "",
        "policy_uri": "",
        "jwks": "",
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def register(admin: ConsoleBrowser, **overrides: Any) -> tuple[str, str | None]:
    """Register through the console; (client id, secret shown once or None)."""
    response = admin.post("/admin/clients/new", client_form(**overrides))
    if response.status_code == 302:  # no secret: straight to the client's page
        return response.headers["Location"].rsplit("/", 1)[1], None
    assert response.status_code == 200, response.text
    client_id = CLIENT_ID.search(response.text)
    secret = SECRET.search(response.text)
    assert client_id is not None
    assert secret is not None
    return client_id.group(1), html.unescape(secret.group(1))


def edit(admin: ConsoleBrowser, client_id: str, form: dict[str, Any]) -> TestResponse:
    """Post the client's edit form with the version its page was read from."""
    return admin.post_read_version(f"/admin/clients/{client_id}/edit", form)


def basic_token_request(
    browser: FlaskClient, client_id: str, secret: str, **data: str
) -> tuple[int, dict[str, Any]]:
    """A client-credentials request at the real token endpoint (RFC 6749 4.4, 2.3.1 Basic)."""
    body = {"grant_type": "client_credentials", "scope": "openid", **data}
    response = browser.post("/token", data=body, auth=(client_id, secret))
    return response.status_code, response.get_json()


def audit_events(app: Flask, kind: str) -> list[AuditEvent]:
    with app.app_context():
        events = list(db.session.scalars(select(AuditEvent).where(AuditEvent.kind == kind)))
        db.session.expunge_all()
        return events


def stored(app: Flask, client_id: str) -> Client | None:
    with app.app_context():
        found = db.session.get(Client, client_id)
        db.session.expunge_all()
        return found


def to_consent(rp: RelyingParty, user: CreatedUser) -> str:
    """Authorize, sign in, and follow idp's redirects to the consent page; its path and query."""
    response = rp.sign_in(rp.sign_in_page(), user)
    for _ in range(5):
        location = response.headers["Location"]
        if location.startswith("/consent"):
            return location
        response = rp.browser.get(location)
    raise AssertionError("no consent page")


@pytest.fixture
def admin(app: Flask) -> ConsoleBrowser:
    return passkey_browser(app, "root@example.com")


@pytest.fixture
def user(app: Flask) -> CreatedUser:
    return create_user(app, email="ada@example.com")


# -- list and register ----------------------------------------------------------------------------
def test_client_list_starts_empty_and_offers_registration(admin: ConsoleBrowser) -> None:
    page = admin.browser.get("/admin/clients")
    assert page.status_code == 200
    assert 'id="no-clients"' in page.text
    assert 'href="/admin/clients/new"' in page.text


def test_registered_client_is_listed_with_name_id_kind_and_status(
    app: Flask, admin: ConsoleBrowser
) -> None:
    web_id, _ = register(admin, name="Wiki")
    spa_id, _ = register(admin, name="Photos", kind="spa", grant_types=["authorization_code"])
    admin.post(f"/admin/clients/{spa_id}/disable")
    page = admin.browser.get("/admin/clients").text
    rows = {m.group(1): m.group(2) for m in re.finditer(r'data-client-id="([^"]+)">(.*?)</tr>',
                                                         page, re.S)}  # fmt: skip
    assert set(rows) == {web_id, spa_id}
    assert "Wiki" in rows[web_id]
    assert "Web app" in rows[web_id]
    assert "Active" in rows[web_id]
    assert "Photos" in rows[spa_id]
    assert "Single-page app" in rows[spa_id]
    assert "Disabled" in rows[spa_id]


def test_new_secret_is_shown_once_and_works_at_the_token_endpoint(
    app: Flask, admin: ConsoleBrowser, client: FlaskClient
) -> None:
    client_id, secret = register(admin)
    assert secret is not None
    assert len(secret) >= 43
    status, body = basic_token_request(client, client_id, secret)
    assert status == 200, body
    assert body["token_type"] == "Bearer"
    # Never again: not on the client's page, not in the list, not in the stored row.
    for path in (
        f"/admin/clients/{client_id}",
        "/admin/clients",
        f"/admin/clients/{client_id}/edit",
    ):
        assert secret not in admin.browser.get(path).text
    row = stored(app, client_id)
    assert row is not None
    assert row.secret_hash is not None
    assert secret not in row.secret_hash


def test_secret_page_is_not_cached(admin: ConsoleBrowser) -> None:
    response = admin.post("/admin/clients/new", client_form())
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def test_registration_is_audited_with_the_admin_as_actor(app: Flask, admin: ConsoleBrowser) -> None:
    client_id, _ = register(admin)
    [event] = audit_events(app, "client.created")
    assert event.actor_id == admin.user.id
    assert event.client_id == client_id
    assert event.details["via"] == "console"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"redirect_uris": "http://wiki.example/callback"}, "must use https"),
        ({"redirect_uris": "https://wiki.example/callback#top"}, "must not contain a fragment"),
        ({"redirect_uris": "https://*.wiki.example/callback"}, "must not contain a wildcard"),
        ({"redirect_uris": ""}, "at least one redirect URI"),
        ({"post_logout_redirect_uris": "http://wiki.example/"}, "post-logout redirect URI"),
        ({"redirect_uris": "com.example.app:/cb"}, "must use https"),
        ({"kind": "spa", "token_endpoint_auth_method": "client_secret_basic"}, "public clients"),
        ({"kind": "spa"}, "cannot use client_credentials"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "JWKS"),
        ({"token_endpoint_auth_method": "private_key_jwt", "jwks": "{nope"}, "not valid JSON"),
        ({"logo_uri": "http://wiki.example/logo.png"}, "https URL"),
        ({"tos_uri": "javascript:alert(1)"}, "https URL"),
        ({"id_token_signed_response_alg": "none"}, "ID token alg"),
        ({"kind": "desktop"}, "kind must be one of"),
        ({"scopes": None}, "at least one scope"),
        ({"name": "  "}, "needs a name"),
    ],
)
def test_invalid_registration_shows_the_reason_and_stores_nothing(
    app: Flask, admin: ConsoleBrowser, overrides: dict[str, Any], message: str
) -> None:
    response = admin.post("/admin/clients/new", client_form(**overrides))
    assert response.status_code == 400
    assert message.lower() in html.unescape(response.text).lower()
    assert 'id="client-form"' in response.text  # the form again, as typed
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Client)) == 0


@pytest.mark.parametrize(
    "character",
    ["\u0085", "\u009b", "\u00a0", "\u2028", "\u2029", "\u202e", "\u200b", "\u3000",
     "\ufeff"],
)  # fmt: skip
def test_a_redirect_uri_with_an_invisible_or_control_character_is_refused(
    app: Flask, admin: ConsoleBrowser, character: str
) -> None:
    """RFC 3986 2 and 7.2 (no character outside the URI alphabet; none of them is ever sent
    raw), RFC 6749 3.1.2.3 (exact matching): a C1 control, a Unicode space, line or paragraph
    separator or format character (bidi override, zero width) was saved, and every /authorize
    for the client was then a 400. Refused at registration, as other control characters are."""
    uri = f"https://wiki.example/call{character}back"
    response = admin.post("/admin/clients/new", client_form(redirect_uris=uri))
    assert response.status_code == 400
    assert "must not contain spaces or control characters" in html.unescape(response.text)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Client)) == 0


@pytest.mark.parametrize("character", ["\u202e", "\u2066", "\x1b", "\x85", "\x7f", "\n"])
def test_a_client_name_with_a_directional_or_control_character_is_refused(
    app: Flask, admin: ConsoleBrowser, character: str
) -> None:
    """The name is what users read on the consent page ("Allow ... to use your account?"), the
    device review and the sign-out page: "\u202eppA" reads as "App" (Unicode Standard Annex 9),
    and a control is acted on by terminals (Unicode general category Cc). A person's name and a
    group's texts keep none; a client's name with one is refused, at registration and at an
    edit, and nothing is stored."""
    response = admin.post("/admin/clients/new", client_form(name=f"Wiki{character}Admin"))
    assert response.status_code == 400
    assert "the name must not contain control characters" in html.unescape(response.text).lower()
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Client)) == 0
    client_id, _ = register(admin)
    edited = edit(admin, client_id, client_form(name=f"Wi{character}ki"))
    assert edited.status_code == 400
    with app.app_context():
        assert db.session.get(Client, client_id).name == "Wiki"


DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def test_console_registers_a_device_client_without_redirect_uris(
    app: Flask, admin: ConsoleBrowser
) -> None:
    """A TV or a command line tool (RFC 8628) has no redirect URI; the form offers the grant."""
    form = admin.browser.get("/admin/clients/new")
    assert f'name="grant_types" value="{DEVICE_GRANT}"' in form.text
    client_id, secret = register(admin, name="Living Room TV", kind="native", redirect_uris="",
                                 grant_types=[DEVICE_GRANT, "refresh_token"])  # fmt: skip
    assert secret is None
    row = stored(app, client_id)
    assert row is not None
    assert row.grant_types == [DEVICE_GRANT, "refresh_token"]
    assert row.redirect_uris == []
    page = admin.browser.get(f"/admin/clients/{client_id}")
    assert 'id="connect-device"' in page.text
    assert 'id="snippet-openid-client"' not in page.text  # the code flow's snippets need a URI


def test_public_app_gets_no_secret(app: Flask, admin: ConsoleBrowser) -> None:
    client_id, secret = register(admin, kind="spa", grant_types=["authorization_code"])
    assert secret is None
    row = stored(app, client_id)
    assert row is not None
    assert row.is_public is True
    assert row.token_endpoint_auth_method == "none"
    assert row.secret_hash is None
    assert "Rotate secret" not in admin.browser.get(f"/admin/clients/{client_id}").text


# -- native apps: any port on a loopback redirect (RFC 8252 7.3) ----------------------------------
def test_native_app_signs_in_on_any_loopback_port_through_the_whole_flow(
    app: Flask, admin: ConsoleBrowser, client: FlaskClient, user: CreatedUser
) -> None:
    client_id, secret = register(
        admin,
        kind="native",
        redirect_uris="http://127.0.0.1/callback",
        post_logout_redirect_uris="",
        grant_types=["authorization_code", "refresh_token"],
        first_party="1",
    )
    assert secret is None
    rp = RelyingParty(client, RegisteredClient(client_id, None, "http://127.0.0.1:53682/callback"))
    callback = rp.obtain_code(user)
    assert callback["iss"] == "http://localhost"
    exchanged = rp.exchange(callback["code"])
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.get_json()["id_token"]


def test_single_page_app_gets_no_loopback_port_variation(
    app: Flask, admin: ConsoleBrowser, client: FlaskClient
) -> None:
    client_id, _ = register(
        admin,
        kind="spa",
        redirect_uris="http://127.0.0.1/callback",
        post_logout_redirect_uris="",
        grant_types=["authorization_code"],
    )
    rp = RelyingParty(client, RegisteredClient(client_id, None, "http://127.0.0.1:53682/callback"))
    response = rp.authorize()
    assert response.status_code == 400  # an error page at idp, never a redirect
    assert "is not registered for the application" in response.text


def test_native_app_may_register_a_private_use_scheme(app: Flask, admin: ConsoleBrowser) -> None:
    client_id, _ = register(
        admin,
        kind="native",
        redirect_uris="com.example.wiki:/callback",
        post_logout_redirect_uris="",
        grant_types=["authorization_code"],
    )
    row = stored(app, client_id)
    assert row is not None
    assert row.redirect_uris == ["com.example.wiki:/callback"]


# -- the client's page: settings and how to connect -----------------------------------------------
def test_client_page_shows_how_to_connect(admin: ConsoleBrowser) -> None:
    client_id, _ = register(admin)
    page = html.unescape(admin.browser.get(f"/admin/clients/{client_id}").text)
    assert "http://localhost/.well-known/openid-configuration" in page
    assert REDIRECT in page
    # One snippet per library, filled in with this client.
    assert f'"{client_id}"' in page  # openid-client and Authlib
    assert "client.ClientSecretBasic(process.env.IDP_CLIENT_SECRET)" in page
    assert 'token_endpoint_auth_method": "client_secret_basic"' in page
    assert f"OIDCClientID            {client_id}" in page
    assert f"OIDCRedirectURI         {REDIRECT}" in page
    assert "allowInsecureRequests" in page  # the test issuer is http://localhost


def test_the_apache_snippet_protects_the_location_of_its_redirect_uri(
    admin: ConsoleBrowser,
) -> None:
    """mod_auth_openidc handles OIDCRedirectURI only inside a location whose AuthType is
    openid-connect: a snippet without one, pasted as it is, protected nothing and left the
    callback to the application, which 404s it (docs/integrating.md, "Apache")."""
    client_id, _ = register(admin)
    page = html.unescape(admin.browser.get(f"/admin/clients/{client_id}").text)
    snippet = page.split('id="snippet-mod-auth-openidc"', 1)[1].split("</details>", 1)[0]
    protected = "<Location />\n    AuthType openid-connect\n    Require valid-user\n</Location>"
    assert protected in snippet


def test_public_app_page_shows_no_secret_in_the_snippets(admin: ConsoleBrowser) -> None:
    client_id, _ = register(admin, kind="spa", grant_types=["authorization_code"])
    page = html.unescape(admin.browser.get(f"/admin/clients/{client_id}").text)
    assert "client.None()" in page
    assert "client_secret=" not in page
    assert "mod_auth_openidc" not in page  # a server module needs a confidential client


def test_unknown_client_is_404(admin: ConsoleBrowser) -> None:
    for path in ("/admin/clients/nope", "/admin/clients/nope/edit", "/admin/clients/nope/delete"):
        assert admin.browser.get(path).status_code == 404
    assert admin.post("/admin/clients/nope/disable").status_code == 404
    assert admin.browser.get("/admin/clients/" + "x" * 300).status_code == 404


# -- edit -----------------------------------------------------------------------------------------
def test_edit_form_shows_the_current_settings_and_saves_changes(
    app: Flask, admin: ConsoleBrowser
) -> None:
    client_id, _ = register(admin)
    form = admin.browser.get(f"/admin/clients/{client_id}/edit").text
    assert 'value="Wiki"' in form
    assert REDIRECT in form
    response = edit(
        admin,
        client_id,
        client_form(
            name="Team wiki",
            redirect_uris=f"{REDIRECT}\nhttps://wiki.example/other",
            id_token_signed_response_alg="ES256",
            first_party="1",
        ),
    )
    assert response.status_code == 302
    row = stored(app, client_id)
    assert row is not None
    assert row.name == "Team wiki"
    assert row.redirect_uris == [REDIRECT, "https://wiki.example/other"]
    assert row.id_token_signed_response_alg == "ES256"
    assert row.first_party is True
    [event] = audit_events(app, "client.updated")
    assert event.actor_id == admin.user.id
    assert set(event.details["changed"]) == {"name", "redirect_uris", "id_token_alg",
                                             "first_party"}  # fmt: skip


CHECKED_SCOPE = re.compile(r'name="scopes" value="([^"]+)" checked')


def test_the_edit_form_keeps_a_claim_scope_the_api_or_the_command_line_gave(
    app: Flask, admin: ConsoleBrowser
) -> None:
    """A scope named after a mapped claim (``roles``, docs/admins.md, "Groups, per-app access
    and claim maps") is set by the API or ``idp clients edit --scope``. The console's form saves
    every setting as it shows them: it shows that scope, ticked, so that an edit of something
    else (the name) keeps it, instead of taking the claim from the app's users unseen; unticked,
    it goes."""
    client = create_client(app, scopes=["openid", "profile", "roles"], first_party=False)
    path = f"/admin/clients/{client.client_id}/edit"
    shown = CHECKED_SCOPE.findall(admin.browser.get(path).text)
    assert shown == ["openid", "profile", "roles"]
    form = client_form(name="Team wiki", redirect_uris=client.redirect_uri, scopes=shown,
                       post_logout_redirect_uris=POST_LOGOUT_URI)  # fmt: skip
    assert edit(admin, client.client_id, form).status_code == 302
    row = stored(app, client.client_id)
    assert row is not None
    assert (row.name, row.scopes) == ("Team wiki", ["openid", "profile", "roles"])
    [event] = audit_events(app, "client.updated")
    assert event.details["changed"] == ["name"]
    form["scopes"] = ["openid", "profile"]
    assert edit(admin, client.client_id, form).status_code == 302
    row = stored(app, client.client_id)
    assert row is not None
    assert row.scopes == ["openid", "profile"]
    assert "roles" not in CHECKED_SCOPE.findall(admin.browser.get(path).text)


def test_an_edit_form_opened_before_another_change_saves_nothing(
    app: Flask, admin: ConsoleBrowser
) -> None:
    """The form saves every setting as it showed them. Opened before another admin removed a
    redirect URI (a leaked one, say), its save would put the URI back, unseen: it applies only
    to the version it was read from (as the API's If-Match, RFC 9110 13.1.1), else a 409 that
    shows the settings as they are now and saves nothing; a form without a version likewise."""
    leaked = "https://old.wiki.example/callback"
    client_id, _ = register(admin, redirect_uris=f"{REDIRECT}\n{leaked}")
    stale = VERSION.search(admin.browser.get(f"/admin/clients/{client_id}/edit").text)
    assert stale is not None
    removed = edit(admin, client_id, client_form())  # the other tab: the leaked URI goes
    assert removed.status_code == 302
    stale_form = client_form(name="Team wiki", redirect_uris=f"{REDIRECT}\n{leaked}")
    for form in ({**stale_form, "version": stale.group(1)}, stale_form):
        response = admin.post(f"/admin/clients/{client_id}/edit", form)
        assert response.status_code == 409
        assert "nothing was saved" in response.text
        assert leaked not in response.text  # the settings as they are now
        row = stored(app, client_id)
        assert row is not None
        assert (row.name, row.redirect_uris) == ("Wiki", [REDIRECT])
    assert len(audit_events(app, "client.updated")) == 1
    again = edit(admin, client_id, client_form(name="Team wiki"))
    assert again.status_code == 302
    renamed = stored(app, client_id)
    assert renamed is not None
    assert renamed.name == "Team wiki"


def test_edit_with_an_invalid_redirect_uri_changes_nothing(
    app: Flask, admin: ConsoleBrowser
) -> None:
    client_id, _ = register(admin)
    response = edit(admin, client_id, client_form(redirect_uris="https://*.evil.example/"))
    assert response.status_code == 400
    assert "wildcard" in response.text
    row = stored(app, client_id)
    assert row is not None
    assert row.redirect_uris == [REDIRECT]


def test_edit_cannot_turn_a_web_app_into_a_public_one(app: Flask, admin: ConsoleBrowser) -> None:
    client_id, _ = register(admin)
    response = edit(
        admin,
        client_id,
        client_form(kind="spa", grant_types=["authorization_code"]),
    )
    assert response.status_code == 400
    assert "register a new one" in response.text
    row = stored(app, client_id)
    assert row is not None
    assert row.kind == "web"
    assert row.secret_hash is not None


# -- consent page: logo, terms and policy ---------------------------------------------------------
def test_consent_page_shows_the_logo_and_links_set_in_the_console(
    app: Flask, admin: ConsoleBrowser, client: FlaskClient, user: CreatedUser
) -> None:
    client_id, secret = register(
        admin,
        logo_uri="https://cdn.wiki.example/logo.png",
        tos_uri="https://wiki.example/terms",
        policy_uri="https://wiki.example/privacy",
    )
    rp = RelyingParty(client, RegisteredClient(client_id, secret, REDIRECT))
    consent = client.get(to_consent(rp, user))
    assert consent.status_code == 200
    assert '<img src="https://cdn.wiki.example/logo.png"' in consent.text
    assert 'href="https://wiki.example/terms"' in consent.text
    assert 'href="https://wiki.example/privacy"' in consent.text
    # The logo's origin, and only it, joins the page's image sources.
    policy = consent.headers["Content-Security-Policy"]
    assert "img-src 'self' data: https://cdn.wiki.example;" in policy
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'none'" in policy


def test_consent_page_without_a_logo_keeps_the_default_policy(
    app: Flask, admin: ConsoleBrowser, client: FlaskClient, user: CreatedUser
) -> None:
    client_id, secret = register(admin)
    rp = RelyingParty(client, RegisteredClient(client_id, secret, REDIRECT))
    consent = client.get(to_consent(rp, user))
    assert "<img" not in consent.text
    assert 'id="client-links"' not in consent.text
    assert "img-src 'self' data:;" in consent.headers["Content-Security-Policy"]


# -- disable and enable ---------------------------------------------------------------------------
def test_disabled_client_gets_no_authorization_and_no_tokens(storage_app: Flask) -> None:
    admin = passkey_browser(storage_app, "root@example.com")
    user = create_user(storage_app, email="ada@example.com")
    browser = storage_app.test_client()
    client_id, secret = register(admin, first_party="1")
    assert secret is not None
    rp = RelyingParty(browser, RegisteredClient(client_id, secret, REDIRECT))
    tokens = rp.tokens_for(user)
    assert rp.userinfo(tokens["access_token"]).status_code == 200

    assert admin.post(f"/admin/clients/{client_id}/disable").status_code == 302
    # No authorization: an error page at idp, not a redirect to the client.
    refused = rp.authorize()
    assert refused.status_code == 400
    assert "not registered" in refused.text
    # No tokens, by any grant; and the access token it holds stops working now.
    assert rp.refresh(tokens["refresh_token"]).get_json()["error"] == "invalid_client"
    status, body = basic_token_request(browser, client_id, secret)
    assert (status, body["error"]) == (401, "invalid_client")
    assert rp.userinfo(tokens["access_token"]).status_code == 401
    [event] = audit_events(storage_app, "client.disabled")
    assert event.actor_id == admin.user.id
    assert event.client_id == client_id

    # Enabled again: the refresh token still works (it was never spent), sign-in works.
    assert admin.post(f"/admin/clients/{client_id}/enable").status_code == 302
    refreshed = rp.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert rp.userinfo(refreshed.get_json()["access_token"]).status_code == 200
    assert audit_events(storage_app, "client.enabled")[0].actor_id == admin.user.id


def test_code_issued_before_disabling_cannot_be_exchanged(
    app: Flask, admin: ConsoleBrowser, client: FlaskClient, user: CreatedUser
) -> None:
    client_id, secret = register(admin, first_party="1")
    rp = RelyingParty(client, RegisteredClient(client_id, secret, REDIRECT))
    code = rp.obtain_code(user)["code"]
    admin.post(f"/admin/clients/{client_id}/disable")
    response = rp.exchange(code)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"


def test_client_page_shows_the_disabled_state_and_offers_enable(admin: ConsoleBrowser) -> None:
    client_id, _ = register(admin)
    admin.post(f"/admin/clients/{client_id}/disable")
    page = admin.browser.get(f"/admin/clients/{client_id}").text
    assert 'id="disabled-note"' in page
    assert 'id="enable-client"' in page
    assert 'id="disable-client"' not in page


# -- secret rotation with an overlap, through the token endpoint ---------------------------------
def rotate(admin: ConsoleBrowser, client_id: str, overlap: int) -> str:
    response = admin.post(f"/admin/clients/{client_id}/rotate-secret", {"overlap": str(overlap)})
    assert response.status_code == 200, response.text
    match = SECRET.search(response.text)
    assert match is not None
    return html.unescape(match.group(1))


def test_rotated_secret_overlaps_with_the_old_one_until_the_overlap_ends(
    storage_app: Flask,
) -> None:
    admin = passkey_browser(storage_app, "root@example.com")
    browser = storage_app.test_client()
    client_id, old = register(admin)
    assert old is not None
    new = rotate(admin, client_id, 3600)
    assert new != old
    assert basic_token_request(browser, client_id, new)[0] == 200
    assert basic_token_request(browser, client_id, old)[0] == 200  # both, during the overlap
    assert (
        "The previous secret works until" in admin.browser.get(f"/admin/clients/{client_id}").text
    )
    # Time travel to the end of the overlap: the old secret stops, the new one goes on.
    with storage_app.app_context():
        db.session.execute(
            update(Client)
            .where(Client.client_id == client_id)
            .values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
    status, body = basic_token_request(browser, client_id, old)
    assert (status, body["error"]) == (401, "invalid_client")
    assert basic_token_request(browser, client_id, new)[0] == 200
    [event] = audit_events(storage_app, "client.secret_rotated")
    assert event.actor_id == admin.user.id
    assert event.details["overlap_seconds"] == 3600


def test_rotation_without_overlap_revokes_the_old_secret_at_once(
    app: Flask, admin: ConsoleBrowser, client: FlaskClient
) -> None:
    client_id, old = register(admin)
    assert old is not None
    page = admin.browser.get(f"/admin/clients/{client_id}").text
    assert '<option value="86400" selected>' in page  # the configured default overlap
    new = rotate(admin, client_id, 0)
    assert basic_token_request(client, client_id, old)[0] == 401
    assert basic_token_request(client, client_id, new)[0] == 200


def test_rotation_with_an_overlap_out_of_bounds_is_refused(
    app: Flask, admin: ConsoleBrowser, client: FlaskClient
) -> None:
    client_id, old = register(admin)
    assert old is not None
    for overlap in ("-5", "99999999", "soon"):
        response = admin.post(f"/admin/clients/{client_id}/rotate-secret", {"overlap": overlap})
        assert response.status_code == 302
        assert "overlap must be between" in admin.browser.get(response.headers["Location"]).text
    assert basic_token_request(client, client_id, old)[0] == 200  # unchanged


def test_public_client_secret_rotation_is_refused(app: Flask, admin: ConsoleBrowser) -> None:
    client_id, _ = register(admin, kind="spa", grant_types=["authorization_code"])
    response = admin.post(f"/admin/clients/{client_id}/rotate-secret", {"overlap": "0"})
    assert response.status_code == 302
    assert not audit_events(app, "client.secret_rotated")


# -- delete ---------------------------------------------------------------------------------------
def test_delete_asks_first_then_removes_the_client_and_what_was_issued_to_it(
    storage_app: Flask,
) -> None:
    admin = passkey_browser(storage_app, "root@example.com")
    user = create_user(storage_app, email="ada@example.com")
    browser = storage_app.test_client()
    client_id, secret = register(admin)
    assert secret is not None
    assert basic_token_request(browser, client_id, secret)[0] == 200  # a grant-less access token
    rp = RelyingParty(browser, RegisteredClient(client_id, secret, REDIRECT))
    consent_page = to_consent(rp, user)
    pending = query_of(consent_page)["request"]
    token = csrf_meta(browser.get(consent_page).text)
    allowed = browser.post(
        "/consent", data={"csrf_token": token, "request": pending, "decision": "allow"}
    )
    callback = rp.follow_to_callback(allowed)
    assert rp.exchange(callback["code"]).status_code == 200

    confirm = admin.browser.get(f"/admin/clients/{client_id}/delete")
    assert confirm.status_code == 200
    assert "Delete Wiki?" in confirm.text
    assert stored(storage_app, client_id) is not None  # the GET deleted nothing
    bare = admin.post(f"/admin/clients/{client_id}/delete")
    assert bare.status_code == 200
    assert "Delete Wiki?" in bare.text
    assert stored(storage_app, client_id) is not None  # a POST without confirm deletes nothing
    response = admin.post(f"/admin/clients/{client_id}/delete", {"confirm": "yes"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/clients"
    assert stored(storage_app, client_id) is None
    with storage_app.app_context():
        for model in (Grant, Consent, RefreshToken, AccessToken):
            count = db.session.scalar(
                select(func.count()).select_from(model).where(model.client_id == client_id)
            )
            assert count == 0, model
    assert basic_token_request(browser, client_id, secret)[0] == 401
    [event] = audit_events(storage_app, "client.deleted")
    assert event.actor_id == admin.user.id
    assert event.details["name"] == "Wiki"


# -- the command line: the same service ----------------------------------------------------------
def test_cli_create_native_app_and_list_it(idp: Idp) -> None:
    created = idp.json("clients", "create", "--name", "Desk", "--kind", "native",
                       "--redirect-uri", "http://127.0.0.1/cb")  # fmt: skip
    assert created["kind"] == "native"
    assert created["public"] is True
    assert created["client_secret"] is None
    listed = idp.json("clients", "list")
    assert [(c["client_id"], c["kind"], c["status"]) for c in listed] == [
        (created["client_id"], "native", "active")
    ]
    assert f"{created['client_id']}  native  active    Desk" in idp.ok("clients", "list").output


def test_cli_refuses_what_the_console_refuses(idp: Idp) -> None:
    result = idp.run("clients", "create", "--name", "Desk", "--kind", "spa",
                     "--redirect-uri", "com.example.desk:/cb")  # fmt: skip
    assert result.exit_code != 0
    assert "must use https" in result.output
    result = idp.run("clients", "create", "--name", "W", "--redirect-uri", test_cli.REDIRECT_URI,
                     "--logo-uri", "http://w.example/logo.png")  # fmt: skip
    assert result.exit_code != 0
    assert "https URL" in result.output
    assert idp.json("clients", "list") == []


def test_cli_edit_changes_only_what_is_given(idp: Idp) -> None:
    created = idp.create_client("--scope", "openid", "--scope", "email")
    edited = idp.json("clients", "edit", created["client_id"], "--name", "Team wiki",
                      "--tos-uri", "https://rp.example/terms", "--first-party")  # fmt: skip
    assert edited["name"] == "Team wiki"
    assert edited["tos_uri"] == "https://rp.example/terms"
    assert edited["first_party"] is True
    assert edited["scopes"] == ["openid", "email"]
    assert edited["redirect_uris"] == [test_cli.REDIRECT_URI]
    assert edited["client_secret"] is None  # the secret is kept, and not shown
    cleared = idp.json(
        "clients", "edit", created["client_id"], "--tos-uri", "", "--not-first-party"
    )
    assert cleared["tos_uri"] is None
    assert cleared["first_party"] is False
    refused = idp.run(
        "clients", "edit", created["client_id"], "--redirect-uri", "http://x.example/"
    )
    assert refused.exit_code != 0
    assert "must use https" in refused.output
    assert idp.json("clients", "show", created["client_id"])["redirect_uris"] == [
        test_cli.REDIRECT_URI
    ]


def test_cli_disable_enable_delete(idp: Idp) -> None:
    created = idp.create_client()
    assert idp.json("clients", "disable", created["client_id"])["status"] == "disabled"
    assert idp.json("clients", "show", created["client_id"])["disabled_at"] is not None
    assert idp.json("clients", "enable", created["client_id"])["status"] == "active"
    assert idp.json("clients", "delete", created["client_id"], "--yes") == {
        "client_id": created["client_id"],
        "deleted": True,
    }
    assert idp.json("clients", "list") == []
    for command in ("edit", "disable", "enable"):
        result = idp.run("clients", command, "no-such-client")
        assert result.exit_code != 0
        assert "no client no-such-client" in result.output


def test_cli_rotation_overlap(idp: Idp) -> None:
    created = idp.create_client()
    hasher = idp.runtime().client_secrets
    default = idp.json("clients", "rotate-secret", created["client_id"])
    assert default["previous_secret_expires_at"] is not None  # 24 hours by default
    at_once = idp.json("clients", "rotate-secret", created["client_id"], "--overlap", "0")
    assert at_once["previous_secret_expires_at"] is None
    with idp.session() as session:
        row = session.get(Client, created["client_id"])
        assert row is not None
        row.secret_hasher = hasher
        assert row.check_client_secret(at_once["client_secret"]) is True
        assert row.check_client_secret(default["client_secret"]) is False
        assert row.check_client_secret(created["client_secret"]) is False
    refused = idp.run("clients", "rotate-secret", created["client_id"], "--overlap", "-1")
    assert refused.exit_code != 0
    assert "overlap must be between" in refused.output


def test_cli_changes_are_audited_as_the_command_line(idp: Idp) -> None:
    created = idp.create_client()
    idp.ok("clients", "disable", created["client_id"])
    with idp.session() as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        kinds = [(e.kind, e.client_id, e.actor_id, e.details["via"]) for e in events
                 if e.kind.startswith("client.")]  # fmt: skip
    assert kinds == [
        ("client.created", created["client_id"], "cli", "cli"),
        ("client.disabled", created["client_id"], "cli", "cli"),
    ]


def test_access_tokens_of_a_disabled_client_are_revoked_in_the_database(
    app: Flask, admin: ConsoleBrowser, client: FlaskClient
) -> None:
    client_id, secret = register(admin)
    assert secret is not None
    assert basic_token_request(client, client_id, secret)[0] == 200
    admin.post(f"/admin/clients/{client_id}/disable")
    with app.app_context():
        tokens = list(
            db.session.scalars(select(AccessToken).where(AccessToken.client_id == client_id))
        )
        assert tokens
        assert all(t.revoked_at is not None for t in tokens)


# -- junk reaches the views behind the guard ------------------------------------------------------
JUNK_FORMS: list[dict[str, Any]] = [
    {},
    {"name": "x" * 5000, "redirect_uris": "https://a.example/" + "a" * 5000},
    {"redirect_uris": "\n".join(f"https://a.example/{i}" for i in range(500))},
    {"kind": ["web", "spa"], "scopes": ["openid"] * 50, "grant_types": ["x", "y"]},
    {"token_endpoint_auth_method": "private_key_jwt", "jwks": "[" * 10_000 + "]" * 10_000},
    {"token_endpoint_auth_method": "private_key_jwt", "jwks": '{"keys": [{"kty": "RSA"}]}'},
    {"token_endpoint_auth_method": "private_key_jwt", "jwks": "null"},
    {"logo_uri": "https://[::1/x", "tos_uri": "https://a.example:99999/", "policy_uri": "\u202e"},
    {"redirect_uris": "http://[::1", "post_logout_redirect_uris": "https://a.example:x/"},
    {"id_token_signed_response_alg": "A" * 300, "first_party": ["1", "0"]},
    {"overlap": "9" * 400},
]


@pytest.mark.parametrize("junk", JUNK_FORMS, ids=range(len(JUNK_FORMS)))
def test_junk_forms_get_a_calm_answer_never_a_server_error(
    storage_app: Flask, junk: dict[str, Any]
) -> None:
    """PostgreSQL enforces column lengths: every value must be judged before it is stored."""
    admin = passkey_browser(storage_app, "root@example.com")
    client_id, _ = register(admin)
    for path in ("/admin/clients/new", f"/admin/clients/{client_id}/edit",
                 f"/admin/clients/{client_id}/rotate-secret"):  # fmt: skip
        for form in (junk, client_form(**junk)):
            response = admin.post(path, form)
            assert response.status_code < 500, (path, form, response.status_code)
            assert "Traceback" not in response.text
    row = stored(storage_app, client_id)
    assert row is not None
    assert row.redirect_uris == [REDIRECT]


def test_console_sets_require_pushed_authorization_requests(
    app: Flask, admin: ConsoleBrowser
) -> None:
    """RFC 9126 6, from the client form (docs/admins.md, "Pushed authorization requests"): the
    box sets it, the client's page says so, and an edit without the box clears it."""
    client_id, _ = register(admin, require_pushed_authorization_requests="1")
    row = stored(app, client_id)
    assert row is not None
    assert row.require_pushed_authorization_requests is True
    page = admin.browser.get(f"/admin/clients/{client_id}").text
    assert re.search(r'<dd id="par-required">Required</dd>', page)
    form = admin.browser.get(f"/admin/clients/{client_id}/edit").text
    assert re.search(r'id="require_pushed_authorization_requests"[^>]*checked', form)
    response = edit(admin, client_id, client_form())
    assert response.status_code in (302, 303), response.text
    cleared = stored(app, client_id)
    assert cleared is not None
    assert cleared.require_pushed_authorization_requests is False


def test_console_sets_dpop_bound_access_tokens(app: Flask, admin: ConsoleBrowser) -> None:
    """RFC 9449 5.2, from the client form (docs/integrating.md, "DPoP"): the box sets it, the
    client's page says so, and an edit without the box clears it."""
    client_id, _ = register(admin, dpop_bound_access_tokens="1")
    row = stored(app, client_id)
    assert row is not None
    assert row.dpop_bound_access_tokens is True
    page = admin.browser.get(f"/admin/clients/{client_id}").text
    assert re.search(r'<dd id="dpop-required">Required</dd>', page)
    form = admin.browser.get(f"/admin/clients/{client_id}/edit").text
    assert re.search(r'id="dpop_bound_access_tokens"[^>]*checked', form)
    response = edit(admin, client_id, client_form())
    assert response.status_code in (302, 303), response.text
    cleared = stored(app, client_id)
    assert cleared is not None
    assert cleared.dpop_bound_access_tokens is False


def test_console_sets_the_back_channel_logout_uri_and_refuses_plain_http(
    app: Flask, admin: ConsoleBrowser
) -> None:
    """OpenID Connect Back-Channel Logout 1.0 section 2.2, from the client form."""
    client_id, _ = register(
        admin,
        backchannel_logout_uri="https://wiki.example/backchannel",
        backchannel_logout_session_required="1",
    )
    row = stored(app, client_id)
    assert row is not None
    assert row.backchannel_logout_uri == "https://wiki.example/backchannel"
    assert row.backchannel_logout_session_required is True
    page = admin.browser.get(f"/admin/clients/{client_id}").text
    assert "https://wiki.example/backchannel" in page
    form = admin.browser.get(f"/admin/clients/{client_id}/edit").text
    assert 'value="https://wiki.example/backchannel"' in form
    response = edit(
        admin,
        client_id,
        client_form(backchannel_logout_uri="http://wiki.example/backchannel"),
    )
    assert response.status_code == 400
    assert "must use https" in response.text
    unchanged = stored(app, client_id)
    assert unchanged is not None
    assert unchanged.backchannel_logout_uri == "https://wiki.example/backchannel"

"""The pages of a first hour with idp that must not strand anyone: a page opened at another
address than the development issuer's says where to go; a page says a message was emailed only
when a mail server is configured; the signed-out page leads back to sign-in and to the app; an
admin's account pages link to the console; the console's documentation references are links
when ``docs_url`` is set."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.admin import passkey_browser
from tests.support.apps import app_on
from tests.support.factories import POST_LOGOUT_URI, create_client, create_user
from tests.support.flow import RelyingParty, csrf_token, start_session


# -- one address ---------------------------------------------------------------------------------
def test_a_page_at_another_address_than_the_issuers_links_to_the_issuer(app: Flask) -> None:
    """The test app's issuer is http://localhost: at http://127.0.0.1 passkeys cannot work (an
    IP address is never an RP ID, WebAuthn L3 5.1.3), so the page says where to go instead."""
    elsewhere = app.test_client().get("/login?next=%2Faccount", base_url="http://127.0.0.1:5000")
    assert elsewhere.status_code == 200
    banner = re.search(r'<p class="banner" id="wrong-address".*?</p>', elsewhere.text, re.S)
    assert banner, elsewhere.text
    assert 'href="http://localhost/login?next=%2Faccount"' in html.unescape(banner.group(0))
    at_home = app.test_client().get("/login", base_url="http://localhost")
    assert 'id="wrong-address"' not in at_home.text


def test_a_production_issuer_trusts_its_proxy_with_the_host(tmp_path: Path) -> None:
    """Behind a proxy the Host header idp sees may differ from the issuer's: no banner then."""
    with app_on("sqlite", tmp_path, issuer="https://id.example.com") as https_app:
        page = https_app.test_client().get("/login", base_url="http://10.0.0.5:8000")
    assert page.status_code == 200
    assert 'id="wrong-address"' not in page.text


# -- mail: "sent" only when handed to a mail server ----------------------------------------------
@pytest.fixture(scope="module", params=["no mail server", "smtp"])
def signup_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    # Nothing listens on port 9 of this machine: a delivery attempt fails and is kept queued.
    smtp = {"smtp_url": "smtp://127.0.0.1:9"} if request.param == "smtp" else {}
    with app_on(
        "sqlite", tmp_path_factory.mktemp("mail"), signup_enabled=True, **smtp
    ) as flask_app:
        yield flask_app


def test_the_check_your_email_page_claims_an_email_only_with_a_mail_server(
    signup_app: Flask,
) -> None:
    browser = signup_app.test_client()
    page = browser.get("/signup")
    answer = browser.post(
        "/signup",
        data={"csrf_token": csrf_token(page.text), "email": "new@example.com"},
        follow_redirects=True,
    )
    assert answer.status_code == 200
    if signup_app.extensions["idp"].settings.smtp_url:
        assert "We are emailing a message to" in answer.text
        assert 'id="mail-not-sent"' not in answer.text
    else:
        assert "We are emailing" not in answer.text
        notice = re.search(r'id="mail-not-sent">(.*?)</p>', answer.text, re.S)
        assert notice, answer.text
        assert "No mail server is configured" in notice.group(1)
        assert "<code>idp outbox</code>" in notice.group(1)


# -- no dead ends ----------------------------------------------------------------------------------
def test_the_signed_out_page_leads_back_to_the_app_and_to_sign_in(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    page = rp.browser.get("/logout", query_string={"id_token_hint": tokens["id_token"]})
    assert page.status_code == 200
    assert "You are signed out" in page.text
    back = re.search(r'<a[^>]*id="back-to-app" href="([^"]+)">([^<]+)</a>', page.text)
    assert back, page.text
    # The client's own registered post-logout address, under its name.
    assert back.group(1) == POST_LOGOUT_URI
    assert back.group(2) == "Back to Relying Party"
    again = re.search(r'id="sign-in-again" href="([^"]+)"', page.text)
    assert again, page.text
    assert rp.browser.get(again.group(1)).headers["Location"].startswith("/login")


def test_the_signed_out_page_without_an_app_still_offers_sign_in(
    app: Flask, client: FlaskClient
) -> None:
    start_session(client, create_user(app))
    page = client.get("/logout")  # no id_token_hint: the confirmation first
    confirmed = client.post("/logout", data={"csrf_token": csrf_token(page.text), "confirm": "yes"})
    assert confirmed.status_code == 200
    assert 'id="sign-in-again"' in confirmed.text
    assert 'id="back-to-app"' not in confirmed.text


def test_an_admins_account_pages_link_to_the_console(app: Flask) -> None:
    admin = passkey_browser(app, "root@example.com")
    for path in ("/account", "/account/sessions", "/account/profile"):
        page = admin.browser.get(path)
        assert page.status_code == 200, path
        assert '<a href="/admin" id="admin-console-link">' in page.text, path
    user = app.test_client()
    start_session(user, create_user(app, email="plain@example.com"))
    assert 'id="admin-console-link"' not in user.get("/account").text


@pytest.mark.parametrize("docs_url", ["", "https://docs.example.org/idp/v1/docs/"])
def test_the_consoles_documentation_references_follow_docs_url(
    tmp_path: Path, docs_url: str
) -> None:
    with app_on("sqlite", tmp_path, docs_url=docs_url) as console_app:
        admin = passkey_browser(console_app, "root@example.com")
        registered = create_client(console_app)
        page = admin.browser.get(f"/admin/clients/{registered.client_id}")
    assert page.status_code == 200, page.text
    if docs_url:
        assert (
            '<a href="https://docs.example.org/idp/v1/docs/integrating.md" class="doc-link">'
            in page.text
        )
    else:
        assert "<code>docs/integrating.md</code> in idp's source" in page.text
        assert 'class="doc-link"' not in page.text


def test_the_consoles_python_snippet_imports_what_it_uses(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client page's Authlib snippet runs as pasted (registration makes no request yet)."""
    admin = passkey_browser(app, "root@example.com")
    registered = create_client(app)
    page = admin.browser.get(f"/admin/clients/{registered.client_id}")
    snippet = re.search(
        r'<details id="snippet-authlib">.*?<pre[^>]*><code>(.*?)</code></pre>', page.text, re.S
    )
    assert snippet, page.text
    monkeypatch.setenv("APP_SECRET_KEY", "x" * 32)
    monkeypatch.setenv("IDP_CLIENT_SECRET", "not-a-real-secret")
    namespace: dict[str, Any] = {"__name__": "console_snippet"}
    exec(compile(html.unescape(snippet.group(1)), "snippet-authlib", "exec"), namespace)  # noqa: S102
    assert namespace["oauth"].idp.client_id == registered.client_id

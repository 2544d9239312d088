"""Flask's signed cookie session carries only the CSRF token (idp.web.sessions): it is opened when
something first reads it, so a request that never does (an API call from a browser that kept the
cookie) neither verifies nor rewrites it, and a form is checked exactly as before. Also the rest of
the per-request machinery cut for speed (docs/performance.md): the CSRF hook's exemptions and the
session removal at teardown."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.factories import CreatedUser
from tests.support.flow import csrf_token, start_session


@pytest.fixture
def opened(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests that opened the cookie session."""
    paths: list[str] = []
    interface = app.session_interface
    open_session = interface.open_session

    def counting(flask_app: Flask, request: Any) -> Any:
        paths.append(request.path)
        return open_session(flask_app, request)

    monkeypatch.setattr(interface, "open_session", counting)
    return paths


def test_an_api_call_with_the_csrf_cookie_leaves_the_session_unopened(
    client: FlaskClient, tokens: dict[str, Any], opened: list[str]
) -> None:
    client.get("/login")
    assert client.get_cookie("idp_csrf") is not None
    opened.clear()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    for path in ("/userinfo", "/.well-known/openid-configuration", "/jwks"):
        response = client.get(path, headers=bearer)
        assert response.status_code == 200, path
        assert "Set-Cookie" not in response.headers, path
        assert "Cookie" not in response.headers.get("Vary", ""), path
    assert opened == []


def test_a_form_page_and_its_post_open_the_session(
    client: FlaskClient, user: CreatedUser, opened: list[str]
) -> None:
    start_session(client, user)
    assert opened == ["/login", "/login"]


def test_a_page_token_still_verifies_after_api_calls_in_between(
    client: FlaskClient, user: CreatedUser, tokens: dict[str, Any]
) -> None:
    token = csrf_token(client.get("/login").text)
    client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    form = {"csrf_token": token, "email": user.email, "password": user.password}
    assert client.post("/login", data=form).status_code == 302


def test_a_form_post_with_a_forged_csrf_cookie_is_refused(
    client: FlaskClient, user: CreatedUser
) -> None:
    token = csrf_token(client.get("/login").text)
    cookie = client.get_cookie("idp_csrf")
    assert cookie is not None
    client.set_cookie("idp_csrf", cookie.value[:-2] + ("AA" if cookie.value[-2:] != "AA" else "BB"))
    form = {"csrf_token": token, "email": user.email, "password": user.password}
    response = client.post("/login", data=form)
    assert response.status_code == 400
    assert client.get_cookie("idp_session") is None


def test_a_form_post_needs_its_token_and_the_token_endpoint_does_not(
    client: FlaskClient, user: CreatedUser
) -> None:
    # The CSRF hook decides exemptions once per endpoint (idp.extensions.CsrfProtection): both
    # answers hold on the second request as on the first.
    for _ in range(2):
        form = {"email": user.email, "password": user.password}
        refused = client.post("/login", data=form)
        assert refused.status_code == 400
        assert "This form expired" in refused.text
        token = client.post("/token", data={"grant_type": "client_credentials"})
        assert token.status_code == 401
        assert token.get_json()["error"] == "invalid_client"


def test_teardown_ends_the_transaction_of_a_context_that_used_the_database(app: Flask) -> None:
    from sqlalchemy import text

    from idp.extensions import db

    with app.app_context():
        session = db.session()
        session.execute(text("SELECT 1"))
        assert session.in_transaction()
    assert not session.in_transaction()
    with app.app_context():
        assert db.session() is not session


def test_the_page_token_and_its_cookie_are_signed_without_a_zlib_attempt(
    client: FlaskClient, user: CreatedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    # idp.web.csrf_signing: neither value is ever shorter compressed, so neither is offered to
    # zlib; the sign-in still goes through, its token checked by Flask-WTF's own validate_csrf.
    import itsdangerous.url_safe

    def refuse(_data: bytes, *_args: Any) -> bytes:
        raise AssertionError("zlib.compress called to sign a CSRF value")

    monkeypatch.setattr(itsdangerous.url_safe.zlib, "compress", refuse)
    page = client.get("/login")
    assert page.status_code == 200
    assert client.get_cookie("idp_csrf") is not None
    form = {"csrf_token": csrf_token(page.text), "email": user.email, "password": user.password}
    assert client.post("/login", data=form).status_code == 302


def test_a_token_signed_by_flask_wtf_itself_still_verifies(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    # The same secret, salt and raw token as Flask-WTF's generate_csrf: a token it signs for the
    # session the page opened is accepted, and the page's own token is one Flask-WTF accepts.
    from flask_wtf.csrf import generate_csrf, validate_csrf

    page_token = csrf_token(client.get("/login").text)
    cookie = client.get_cookie("idp_csrf")
    assert cookie is not None
    with app.test_request_context("/login", headers={"Cookie": f"idp_csrf={cookie.value}"}):
        validate_csrf(page_token)
        theirs = generate_csrf()
    form = {"csrf_token": theirs, "email": user.email, "password": user.password}
    assert client.post("/login", data=form).status_code == 302

"""HTTP Strict Transport Security (RFC 6797): with an https issuer every response tells browsers
to use https only, for at least a year; an http issuer (localhost development) says nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from idp.extensions import db
from tests.conftest import _build_app

ONE_YEAR = 365 * 24 * 3600
PATHS = ("/login", "/jwks", "/.well-known/openid-configuration", "/no-such-page", "/healthz")


def https_app(tmp_path: Path, **settings: object) -> Flask:
    return _build_app(f"sqlite:///{tmp_path / 'idp.db'}", tmp_path,
                      issuer="https://id.example.com", **settings)  # fmt: skip


def hsts_of(app: Flask, path: str) -> str | None:
    # The issuer is https: so is the request (as behind the TLS-terminating proxy).
    response = app.test_client().get(path, base_url="https://id.example.com")
    assert response.status_code < 500, (path, response.status_code)
    return response.headers.get("Strict-Transport-Security")


def max_age(header: str) -> int:
    directives = dict(
        part.strip().partition("=")[::2] for part in header.split(";") if part.strip()
    )
    return int(directives["max-age"])


@pytest.fixture
def disposed() -> Iterator[list[Flask]]:
    apps: list[Flask] = []
    yield apps
    for app in apps:
        with app.app_context():
            db.engine.dispose()


def test_an_https_issuer_sends_hsts_for_a_year_on_every_response(
    tmp_path: Path, disposed: list[Flask]
) -> None:
    app = https_app(tmp_path)
    disposed.append(app)
    for path in PATHS:
        header = hsts_of(app, path)
        assert header is not None, path
        assert max_age(header) >= ONE_YEAR
        assert "includesubdomains" not in header.lower()


def test_include_subdomains_is_a_setting(tmp_path: Path, disposed: list[Flask]) -> None:
    app = https_app(tmp_path, hsts_include_subdomains=True)
    disposed.append(app)
    for path in PATHS:
        header = hsts_of(app, path)
        assert header is not None, path
        assert max_age(header) >= ONE_YEAR
        assert "includeSubDomains" in [part.strip() for part in header.split(";")]


def test_an_http_issuer_sends_no_hsts(app: Flask) -> None:
    client = app.test_client()
    for path in PATHS:
        assert "Strict-Transport-Security" not in client.get(path).headers, path


def test_a_form_posted_over_https_is_checked_by_its_token_not_by_a_referer(
    tmp_path: Path, disposed: list[Flask]
) -> None:
    """Every page says ``Referrer-Policy: no-referrer``, so a browser posts idp's own forms with
    no Referer (and, under that policy, ``Origin: null``: Fetch, "append a request Origin
    header"). Over https a form must still be accepted on its CSRF token alone, and refused
    without it; Flask-WTF's strict Referer check refused every form there."""
    from tests.support.factories import create_user
    from tests.support.flow import csrf_token

    app = https_app(tmp_path)
    disposed.append(app)
    user = create_user(app)
    browser = app.test_client()
    https = {"base_url": "https://id.example.com"}
    page = browser.get("/login", **https)
    assert page.headers["Referrer-Policy"] == "no-referrer"
    form = {"email": user.email, "password": user.password}

    refused = browser.post("/login", data=form, headers={"Origin": "null"}, **https)
    assert refused.status_code == 400
    assert browser.get_cookie("__Host-idp_session", domain="id.example.com") is None

    signed_in = browser.post(
        "/login",
        data={"csrf_token": csrf_token(page.text), **form},
        headers={"Origin": "null"},
        **https,
    )
    assert signed_in.status_code == 302, signed_in.text[:300]
    cookie = browser.get_cookie("__Host-idp_session", domain="id.example.com")
    assert cookie is not None
    # RFC 6265bis 4.1.3.2: a __Host- cookie is Secure, has Path=/ and no Domain.
    assert cookie.secure
    assert cookie.http_only
    assert cookie.path == "/"
    assert cookie.origin_only
    assert cookie.same_site == "Lax"
    assert browser.get("/account", **https).status_code == 200

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

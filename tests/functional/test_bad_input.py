"""Junk sent to every route never causes a server error or leaks a stack trace.

Routes are enumerated from the application's URL map, so a new route is covered the moment it is
registered. Each route runs twice: anonymously with CSRF protection on (as deployed, on SQLite), and
signed in with CSRF checks off so that the junk reaches the view code behind them (on PostgreSQL,
which enforces column types and lengths).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.datastructures import MultiDict
from werkzeug.routing import Rule
from werkzeug.test import run_wsgi_app

from idp import create_app
from idp.composition import services
from idp.extensions import db
from idp.models import Base, User
from idp.models.base import utcnow
from idp.services.audit import RequestContext
from idp.web.sessions import session_cookie_name
from tests.conftest import app_overrides, throwaway_postgres_database
from tests.support.factories import create_client, create_user

TRACEBACK_MARKERS = ("Traceback", 'File "')
BIG = "A" * 100_000
#: 4 KB of deterministic noise.
RANDOM_BYTES = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(128))
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Every parameter name any endpoint reads, so that junk lands where code looks.
PARAMETERS = (
    "client_id", "redirect_uri", "response_type", "response_mode", "scope", "state", "nonce",
    "code_challenge", "code_challenge_method", "prompt", "max_age", "login_hint", "id_token_hint",
    "acr_values", "request", "request_uri", "grant_type", "code", "code_verifier",
    "refresh_token", "token", "token_type_hint", "client_secret", "client_assertion",
    "client_assertion_type", "post_logout_redirect_uri", "logout_hint", "ui_locales", "email",
    "password", "confirm", "decision", "next", "name", "credential", "challenge_id",
    "csrf_token", "access_token",
)  # fmt: skip


HUGE_NUMBERS_JSON = '{"challenge_id": 1e999999, "credential": 9' + "9" * 5000 + "}"
NUL_JSON = json.dumps(
    {
        "email": "a\x00@example.com",
        "name": "\x00",
        "challenge_id": "\x00",
        "credential": {"id": "\x00"},
    }
)
AUTHENTICATING_BODY = {"grant_type": "client_credentials", "scope": "openid", "token": "x"}


#: Parameters that views read and store or look up: one 100 KB value each (each request costs).
LONG_VALUE_PARAMETERS = (
    "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge", "id_token_hint",
    "login_hint", "code", "refresh_token", "token", "email", "password", "name", "next",
    "request", "post_logout_redirect_uri", "credential",
)  # fmt: skip


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def b64url(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


#: Token-shaped junk: alg none, a kid that looks like a path, bad base64, wrong segment counts.
JUNK_JWTS = (
    f"{b64url({'alg': 'none'})}.{b64url({'sub': 'x', 'iss': 'http://localhost'})}.",
    f"{b64url({'alg': 'RS256', 'kid': '../../etc/passwd'})}.{b64url({'sub': 1})}.c2ln",
    f"{b64url({'alg': 'HS256', 'kid': ['list']})}.{b64url([1, 2])}.AAAA",
    f"{b64url(b'[not json')}.{b64url(b'{}')}.",
    "a.b.c",
    "!!!.???.***",
    "." * 5000,
    "e30." * 50,
)


def nested_form_junk() -> MultiDict[str, str]:
    """PHP/Rails-style nested names, control characters, bidi overrides, absurd numbers."""
    fields = [
        ("client_id[]", "a"),
        ("client_id[]", "b"),
        ("scope[0][1]", "openid"),
        ("redirect_uri[href]", "javascript:alert(1)"),
        ("redirect_uri", "javascript:alert(1)//"),
        ("grant_type", "\x00"),
        ("max_age", "-1"),
        ("max_age", "9" * 400),
        ("prompt", "none login consent"),
        ("code_challenge", "=" * 200),
        ("code_challenge_method", "plain"),
        ("response_mode", "fragment"),
        ("email", "\u202eadmin@example.com\x00"),
        ("password", "\x00" * 10),
        ("confirm", "yes"),
        ("decision", "allow"),
        ("next", "//evil.example/"),
        ("credential", '{"id": [], "response": {"clientDataJSON": 5}}'),
        ("challenge_id", "../" * 50),
        ("token_type_hint", "id_token"),
        ("client_assertion_type", JWT_BEARER),
    ]
    fields += [(name, token) for token in JUNK_JWTS for name in ("id_token_hint", "token")]
    fields += [("client_assertion", JUNK_JWTS[0]), ("refresh_token", "{'$ne': null}")]
    return MultiDict(fields)


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def junk_requests() -> list[tuple[str, dict[str, Any]]]:
    """(label, keyword arguments for ``FlaskClient.open``) for one method and path."""
    form = "application/x-www-form-urlencoded"
    json_body = json.dumps(
        {"client_id": {"$ne": None}, "grant_type": ["authorization_code"], "credential": [[[]]]}
    )
    variants: list[tuple[str, dict[str, Any]]] = [
        ("empty body", {"data": b"", "content_type": form}),
        ("empty json body", {"data": b"", "content_type": "application/json"}),
        ("random bytes as form", {"data": RANDOM_BYTES, "content_type": form}),
        ("random bytes as json", {"data": RANDOM_BYTES, "content_type": "application/json"}),
        (
            "random bytes as multipart",
            {"data": RANDOM_BYTES, "content_type": "multipart/form-data; boundary=xyz"},
        ),
        ("random bytes, no type", {"data": RANDOM_BYTES}),
        ("json with wrong content type", {"data": json_body, "content_type": "text/plain"}),
        ("json sent as form", {"data": json_body, "content_type": form}),
        ("json with json type", {"data": json_body, "content_type": "application/json"}),
        ("json array", {"data": "[1, 2, 3]", "content_type": "application/json"}),
        ("json string", {"data": '"credential"', "content_type": "application/json"}),
        ("deeply nested json", {"data": deep_json(50_000), "content_type": "application/json"}),
        (
            "json with huge numbers",
            {"data": HUGE_NUMBERS_JSON, "content_type": "application/json"},
        ),
        ("json with NUL", {"data": NUL_JSON, "content_type": "application/json"}),
        (
            "non-UTF-8 query string",
            {"environ_overrides": {"QUERY_STRING": "client_id=%FF%FE&scope=\xff\xfe&state=%00"}},
        ),
        (
            "non-UTF-8 form body",
            {"data": b"client_id=%ff%fe&grant_type=\xff\xfe&email=\xc0\xaf", "content_type": form},
        ),
        (
            "non-UTF-8 json body",
            {
                "data": b'{"email": "\xff\xfe", "credential": "\xc0"}',
                "content_type": "application/json",
            },
        ),
        (
            "duplicated parameters",
            {
                "query_string": MultiDict([(n, v) for n in PARAMETERS for v in ("a", "b")]),
                "data": MultiDict([(n, v) for n in PARAMETERS for v in ("a", "b")]),
                "content_type": form,
            },
        ),
        ("huge authorization header", {"headers": {"Authorization": "Bearer " + "A" * 65_536}}),
        (
            "huge basic credentials",
            {"headers": {"Authorization": "Basic " + b64(b"id:" + b"s" * 50_000)}},
        ),
        ("basic with junk", {"headers": {"Authorization": "Basic !!!"}}),
        ("basic without colon", {"headers": {"Authorization": "Basic " + b64(b"nocolon")}}),
        ("basic not UTF-8", {"headers": {"Authorization": "Basic " + b64(b"\xff\xfe:\xfd")}}),
        ("basic empty", {"headers": {"Authorization": "Basic "}}),
        ("bearer with 5000 dots", {"headers": {"Authorization": "Bearer " + "." * 5000}}),
        ("bearer empty", {"headers": {"Authorization": "Bearer"}}),
        ("unknown scheme", {"headers": {"Authorization": "DPoP " + JUNK_JWTS[0]}}),
        ("nested junk in form", {"data": nested_form_junk(), "content_type": form}),
        ("nested junk in query", {"query_string": nested_form_junk()}),
        (
            "junk cookies",
            {"headers": {"Cookie": "idp_session=" + "x" * 4000 + "; __Host-idp_session=%ff"}},
        ),
    ]
    # Pre-encoded: the value needs no escaping, and encoding 100 KB per request is slow.
    variants += [
        (
            f"100 KB {name}",
            {"query_string": f"{name}={BIG}", "data": f"{name}={BIG}", "content_type": form},
        )
        for name in LONG_VALUE_PARAMETERS
    ]
    variants += [
        (f"bearer {token[:12]}", {"headers": {"Authorization": f"Bearer {token}"}})
        for token in JUNK_JWTS
    ]
    for _label, kwargs in variants:
        if "Authorization" in kwargs.get("headers", {}):
            # A body that gets past grant-type and parameter checks to client authentication.
            kwargs.update(data=AUTHENTICATING_BODY, content_type=form)
    return variants


def _rules() -> list[Rule]:
    with tempfile.TemporaryDirectory() as instance:
        app = create_app(app_overrides("sqlite://", Path(instance)))
    return sorted(
        (rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"),
        key=lambda rule: rule.endpoint,
    )


RULES = _rules()
ARGUMENT_VALUES = ("x" * 3000, "%ff%fe\u2603..\u202e", "../../account")


def paths_for(app: Flask, rule: Rule) -> list[str]:
    adapter = app.url_map.bind("localhost")
    if not rule.arguments:
        return [adapter.build(rule.endpoint, {})]
    return [
        adapter.build(rule.endpoint, dict.fromkeys(rule.arguments, value))
        for value in ARGUMENT_VALUES
    ]


class CookielessClient(FlaskClient):
    """The test client without its cookie jar: werkzeug's ``Client`` rebuilds every request's
    whole URL to file cookies under, even with ``use_cookies=False``, which on a 100 KB query
    string was most of what a junk request cost this suite."""

    def run_wsgi_app(self, environ: dict[str, Any], buffered: bool = False) -> Any:
        return run_wsgi_app(self.application, environ, buffered=buffered)


def failures(
    app: Flask,
    rule: Rule,
    requests: list[tuple[str, dict[str, Any]]],
    *,
    methods: set[str] | None = None,
    cookie: str | None = None,
) -> list[str]:
    """Every (method, path, junk) whose response is a 5xx or shows a traceback."""
    found = []
    browser = CookielessClient(app, app.response_class, use_cookies=False)
    allowed = set(rule.methods or ())
    chosen = sorted(allowed if methods is None else allowed & methods)
    for path in paths_for(app, rule):
        for method in chosen:
            for label, kwargs in requests:
                options = dict(kwargs)
                headers = dict(options.pop("headers", {}))
                if "basic" in options:
                    headers["Authorization"] = options.pop("basic")
                if cookie is not None:
                    headers.setdefault("Cookie", cookie)
                response = browser.open(path, method=method, headers=headers, **options)
                body = response.get_data(as_text=True)
                if response.status_code >= 500 or any(m in body for m in TRACEBACK_MARKERS):
                    found.append(f"{method} {path[:60]} [{label}] -> {response.status_code}")
    return found


@pytest.mark.parametrize("rule", RULES, ids=[rule.endpoint for rule in RULES])
def test_junk_to_route_never_causes_a_server_error(app: Flask, rule: Rule) -> None:
    found = failures(app, rule, junk_requests())
    assert not found, "\n".join(found)


# -- signed in, with registered clients, CSRF checks off, on PostgreSQL ---------------------------
@pytest.fixture(scope="module")
def open_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """A separate app whose CSRF checks are off, so junk reaches the views behind them. It runs on
    PostgreSQL, which (unlike SQLite) enforces column lengths and types."""
    with throwaway_postgres_database() as url:
        app = create_app(app_overrides(url, tmp_path_factory.mktemp("bad-input")))
        app.config["WTF_CSRF_ENABLED"] = False
        with app.app_context():
            Base.metadata.create_all(db.engine)
            app.extensions["idp"].keys.ensure_keys(db.session())
            db.session.commit()
        yield app
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(scope="module")
def registered(open_app: Flask) -> dict[str, str]:
    """Real client credentials, so that junk also reaches past client authentication."""
    confidential = create_client(open_app)
    public = create_client(open_app, public=True, name="SPA")
    assert confidential.client_secret is not None
    return {
        "client_id": confidential.client_id,
        "client_secret": confidential.client_secret,
        "public_client_id": public.client_id,
        "redirect_uri": confidential.redirect_uri,
    }


@pytest.fixture
def signed_in_cookie(open_app: Flask) -> str:
    """A fresh passkey session for each route (junk may well log it out). Made directly: junk
    sent to /login trips the per-address failure limit."""
    created = create_user(open_app, email=f"junk-{secrets.token_hex(8)}@example.com")
    with open_app.test_request_context():
        user = db.session.get(User, created.id)
        assert user is not None
        new = services().sessions.create(user, ["hwk", "user", "mfa"], RequestContext(), utcnow())
        db.session.commit()
        return f"{session_cookie_name()}={new.cookie_value}"


def authenticated_junk(registered: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """Valid client authentication or a valid authorization request, junk everywhere else."""
    basic = "Basic " + b64(f"{registered['client_id']}:{registered['client_secret']}".encode())
    valid_authorize = {
        "client_id": registered["client_id"],
        "redirect_uri": registered["redirect_uri"],
        "response_type": "code",
        "scope": "openid",
        "code_challenge": "c" * 43,
        "code_challenge_method": "S256",
    }
    junk_values = ["", "\x00%ff", BIG[:5000], *JUNK_JWTS[:2], JUNK_JWTS[-2]]
    requests: list[tuple[str, dict[str, Any]]] = []
    for grant_type in ("authorization_code", "refresh_token", "client_credentials", "password"):
        for value in junk_values:
            data = {
                "grant_type": grant_type,
                **dict.fromkeys(("code", "refresh_token", "code_verifier", "scope"), value),
                "redirect_uri": registered["redirect_uri"],
            }
            requests.append((f"{grant_type} {value[:10]!r}", {"data": data, "basic": basic}))
    for value in junk_values:
        requests.append(
            ("token lookups", {"data": {"token": value, "token_type_hint": value}, "basic": basic})
        )
        requests.append(
            (
                "client assertion",
                {
                    "data": {
                        "client_id": registered["client_id"],
                        "client_assertion_type": JWT_BEARER,
                        "client_assertion": value,
                        "grant_type": "client_credentials",
                    }
                },
            )
        )
        requests.append(
            (
                "public client",
                {
                    "data": {
                        "client_id": registered["public_client_id"],
                        "grant_type": "authorization_code",
                        "code": value,
                        "code_verifier": value,
                        "redirect_uri": registered["redirect_uri"],
                    }
                },
            )
        )
        for name in ("prompt", "max_age", "id_token_hint", "code_challenge", "acr_values",
                     "response_mode", "login_hint", "nonce", "state", "request"):  # fmt: skip
            params = {**valid_authorize, name: value}
            requests.append((f"authorize {name}", {"query_string": params, "data": params}))
    return requests


@pytest.mark.parametrize("rule", RULES, ids=[rule.endpoint for rule in RULES])
def test_junk_to_route_when_signed_in_never_causes_a_server_error(
    open_app: Flask, registered: dict[str, str], signed_in_cookie: str, rule: Rule
) -> None:
    # Every method was covered anonymously; here the methods whose views do work (HEAD runs the
    # GET view again and OPTIONS none), and the token-shaped junk only where tokens are read.
    requests = junk_requests()
    if rule.endpoint.startswith("oidc."):
        requests += authenticated_junk(registered)
    found = failures(open_app, rule, requests, methods={"GET", "POST"}, cookie=signed_in_cookie)
    assert not found, "\n".join(found)


# -- the last line of defence ---------------------------------------------------------------------
def test_unhandled_exception_shows_a_calm_page_without_stack_trace(tmp_path: Path) -> None:
    app = create_app(app_overrides(f"sqlite:///{tmp_path / 'idp.db'}", tmp_path))

    @app.get("/explode")
    def explode() -> str:
        """A view with a bug in it."""
        raise RuntimeError("internal detail: password=hunter2")

    response = app.test_client().get("/explode")
    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert response.mimetype == "text/html"
    assert "Something went wrong" in body
    assert "hunter2" not in body
    assert "RuntimeError" not in body
    assert not any(marker in body for marker in TRACEBACK_MARKERS)
    assert re.search(r"<h1>\s*Something went wrong\s*</h1>", body)


def test_a_number_in_digits_other_than_ascii_is_refused_never_a_server_error(app: Flask) -> None:
    """``str.isdigit()`` is true of "²", which ``int()`` refuses (as it refuses more than 4,300
    digits): every number a request carries is ASCII digits of a bounded length, or else the
    request's own refusal (a form error, page 1, ``invalid_request``), never a 500."""
    from tests.support.admin import passkey_browser

    admin = passkey_browser(app, "root@example.com")
    client = create_client(app)
    authorize = app.test_client().get("/authorize", query_string={
        "client_id": client.client_id, "redirect_uri": client.redirect_uri,
        "response_type": "code", "scope": "openid", "max_age": "²",
        "code_challenge": "c" * 43, "code_challenge_method": "S256",
    })  # fmt: skip
    assert authorize.status_code == 302
    assert "error=invalid_request" in authorize.headers["Location"]
    assert admin.browser.get("/account/activity", query_string={"page": "²"}).status_code == 200
    for page in ("²", "9" * 5000):
        assert admin.browser.get("/admin/audit", query_string={"page": page}).status_code == 200
    rotated = admin.post(f"/admin/clients/{client.client_id}/rotate-secret", {"overlap": "²"})
    assert rotated.status_code == 302
    assert "overlap must be between" in admin.browser.get(rotated.headers["Location"]).text
    token = admin.post("/admin/api-tokens", {"name": "ci", "scopes": "users:read",
                                             "expires_in": "²"})  # fmt: skip
    assert token.status_code == 400

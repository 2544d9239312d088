"""The token side's direct endpoints (idp.web.direct): token, introspection, revocation and
userinfo requests answered below Flask's request machinery, with every rule of the request floor
kept.

The rest of the suite sends its token-side requests through them too (the
test client calls the same WSGI stack as a server); these tests name what the middleware itself
must keep: that it is the path taken, the request id and headers, its errors, its log lines and
the audit's view of the client."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request_started
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from idp.extensions import db
from idp.json_logs import JsonFormatter
from idp.models import AuditEvent
from idp.oidc import token_views
from tests.support.factories import RegisteredClient, create_client, create_user
from tests.support.flow import RelyingParty

FIXED_HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options",
                 "Referrer-Policy")  # fmt: skip


def _basic(registered: RegisteredClient) -> dict[str, str]:
    pair = f"{registered.client_id}:{registered.client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


@pytest.fixture
def machine(app: Flask) -> RegisteredClient:
    return create_client(app, name="m2m", grant_types=["client_credentials"])


@pytest.fixture
def flask_requests(app: Flask) -> Iterator[list[str]]:
    """The paths of the requests Flask's own request machinery handled (its signal)."""
    seen: list[str] = []

    def note(sender: Flask, **extra: Any) -> None:
        from flask import request

        seen.append(request.path)

    request_started.connect(note, app)
    try:
        yield seen
    finally:
        request_started.disconnect(note, app)


def test_token_side_requests_bypass_flasks_request_machinery(
    app: Flask, machine: RegisteredClient, flask_requests: list[str]
) -> None:
    browser = app.test_client()
    issued = browser.post("/token", data={"grant_type": "client_credentials"},
                          headers=_basic(machine))  # fmt: skip
    assert issued.status_code == 200, issued.text
    token = issued.get_json()["access_token"]
    introspected = browser.post("/introspect", data={"token": token}, headers=_basic(machine))
    assert introspected.get_json()["active"] is True
    # A client-credentials token names no user: userinfo refuses it, through the same path.
    assert browser.get("/userinfo", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    revoked = browser.post("/revoke", data={"token": token}, headers=_basic(machine))
    assert revoked.status_code == 200
    again = browser.post("/introspect", data={"token": token}, headers=_basic(machine))
    assert again.get_json() == {"active": False}
    assert flask_requests == []
    # What the direct endpoints do not take is Flask's: HEAD, and the methods a route refuses.
    assert browser.head("/userinfo").status_code == 401
    assert browser.get("/token").status_code == 405
    assert flask_requests == ["/userinfo", "/token"]


def test_direct_answers_carry_the_request_id_the_security_headers_and_no_store(
    app: Flask, machine: RegisteredClient
) -> None:
    incoming = "proxy-trace-0123456789abcdef"
    response = app.test_client().post(
        "/token", data={"grant_type": "client_credentials"},
        headers={**_basic(machine), "X-Request-Id": incoming},
    )  # fmt: skip
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == incoming
    for name in FIXED_HEADERS:
        assert response.headers.get(name), name
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert response.headers["Content-Type"] == "application/json"
    assert int(response.headers["Content-Length"]) == len(response.data)
    # A malformed incoming id is replaced, as on every other request.
    replaced = app.test_client().get("/userinfo", headers={"X-Request-Id": "bad id"})
    assert replaced.headers["X-Request-Id"] != "bad id"
    assert len(replaced.headers["X-Request-Id"]) == 32


def test_userinfo_answers_the_same_claims_and_challenges_as_before(app: Flask) -> None:
    user = create_user(app, email="direct@example.com")
    tokens = RelyingParty(app.test_client(), create_client(app)).tokens_for(user)
    browser = app.test_client()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    claims = browser.get("/userinfo", headers=bearer)
    assert claims.status_code == 200
    assert claims.get_json()["sub"] == user.id
    assert claims.headers["Cache-Control"] == "no-store"
    # RFC 6750 2.2: the token in a form body.
    posted = browser.post("/userinfo", data={"access_token": tokens["access_token"]})
    assert posted.get_json() == claims.get_json()
    # RFC 6750 3: no token, no error code; a bad one, invalid_token.
    missing = browser.get("/userinfo")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith('Bearer realm="idp", DPoP algs="')
    wrong = browser.get("/userinfo", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert wrong.get_json()["error"] == "invalid_token"


@pytest.mark.parametrize(
    ("path", "query", "data"),
    [
        ("/token", "", {"grant_type": "client_credentials\x00"}),
        ("/introspect", "", {"token": "a\x00b"}),
        # RFC 3986 2.5: an address that is not UTF-8 (the server hands WSGI its bytes as
        # Latin-1 text, PEP 3333).
        ("/introspect", "x=\xff\xfe", {"token": "abc"}),
    ],
)
def test_malformed_input_at_a_direct_endpoint_is_refused_as_an_oauth_error(
    app: Flask, machine: RegisteredClient, path: str, query: str, data: dict[str, str]
) -> None:
    response = app.test_client().post(path, data=data, headers=_basic(machine),
                                      environ_overrides={"QUERY_STRING": query})  # fmt: skip
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert response.headers["Cache-Control"] == "no-store"


def test_a_token_request_over_the_body_limit_is_refused_with_413(
    app: Flask, machine: RegisteredClient
) -> None:
    body = "grant_type=client_credentials&pad=" + "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    response = app.test_client().post(
        "/token", data=body, content_type="application/x-www-form-urlencoded",
        headers=_basic(machine),
    )  # fmt: skip
    assert response.status_code == 413
    assert response.get_json()["error"] == "invalid_request"


@pytest.fixture
def failing_token_endpoint(monkeypatch: pytest.MonkeyPatch) -> list[Exception]:
    """The token endpoint raises the next error put in the list."""
    errors: list[Exception] = []

    def fail() -> Any:
        raise errors.pop()

    monkeypatch.setattr(token_views, "oauth_server", fail)
    return errors


def test_a_failure_in_a_direct_endpoint_is_a_json_500_logged_with_the_request_and_no_secret(
    app: Flask, machine: RegisteredClient, failing_token_endpoint: list[Exception],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="idp")  # the closing line too
    # A message that quotes the request's secret: the line must not (idp.json_logs redaction).
    failing_token_endpoint.append(RuntimeError(f"boom near {machine.client_secret}"))
    # Formatted as the server's handler formats it: while the request is being handled.
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("idp")
    logger.addHandler(handler)
    try:
        response = app.test_client().post(
            "/token", data={"grant_type": "client_credentials",
                            "client_secret": machine.client_secret},
        )  # fmt: skip
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 500
    assert response.get_json()["error"] == "server_error"
    lines = [json.loads(line) for line in written.getvalue().splitlines()]
    failure = next(line for line in lines if line["message"] == "unhandled error")
    closing = next(line for line in lines if line["message"] == "POST oidc.token 500")
    for line in (failure, closing):
        assert line["request_id"] == response.headers["X-Request-Id"]
        assert (line["method"], line["endpoint"]) == ("POST", "oidc.token")
    assert machine.client_secret not in written.getvalue()


def test_a_storage_outage_in_a_direct_endpoint_is_503_with_retry_after(
    app: Flask, machine: RegisteredClient, failing_token_endpoint: list[Exception]
) -> None:
    failing_token_endpoint.append(OperationalError("SELECT 1", {}, Exception("unreachable")))
    response = app.test_client().post("/token", data={"grant_type": "client_credentials"},
                                      headers=_basic(machine))  # fmt: skip
    assert response.status_code == 503
    assert response.get_json()["error"] == "temporarily_unavailable"
    assert response.headers["Retry-After"]


def test_the_audit_of_a_direct_request_names_the_clients_address_and_agent(app: Flask) -> None:
    user = create_user(app, email="audited@example.com")
    registered = create_client(app)
    tokens = RelyingParty(app.test_client(), registered).tokens_for(user)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    client = app.test_client()
    environ = {"REMOTE_ADDR": "203.0.113.9"}
    headers = {**_basic(registered), "User-Agent": "rp-agent/1.0"}
    assert client.post("/token", data=form, headers=headers,
                       environ_base=environ).status_code == 200  # fmt: skip
    # The same refresh token again within the retry grace: answered, and audited.
    assert client.post("/token", data=form, headers=headers,
                       environ_base=environ).status_code == 200  # fmt: skip
    with app.app_context():
        event = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "token.refresh_retried")
        ).one()
        assert (event.ip_address, event.user_agent) == ("203.0.113.9", "rp-agent/1.0")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/token", "OPTIONS, POST"),
        ("PUT", "/token", "OPTIONS, POST"),
        ("GET", "/revoke", "OPTIONS, POST"),
        ("GET", "/introspect", "POST"),
        ("GET", "/device_authorization", "OPTIONS, POST"),
        ("PUT", "/userinfo", "GET, HEAD, OPTIONS, POST"),
        ("DELETE", "/userinfo", "GET, HEAD, OPTIONS, POST"),
    ],
)
def test_a_wrong_method_at_an_oauth_endpoint_is_a_json_405_with_allow(
    app: Flask, method: str, path: str, allow: str
) -> None:
    """The OAuth endpoints' clients are programs that read JSON: a method the endpoint does not
    take is 405 with the methods it does in ``Allow`` (RFC 9110 15.5.6) and OAuth's
    ``invalid_request`` body (RFC 6749 5.2), never stored; it was Flask's HTML page."""
    response = app.test_client().open(path, method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == allow
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["error"] == "invalid_request"
    assert method in body["error_description"]
    if path == "/userinfo":  # RFC 6750 3: every refusal of a protected resource's carries it
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="idp"')
    # A single-page app's script reads it as it reads the endpoint's own refusals (idp.oidc.
    # token_views ANY_ORIGIN); introspection and device authorization answer no page.
    cors = path in ("/token", "/revoke", "/userinfo")
    assert (response.headers.get("Access-Control-Allow-Origin") == "*") == cors


def test_a_wrong_method_elsewhere_is_still_the_page(app: Flask) -> None:
    response = app.test_client().put("/login", headers={"Accept": "text/html"})
    assert response.status_code == 405
    assert response.mimetype == "text/html"

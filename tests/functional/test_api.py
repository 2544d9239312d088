"""The admin API through HTTP (docs/api.md, docs/security.md "Admin API"), on SQLite and
PostgreSQL: tokens, scopes, problems, validation, concurrency, and each resource family."""

from __future__ import annotations

import base64
import contextlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from idp.api.core import OPERATIONS, Operation
from idp.api.openapi import openapi_path
from idp.checkpoints import CHECKPOINT_DIR_ENV
from idp.composition import services
from idp.extensions import db
from idp.models import ApiToken, AuditEvent, Client, LoginLink, User
from idp.models.base import utcnow
from idp.services import client_cache
from idp.services.api_tokens import (
    ADMINS_SCOPE,
    FAILED_AUTH_LIMIT,
    SCOPES,
    ApiTokenService,
    granted,
)
from idp.services.client_fields import fields_of
from idp.services.clients import CLAIMING_CHECKPOINT, VERSION_CHECKPOINT, StaleClientError
from idp.services.users import EMAIL_FREE_CHECKPOINT
from tests.support.admin import passkey_browser
from tests.support.checkpoints import Checkpoints, wait_until
from tests.support.factories import RegisteredClient, change, create_user, rows
from tests.support.flow import RelyingParty, csrf_token

REDIRECT = "https://app.example/callback"
PROBLEM = "application/problem+json"


def issue(app: Flask, *scopes: str, name: str = "ci", expires_in_days: int | None = None) -> str:
    with app.app_context():
        new = ApiTokenService(db.session(), app.extensions["idp"].api_token_hasher).create(
            name, scopes or SCOPES, expires_in_days=expires_in_days
        )
        db.session.commit()
        return new.secret


class Api:
    """The API as an automation calls it: a bearer token on every request."""

    def __init__(self, app: Flask, token: str | None) -> None:
        self.client: FlaskClient = app.test_client()
        self.token = token

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> TestResponse:
        headers = dict(kwargs.pop("headers", {}))
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        if body is not None:
            kwargs["json"] = body
        return self.client.open("/api/v1" + path, method=method, headers=headers, **kwargs)


def problem(response: TestResponse, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.mimetype == PROBLEM
    body: dict[str, Any] = response.get_json(force=True)
    assert body["type"] == f"https://idp.invalid/problems/{slug}", body
    assert body["status"] == status
    return body


def audit_kinds(app: Flask) -> list[tuple[str, str | None]]:
    return [(e.kind, e.actor_id) for e in rows(app, AuditEvent)]


@pytest.fixture
def api(storage_app: Flask) -> Api:
    return Api(storage_app, issue(storage_app))


# -- the document ---------------------------------------------------------------------------------
def test_openapi_document_validates_and_lists_every_api_route(app: Flask) -> None:
    response = Api(app, None).call("GET", "/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    validate(document)  # OpenAPI 3.1 (openapi-spec-validator)
    served = {
        (openapi_path(rule.rule.removeprefix("/api/v1")), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == served


# -- tokens ---------------------------------------------------------------------------------------
def test_a_request_without_a_token_gets_401_with_a_bearer_challenge(storage_app: Flask) -> None:
    response = Api(storage_app, None).call("GET", "/clients")
    problem(response, 401, "authentication-required")
    # RFC 6750 3.1: no error code when no credentials were sent.
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="idp"'


@pytest.mark.parametrize("case", ["tampered", "expired", "revoked", "malformed", "basic"])
def test_tampered_expired_revoked_and_malformed_tokens_get_401(
    storage_app: Flask, case: str
) -> None:
    token = issue(storage_app, "clients:read")
    headers = {}
    if case == "tampered":
        token = token[:-1] + ("A" if token[-1] != "A" else "B")
    elif case == "expired":
        change(storage_app, update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    elif case == "revoked":
        with storage_app.app_context():
            ApiTokenService(db.session(), storage_app.extensions["idp"].api_token_hasher).revoke(
                "ci"
            )
            db.session.commit()
    elif case == "malformed":
        token = "not a token"
    elif case == "basic":
        headers["Authorization"] = "Basic Y2k6c2VjcmV0"
    response = Api(storage_app, token).call("GET", "/clients", headers=headers)
    if case == "basic":
        problem(response, 401, "authentication-required")
        return
    problem(response, 401, "invalid-token")
    assert response.headers["WWW-Authenticate"].startswith(
        'Bearer realm="idp", error="invalid_token"'
    )
    failures = rows(storage_app, AuditEvent, AuditEvent.kind == "api.authentication_failed")
    assert [e.outcome for e in failures] == ["failure"]
    if case in ("expired", "revoked"):
        assert failures[0].details == {"reason": case, "token": "ci"}


def test_tokens_are_stored_as_keyed_hashes_and_use_is_recorded(storage_app: Flask) -> None:
    token = issue(storage_app, "clients:read")
    assert token.startswith("idp_")
    assert len(token) == 47
    stored = rows(storage_app, ApiToken)[0]
    assert token not in stored.token_hash
    assert stored.token_hash == storage_app.extensions["idp"].api_token_hasher.hash(token)
    assert stored.last_used_at is None
    assert Api(storage_app, token).call("GET", "/clients").status_code == 200
    assert rows(storage_app, ApiToken)[0].last_used_at is not None


def test_failed_authentications_are_limited_per_address(storage_app: Flask) -> None:
    bad = Api(storage_app, "idp_" + "A" * 43)
    for _ in range(FAILED_AUTH_LIMIT):
        problem(bad.call("GET", "/clients"), 401, "invalid-token")
    refused = bad.call("GET", "/clients")
    problem(refused, 429, "too-many-requests")
    assert int(refused.headers["Retry-After"]) > 0
    problem(Api(storage_app, "idp_" + "B" * 43).call("GET", "/clients"), 429, "too-many-requests")
    failed = rows(storage_app, AuditEvent, AuditEvent.kind == "api.authentication_failed")
    assert len(failed) == FAILED_AUTH_LIMIT


def test_a_valid_token_is_served_from_an_address_whose_failures_are_spent(
    storage_app: Flask,
) -> None:
    """The failures' budget bounds what unknown tokens cost (their audit rows), not the work of
    the automation that shares the address (a CI provider's egress, a NAT, an IPv6 /64): anyone
    there could otherwise shut it out for an hour with 50 made-up tokens. A token that
    authenticates is served; every other still gets 429, unaudited."""
    good = issue(storage_app, "clients:read")
    bad = Api(storage_app, "idp_" + "A" * 43)
    for _ in range(FAILED_AUTH_LIMIT + 1):
        bad.call("GET", "/clients")
    assert Api(storage_app, good).call("GET", "/clients").status_code == 200
    problem(bad.call("GET", "/clients"), 429, "too-many-requests")


def test_the_api_ignores_a_signed_in_admins_cookie(storage_app: Flask) -> None:
    admin = passkey_browser(storage_app, "root@example.com")
    assert admin.browser.get("/admin/clients").status_code == 200
    response = admin.browser.get("/api/v1/clients")
    problem(response, 401, "authentication-required")
    created = admin.browser.post("/api/v1/clients", json={"name": "x", "redirect_uris": [REDIRECT]})
    problem(created, 401, "authentication-required")
    assert rows(storage_app, Client) == []


def test_no_cors_headers_no_cookies_and_no_caching(api: Api) -> None:
    response = api.call("GET", "/clients", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert not [name for name, _ in response.headers if name.lower().startswith("access-control-")]
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


def _path(op: Operation) -> str:
    return openapi_path(op.rule).replace("{", "").replace("}", "")


def test_each_operation_needs_its_scope(storage_app: Flask) -> None:
    """A table of every operation against a token with every scope but the one it needs."""
    scoped = [op for op in OPERATIONS if op.scope is not None]
    # admins:write is needed beside users:write, on admin accounts (below).
    assert {op.scope for op in scoped} == set(SCOPES) - {ADMINS_SCOPE}
    for op in scoped:
        others = [s for s in SCOPES if op.scope not in granted([s])]
        token = issue(storage_app, *others, name=f"t{OPERATIONS.index(op)}")
        response = Api(storage_app, token).call(op.method, _path(op), body={})
        body = problem(response, 403, "insufficient-scope")
        assert body["scope"] == op.scope, op
        challenge = response.headers["WWW-Authenticate"]
        assert f'error="insufficient_scope", scope="{op.scope}"' in challenge
    assert rows(storage_app, Client) == []


def test_a_rescue_link_for_an_admin_needs_the_scope_that_makes_admins(storage_app: Flask) -> None:
    """The link signs its holder in as the admin: with login-links:write alone, a help-desk
    token would hold every scope there is (docs/api.md)."""
    admin = create_user(storage_app, email="root@example.com", admin=True)
    member = create_user(storage_app, email="member@example.com")
    helpdesk = Api(storage_app, issue(storage_app, "login-links:write", name="helpdesk"))
    body = problem(helpdesk.call("POST", f"/users/{admin.id}/login-links"), 403,
                   "insufficient-scope")  # fmt: skip
    assert body["scope"] == "admins:write"
    assert body["detail"] == "A rescue link for an admin needs the admins:write scope."
    assert helpdesk.call("POST", f"/users/{member.id}/login-links").status_code == 201
    # users:write reaches only accounts that are not admins (docs/api.md).
    users = Api(storage_app, issue(storage_app, "login-links:write", "users:write", name="users"))
    problem(users.call("POST", f"/users/{admin.id}/login-links"), 403, "insufficient-scope")
    full = Api(storage_app, issue(storage_app, "login-links:write", "admins:write", name="ops"))
    assert full.call("POST", f"/users/{admin.id}/login-links").status_code == 201
    with storage_app.app_context():
        issued = db.session.scalars(select(LoginLink.user_id)).all()
    assert sorted(issued) == sorted([member.id, admin.id])


def test_a_rescue_link_issued_before_a_promotion_does_not_sign_in_the_admin(
    storage_app: Flask,
) -> None:
    """A help-desk token may rescue a member, not an admin: promoting the member later must not
    turn its link into an admin's, or login-links:write would still be every scope there is.
    Promotion ends the member's unspent rescue links, audited with the promotion."""
    create_user(storage_app, email="root@example.com", admin=True)
    member = create_user(storage_app, email="member@example.com")
    helpdesk = Api(storage_app, issue(storage_app, "login-links:write", name="helpdesk"))
    issued = helpdesk.call("POST", f"/users/{member.id}/login-links")
    assert issued.status_code == 201, issued.text
    secret = issued.get_json()["url"].rsplit("/", 1)[1]
    ops = Api(storage_app, issue(storage_app, "admins:write", name="ops"))
    assert ops.call("PATCH", f"/users/{member.id}", {"admin": True}).get_json()["admin"] is True
    browser = storage_app.test_client()
    page = browser.get(f"/login/link/{secret}")
    if page.status_code == 200:
        page = browser.post(f"/login/link/{secret}", data={"csrf_token": csrf_token(page.text)})
    assert page.status_code == 400, (page.status_code, page.headers.get("Location"))
    promoted = rows(storage_app, AuditEvent, AuditEvent.kind == "admin.user_promoted")
    assert [e.details.get("login_links_revoked") for e in promoted] == [1]
    # A link issued once they are an admin, by a token that may make admins, works.
    full = Api(storage_app, issue(storage_app, "login-links:write", "admins:write", name="full"))
    fresh = full.call("POST", f"/users/{member.id}/login-links").get_json()["url"]
    page = browser.get(fresh.removeprefix("http://localhost"))
    assert page.status_code == 200


def test_acting_on_an_admin_needs_the_admins_scope(storage_app: Flask) -> None:
    """A token that could make an admin, or change, disable, delete or rescue one, could give
    itself every scope (an admin's console mints tokens of any scope): users:write reaches only
    the accounts that are not admins; admins:write, which includes it, reaches every account. A
    refusal changes nothing."""
    root = create_user(storage_app, email="root@example.com", admin=True)
    member = create_user(storage_app, email="member@example.com")
    users = Api(storage_app, issue(storage_app, "users:write", "login-links:write", name="users"))

    def refused(response: TestResponse, why: str) -> None:
        body = problem(response, 403, "insufficient-scope")
        assert body["scope"] == "admins:write"
        assert body["detail"] == f"{why} needs the admins:write scope."

    new_admin = {"email": "eve@example.com", "admin": True}
    refused(users.call("POST", "/users", new_admin), "Making an admin")
    refused(users.call("PATCH", f"/users/{member.id}", {"admin": True}), "Making an admin")
    path = f"/users/{root.id}"
    refused(users.call("PATCH", path, {"name": "Mallory"}), "Changing an admin")
    refused(users.call("POST", f"{path}/disable"), "Disabling an admin")
    refused(users.call("POST", f"{path}/enable"), "Enabling an admin")
    refused(users.call("DELETE", path), "Deleting an admin")
    refused(users.call("POST", f"{path}/login-links"), "A rescue link for an admin")
    with storage_app.app_context():
        stored = db.session.scalars(select(User).order_by(User.email)).all()
        assert [(u.email, u.name, u.is_admin, u.disabled_at) for u in stored] == [
            ("member@example.com", "Ada Lovelace", False, None),
            ("root@example.com", "Ada Lovelace", True, None),
        ]
    # The accounts that are not admins stay users:write's.
    assert users.call("PATCH", f"/users/{member.id}", {"name": "Mem"}).status_code == 200
    assert users.call("POST", f"/users/{member.id}/disable").status_code == 200
    admins = Api(storage_app, issue(storage_app, "admins:write", name="admins"))
    assert admins.call("POST", "/users", new_admin).status_code == 201
    assert admins.call("PATCH", f"/users/{member.id}", {"admin": True}).status_code == 200
    assert admins.call("PATCH", path, {"name": "Root"}).status_code == 200
    assert admins.call("GET", "/users").status_code == 200  # it includes users:read
    # The document says it, on each operation that needs it.
    paths = Api(storage_app, None).call("GET", "/openapi.json").get_json()["paths"]
    on_admins = {(path, method) for path, item in paths.items() for method, op in item.items()
                 if "also `admins:write`" in op.get("description", "")}  # fmt: skip
    assert on_admins == {
        ("/users", "post"), ("/users/{user_id}", "patch"), ("/users/{user_id}", "delete"),
        ("/users/{user_id}/disable", "post"), ("/users/{user_id}/enable", "post"),
        ("/users/{user_id}/login-links", "post"),
    }  # fmt: skip


def test_an_invite_issued_before_a_promotion_does_not_make_its_holder_the_admin(
    storage_app: Flask,
) -> None:
    """A users:write token invites a member (the invite's URL is in its answer); an admin, or a
    token with admins:write, promotes the account before it is set up. The invite would sign its
    holder up as that admin, an admin's account from a token that may not make one: promotion
    ends unspent invites as it ends rescue links (the admin sends a new one), audited with it."""
    from tests.functional.test_invites import accept

    create_user(storage_app, email="root@example.com", admin=True)
    users = Api(storage_app, issue(storage_app, "users:write", name="users"))
    created = users.call("POST", "/users", {"email": "grace@example.com"})
    assert created.status_code == 201, created.text
    secret = created.get_json()["invite"]["url"].rsplit("/", 1)[1]
    admins = Api(storage_app, issue(storage_app, "admins:write", name="admins"))
    promoted = admins.call("PATCH", f"/users/{created.get_json()['id']}", {"admin": True})
    assert promoted.get_json()["admin"] is True
    status, _ = accept(storage_app.test_client(), secret)
    assert status == 400
    [event] = rows(storage_app, AuditEvent, AuditEvent.kind == "admin.user_promoted")
    assert event.details["invites_revoked"] == 1
    with storage_app.app_context():
        grace = db.session.scalars(select(User).where(User.email == "grace@example.com")).one()
        assert grace.name == ""  # the invite's page never set it up


def test_a_nul_in_a_path_parameter_is_a_400_never_a_server_error(api: Api) -> None:
    """``/clients/%00``: a NUL character in an id or a name, which PostgreSQL text can neither
    store nor compare (a database error, then a 500), is refused before any view looks it up,
    as one in a query string or a form is; on every operation with a path parameter, with and
    without a body."""
    assert api.call("POST", "/groups", {"name": "staff"}).status_code == 201
    with_params = [op for op in OPERATIONS if "<" in op.rule]
    assert with_params
    for op in with_params:
        path = re.sub(r"<[^>]+>", "a%00b", op.rule)
        for body in (None, {}):
            response = api.call(op.method, path, body, headers={"If-Match": '"v1"'})
            problem(response, 400, "malformed-request")
    problem(api.call("DELETE", "/groups/staff/members/a%00b"), 400, "malformed-request")


def test_a_request_its_scopes_do_not_allow_is_audited_within_a_budget(storage_app: Flask) -> None:
    """OWASP ASVS 4.0 7.1.3: access control failures are logged. A token refused for lack of a
    scope is audited ``api.access_denied`` with the scope and the operation, as itself; at most
    FAILED_AUTH_LIMIT rows a token and hour, so that a token that may only read cannot fill the
    audit log one refused request at a time (the refusals go on being refused)."""
    reader = Api(storage_app, issue(storage_app, "users:read", name="reader"))
    problem(reader.call("POST", "/users", {"email": "eve@example.com"}), 403, "insufficient-scope")
    [event] = rows(storage_app, AuditEvent, AuditEvent.kind == "api.access_denied")
    assert (event.actor_id, event.outcome, event.details) == (
        "api-token:reader", "failure",
        {"scope": "users:write", "operation": "api.create_user", "via": "api"},
    )  # fmt: skip
    for _ in range(FAILED_AUTH_LIMIT):
        problem(reader.call("DELETE", "/clients/x"), 403, "insufficient-scope")
    denied = rows(storage_app, AuditEvent, AuditEvent.kind == "api.access_denied")
    assert len(denied) == FAILED_AUTH_LIMIT
    assert rows(storage_app, User) == []


def test_a_write_scope_implies_its_read_scope(storage_app: Flask) -> None:
    token = Api(storage_app, issue(storage_app, "clients:write"))
    assert token.call("GET", "/clients").status_code == 200
    problem(token.call("GET", "/users"), 403, "insufficient-scope")


def test_an_unknown_api_path_and_method_are_problems(api: Api) -> None:
    problem(api.call("GET", "/nothing-here"), 404, "not-found")
    problem(api.call("PUT", "/clients"), 405, "method-not-allowed")


# -- clients --------------------------------------------------------------------------------------
def create(api: Api, **fields: Any) -> dict[str, Any]:
    response = api.call("POST", "/clients", {"name": "App", "redirect_uris": [REDIRECT], **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.get_json()
    return body


def test_clients_create_read_list_rotate_delete_audited_as_the_token(
    storage_app: Flask, api: Api
) -> None:
    created = create(api, first_party=True)
    client_id = created["client_id"]
    assert created["client_secret"]
    got = api.call("GET", f"/clients/{client_id}")
    assert got.status_code == 200
    assert "client_secret" not in got.get_json()
    assert got.headers["ETag"] == '"v1"'
    listed = api.call("GET", "/clients").get_json()
    assert [c["client_id"] for c in listed["items"]] == [client_id]
    assert created["client_secret"] not in json.dumps(listed)
    assert "client_secret" not in listed["items"][0]
    rotated = api.call("POST", f"/clients/{client_id}/rotate-secret", {"overlap_seconds": 0})
    assert rotated.status_code == 200
    assert rotated.get_json()["client_secret"] not in (None, created["client_secret"])
    assert api.call("DELETE", f"/clients/{client_id}").status_code == 204
    problem(api.call("GET", f"/clients/{client_id}"), 404, "not-found")
    actors = {(k, a) for k, a in audit_kinds(storage_app) if k.startswith("client.")}
    assert actors == {
        ("client.created", "api-token:ci"),
        ("client.secret_rotated", "api-token:ci"),
        ("client.deleted", "api-token:ci"),
    }


def test_back_channel_logout_uri_follows_the_consoles_rules(api: Api) -> None:
    """Back-Channel Logout 1.0 section 2.2 through the API, as in the console and the CLI: https
    (plain http only on loopback while the issuer is), set on create and changed by PATCH."""
    refused = api.call(
        "POST",
        "/clients",
        {
            "name": "App",
            "redirect_uris": [REDIRECT],
            "backchannel_logout_uri": "http://rp.example/bc",
        },
    )
    assert refused.status_code in (400, 422), refused.text
    created = create(api, backchannel_logout_uri="https://rp.example/bc",
                     backchannel_logout_session_required=True)  # fmt: skip
    assert created["backchannel_logout_uri"] == "https://rp.example/bc"
    assert created["backchannel_logout_session_required"] is True
    client_id = created["client_id"]
    etag = api.call("GET", f"/clients/{client_id}").headers["ETag"]
    patched = api.call("PATCH", f"/clients/{client_id}", {"backchannel_logout_uri": None},
                       headers={"If-Match": etag})  # fmt: skip
    assert patched.status_code == 200, patched.text
    assert patched.get_json()["backchannel_logout_uri"] is None
    # Without a URI the flag means nothing and is cleared with it (idp.services.clients).
    assert patched.get_json()["backchannel_logout_session_required"] is False


def test_require_pushed_authorization_requests_is_set_and_patched(api: Api) -> None:
    """RFC 9126 6 through the API (docs/api.md): false unless given, set on create, changed by
    PATCH, left as it is by a PATCH that does not name it; null is refused (422)."""
    assert create(api)["require_pushed_authorization_requests"] is False
    created = create(api, require_pushed_authorization_requests=True)
    assert created["require_pushed_authorization_requests"] is True
    client_id = created["client_id"]

    def patch(body: dict[str, Any]) -> Any:
        etag = api.call("GET", f"/clients/{client_id}").headers["ETag"]
        return api.call("PATCH", f"/clients/{client_id}", body, headers={"If-Match": etag})

    assert patch({"name": "Renamed"}).get_json()["require_pushed_authorization_requests"] is True
    assert patch({"require_pushed_authorization_requests": None}).status_code == 422
    patched = patch({"require_pushed_authorization_requests": False})
    assert patched.status_code == 200, patched.text
    assert patched.get_json()["require_pushed_authorization_requests"] is False


def test_dpop_bound_access_tokens_is_set_and_patched(api: Api) -> None:
    """RFC 9449 5.2 through the API (docs/api.md): false unless given, set on create, changed by
    PATCH, left as it is by a PATCH that does not name it; null is refused (422)."""
    assert create(api)["dpop_bound_access_tokens"] is False
    created = create(api, dpop_bound_access_tokens=True)
    assert created["dpop_bound_access_tokens"] is True
    client_id = created["client_id"]

    def patch(body: dict[str, Any]) -> Any:
        etag = api.call("GET", f"/clients/{client_id}").headers["ETag"]
        return api.call("PATCH", f"/clients/{client_id}", body, headers={"If-Match": etag})

    assert patch({"name": "Renamed"}).get_json()["dpop_bound_access_tokens"] is True
    assert patch({"dpop_bound_access_tokens": None}).status_code == 422
    patched = patch({"dpop_bound_access_tokens": False})
    assert patched.status_code == 200, patched.text
    assert patched.get_json()["dpop_bound_access_tokens"] is False


def test_lists_are_paginated_with_an_opaque_cursor(storage_app: Flask, api: Api) -> None:
    ids = sorted(create(api, name=f"App {n}")["client_id"] for n in range(3))
    first = api.call("GET", "/clients?limit=2").get_json()
    assert [c["client_id"] for c in first["items"]] == ids[:2]
    second = api.call("GET", f"/clients?limit=2&cursor={first['next_cursor']}").get_json()
    assert [c["client_id"] for c in second["items"]] == ids[2:]
    assert second["next_cursor"] is None
    problem(api.call("GET", "/clients?limit=201"), 400, "invalid-query")
    problem(api.call("GET", "/clients?limit=0"), 400, "invalid-query")
    problem(api.call("GET", "/clients?cursor=bm9wZQ"), 400, "invalid-query")
    # An integer key no database holds (64-bit signed), in the audit log's cursor: 400, not 500.
    huge = base64.urlsafe_b64encode(json.dumps({"after": 2**63}).encode()).decode().rstrip("=")
    problem(api.call("GET", f"/audit?cursor={huge}"), 400, "invalid-query")
    problem(api.call("GET", "/clients?colour=red"), 400, "invalid-query")


@pytest.mark.parametrize("path", ["/clients", "/users", "/groups", "/groups/staff/members"])
def test_a_cursor_whose_text_key_no_database_can_store_is_a_400(
    storage_app: Flask, api: Api, path: str
) -> None:
    """A cursor is base64url JSON, and JSON may spell a lone surrogate ("\\ud800"), which is no
    Unicode scalar value and has no UTF-8 form (RFC 8259 8.2, RFC 3629 3): neither database can
    be sent it as a key, so the cursor is not one of ours (400), never a 500."""
    assert api.call("POST", "/groups", {"name": "staff"}).status_code == 201
    for key in ('"\\ud800"', '"a\\udfffb"'):
        raw = ('{"after":' + key + "}").encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        problem(api.call("GET", f"{path}?cursor={cursor}"), 400, "invalid-query")


#: (body, extra headers, status, problem type): malformed JSON, wrong types, unknown members, bad
#: values, a NUL character, the wrong media type, an oversized body, no body.
BAD_BODIES = [
    ('{"name": "App", "redirect_uris": [', {}, 400, "malformed-json"),
    ('{"name": "App", "redirect_uris": "https://app.example/cb"}', {}, 422, "invalid-body"),
    ('{"name": 5, "redirect_uris": ["https://app.example/cb"]}', {}, 422, "invalid-body"),
    ('{"name": "App", "redirect_uris": [], "colour": "red"}', {}, 422, "invalid-body"),
    ('{"name": "App", "redirect_uris": ["https://a.example/"], "first_party": "true"}', {},
     422, "invalid-body"),
    ('{"name": "App", "redirect_uris": ["http://app.example/cb"]}', {}, 422, "invalid-value"),
    ('{"name": "App", "redirect_uris": ["https://app.example/*"]}', {}, 422, "invalid-value"),
    ('{"name": "App", "redirect_uris": ["https://app.example/c\\u2028b"]}', {}, 422,
     "invalid-value"),
    ('{"name": "App\\u0000", "redirect_uris": ["https://a.example/"]}', {}, 400,
     "malformed-json"),
    ('{"name": "App", "redirect_uris": ["https://app.example/cb"]}',
     {"Content-Type": "text/plain"}, 415, "unsupported-media-type"),
    ("[" * 100_000 + "]" * 100_000, {}, 413, "payload-too-large"),
    ("", {}, 422, "invalid-body"),
]  # fmt: skip


def test_bad_client_bodies_are_refused_and_change_nothing(storage_app: Flask, api: Api) -> None:
    for body, headers, status, slug in BAD_BODIES:
        response = api.call(
            "POST", "/clients", data=body, headers={"Content-Type": "application/json", **headers}
        )
        found = problem(response, status, slug)
        if slug == "invalid-body" and body:
            assert found["errors"], body
            assert all(e["pointer"].startswith("/") for e in found["errors"]), body
        assert rows(storage_app, Client) == [], body
    assert [k for k, _ in audit_kinds(storage_app)] == ["api_token.created"]


def test_every_operation_with_a_body_refuses_bad_bodies_before_acting(
    storage_app: Flask, api: Api
) -> None:
    """Malformed JSON, a wrong type, an unknown member and an oversized body, at every operation
    that takes a body: problem details, and nothing written."""
    with_body = [op for op in OPERATIONS if op.body is not None]
    assert len(with_body) >= 8
    cases = [("{", 400, "malformed-json"), ("[]", 422, "invalid-body"),
             ('{"unknown_member": 1}', 422, "invalid-body"),
             ('{"x": "' + "a" * 70_000 + '"}', 413, "payload-too-large")]  # fmt: skip
    for op in with_body:
        for body, status, slug in cases:
            response = api.call(op.method, _path(op), data=body,
                                headers={"Content-Type": "application/json"})  # fmt: skip
            problem(response, status, slug)
    assert [k for k, _ in audit_kinds(storage_app)] == ["api_token.created"]


def test_patch_needs_the_current_etag(storage_app: Flask, api: Api) -> None:
    client_id = create(api)["client_id"]
    path = f"/clients/{client_id}"
    problem(api.call("PATCH", path, {"name": "Renamed"}), 428, "precondition-required")
    patched = api.call("PATCH", path, {"name": "Renamed"}, headers={"If-Match": '"v1"'})
    assert patched.status_code == 200, patched.text
    assert patched.get_json()["name"] == "Renamed"
    assert patched.headers["ETag"] == '"v2"'
    stale = api.call("PATCH", path, {"name": "Again"}, headers={"If-Match": '"v1"'})
    problem(stale, 412, "precondition-failed")
    # An If-Match that is no list of entity-tags (RFC 9110 8.8.3) is malformed, not stale.
    for malformed in ("6f9v[u`", "v2", '"v2', '"v2",,"v3"'):
        problem(api.call("PATCH", path, {"name": "Again"}, headers={"If-Match": malformed}),
                400, "malformed-request")  # fmt: skip
        problem(api.call("DELETE", path, headers={"If-Match": malformed}), 400, "malformed-request")
    bad = api.call("PATCH", path, {"redirect_uris": ["http://x.example/"]},
                   headers={"If-Match": '"v2"'})  # fmt: skip
    problem(bad, 422, "invalid-value")
    assert rows(storage_app, Client)[0].name == "Renamed"
    assert rows(storage_app, Client)[0].version == 2


def test_a_patch_that_changes_nothing_claims_no_version_and_records_nothing(
    storage_app: Flask, api: Api
) -> None:
    """A PATCH that sets every member to what it is answers as any PATCH (200, the client), but
    claims no new version (the ETag stays, so no automation's next If-Match fails for nothing,
    and no process empties its client cache) and writes no ``client.updated`` event of no
    change. Its If-Match is still checked. A user's or a group's PATCH of nothing records
    nothing either."""
    client_id = create(api)["client_id"]
    path = f"/clients/{client_id}"
    before = api.call("GET", path)
    stored = rows(storage_app, Client)[0]
    generation = client_cache.generation()
    same = {"name": "App", "redirect_uris": [REDIRECT]}
    for body in (same, {}):
        patched = api.call("PATCH", path, body, headers={"If-Match": '"v1"'})
        assert patched.status_code == 200, patched.text
        assert patched.headers["ETag"] == '"v1"'
        assert patched.get_json() == before.get_json()
    assert client_cache.generation() == generation
    after = rows(storage_app, Client)[0]
    assert (after.version, after.updated_at) == (1, stored.updated_at)
    assert "client.updated" not in [kind for kind, _ in audit_kinds(storage_app)]
    # A change of nothing from a version that is no longer the stored one is refused as any
    # stale change: in the view (412), and in the service, which reads the stored version.
    renamed = api.call("PATCH", path, {"name": "Renamed"}, headers={"If-Match": '"v1"'})
    assert renamed.status_code == 200, renamed.text
    problem(api.call("PATCH", path, {"name": "Renamed"}, headers={"If-Match": '"v1"'}),
            412, "precondition-failed")  # fmt: skip
    with storage_app.app_context():
        found = db.session.get_one(Client, client_id)
        with pytest.raises(StaleClientError):
            services().clients.update(found, fields_of(found), expected_version=1)

    user = api.call("POST", "/users", {"email": "ann@example.com", "name": "Ann",
                                       "invite": False}).get_json()  # fmt: skip
    same_user = api.call("PATCH", f"/users/{user['id']}", {"name": "Ann", "admin": False})
    assert same_user.status_code == 200, same_user.text
    group = {"name": "staff", "display_name": "Staff"}
    assert api.call("POST", "/groups", group).status_code == 201
    same_group = api.call("PATCH", "/groups/staff", group | {"description": ""})
    assert same_group.status_code == 200, same_group.text
    kinds = [kind for kind, _ in audit_kinds(storage_app)]
    assert kinds.count("client.updated") == 1  # the rename
    assert not {"admin.user_renamed", "admin.user_demoted", "group.renamed",
                "group.updated"} & set(kinds)  # fmt: skip


def test_if_match_is_a_list_of_strong_tags_and_never_a_blind_star(api: Api) -> None:
    """RFC 9110 13.1.1: If-Match is a list of entity-tags compared strongly: the current one
    among others applies, a weak one never matches. ``*`` matches any current version: a blind
    write, which the API does not take (RFC 6585 3: the ETag is required), so it is a 428, not a
    412 that would say the client changed."""
    path = f"/clients/{create(api)['client_id']}"
    listed = api.call("PATCH", path, {"name": "Listed"}, headers={"If-Match": '"v0", "v1"'})
    assert listed.status_code == 200, listed.text
    weak = api.call("PATCH", path, {"name": "Weak"}, headers={"If-Match": 'W/"v2"'})
    problem(weak, 412, "precondition-failed")
    star = api.call("PATCH", path, {"name": "Blind"}, headers={"If-Match": "*"})
    problem(star, 428, "precondition-required")
    assert api.call("GET", path).get_json()["name"] == "Listed"
    # On a DELETE, where If-Match is optional, "*" only asks that the client exists.
    problem(api.call("DELETE", path, headers={"If-Match": '"v1"'}), 412, "precondition-failed")
    assert api.call("DELETE", path, headers={"If-Match": "*"}).status_code == 204


@pytest.mark.parametrize(
    "member",
    ["name", "redirect_uris", "kind", "post_logout_redirect_uris", "first_party",
     "id_token_signed_response_alg"],
)  # fmt: skip
def test_patch_refuses_null_for_a_member_a_client_cannot_be_without(
    app: Flask, member: str
) -> None:
    """docs/api.md: a wrong type is refused before anything is done (422), not a 500: a
    client has no name, no redirect URIs or no kind without them."""
    api = Api(app, issue(app))
    client_id = create(api)["client_id"]
    refused = api.call("PATCH", f"/clients/{client_id}", {member: None},
                       headers={"If-Match": '"v1"'})  # fmt: skip
    problem(refused, 422, "invalid-body")
    assert rows(app, Client)[0].version == 1


def test_concurrent_patches_of_one_client_cannot_both_win(
    storage_app: Flask, api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two PATCHes from version 1: the first is held after it claimed the version (its row or
    write lock held, not committed); the second is held after it read version 1 and checked
    If-Match, then let go to claim it too. Only the conditional UPDATE can refuse it: 412."""
    client_id = create(api)["client_id"]
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    checkpoints.open_all(CLAIMING_CHECKPOINT, VERSION_CHECKPOINT)
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(checkpoints.directory))

    def patch(name: str) -> TestResponse:
        return Api(storage_app, api.token).call(
            "PATCH", f"/clients/{client_id}", {"name": name}, headers={"If-Match": '"v1"'}
        )

    with ThreadPoolExecutor(2) as pool, checkpoints.holding(VERSION_CHECKPOINT):
        first = pool.submit(patch, "First")
        wait_until(lambda: checkpoints.arrivals(VERSION_CHECKPOINT) == 1, "first claimed v1")
        with checkpoints.holding(CLAIMING_CHECKPOINT):
            second = pool.submit(patch, "Second")
            wait_until(lambda: checkpoints.arrivals(CLAIMING_CHECKPOINT) == 1, "second read v1")
    results = [first.result(), second.result()]
    assert [r.status_code for r in results] == [200, 412], [r.text for r in results]
    problem(results[1], 412, "precondition-failed")
    stored = rows(storage_app, Client)[0]
    assert (stored.name, stored.version) == ("First", 2)
    updates = [k for k, _ in audit_kinds(storage_app) if k == "client.updated"]
    assert updates == ["client.updated"]


def test_a_client_created_through_the_api_signs_a_user_in(app: Flask, client: FlaskClient) -> None:
    api = Api(app, issue(app, "clients:write"))
    created = create(api, first_party=True)
    user = create_user(app)
    registered = RegisteredClient(created["client_id"], created["client_secret"], REDIRECT)
    tokens = RelyingParty(client, registered).tokens_for(user)
    assert tokens["id_token"]
    assert tokens["access_token"]


# -- users and login links ------------------------------------------------------------------------
@pytest.mark.parametrize("storage_app", ["postgresql"], indirect=True)
def test_parallel_creations_of_one_address_make_one_account_and_a_conflict(
    storage_app: Flask, api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two invites of one address (a retried call, two admins), both held after their look-up
    found the address free, then let go: one creates the account, the other gets the 409 a later
    call gets, not a 500 from the unique index. PostgreSQL only: SQLite's ``BEGIN IMMEDIATE``
    already holds the second before its look-up."""
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    checkpoints.open_all(EMAIL_FREE_CHECKPOINT)
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(checkpoints.directory))

    def invite() -> TestResponse:
        return Api(storage_app, api.token).call("POST", "/users", {"email": "grace@example.com"})

    with ThreadPoolExecutor(2) as pool:
        with checkpoints.holding(EMAIL_FREE_CHECKPOINT):
            calls = [pool.submit(invite) for _ in range(2)]
            wait_until(lambda: checkpoints.arrivals(EMAIL_FREE_CHECKPOINT) == 2, "both looked")
        results = sorted((call.result() for call in calls), key=lambda r: r.status_code)
    assert [r.status_code for r in results] == [201, 409], [r.text for r in results]
    problem(results[1], 409, "conflict")
    assert [u.email for u in rows(storage_app, User)] == ["grace@example.com"]
    assert len(rows(storage_app, LoginLink)) == 1


def test_users_invite_find_change_disable_enable_link_delete(storage_app: Flask, api: Api) -> None:
    create_user(storage_app, email="root@example.com", admin=True)
    created = api.call("POST", "/users", {"email": "grace@example.com", "name": "Grace"})
    assert created.status_code == 201, created.text
    user = created.get_json()
    assert user["invite"]["url"].startswith("http://localhost/invite/")
    problem(api.call("POST", "/users", {"email": "grace@example.com"}), 409, "conflict")
    problem(api.call("POST", "/users", {"email": "not an address"}), 422, "invalid-value")
    found = api.call("GET", "/users?email=Grace@Example.com").get_json()["items"]
    assert [u["id"] for u in found] == [user["id"]]
    path = f"/users/{user['id']}"
    renamed = api.call("PATCH", path, {"name": "Grace Hopper", "admin": True})
    assert renamed.get_json()["name"] == "Grace Hopper"
    assert renamed.get_json()["admin"]
    assert api.call("POST", f"{path}/disable").get_json()["disabled"]
    problem(api.call("POST", f"{path}/disable"), 422, "invalid-value")
    problem(api.call("POST", f"{path}/login-links"), 422, "invalid-value")
    assert not api.call("POST", f"{path}/enable").get_json()["disabled"]
    link = api.call("POST", f"{path}/login-links", {"ttl_seconds": 600})
    assert link.status_code == 201
    assert "/login/link/" in link.get_json()["url"]
    problem(api.call("POST", f"{path}/login-links", {"ttl_seconds": 10}), 422, "invalid-body")
    assert api.call("DELETE", path).status_code == 204
    problem(api.call("GET", path), 404, "not-found")
    kinds = {k for k, a in audit_kinds(storage_app) if a == "api-token:ci"}
    assert {"admin.user_created", "admin.user_renamed", "admin.user_promoted",
            "admin.user_disabled", "admin.user_enabled", "login_link.issued",
            "admin.user_deleted"} <= kinds, kinds  # fmt: skip
    # docs/api.md: every change made with a token says ``via: api``, the links it issues too.
    by_token = [e for e in rows(storage_app, AuditEvent) if e.actor_id == "api-token:ci"]
    assert {(e.kind, e.details.get("via")) for e in by_token if e.kind != "api_token.created"} == {
        (kind, "api") for kind in kinds - {"api_token.created"}
    }


def test_a_name_an_admin_gives_keeps_no_directional_controls(storage_app: Flask, api: Api) -> None:
    """The name an API token (or the console, or the CLI) gives a user is the same ``name`` claim
    and console line as the one users give themselves: "\u202enimda" would read as "admin"
    there (Unicode Standard Annex 9), so it keeps no directional controls either."""
    created = api.call("POST", "/users", {"email": "eve@example.com", "name": "\u202enimda",
                                          "invite": False})  # fmt: skip
    assert created.status_code == 201, created.text
    assert created.get_json()["name"] == "nimda"
    user_id = created.get_json()["id"]
    renamed = api.call("PATCH", f"/users/{user_id}", {"name": "Eve\u2067 \u2066 Admin\u200f"})
    assert renamed.get_json()["name"] == "Eve Admin"
    with storage_app.app_context():
        assert db.session.scalar(select(User.name).where(User.id == user_id)) == "Eve Admin"


def test_a_name_an_admin_gives_keeps_no_control_characters(storage_app: Flask, api: Api) -> None:
    """The console line and the ``name`` claim of a name an admin gives are read by terminals and
    log viewers: an ESC sequence in it rewrites what they show (Unicode general category Cc; RFC
    8264 9.12 disallows controls in free-form text). A name is one line, without controls."""
    created = api.call("POST", "/users", {"email": "eve@example.com", "invite": False,
                                          "name": "Eve\x1b]0;pwned\x07\x85Admin"})  # fmt: skip
    assert created.status_code == 201, created.text
    assert created.get_json()["name"] == "Eve]0;pwned Admin"
    user_id = created.get_json()["id"]
    renamed = api.call("PATCH", f"/users/{user_id}", {"name": "Eve\tK.\n\x9b31mAdmin\x7f"})
    assert renamed.get_json()["name"] == "Eve K. 31mAdmin"
    with storage_app.app_context():
        assert db.session.scalar(select(User.name).where(User.id == user_id)) == "Eve K. 31mAdmin"


def test_the_last_admin_stays_and_the_refusal_is_audited(storage_app: Flask, api: Api) -> None:
    admin = create_user(storage_app, email="root@example.com", admin=True)
    problem(api.call("PATCH", f"/users/{admin.id}", {"admin": False}), 409, "last-admin")
    problem(api.call("POST", f"/users/{admin.id}/disable"), 409, "last-admin")
    with storage_app.app_context():
        assert db.session.scalar(select(User.is_admin).where(User.id == admin.id))
    refusals = rows(storage_app, AuditEvent, AuditEvent.kind == "admin.action_refused")
    # Two rows of one kind: compared without an order, which the query does not give.
    assert sorted((e.actor_id, e.details["action"], e.details["via"]) for e in refusals) == [
        ("api-token:ci", "demote", "api"), ("api-token:ci", "disable", "api")
    ]  # fmt: skip


# -- groups and audit -----------------------------------------------------------------------------
def test_groups_and_members(storage_app: Flask, api: Api) -> None:
    ada = create_user(storage_app)
    created = api.call("POST", "/groups", {"name": "staff", "display_name": "Staff"})
    assert created.status_code == 201, created.text
    problem(api.call("POST", "/groups", {"name": "staff"}), 409, "conflict")
    problem(api.call("POST", "/groups", {"name": "Not A Slug"}), 422, "invalid-value")
    added = api.call("POST", "/groups/staff/members", {"emails": [ada.email]})
    assert added.get_json() == {"changed": [ada.email]}
    problem(api.call("POST", "/groups/staff/members", {"emails": ["x@example.com"]}), 422,
            "invalid-value")  # fmt: skip
    members = api.call("GET", "/groups/staff/members").get_json()["items"]
    assert [m["email"] for m in members] == [ada.email]
    renamed = api.call("PATCH", "/groups/staff", {"name": "team", "description": "Everyone"})
    assert renamed.get_json()["name"] == "team"
    assert [g["name"] for g in api.call("GET", "/groups").get_json()["items"]] == ["team"]
    assert api.call("DELETE", f"/groups/team/members/{ada.id}").status_code == 204
    problem(api.call("DELETE", f"/groups/team/members/{ada.id}"), 404, "not-found")
    client_id = create(api)["client_id"]
    with storage_app.app_context():
        from idp.services.groups import GroupService

        GroupService(db.session()).set_allowed_groups(db.session().get(Client, client_id), ["team"])
        db.session.commit()
    problem(api.call("DELETE", "/groups/team"), 409, "group-in-use")
    assert api.call("DELETE", "/groups/team?confirm=true").status_code == 204
    problem(api.call("GET", "/groups/team"), 404, "not-found")
    kinds = {k for k, a in audit_kinds(storage_app) if a == "api-token:ci"}
    assert {"group.created", "group.member_added", "group.renamed", "group.member_removed",
            "group.deleted"} <= kinds  # fmt: skip


@pytest.mark.parametrize("text", ["Staff\u202e", "\u2067Staff", "Staff\x9b31m", "Staff\x1b[2J"])
def test_a_group_text_with_a_directional_or_control_character_is_refused(
    api: Api, text: str
) -> None:
    """A group's display name, description and claim values reach the console and relying
    parties, as a person's name does: "\u202enimda" reads as "admin" (Unicode Standard Annex 9),
    and a C1 or C0 control is acted on by terminals (Unicode general category Cc). A person's
    name keeps none of them; a group's text with one is refused."""
    problem(api.call("POST", "/groups", {"name": "staff", "display_name": text}), 422,
            "invalid-value")  # fmt: skip
    assert (
        api.call("POST", "/groups", {"name": "staff", "display_name": "Staff"}).status_code == 201
    )
    problem(api.call("PATCH", "/groups/staff", {"description": text}), 422, "invalid-value")


def test_audit_read_since_a_time_by_actor_a_page_at_a_time(storage_app: Flask, api: Api) -> None:
    before = utcnow()
    for n in range(3):
        create(api, name=f"App {n}")
    query = f"/audit?since={before.isoformat().replace('+00:00', 'Z')}&actor=api-token:ci&limit=2"
    first = api.call("GET", query.replace("Z", "%2B00:00"))
    assert first.status_code == 200, first.text
    page = first.get_json()
    assert [e["kind"] for e in page["items"]] == ["client.created"] * 2
    rest = api.call("GET", f"/audit?actor=api-token:ci&limit=2&cursor={page['next_cursor']}")
    assert [e["kind"] for e in rest.get_json()["items"]] == ["client.created"]
    ids = [e["id"] for e in page["items"] + rest.get_json()["items"]]
    assert ids == sorted(ids, reverse=True)
    problem(api.call("GET", "/audit?since=yesterday"), 400, "invalid-query")
    events = api.call("GET", "/audit?event=client.*").get_json()["items"]
    assert len(events) == 3


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_upgrade_gives_admins_write_to_the_tokens_that_held_users_write(
    tmp_path: Path, database: str
) -> None:
    """Revision 0017: users:write reached admins before; a token made then keeps that power under
    its new name, so that no automation breaks at the upgrade; the downgrade gives it back."""
    from alembic import command as alembic
    from sqlalchemy import create_engine, text

    from idp.database import alembic_config
    from tests.conftest import throwaway_postgres_database

    with contextlib.ExitStack() as stack:
        if database == "sqlite":
            url = f"sqlite:///{tmp_path / 'idp.db'}"
        else:
            url = stack.enter_context(throwaway_postgres_database())
        alembic.upgrade(alembic_config(url), "0016")
        engine = create_engine(url)
        stack.callback(engine.dispose)
        scopes = {"ops": ["users:write", "groups:write"], "read": ["users:read"]}
        with engine.begin() as connection:
            for name, held in scopes.items():
                connection.execute(
                    text("INSERT INTO api_tokens (id, name, token_hash, scopes, created_at) VALUES"
                         " (:name, :name, :name, :scopes, '2026-01-01')"),
                    {"name": name, "scopes": json.dumps(held)},
                )  # fmt: skip

        def stored() -> dict[str, list[str]]:
            with engine.connect() as connection:
                found = connection.execute(text("SELECT name, scopes FROM api_tokens")).all()
            return {n: s if isinstance(s, list) else json.loads(s) for n, s in found}

        alembic.upgrade(alembic_config(url), "0017")
        assert stored() == {"ops": ["users:write", "admins:write", "groups:write"],
                            "read": ["users:read"]}  # fmt: skip
        alembic.downgrade(alembic_config(url), "0016")
        assert stored() == scopes

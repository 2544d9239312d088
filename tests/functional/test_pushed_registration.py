"""Requests answered under the PAR policy and the client's registration as they stand when the
request is processed, not when it arrived (RFC 9126 7.4): a pushed request at /authorize after an
admin changed the client, and a request not pushed that waits while its client or the deployment
comes to require PAR (SQLite and PostgreSQL; the deployment's setting on SQLite). The push's own
checks are tests/functional/test_pushed_authorization.py."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from joserfc.jwk import RSAKey
from werkzeug.test import TestResponse

from idp.clock import FrozenClock
from idp.extensions import db
from idp.models import AuthorizationCode, PushedAuthorizationRequest
from idp.oidc.dpop import PROOF_CHECKPOINT
from idp.services.client_fields import fields_of
from idp.services.clients import ClientService
from idp.services.device import DEVICE_CODE_GRANT_TYPE
from idp.settings import Settings
from tests.conftest import sqlite_app
from tests.functional.test_admin_clients import audit_events, rotate
from tests.functional.test_authorize_errors import (
    assert_error_page,
    error_redirect,
    remove_redirect_uri,
)
from tests.functional.test_pushed_authorization import (
    authorize_pushed,
    basic,
    push,
    pushed_uri,
    sign_in_via,
)
from tests.functional.test_refresh_scope import allow_grants, allow_only
from tests.support.admin import passkey_browser
from tests.support.checkpoints import Checkpoints, answered_while_held
from tests.support.dpop import DPoPKey
from tests.support.factories import REDIRECT_URI, create_client, create_user, rows
from tests.support.flow import RelyingParty, client_assertion, query_of, start_session

LOST = "https://lost.example/callback"


def require_par(app: Flask, client_id: str) -> None:
    """An admin turns on the client's require_pushed_authorization_requests (RFC 9126 6)."""
    with app.app_context():
        rt = app.extensions["idp"]
        service = ClientService(db.session(), rt.client_secrets, issuer=rt.settings.issuer)
        client = service.get(client_id)
        assert client is not None
        fields = dataclasses.replace(fields_of(client), require_pushed_authorization_requests=True)
        service.update(client, fields)
        db.session.commit()


def followed_to_the_client(response: TestResponse, rp: RelyingParty) -> TestResponse:
    """idp's own redirects followed until one leaves for the client's redirect URI."""
    for _ in range(5):
        location = response.headers.get("Location", "")
        if response.status_code not in (302, 303) or location.startswith(REDIRECT_URI):
            break
        response = rp.browser.get(location)
    return response


def test_a_pushed_request_is_answered_under_the_registration_as_it_stands(
    storage_app: Flask,
) -> None:
    """RFC 9126 7.4: the client's policy may change between the push and the request_uri's
    use, so the request is checked against it again at use (RFC 9126 4: validated "as it would
    any other authorization request"; RFC 6749 3.1.2.3 and 4.1.2.1). A redirect URI an admin
    removed after the push (a lost domain) gets the error page and no code, also for a user
    signed in already, whose code would otherwise be issued at once; a client that lost the
    authorization code grant meanwhile is unauthorized_client, sent to its redirect URI with the
    pushed state; scopes taken from it meanwhile are not in the code (RFC 6749 3.3)."""
    user = create_user(storage_app)
    registered = create_client(storage_app, redirect_uris=[LOST, REDIRECT_URI])
    rp = RelyingParty(storage_app.test_client(), registered)
    start_session(rp.browser, user)
    request_uri = pushed_uri(rp, redirect_uri=LOST)
    remove_redirect_uri(storage_app, rp, keep=REDIRECT_URI)
    assert_error_page(authorize_pushed(rp, request_uri))
    assert rows(storage_app, AuthorizationCode) == []
    (spent,) = rows(storage_app, PushedAuthorizationRequest)
    assert spent.consumed_at is not None  # used once, whatever it answered

    other = RelyingParty(rp.browser, create_client(storage_app, name="Other"))
    request_uri = pushed_uri(other)
    allow_grants(storage_app, other.registered.client_id, [DEVICE_CODE_GRANT_TYPE])
    assert error_redirect(authorize_pushed(other, request_uri), other) == "unauthorized_client"
    assert rows(storage_app, AuthorizationCode) == []

    narrowed = RelyingParty(rp.browser, create_client(storage_app, name="Narrowed"))
    request_uri = pushed_uri(narrowed)  # openid profile email offline_access
    allow_only(storage_app, narrowed.registered.client_id, ["openid", "email"])
    response = authorize_pushed(narrowed, request_uri)
    assert response.status_code == 302, response.text
    assert "code" in query_of(response.headers["Location"])
    (code,) = rows(storage_app, AuthorizationCode)
    assert code.scope == "openid email"


def test_a_request_not_pushed_gets_no_code_once_its_client_requires_par(
    storage_app: Flask,
) -> None:
    """RFC 9126 6 and 7.4: a request sent to /authorize directly, waiting for its sign-in when an
    admin made the client require PAR, is answered under the policy as it stands: invalid_request
    sent to the client with its state, no code (RFC 9126 4: a request not pushed is refused for
    such a client). A pushed request waiting likewise signs in."""
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    not_pushed = rp.sign_in_page()
    pushed = authorize_pushed(rp, pushed_uri(rp))
    require_par(storage_app, rp.registered.client_id)
    response = followed_to_the_client(rp.sign_in(not_pushed, user), rp)
    assert error_redirect(response, rp) == "invalid_request"
    assert rows(storage_app, AuthorizationCode) == []
    assert "code" in sign_in_via(rp, pushed, user)


def test_a_request_not_pushed_gets_no_code_once_the_deployment_requires_par(
    tmp_path: Path,
) -> None:
    """RFC 9126 5 and 7.4, as for one client: a request sent to /authorize directly on a node
    that did not require PAR, its sign-in finished on a node that does (the same database: the
    next node of a rolling change, or this one restarted), gets invalid_request, no code."""
    before = sqlite_app(tmp_path)
    rp = RelyingParty(before.test_client(), create_client(before))
    user = create_user(before)
    not_pushed = rp.sign_in_page()
    after = sqlite_app(tmp_path, require_pushed_authorization_requests=True)
    rp.browser = after.test_client()
    response = followed_to_the_client(rp.sign_in(not_pushed, user), rp)
    assert error_redirect(response, rp) == "invalid_request"
    assert rows(after, AuthorizationCode) == []


def test_a_rotation_that_stops_the_secret_takes_back_the_requests_it_pushed(
    storage_app: Flask,
) -> None:
    """A pushed request was authenticated by the client's secret (RFC 9126 2); when an admin
    rotates that secret without an overlap (a leaked secret: it stops at once), a request_uri
    pushed with it stayed usable for its ``par_request_ttl``. The rotation takes the client's
    unspent pushes back in its transaction: /authorize answers them as expired (RFC 9126 4),
    and the audit event says how many. A rotation with an overlap, whose old secret still works,
    leaves them; one that ends an earlier rotation's overlap takes them back too, since idp
    cannot tell which of the two secrets authenticated a push. SQLite and PostgreSQL, through
    the console and the PAR endpoint."""
    admin = passkey_browser(storage_app, "root@example.com")
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    other = RelyingParty(storage_app.test_client(), create_client(storage_app, name="Other"))
    client_id = rp.registered.client_id
    leaked, others = pushed_uri(rp), pushed_uri(other)
    new = rotate(admin, client_id, 0)
    assert_error_page(authorize_pushed(rp, leaked))
    [event] = audit_events(storage_app, "client.secret_rotated")
    assert event.details["pushed_requests_withdrawn"] == 1
    # Another client's pushes are its own.
    assert sign_in_via(other, authorize_pushed(other, others), user)["state"] == other.state
    # Pushed with the new secret, through a rotation with an overlap: still signs in.
    rp.registered = dataclasses.replace(rp.registered, client_secret=new)
    kept = pushed_uri(rp)
    newer = rotate(admin, client_id, 3600)
    assert sign_in_via(rp, authorize_pushed(rp, kept), user)["state"] == rp.state
    # A rotation while that overlap runs stops the secret before: its pushes are taken back.
    rp.registered = dataclasses.replace(rp.registered, client_secret=newer)
    during = pushed_uri(rp)
    rotate(admin, client_id, 3600)
    assert_error_page(authorize_pushed(rp, during))
    assert rows(storage_app, PushedAuthorizationRequest,
                PushedAuthorizationRequest.consumed_at.is_(None)) == []  # fmt: skip


def test_a_push_stored_after_the_rotation_that_stopped_its_secret_is_refused(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """A push authenticated with the client's secret, then, before it was stored, an admin
    rotated that secret without an overlap: the rotation's withdrawal of the client's pushes
    ran before the push's INSERT, so its request_uri stayed usable for its ``par_request_ttl``,
    a push the stopped secret authenticated outliving it (RFC 9126 2). Each push stores the
    client's secret generation it authenticated under, which the rotation moves on; /authorize
    answers the late one as expired (RFC 9126 4), and a push with the new secret still signs
    in. Real parallel requests on SQLite and PostgreSQL: the push held where its DPoP proof was
    checked (after its client authenticated, before it is stored) while the rotation commits."""
    admin = passkey_browser(storage_app, "root@example.com")
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    client_id = rp.registered.client_id
    rotated: dict[str, Any] = {}

    def rotate_at_once() -> None:
        rotated["secret"] = rotate(admin, client_id, 0)

    proof = DPoPKey().proof("POST", "http://localhost/par")
    pushed = answered_while_held(
        checkpoints, PROOF_CHECKPOINT,
        lambda: push(rp, headers={**basic(rp.registered), "DPoP": proof}), rotate_at_once,
    )  # fmt: skip
    assert pushed.status_code == 201, pushed.text
    assert_error_page(authorize_pushed(rp, pushed.get_json()["request_uri"]))
    rp.registered = dataclasses.replace(rp.registered, client_secret=rotated["secret"])
    assert sign_in_via(rp, authorize_pushed(rp, pushed_uri(rp)), user)["state"] == rp.state


def test_a_push_with_the_old_secret_ends_when_the_overlap_ends(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """A rotation with an overlap leaves the client's pushes usable: the old secret still works.
    But the overlap ends by time too, and nothing then took back a request the old secret
    pushed in its last ``par_request_ttl`` seconds: its request_uri outlived the secret that
    authenticated it (RFC 9126 2). A push authenticated by the old secret now expires when the
    old secret does (``expires_in`` says so); one pushed with the new secret at the same moment
    keeps its whole ``par_request_ttl`` and signs in (RFC 9126 4). SQLite and PostgreSQL."""
    admin = passkey_browser(storage_app, "root@example.com")
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    old = rp.registered
    new = dataclasses.replace(old, client_secret=rotate(admin, old.client_id, 3600))
    ttl = Settings.par_request_ttl
    clock.advance(timedelta(seconds=3600 - ttl // 2))  # the overlap's last seconds
    by_old = push(rp, headers=basic(old))
    assert by_old.status_code == 201, by_old.text
    assert by_old.get_json()["expires_in"] == ttl // 2
    by_new = push(rp, headers=basic(new))
    assert by_new.get_json()["expires_in"] == ttl
    clock.advance(timedelta(seconds=ttl // 2 + 1))  # the old secret stopped; both pushes live
    assert_error_page(authorize_pushed(rp, by_old.get_json()["request_uri"]))
    rp.registered = new
    response = authorize_pushed(rp, by_new.get_json()["request_uri"])
    assert sign_in_via(rp, response, user)["state"] == rp.state


def test_a_push_with_the_old_secret_in_its_last_second_is_invalid_client(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """In the overlap's last second a push authenticated by the old secret would live for no
    whole second: its ``expires_in`` was ``0``, which RFC 9126 2.2 does not allow (a positive
    integer), for a request_uri no browser could bring to /authorize before it ended, and one
    second would outlive the secret. The secret is taken as ended for a push: ``invalid_client``,
    401 with the Basic challenge (RFC 6749 5.2), nothing stored or audited; with a whole second
    left the push lives that second, and the new secret at the same moment keeps its whole
    ``par_request_ttl``. SQLite and PostgreSQL, on a frozen clock."""
    admin = passkey_browser(storage_app, "root@example.com")
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    old = rp.registered
    new = dataclasses.replace(old, client_secret=rotate(admin, old.client_id, 3600))
    clock.advance(timedelta(seconds=3599))  # one whole second of the old secret left
    last = push(rp, headers=basic(old))
    assert last.status_code == 201, last.text
    assert last.get_json()["expires_in"] == 1
    # 999 ms left, then 1 µs.
    for step in (timedelta(milliseconds=1), timedelta(milliseconds=999, microseconds=-1)):
        clock.advance(step)
        refused = push(rp, headers=basic(old))
        assert refused.status_code == 401, refused.text
        assert refused.get_json()["error"] == "invalid_client", refused.text
        assert refused.headers["WWW-Authenticate"].startswith('Basic realm="idp"')
        assert refused.headers["Cache-Control"] == "no-store"
    assert len(rows(storage_app, PushedAuthorizationRequest)) == 1
    assert len(audit_events(storage_app, "authorization.pushed")) == 1
    assert audit_events(storage_app, "authorization.push_refused") == []
    by_new = push(rp, headers=basic(new))
    assert by_new.status_code == 201, by_new.text
    assert by_new.get_json()["expires_in"] == Settings.par_request_ttl


def change_credentials(app: Flask, client_id: str, **changes: Any) -> None:
    """An admin changes how the client authenticates (its method, its JWKS)."""
    with app.app_context():
        rt = app.extensions["idp"]
        service = ClientService(db.session(), rt.client_secrets, issuer=rt.settings.issuer)
        client = service.get(client_id)
        assert client is not None
        service.update(client, dataclasses.replace(fields_of(client), **changes))
        db.session.commit()


def test_a_change_of_the_clients_credentials_takes_back_the_requests_it_pushed(
    storage_app: Flask,
) -> None:
    """A pushed request was authenticated by the client's credentials as they stood (RFC 9126
    2). An admin who moves the client off its secret (to private_key_jwt), or swaps its JWKS,
    ends what authenticated the push, and the request_uri stayed usable for its
    ``par_request_ttl``. The change takes back the client's unspent pushes, as a rotation that
    stops the secret does; the audit event says how many. SQLite and PostgreSQL."""
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    client_id = rp.registered.client_id
    by_secret = pushed_uri(rp)
    first, second = (RSAKey.generate_key(2048, parameters={"kid": kid}) for kid in "ab")
    jwks = {"keys": [first.as_dict(private=False)]}
    change_credentials(storage_app, client_id, auth_method="private_key_jwt", jwks=jwks)
    assert_error_page(authorize_pushed(rp, by_secret))
    [event] = audit_events(storage_app, "client.updated")
    assert event.details["pushed_requests_withdrawn"] == 1
    # Pushed with the first key, then the keys swapped: the push goes with the key.
    assertion = {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": client_assertion(client_id, first, "http://localhost"),
    }
    by_key = pushed_uri(rp, headers={}, **assertion)
    change_credentials(storage_app, client_id, jwks={"keys": [second.as_dict(private=False)]})
    assert_error_page(authorize_pushed(rp, by_key))
    assert rows(storage_app, PushedAuthorizationRequest,
                PushedAuthorizationRequest.consumed_at.is_(None)) == []  # fmt: skip

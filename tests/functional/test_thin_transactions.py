"""The authorization endpoint's reads and the code grant's writes without the ORM Session
(idp.thin_reads, idp.oidc.rotation; docs/performance.md): with no Session open, the same
statements are sent on the thread's own connection and committed together; every refusal that
writes more keeps the Session, and decides as before."""

from __future__ import annotations

import pytest
from flask import Flask

from idp.extensions import db
from tests.functional.test_thin_reads import _engine_events, _sessions_opened
from tests.support.factories import create_client, create_user
from tests.support.flow import RelyingParty, sign_in_address


def test_a_new_authorization_request_opens_no_orm_session(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's read is a thin read, and nothing is written: the sign-in page carries the
    request (idp.services.carried_requests)."""
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    # The node's first page reads the sign-in policy (then cached: idp.services.sign_in_policy
    # PolicyCache); the sign-in page the endpoint shows reads nothing else and stores nothing.
    rp.authorize()
    opened = _sessions_opened(monkeypatch, storage_app)
    with _engine_events(storage_app) as seen:
        response = rp.authorize()
    assert sign_in_address(response) is not None  # the sign-in page, shown at once
    assert opened == []
    assert seen == ["SELECT"]


def test_a_code_is_spent_and_its_tokens_recorded_in_one_thin_transaction(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 6749 4.1.3: the code's spend and the tokens it issues, committed together, without an
    ORM Session; the code presented again is still a replay that revokes what it issued
    (RFC 6749 4.1.2), decided in the Session."""
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    user = create_user(storage_app)
    rp.tokens_for(user)  # the client is then in the token side's cache
    code = rp.obtain_code(user)["code"]
    opened = _sessions_opened(monkeypatch, storage_app)
    with _engine_events(storage_app) as seen:
        exchanged = rp.exchange(code)
    assert exchanged.status_code == 200, exchanged.text
    assert opened == []
    # The access and refresh tokens' INSERTs: one statement on PostgreSQL (its data-modifying
    # WITH, idp.thin_statements ``inserts_together``).
    with storage_app.app_context():
        together = db.engine.dialect.name == "postgresql"
    assert seen == ["begin", "UPDATE", *(["WITH"] if together else ["INSERT", "INSERT"]), "commit"]
    tokens = exchanged.get_json()
    assert rp.userinfo(tokens["access_token"]).status_code == 200
    replayed = rp.exchange(code)
    assert replayed.get_json()["error"] == "invalid_grant"
    assert len(opened) == 1  # the replay's revocation
    assert rp.userinfo(tokens["access_token"]).status_code == 401
    assert rp.refresh(tokens["refresh_token"]).get_json()["error"] == "invalid_grant"


def test_a_code_refused_after_its_spend_stays_spent(storage_app: Flask) -> None:
    """A wrong PKCE verifier (RFC 7636 4.6) is refused after the spend: the thin transaction is
    committed with the OAuth error, as the Session's is, so the code cannot be tried again."""
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    code = rp.obtain_code(create_user(storage_app))["code"]
    wrong = rp.exchange(code, code_verifier="x" * 43)
    assert wrong.get_json()["error"] == "invalid_grant"
    assert rp.exchange(code).get_json()["error"] == "invalid_grant"

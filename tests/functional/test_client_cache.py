"""The token side's cache of client registrations (idp.services.client_cache): a change counts
at once in the process that made it, on other nodes (and in this node's other worker processes)
within ``client_cache_ttl`` seconds; the cached client belongs to no session and is shared.

"Another node" is a write this process's sessions never see: a Core statement on a connection
of its own, as another node's (or another worker's) commit is to this process."""

from __future__ import annotations

import dataclasses
import time

import pytest
from flask import Flask
from sqlalchemy import insert, inspect, select, update
from werkzeug.test import TestResponse

from idp.clock import SYSTEM_CLOCK
from idp.extensions import db
from idp.models import Client, ClientAllowedGroup, Grant, Group
from idp.models.base import utcnow
from idp.services.client_cache import ClientCache
from idp.services.client_fields import fields_of
from idp.services.clients import ClientService
from tests.support.factories import RegisteredClient, create_client, create_user
from tests.support.flow import RelyingParty

FORM = {"grant_type": "client_credentials"}


def _machine(app: Flask) -> RegisteredClient:
    return create_client(app, name="m2m", grant_types=["client_credentials"])


def _status(app: Flask, machine: RegisteredClient) -> int:
    auth = (machine.client_id, machine.client_secret or "")
    return app.test_client().post("/token", data=FORM, auth=auth).status_code


def _elsewhere(app: Flask, client_id: str, **values: object) -> None:
    """Change the client's row as another node does: past every session of this process."""
    with app.app_context(), db.engine.begin() as connection:
        table = Client.__table__
        connection.execute(update(table).where(table.c.client_id == client_id).values(**values))


def test_a_client_disabled_on_another_node_is_refused_within_the_ttl(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache: ClientCache = storage_app.extensions["idp"].client_cache
    now = [time.monotonic()]
    monkeypatch.setattr(cache, "monotonic", lambda: now[0])
    machine = _machine(storage_app)
    assert _status(storage_app, machine) == 200
    _elsewhere(storage_app, machine.client_id, disabled_at=utcnow())
    # This node still trusts its copy for client_cache_ttl seconds (docs/security.md) ...
    now[0] += cache.ttl - 0.5
    assert _status(storage_app, machine) == 200
    # ... and no longer.
    now[0] += 0.5
    assert _status(storage_app, machine) == 401


def test_a_client_disabled_on_another_node_gets_no_rotation_and_its_tokens_no_answer_at_once(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within the cache's TTL the token side still authenticates the disabled client from its
    copy, but what it asks for reads the stored registration: its refresh token rotates nothing
    and its access tokens are inactive at introspection and refused at userinfo."""
    cache: ClientCache = storage_app.extensions["idp"].client_cache
    now = [time.monotonic()]
    monkeypatch.setattr(cache, "monotonic", lambda: now[0])
    user = create_user(storage_app)
    web = create_client(storage_app)
    tokens = RelyingParty(storage_app.test_client(), web).tokens_for(user)
    browser = storage_app.test_client()
    auth = (web.client_id, web.client_secret or "")

    def introspected() -> bool:
        # RFC 7662 4: the client learns about its own tokens (still authenticated from the copy).
        response = browser.post("/introspect", data={"token": tokens["access_token"]}, auth=auth)
        assert response.status_code == 200
        return bool(response.get_json()["active"])

    assert introspected()
    _elsewhere(storage_app, web.client_id, disabled_at=utcnow())
    now[0] += cache.ttl - 0.5  # the client still cached here
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert browser.post("/token", data=refresh, auth=auth).status_code == 400  # invalid_grant
    assert not introspected()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert browser.get("/userinfo", headers=bearer).status_code == 401


def test_the_rotation_reads_the_disabling_of_its_own_client_among_several(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spend reads the disabling of the client that presents the token, not another's: on
    SQLite the RETURNING clause names the refresh token's ``client_id`` unqualified, and inside
    a subquery on ``clients`` that name was the clients' own (any client's ``disabled_at``)."""
    cache: ClientCache = storage_app.extensions["idp"].client_cache
    now = [time.monotonic()]
    monkeypatch.setattr(cache, "monotonic", lambda: now[0])
    user = create_user(storage_app)
    first, second = create_client(storage_app), create_client(storage_app, name="second")
    held = {
        registered.client_id: (registered, RelyingParty(storage_app.test_client(), registered))
        for registered in (first, second)
    }
    tokens = {client_id: rp.tokens_for(user) for client_id, (_, rp) in held.items()}
    _elsewhere(storage_app, second.client_id, disabled_at=utcnow())
    now[0] += cache.ttl - 0.5  # both still cached here
    browser = storage_app.test_client()

    def refreshed(registered: RegisteredClient) -> int:
        form = {"grant_type": "refresh_token",
                "refresh_token": tokens[registered.client_id]["refresh_token"]}  # fmt: skip
        auth = (registered.client_id, registered.client_secret or "")
        return browser.post("/token", data=form, auth=auth).status_code

    assert refreshed(second) == 400  # invalid_grant: disabled, though cached
    assert refreshed(first) == 200


def test_the_code_exchange_reads_the_disabling_of_its_own_client_among_several(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for an authorization code's spend (idp.services.spent_codes)."""
    cache: ClientCache = storage_app.extensions["idp"].client_cache
    now = [time.monotonic()]
    monkeypatch.setattr(cache, "monotonic", lambda: now[0])
    user = create_user(storage_app)
    first, second = create_client(storage_app), create_client(storage_app, name="second")
    parties = [RelyingParty(storage_app.test_client(), c) for c in (first, second)]
    for rp in parties:
        rp.tokens_for(user)  # each client cached, each browser signed in
    codes = [rp.obtain_code(user)["code"] for rp in parties]
    _elsewhere(storage_app, second.client_id, disabled_at=utcnow())
    now[0] += cache.ttl - 0.5  # both still cached here
    assert parties[1].exchange(codes[1]).status_code == 400  # invalid_grant
    assert parties[0].exchange(codes[0]).status_code == 200


def test_a_grant_type_removed_in_this_process_counts_at_once(storage_app: Flask) -> None:
    machine = _machine(storage_app)
    assert _status(storage_app, machine) == 200
    with storage_app.app_context():
        rt = storage_app.extensions["idp"]
        service = ClientService(db.session(), rt.client_secrets, issuer=rt.settings.issuer)
        client = service.get(machine.client_id)
        assert client is not None
        fields = dataclasses.replace(fields_of(client), grant_types=["authorization_code"])
        service.update(client, fields)
        db.session.commit()
    assert _status(storage_app, machine) == 400  # unauthorized_client (RFC 6749 5.2)


@pytest.mark.usefixtures("node_caches_held")
def test_a_rolled_back_change_keeps_the_cache_and_a_committed_one_empties_it(app: Flask) -> None:
    machine = _machine(app)
    cache: ClientCache = app.extensions["idp"].client_cache
    with app.app_context():
        first = cache.get(db.session(), machine.client_id)
        client = db.session.get(Client, machine.client_id)
        assert client is not None
        client.name = "renamed"
        db.session.flush()
        db.session.rollback()
        assert cache.get(db.session(), machine.client_id) is first
        db.session.execute(update(Client).where(Client.client_id == machine.client_id)
                           .values(name="renamed"))  # fmt: skip
        db.session.commit()
        again = cache.get(db.session(), machine.client_id)
    assert again is not first
    assert again is not None
    assert again.name == "renamed"


@pytest.mark.usefixtures("node_caches_held")
def test_the_cached_client_belongs_to_no_session_and_is_shared(app: Flask) -> None:
    machine = _machine(app)
    cache: ClientCache = app.extensions["idp"].client_cache
    with app.app_context():
        first = cache.get(db.session(), machine.client_id)
    with app.app_context():
        second = cache.get(db.session(), machine.client_id)
    assert first is second
    assert first is not None
    assert inspect(first).transient
    assert first.check_client_secret(machine.client_secret or "")


def test_a_zero_ttl_reads_the_client_every_time(app: Flask) -> None:
    machine = _machine(app)
    cache = ClientCache(0, app.extensions["idp"].client_secrets, SYSTEM_CLOCK)
    with app.app_context():
        first = cache.get(db.session(), machine.client_id)
        assert first is not cache.get(db.session(), machine.client_id)
        assert cache.get(db.session(), "no-such-client") is None


@pytest.mark.usefixtures("node_caches_held")
def test_a_client_restricted_to_groups_on_another_node_redeems_nothing_outside_them_at_once(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token side trusts a cached "not restricted to groups" for ``client_cache_ttl``, and
    then skips the membership check (idp.oidc.group_gate). That opens nothing: the restriction
    revokes, in its own transaction, every grant of a user outside the allowed groups, and the
    code's, the refresh token's and the bearer's lookups read the grant's revocation from the
    database in their one statement. So within the window a code issued before, a refresh
    token and an access token of a user outside the groups are refused at once."""
    from tests.functional.test_groups import _make_group, _restrict

    user = create_user(storage_app)
    web = create_client(storage_app)
    rp = RelyingParty(storage_app.test_client(), web)
    tokens = rp.tokens_for(user, scope="openid offline_access")
    code = rp.obtain_code(user)["code"]
    cache: ClientCache = storage_app.extensions["idp"].client_cache
    with storage_app.app_context():
        assert cache.get(db.session, web.client_id).restricted_to_groups is False  # cached
    _make_group(storage_app, "staff")
    # Committed as another node commits it: this process's caches are not told.
    monkeypatch.setattr("idp.services.client_cache.clients_changed", lambda: None)
    _restrict(storage_app, web.client_id, "staff")
    with storage_app.app_context():
        assert cache.get(db.session, web.client_id).restricted_to_groups is False  # still
    assert rp.exchange(code).get_json()["error"] == "invalid_grant"
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    auth = (web.client_id, web.client_secret or "")
    response = storage_app.test_client().post("/token", data=refresh, auth=auth)
    assert response.get_json()["error"] == "invalid_grant"
    assert rp.userinfo(tokens["access_token"]).status_code == 401


def _restricted_elsewhere_without_revoking(app: Flask, client_id: str, group: str) -> None:
    """The end state of an authorization that raced the restriction: the client restricted to
    ``group`` on another node, and grants it did not revoke (each opened by an authorization
    that read the registration before the restriction, and committed after its revocation)."""
    with app.app_context(), db.engine.begin() as connection:
        clients, allowed = Client.__table__, ClientAllowedGroup.__table__
        group_id = connection.scalar(select(Group.id).where(Group.name == group))
        connection.execute(
            update(clients)
            .where(clients.c.client_id == client_id)
            .values(restricted_to_groups=True)
        )
        connection.execute(insert(allowed).values(client_id=client_id, group_id=group_id))


@pytest.mark.usefixtures("node_caches_held")
def test_a_grant_that_raced_its_clients_restriction_issues_nothing_outside_the_groups(
    storage_app: Flask,
) -> None:
    """A grant the restriction could not revoke (opened as it committed) is refused on a node
    whose cached copy still says unrestricted: the code's and the refresh token's spends read the
    stored restriction in their one statement, the membership is checked, and the grant revoked
    (audited reason ``group_access_removed``); a member of the allowed group is served."""
    from tests.functional.test_groups import _make_group

    outsider = create_user(storage_app)
    member = create_user(storage_app, email="grace@example.com")
    web = create_client(storage_app)
    outside = RelyingParty(storage_app.test_client(), web)
    inside = RelyingParty(storage_app.test_client(), web)
    outsider_tokens = outside.tokens_for(outsider, scope="openid offline_access")
    member_tokens = inside.tokens_for(member, scope="openid offline_access")
    outsider_code = outside.obtain_code(outsider)["code"]
    member_code = inside.obtain_code(member)["code"]
    _make_group(storage_app, "staff", member.email)
    _restricted_elsewhere_without_revoking(storage_app, web.client_id, "staff")
    cache: ClientCache = storage_app.extensions["idp"].client_cache
    with storage_app.app_context():
        assert cache.get(db.session, web.client_id).restricted_to_groups is False  # stale copy

    auth = (web.client_id, web.client_secret or "")

    def refreshed(tokens: dict[str, str]) -> TestResponse:
        form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        return storage_app.test_client().post("/token", data=form, auth=auth)

    assert outside.exchange(outsider_code).get_json()["error"] == "invalid_grant"
    assert refreshed(outsider_tokens).get_json()["error"] == "invalid_grant"
    assert outside.userinfo(outsider_tokens["access_token"]).status_code == 401
    with storage_app.app_context():
        reasons = db.session.scalars(select(Grant.revoked_reason).where(
            Grant.user_id == outsider.id, Grant.client_id == web.client_id)).all()  # fmt: skip
        assert len(reasons) == 2  # the code's grant and the refresh token's
        assert set(reasons) == {"group_access_removed"}
    assert inside.exchange(member_code).status_code == 200
    assert refreshed(member_tokens).status_code == 200

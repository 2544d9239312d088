"""Groups through the real paths (docs/admins.md, "Groups"): the ``groups`` scope and claim in the
ID token and at userinfo, claim maps, per-app access (``access_denied`` with ``state`` and ``iss``
and no code, also with ``prompt=none``), and access that follows membership (grants revoked when a
user leaves a client's last allowed group or the client's allowed groups change). On SQLite and
PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select, update

from idp.extensions import db
from idp.models import AuditEvent, AuthorizationCode, Client, Grant
from idp.services.client_fields import ClientRegistrationError
from idp.services.group_access import group_claims
from idp.services.groups import ClaimMapEntry, GroupError, GroupInUseError, GroupService
from idp.web.background import drain_outbox
from tests.support.factories import CreatedUser, change, create_client, create_user, rows
from tests.support.flow import RelyingParty, jwt_parts, query_of, start_session
from tests.support.logout_receiver import logout_receiver, verify_logout_token

GROUP_SCOPES = ["openid", "profile", "email", "offline_access", "groups", "roles"]


def _groups(app: Flask, act: Callable[[GroupService], Any]) -> Any:
    with app.app_context():
        result = act(GroupService(db.session()))
        db.session.commit()
        return result


def _make_group(app: Flask, name: str, *emails: str) -> None:
    def act(service: GroupService) -> None:
        group = service.create(name)
        if emails:
            service.add_members(group, service.find_users(list(emails)))

    _groups(app, act)


def _remove(app: Flask, name: str, email: str) -> None:
    _groups(app, lambda s: s.remove_members(s.require(name), s.find_users([email])))


def _restrict(app: Flask, client_id: str, *names: str) -> None:
    _groups(app, lambda s: s.set_allowed_groups(db.session.get(Client, client_id), list(names)))


def _claim_maps(app: Flask, client_id: str, *entries: str) -> None:
    def act(service: GroupService) -> None:
        maps = [ClaimMapEntry(*e.replace("=", ":").split(":")) for e in entries]
        service.set_claim_maps(db.session.get(Client, client_id), maps)

    _groups(app, act)


@pytest.fixture
def member(storage_app: Flask) -> CreatedUser:
    return create_user(storage_app, email="member@example.com")


@pytest.fixture
def group_rp(storage_app: Flask) -> RelyingParty:
    registered = create_client(storage_app, scopes=GROUP_SCOPES)
    return RelyingParty(storage_app.test_client(), registered)


def _introspect(rp: RelyingParty, token: str) -> dict[str, Any]:
    raw = f"{rp.registered.client_id}:{rp.registered.client_secret}".encode()
    response = rp.browser.post(
        "/introspect",
        data={"token": token},
        headers={"Authorization": "Basic " + base64.b64encode(raw).decode()},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.get_json()
    return body


# -- the groups claim and claim maps ----------------------------------------------------------
def test_groups_claim_in_id_token_and_userinfo(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    _make_group(storage_app, "staff", member.email)
    _make_group(storage_app, "admins", member.email)
    _make_group(storage_app, "others")
    tokens = group_rp.tokens_for(member, scope="openid groups")
    _, id_claims = jwt_parts(tokens["id_token"])
    assert id_claims["groups"] == ["admins", "staff"]
    userinfo = group_rp.userinfo(tokens["access_token"])
    assert userinfo.status_code == 200
    assert userinfo.get_json()["groups"] == ["admins", "staff"]


def test_no_groups_claim_without_the_groups_scope(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    _make_group(storage_app, "staff", member.email)
    tokens = group_rp.tokens_for(member, scope="openid profile")
    _, id_claims = jwt_parts(tokens["id_token"])
    assert "groups" not in id_claims
    assert "groups" not in group_rp.userinfo(tokens["access_token"]).get_json()


def test_groups_scope_of_a_client_not_allowed_it_releases_nothing(
    storage_app: Flask, member: CreatedUser
) -> None:
    _make_group(storage_app, "staff", member.email)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    tokens = rp.tokens_for(member, scope="openid groups")
    assert tokens["scope"] == "openid"
    assert "groups" not in jwt_parts(tokens["id_token"])[1]


def test_claim_map_gives_members_of_both_groups_both_values_in_stable_order(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    _make_group(storage_app, "staff", member.email)
    _make_group(storage_app, "admins", member.email)
    _claim_maps(
        storage_app, group_rp.registered.client_id, "roles:staff=viewer", "roles:admins=admin"
    )
    # The claim's own scope releases the claim without the groups.
    tokens = group_rp.tokens_for(member, scope="openid roles")
    _, id_claims = jwt_parts(tokens["id_token"])
    assert id_claims["roles"] == ["admin", "viewer"]
    assert "groups" not in id_claims
    assert group_rp.userinfo(tokens["access_token"]).get_json()["roles"] == ["admin", "viewer"]
    # The groups scope releases it too, with the groups.
    tokens = group_rp.tokens_for(member, scope="openid groups")
    _, id_claims = jwt_parts(tokens["id_token"])
    assert id_claims["roles"] == ["admin", "viewer"]
    assert id_claims["groups"] == ["admins", "staff"]
    # Neither scope: nothing from groups.
    tokens = group_rp.tokens_for(member, scope="openid")
    assert "roles" not in jwt_parts(tokens["id_token"])[1]


def test_claim_maps_of_another_client_are_not_released(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    _make_group(storage_app, "admins", member.email)
    other = create_client(storage_app, name="Other", scopes=GROUP_SCOPES)
    _claim_maps(storage_app, other.client_id, "roles:admins=admin")
    tokens = group_rp.tokens_for(member, scope="openid groups roles")
    _, id_claims = jwt_parts(tokens["id_token"])
    assert id_claims["groups"] == ["admins"]
    assert "roles" not in id_claims


@pytest.mark.parametrize(
    "claim", ["sub", "iss", "aud", "email", "name", "groups", "auth_time", "client_id"]
)
def test_claim_map_naming_a_reserved_claim_is_refused_and_changes_nothing(
    storage_app: Flask, group_rp: RelyingParty, claim: str
) -> None:
    _make_group(storage_app, "admins")
    _claim_maps(storage_app, group_rp.registered.client_id, "roles:admins=admin")
    with pytest.raises(GroupError, match="registered JWT or OpenID Connect claim"):
        _claim_maps(storage_app, group_rp.registered.client_id, f"{claim}:admins=x")
    with storage_app.app_context():
        maps = GroupService(db.session()).claim_maps(group_rp.registered.client_id)
        assert [str(m) for m in maps] == ["roles:admins=admin"]


@pytest.mark.parametrize("name", ["phone", "events", "sub_jwk"])
def test_a_name_oidc_or_a_security_event_token_defines_is_no_mapped_claim_nor_its_scope(
    storage_app: Flask, group_rp: RelyingParty, name: str
) -> None:
    """``phone`` is the scope OIDC Core 5.4 defines for ``phone_number`` and
    ``phone_number_verified``: taken as a mapped claim's scope, a relying party asking for it got
    group values under ``phone`` instead, and the consent page told the user the app would "see
    your phone". ``sub_jwk`` is an ID token's claim (OIDC Core 7.4), ``events`` the claim that
    makes a JWT a logout token (Back-Channel Logout 1.0 2.4, RFC 8417 2.2). Neither a claim map
    nor a client's allowed scopes may take them."""
    _make_group(storage_app, "admins")
    with pytest.raises(GroupError, match="registered JWT or OpenID Connect claim"):
        _claim_maps(storage_app, group_rp.registered.client_id, f"{name}:admins=x")
    with pytest.raises(ClientRegistrationError, match="unknown scope"):
        create_client(storage_app, scopes=["openid", name])


def test_claim_map_naming_an_unknown_group_is_refused(
    storage_app: Flask, group_rp: RelyingParty
) -> None:
    with pytest.raises(GroupError, match="no group 'ghosts'"):
        _claim_maps(storage_app, group_rp.registered.client_id, "roles:ghosts=admin")


def test_claims_of_a_user_in_20_groups_with_3_maps_take_one_query(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    for n in range(20):
        _make_group(storage_app, f"team-{n:02}", member.email)
    _claim_maps(
        storage_app,
        group_rp.registered.client_id,
        "roles:team-00=admin",
        "roles:team-01=viewer",
        "level:team-02=gold",
    )
    statements: list[str] = []
    with storage_app.app_context():

        def count(*args: Any) -> None:
            statements.append(str(args[2]))

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            found = group_claims(db.session(), member.id, group_rp.registered.client_id)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
    assert len(statements) == 1, statements
    assert found.groups == [f"team-{n:02}" for n in range(20)]
    assert found.mapped == {"level": ["gold"], "roles": ["admin", "viewer"]}
    assert not found.in_allowed_group  # the client names no allowed group


# -- per-app access ---------------------------------------------------------------------------
def test_user_outside_allowed_groups_is_refused_with_state_and_iss_and_no_code(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    _make_group(storage_app, "staff")
    _restrict(storage_app, group_rp.registered.client_id, "staff")
    response = group_rp.sign_in(group_rp.sign_in_page(), member)
    while response.status_code == 302 and not response.headers["Location"].startswith(
        group_rp.registered.redirect_uri
    ):
        response = group_rp.browser.get(response.headers["Location"])
    # idp's page first: which app refused, and whom to ask.
    assert response.status_code == 403, response.text
    assert "Relying Party" in response.text
    assert "staff" in response.text
    assert "ask an administrator" in response.text
    link = response.text.split('id="return-to-client"')[0].rsplit('href="', 1)[1].split('"')[0]
    link = link.replace("&amp;", "&")
    assert link.startswith(group_rp.registered.redirect_uri)
    params = query_of(link)
    assert params["error"] == "access_denied"
    assert params["state"] == group_rp.state
    assert params["iss"] == "http://localhost"
    assert "code" not in params
    assert rows(storage_app, AuthorizationCode) == []
    assert rows(storage_app, Grant) == []
    refusals = rows(storage_app, AuditEvent, AuditEvent.kind == "authorization.access_denied")
    assert [(e.subject_id, e.client_id, e.outcome) for e in refusals] == [
        (member.id, group_rp.registered.client_id, "failure")
    ]


def test_prompt_none_outside_allowed_groups_answers_access_denied_without_a_page(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    _make_group(storage_app, "staff")
    _restrict(storage_app, group_rp.registered.client_id, "staff")
    start_session(group_rp.browser, member)
    response = group_rp.authorize(prompt="none")
    assert response.status_code == 302
    assert response.headers["Location"].startswith(group_rp.registered.redirect_uri)
    params = query_of(response.headers["Location"])
    assert params["error"] == "access_denied"
    assert params["state"] == group_rp.state
    assert params["iss"] == "http://localhost"
    assert "code" not in params
    refusals = rows(storage_app, AuditEvent, AuditEvent.kind == "authorization.access_denied")
    assert len(refusals) == 1
    assert refusals[0].details["prompt_none"] is True


def test_member_of_an_allowed_group_signs_in(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    _make_group(storage_app, "staff")
    _make_group(storage_app, "admins", member.email)
    _restrict(storage_app, group_rp.registered.client_id, "staff", "admins")
    tokens = group_rp.tokens_for(member)
    assert group_rp.userinfo(tokens["access_token"]).status_code == 200


# -- access follows membership ----------------------------------------------------------------
def test_leaving_the_last_allowed_group_revokes_refresh_and_access_tokens(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    _make_group(storage_app, "staff", member.email)
    _make_group(storage_app, "admins", member.email)
    _restrict(storage_app, group_rp.registered.client_id, "staff", "admins")
    tokens = group_rp.tokens_for(member)
    # Still in admins: leaving staff changes nothing.
    _remove(storage_app, "staff", member.email)
    refreshed = group_rp.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    tokens = refreshed.get_json()
    # Leaving the last allowed group: refresh, userinfo and introspection all refuse.
    _remove(storage_app, "admins", member.email)
    assert _introspect(group_rp, tokens["access_token"]) == {"active": False}
    assert _introspect(group_rp, tokens["refresh_token"]) == {"active": False}
    assert group_rp.userinfo(tokens["access_token"]).status_code == 401
    refused = group_rp.refresh(tokens["refresh_token"])
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_grant"
    removed = rows(storage_app, AuditEvent, AuditEvent.kind == "group.member_removed")
    # In the order written (the autoincrement id: rows() asks for no order, and PostgreSQL may
    # return them in any).
    assert [e.details["revoked_grants"] for e in sorted(removed, key=lambda e: e.id)] == [0, 1]


def test_losing_access_tells_the_client_for_each_session_it_received_tokens_in(
    storage_app: Flask, member: CreatedUser
) -> None:
    """Access follows membership to the relying party too: the user's grants end when they leave
    the client's last allowed group, but the client's own session of them, resting on an ID token
    of that ``sid``, lived on at the relying party. The client is told (Back-Channel Logout 1.0
    2.7), once per session it received tokens in; an unrestricted client of the same session is
    not, and leaving a group that still leaves access tells no one."""
    with logout_receiver() as receiver:
        registered = create_client(storage_app, scopes=GROUP_SCOPES,
                                   backchannel_logout_uri=receiver.url("/restricted"))  # fmt: skip
        other = create_client(storage_app, backchannel_logout_uri=receiver.url("/other"))
        _make_group(storage_app, "staff", member.email)
        _make_group(storage_app, "admins", member.email)
        _restrict(storage_app, registered.client_id, "staff", "admins")
        browser = storage_app.test_client()
        tokens = RelyingParty(browser, registered).tokens_for(member)
        RelyingParty(browser, other).tokens_for(member)
        _remove(storage_app, "staff", member.email)  # still in admins
        _remove(storage_app, "admins", member.email)
        drain_outbox(storage_app)
        [token] = receiver.tokens("/restricted")
        assert receiver.tokens("/other") == []
    jwks = storage_app.test_client().get("/jwks").get_json()
    claims = verify_logout_token(token, jwks, issuer="http://localhost",
                                 client_id=registered.client_id, alg="RS256")  # fmt: skip
    assert (claims["sid"], claims["sub"]) == (jwt_parts(tokens["id_token"])[1]["sid"], member.id)


def test_leaving_a_group_keeps_grants_to_unrestricted_clients(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    _make_group(storage_app, "staff", member.email)
    tokens = group_rp.tokens_for(member)
    _remove(storage_app, "staff", member.email)
    assert group_rp.userinfo(tokens["access_token"]).status_code == 200
    assert group_rp.refresh(tokens["refresh_token"]).status_code == 200


def test_changing_a_clients_allowed_groups_revokes_the_grants_of_users_left_out(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    _make_group(storage_app, "staff", member.email)
    _make_group(storage_app, "admins")
    other = create_user(storage_app, email="admin@example.com")
    _groups(storage_app, lambda s: s.add_members(s.require("admins"), s.find_users([other.email])))
    member_tokens = group_rp.tokens_for(member)
    other_rp = RelyingParty(storage_app.test_client(), group_rp.registered)
    other_tokens = other_rp.tokens_for(other)
    _restrict(storage_app, group_rp.registered.client_id, "admins")
    assert group_rp.userinfo(member_tokens["access_token"]).status_code == 401
    assert group_rp.refresh(member_tokens["refresh_token"]).get_json()["error"] == "invalid_grant"
    assert other_rp.userinfo(other_tokens["access_token"]).status_code == 200
    changed = rows(storage_app, AuditEvent, AuditEvent.kind == "client.access_changed")
    assert changed[-1].details["revoked_grants"] == 1


def test_a_code_issued_before_the_user_left_is_refused_at_the_token_endpoint(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    _make_group(storage_app, "staff", member.email)
    _restrict(storage_app, group_rp.registered.client_id, "staff")
    callback = group_rp.obtain_code(member)
    _remove(storage_app, "staff", member.email)
    # As if the code's grant had been committed just after the removal revoked the user's
    # grants (the two transactions interleaved): the token endpoint still checks membership.
    change(storage_app, update(Grant).values(revoked_at=None, revoked_reason=None))
    refused = group_rp.exchange(callback["code"])
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_grant"
    assert [g.revoked_reason for g in rows(storage_app, Grant)] == ["group_access_removed"]


def test_a_refresh_token_of_a_grant_the_revocation_missed_is_refused(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    _make_group(storage_app, "staff", member.email)
    _restrict(storage_app, group_rp.registered.client_id, "staff")
    tokens = group_rp.tokens_for(member)
    _remove(storage_app, "staff", member.email)
    change(storage_app, update(Grant).values(revoked_at=None, revoked_reason=None))
    refused = group_rp.refresh(tokens["refresh_token"])
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_grant"


# -- bad input changes nothing ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["Staff", "has space", "-leading", "", "x" * 65, "ünï", "a/b"])
def test_malformed_group_names_are_refused(storage_app: Flask, name: str) -> None:
    with pytest.raises(GroupError, match="invalid group name"):
        _groups(storage_app, lambda s: s.create(name))
    assert _groups(storage_app, lambda s: s.list_with_counts()) == []


def test_duplicate_group_names_are_refused_on_create_and_rename(storage_app: Flask) -> None:
    _make_group(storage_app, "staff")
    _make_group(storage_app, "admins")
    with pytest.raises(GroupError, match="already exists"):
        _make_group(storage_app, "staff")
    with pytest.raises(GroupError, match="already exists"):
        _groups(storage_app, lambda s: s.rename(s.require("admins"), "staff"))
    names = _groups(storage_app, lambda s: [g.name for g, _ in s.list_with_counts()])
    assert names == ["admins", "staff"]


def test_unknown_users_in_add_change_nothing(storage_app: Flask, member: CreatedUser) -> None:
    _make_group(storage_app, "staff")
    with pytest.raises(GroupError, match=r"no user ghost@example\.com"):
        _make_group_members(storage_app, "staff", member.email, "ghost@example.com")
    assert _groups(storage_app, lambda s: [n for _, n in s.list_with_counts()]) == [0]


def _make_group_members(app: Flask, name: str, *emails: str) -> None:
    _groups(app, lambda s: s.add_members(s.require(name), s.find_users(list(emails))))


def test_deleting_a_clients_only_allowed_group_is_refused_then_confirmed_admits_no_one(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser
) -> None:
    _make_group(storage_app, "staff", member.email)
    _restrict(storage_app, group_rp.registered.client_id, "staff")
    tokens = group_rp.tokens_for(member)
    with pytest.raises(GroupInUseError, match="Relying Party"):
        _groups(storage_app, lambda s: s.delete(s.require("staff")))
    assert group_rp.userinfo(tokens["access_token"]).status_code == 200
    _groups(storage_app, lambda s: s.delete(s.require("staff"), confirmed=True))
    assert group_rp.userinfo(tokens["access_token"]).status_code == 401
    # The client is still restricted, to no group: no one, never everyone.
    other = create_user(storage_app, email="other@example.com")
    browser = RelyingParty(storage_app.test_client(), group_rp.registered)
    start_session(browser.browser, other)
    refused = browser.authorize(prompt="none")
    assert query_of(refused.headers["Location"])["error"] == "access_denied"


@pytest.fixture
def sql_statements(storage_app: Flask) -> Iterator[list[str]]:
    seen: list[str] = []
    with storage_app.app_context():
        engine = db.engine

    def count(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


def test_unrestricted_sign_in_without_group_scopes_reads_no_group_table(
    storage_app: Flask, member: CreatedUser, sql_statements: list[str]
) -> None:
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    sql_statements.clear()
    rp.tokens_for(member, scope="openid profile")
    assert not [s for s in sql_statements if any(t in s for t in GROUP_TABLES)], "needless queries"


GROUP_TABLES = (
    "FROM groups",
    "JOIN groups",
    "group_members",
    "claim_maps",
    "client_allowed_groups",
)


def test_a_restricted_sign_in_with_groups_reads_groups_once_per_endpoint(
    storage_app: Flask, group_rp: RelyingParty, member: CreatedUser, sql_statements: list[str]
) -> None:
    """Per-app access and the claims cost one statement at /authorize and one at the token
    endpoint, where the access check and the ID token's claims share it (docs/performance.md,
    "Groups and claim maps")."""
    for n in range(20):
        _make_group(storage_app, f"team-{n:02}", member.email)
    _restrict(storage_app, group_rp.registered.client_id, "team-19")
    _claim_maps(storage_app, group_rp.registered.client_id, "roles:team-00=admin")
    sql_statements.clear()
    tokens = group_rp.tokens_for(member, scope="openid groups")
    read = [s for s in sql_statements if any(t in s for t in GROUP_TABLES)]
    assert len(read) == 2, read
    _, claims = jwt_parts(tokens["id_token"])
    assert claims["groups"] == [f"team-{n:02}" for n in range(20)]
    assert claims["roles"] == ["admin"]


def test_group_membership_rows_go_with_the_user(storage_app: Flask, member: CreatedUser) -> None:
    _make_group(storage_app, "staff", member.email)
    with storage_app.app_context():
        from idp.models import GroupMember, User

        db.session.delete(db.session.get(User, member.id))
        db.session.commit()
        assert db.session.scalars(select(GroupMember)).all() == []

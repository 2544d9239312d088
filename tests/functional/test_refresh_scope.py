"""A refresh grant's scope (RFC 6749 6 and 3.3, OIDC Core 11): the access token may narrow it,
the successor refresh token keeps it, a refused request spends nothing, and what an admin takes
from a client is gone from every token a refresh, or a code's exchange, issues afterwards."""

from __future__ import annotations

from typing import Any

from flask import Flask

from idp.models import ApiToken, RefreshToken
from tests.functional.test_api import Api, issue
from tests.functional.test_groups import GROUP_SCOPES, _make_group
from tests.functional.test_logout import introspect
from tests.support.factories import CreatedUser, create_client, create_user, rows
from tests.support.flow import RelyingParty, jwt_parts


def error_of(response: Any) -> str:
    return str(response.get_json()["error"])


def allow_only(app: Flask, client_id: str, scopes: list[str]) -> None:
    """An admin changes the client's allowed scopes through the admin API."""
    _change_client(app, client_id, {"scopes": scopes})


def allow_grants(app: Flask, client_id: str, grant_types: list[str]) -> None:
    """An admin changes the client's grant types through the admin API."""
    _change_client(app, client_id, {"grant_types": grant_types})


def _change_client(app: Flask, client_id: str, fields: dict[str, list[str]]) -> None:
    api = Api(app, issue(app, name=f"clients-{len(rows(app, ApiToken))}"))
    etag = api.call("GET", f"/clients/{client_id}").headers["ETag"]
    changed = api.call("PATCH", f"/clients/{client_id}", fields, headers={"If-Match": etag})
    assert changed.status_code == 200, changed.text


def live_refresh_tokens(app: Flask) -> list[RefreshToken]:
    return [row for row in rows(app, RefreshToken) if row.consumed_at is None]


def test_a_narrowed_access_token_leaves_the_refresh_token_its_scope(storage_app: Flask) -> None:
    """RFC 6749 6: "the refresh token scope MUST be identical to that of the refresh token
    included by the client in the request": asking for less narrows the access token only."""
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    tokens = rp.tokens_for(create_user(storage_app), scope="openid profile email offline_access")
    narrowed = rp.refresh(tokens["refresh_token"], scope="openid profile")
    assert narrowed.status_code == 200, narrowed.text
    body = narrowed.get_json()
    assert body["scope"] == "openid profile"
    assert jwt_parts(body["access_token"])[1]["scope"] == "openid profile"
    # Without offline_access in the request, the successor is issued all the same...
    assert "refresh_token" in body
    # ...and it keeps the grant's whole scope.
    widened = rp.refresh(body["refresh_token"], scope="openid profile email offline_access")
    assert widened.status_code == 200, widened.text
    assert widened.get_json()["scope"] == "openid profile email offline_access"


def test_a_refused_scope_spends_neither_the_token_nor_the_grant(storage_app: Flask) -> None:
    """A request for a scope the grant lacks is ``invalid_scope`` and issues nothing, so it
    leaves the token as it was: the client's next, correct, request is no replay."""
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    tokens = rp.tokens_for(create_user(storage_app), scope="openid offline_access")
    refused = rp.refresh(tokens["refresh_token"], scope="openid email offline_access")
    assert error_of(refused) == "invalid_scope"
    assert len(live_refresh_tokens(storage_app)) == 1
    again = rp.refresh(tokens["refresh_token"])
    assert again.status_code == 200, again.text
    assert rp.userinfo(tokens["access_token"]).status_code == 200  # the grant stands


def test_a_scope_taken_from_the_client_is_not_refreshed(app: Flask) -> None:
    """RFC 6749 3.3: once an admin takes ``groups`` from a client, a refresh issues tokens
    without it (the answer names the narrower scope), and userinfo releases no groups."""
    member = create_user(app, email="member@example.com")
    _make_group(app, "staff", member.email)
    rp = RelyingParty(app.test_client(), create_client(app, scopes=GROUP_SCOPES))
    tokens = rp.tokens_for(member, scope="openid groups offline_access")
    assert jwt_parts(tokens["id_token"])[1]["groups"] == ["staff"]
    allow_only(app, rp.registered.client_id, ["openid", "profile", "email", "offline_access"])

    refreshed = rp.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.get_json()
    assert body["scope"] == "openid offline_access"
    assert "groups" not in rp.userinfo(body["access_token"]).get_json()
    [successor] = live_refresh_tokens(app)
    assert successor.scope == "openid offline_access"


def test_a_refresh_for_scopes_all_taken_from_the_client_is_invalid_scope(app: Flask) -> None:
    """RFC 6749 3.3: a scope is one or more scope tokens, and RFC 6749 5.1 requires the answer
    to name the issued scope when it differs from the requested one. A refresh asking only for
    scopes an admin has since taken from the client would be granted none, which no "scope"
    value can name ("" was answered): it is ``invalid_scope`` (RFC 6749 5.2), as the
    authorization endpoint answers when no requested scope is left, and spends nothing."""
    member = create_user(app, email="member@example.com")
    rp = RelyingParty(app.test_client(), create_client(app, scopes=GROUP_SCOPES))
    tokens = rp.tokens_for(member, scope="openid groups offline_access")
    allow_only(app, rp.registered.client_id, ["openid", "profile", "email", "offline_access"])

    assert error_of(rp.refresh(tokens["refresh_token"], scope="groups")) == "invalid_scope"
    assert len(live_refresh_tokens(app)) == 1
    again = rp.refresh(tokens["refresh_token"])
    assert again.status_code == 200, again.text
    assert again.get_json()["scope"] == "openid offline_access"


def test_offline_access_taken_from_the_client_ends_its_refresh_tokens(
    app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    """OIDC Core 11: refresh tokens are the client's offline access. Without that scope any
    longer, a refresh issues nothing (``invalid_grant``) and spends nothing: given back, the
    same token refreshes again."""
    tokens = rp.tokens_for(user, scope="openid offline_access")
    client_id = rp.registered.client_id
    allow_only(app, client_id, ["openid", "profile", "email"])
    assert error_of(rp.refresh(tokens["refresh_token"])) == "invalid_grant"
    assert len(live_refresh_tokens(app)) == 1
    # RFC 7662 2.2: "active" says whether the token can be used; it cannot, so it is not.
    assert introspect(rp, tokens["refresh_token"]) == {"active": False}
    allow_only(app, client_id, ["openid", "profile", "email", "offline_access"])
    assert introspect(rp, tokens["refresh_token"])["active"] is True
    assert rp.refresh(tokens["refresh_token"]).status_code == 200


def test_a_scope_taken_from_the_client_while_a_request_waits_is_not_granted(app: Flask) -> None:
    """RFC 6749 3.3: a request waiting for sign-in kept the scopes allowed when it arrived, so the
    code of a sign-in after an admin took ``groups`` from the client still carried it, and its
    ID token named the user's groups. The stored request is narrowed to the registration as it
    stands when it is answered (the token response names the narrower scope)."""
    member = create_user(app, email="member@example.com")
    _make_group(app, "staff", member.email)
    rp = RelyingParty(app.test_client(), create_client(app, scopes=GROUP_SCOPES))
    address = rp.sign_in_page(scope="openid groups offline_access")
    allow_only(app, rp.registered.client_id, ["openid", "profile", "email", "offline_access"])
    callback = rp.follow_to_callback(rp.sign_in(address, member))
    response = rp.exchange(callback["code"])
    assert response.status_code == 200, response.text
    tokens = response.get_json()
    assert tokens["scope"] == "openid offline_access"
    assert "groups" not in jwt_parts(tokens["id_token"])[1]


def test_a_scope_taken_from_the_client_before_its_code_is_exchanged_is_not_granted(
    storage_app: Flask,
) -> None:
    """RFC 6749 3.3: a code issued while the client was allowed ``profile`` and ``groups`` and
    exchanged after an admin took them away yields tokens without them (the answer names the
    narrower scope): no claim of theirs in the ID token or at userinfo, and a refresh token
    whose grant lacks them, so that giving them back to the client brings none back to it."""
    app = storage_app
    member = create_user(app, email="member@example.com")
    _make_group(app, "staff", member.email)
    rp = RelyingParty(app.test_client(), create_client(app, scopes=GROUP_SCOPES))
    callback = rp.obtain_code(member, scope="openid profile groups offline_access")
    allow_only(app, rp.registered.client_id, ["openid", "email", "offline_access"])

    response = rp.exchange(callback["code"])
    assert response.status_code == 200, response.text
    tokens = response.get_json()
    assert tokens["scope"] == "openid offline_access"
    assert jwt_parts(tokens["access_token"])[1]["scope"] == "openid offline_access"
    id_token = jwt_parts(tokens["id_token"])[1]
    assert not {"groups", "name"} & id_token.keys()
    userinfo = rp.userinfo(tokens["access_token"]).get_json()
    assert not {"groups", "name"} & userinfo.keys()
    [refresh_token] = live_refresh_tokens(app)
    assert refresh_token.scope == "openid offline_access"

    allow_only(app, rp.registered.client_id, GROUP_SCOPES)
    refreshed = rp.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.get_json()["scope"] == "openid offline_access"


def test_a_code_exchanged_after_the_client_lost_the_refresh_grant_names_no_offline_access(
    app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    """OIDC Core 11: ``offline_access`` only for a client that may hold refresh tokens. A code
    issued with it and exchanged after an admin took the ``refresh_token`` grant from the client
    gets no refresh token, and its answer does not name a scope it was not given (RFC 6749 3.3,
    5.1): the same rule as at the authorization endpoint (the client's ``get_allowed_scope``)."""
    callback = rp.obtain_code(user, scope="openid offline_access")
    allow_grants(app, rp.registered.client_id, ["authorization_code"])

    tokens = rp.exchange(callback["code"]).get_json()
    assert tokens["scope"] == "openid", tokens
    assert "refresh_token" not in tokens
    assert jwt_parts(tokens["access_token"])[1]["scope"] == "openid"


def test_a_refresh_token_of_a_client_no_longer_allowed_the_grant_is_inactive(
    app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    """RFC 7662 2.2: ``active`` says whether the token can be used. Once an admin takes the
    ``refresh_token`` grant from the client, its refresh tokens are refused at the token endpoint
    (RFC 6749 5.2 ``unauthorized_client``), so introspection must not call them active; given the
    grant back, the same token is active and refreshes again."""
    tokens = rp.tokens_for(user, scope="openid offline_access")
    client_id = rp.registered.client_id
    allow_grants(app, client_id, ["authorization_code"])
    assert error_of(rp.refresh(tokens["refresh_token"])) == "unauthorized_client"
    assert introspect(rp, tokens["refresh_token"]) == {"active": False}
    allow_grants(app, client_id, ["authorization_code", "refresh_token"])
    assert introspect(rp, tokens["refresh_token"])["active"] is True
    assert rp.refresh(tokens["refresh_token"]).status_code == 200

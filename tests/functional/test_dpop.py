"""DPoP (RFC 9449) through the token endpoint, UserInfo, introspection and discovery: what a
client that proves a key gets, and what a thief without the key cannot do with it."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from idp.models import RefreshToken
from idp.services.device import DEVICE_CODE_GRANT_TYPE
from tests.functional.test_device_flow import answer, device_for
from tests.functional.test_logout import introspect
from tests.support.dpop import USERINFO_URL, DPoPKey
from tests.support.factories import CreatedUser, create_client, create_user, rows
from tests.support.flow import RelyingParty, jwt_parts, sign_in_address, start_session


def public_rp(app: Flask) -> RelyingParty:
    return RelyingParty(app.test_client(), create_client(app, public=True, name="SPA"))


def dpop_tokens(rp: RelyingParty, user: CreatedUser, key: DPoPKey) -> dict[str, Any]:
    code = rp.obtain_code(user)["code"]
    response = rp.token(
        {"grant_type": "authorization_code", "code": code,
         "redirect_uri": rp.registered.redirect_uri, "code_verifier": rp.verifier},
        dpop=key.proof(),
    )  # fmt: skip
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.get_json()
    return tokens


def dpop_userinfo(browser: FlaskClient, token: str, proof: str) -> Any:
    return browser.get("/userinfo", headers={"Authorization": f"DPoP {token}", "DPoP": proof})


def test_a_code_exchanged_with_a_proof_issues_a_token_bound_to_its_key(app: Flask) -> None:
    """RFC 9449 5 and 6.1: ``token_type`` DPoP, the access token's ``cnf.jkt`` the thumbprint."""
    key = DPoPKey()
    tokens = dpop_tokens(public_rp(app), create_user(app), key)
    assert tokens["token_type"] == "DPoP"
    assert jwt_parts(tokens["access_token"])[1]["cnf"] == {"jkt": key.jkt}


def test_a_token_request_without_a_proof_stays_bearer(rp: RelyingParty, user: CreatedUser) -> None:
    tokens = rp.tokens_for(user)
    assert tokens["token_type"] == "Bearer"
    assert "cnf" not in jwt_parts(tokens["access_token"])[1]


def test_a_bad_proof_is_invalid_dpop_proof_and_spends_no_code(app: Flask) -> None:
    """RFC 9449 5: ``invalid_dpop_proof``, 400; refused before the grant ran, so the code
    (RFC 6749 4.1.2: used once) is still the client's."""
    rp, user, key = public_rp(app), create_user(app), DPoPKey()
    code = rp.obtain_code(user)["code"]
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": rp.registered.redirect_uri, "code_verifier": rp.verifier}  # fmt: skip
    refused = rp.token(data, dpop=key.proof(url="http://localhost/elsewhere"))
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_dpop_proof"
    assert refused.headers["Cache-Control"] == "no-store"
    assert rp.token(data, dpop=key.proof()).status_code == 200


def test_a_replayed_proof_is_refused_at_the_token_endpoint(app: Flask) -> None:
    """RFC 9449 11.1: a proof's ``jti`` is accepted once."""
    rp, key = public_rp(app), DPoPKey()
    tokens = dpop_tokens(rp, create_user(app), key)
    proof = key.proof()
    first = rp.refresh(tokens["refresh_token"], dpop=proof)
    assert first.status_code == 200, first.text
    again = rp.refresh(first.get_json()["refresh_token"], dpop=proof)
    assert again.status_code == 400
    assert again.get_json()["error"] == "invalid_dpop_proof"
    assert "used before" in again.get_json()["error_description"]


def test_a_public_clients_refresh_token_needs_its_key(storage_app: Flask) -> None:
    """RFC 9449 5: a public client's refresh token is bound to the key; a refresh with another
    key or none is ``invalid_grant`` and spends nothing, so the key's holder refreshes after."""
    rp, key = public_rp(storage_app), DPoPKey()
    tokens = dpop_tokens(rp, create_user(storage_app), key)
    refresh_token = tokens["refresh_token"]
    assert [row.jkt for row in rows(storage_app, RefreshToken)] == [key.jkt]
    thief = DPoPKey()
    assert rp.refresh(refresh_token, dpop=thief.proof()).get_json()["error"] == "invalid_grant"
    assert rp.refresh(refresh_token).get_json()["error"] == "invalid_grant"
    assert [row.consumed_at for row in rows(storage_app, RefreshToken)] == [None]
    rotated = rp.refresh(refresh_token, dpop=key.proof())
    assert rotated.status_code == 200, rotated.text
    body = rotated.get_json()
    assert body["token_type"] == "DPoP"
    assert jwt_parts(body["access_token"])[1]["cnf"] == {"jkt": key.jkt}
    # The successor is bound to the same key.
    assert rp.refresh(body["refresh_token"]).get_json()["error"] == "invalid_grant"
    assert rp.refresh(body["refresh_token"], dpop=key.proof()).status_code == 200


def test_a_confidential_clients_refresh_token_is_not_bound(app: Flask) -> None:
    """RFC 9449 5: binding a confidential client's refresh token is "not required": its
    authentication proves the token is its own; a refresh without a proof gets a bearer token."""
    rp, key = RelyingParty(app.test_client(), create_client(app)), DPoPKey()
    tokens = dpop_tokens(rp, create_user(app), key)
    assert tokens["token_type"] == "DPoP"
    assert [row.jkt for row in rows(app, RefreshToken)] == [None]
    plain = rp.refresh(tokens["refresh_token"])
    assert plain.status_code == 200, plain.text
    assert plain.get_json()["token_type"] == "Bearer"


def test_a_client_that_requires_dpop_is_refused_a_request_without_a_proof(app: Flask) -> None:
    """RFC 9449 5.2 ``dpop_bound_access_tokens``: a token request without a proof is refused
    before the grant runs (the code stays unspent), so none of the client's tokens is a bearer
    token; with a proof it is served. Another client is not concerned."""
    registered = create_client(app, dpop_bound_access_tokens=True)
    rp, key = RelyingParty(app.test_client(), registered), DPoPKey()
    code = rp.obtain_code(create_user(app))["code"]
    refused = rp.exchange(code)
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_dpop_proof"
    no_proof = rp.token({"grant_type": "client_credentials"})
    assert no_proof.get_json()["error"] == "invalid_dpop_proof"
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": rp.registered.redirect_uri, "code_verifier": rp.verifier}  # fmt: skip
    served = rp.token(data, dpop=key.proof())
    assert served.status_code == 200, served.text
    assert served.get_json()["token_type"] == "DPoP"
    refreshed = rp.refresh(served.get_json()["refresh_token"])
    assert refreshed.get_json()["error"] == "invalid_dpop_proof"
    other = RelyingParty(app.test_client(), create_client(app))
    assert other.token({"grant_type": "client_credentials"}).status_code == 200


def test_a_code_asked_for_with_dpop_jkt_is_exchanged_only_with_that_key(
    storage_app: Flask,
) -> None:
    """RFC 9449 10: ``dpop_jkt`` at the authorization endpoint binds the code to the key; an
    exchange with another key or none is ``invalid_grant`` and spends nothing (the condition is
    in the spend's one UPDATE), so whoever intercepted the code can neither use nor burn it."""
    rp, key = public_rp(storage_app), DPoPKey()
    code = rp.obtain_code(create_user(storage_app), dpop_jkt=key.jkt)["code"]
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": rp.registered.redirect_uri, "code_verifier": rp.verifier}  # fmt: skip
    assert rp.token(data, dpop=DPoPKey().proof()).get_json()["error"] == "invalid_grant"
    assert rp.token(data).get_json()["error"] == "invalid_grant"
    exchanged = rp.token(data, dpop=key.proof())
    assert exchanged.status_code == 200, exchanged.text
    assert jwt_parts(exchanged.get_json()["access_token"])[1]["cnf"] == {"jkt": key.jkt}
    # Spent once all the same: a replay with the right key is a replay (RFC 6749 4.1.2).
    assert rp.token(data, dpop=key.proof()).get_json()["error"] == "invalid_grant"


def test_a_push_with_a_proof_binds_the_code_to_its_key(app: Flask) -> None:
    """RFC 9449 10.1: a DPoP proof at the PAR endpoint binds the pushed request's code as
    ``dpop_jkt`` would; a ``dpop_jkt`` of another key beside it is refused."""
    rp, key = public_rp(app), DPoPKey()
    push_url = "http://localhost/par"
    pushed = rp.browser.post("/par", data=rp.authorize_params(), headers={
        "DPoP": key.proof(url=push_url)})  # fmt: skip
    assert pushed.status_code == 201, pushed.text
    query = {"client_id": rp.registered.client_id, "request_uri": pushed.get_json()["request_uri"]}
    response = rp.browser.get("/authorize", query_string=query)
    address = sign_in_address(response)
    assert address is not None
    code = rp.follow_to_callback(rp.sign_in(address, create_user(app)))["code"]
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": rp.registered.redirect_uri, "code_verifier": rp.verifier}  # fmt: skip
    assert rp.token(data, dpop=DPoPKey().proof()).get_json()["error"] == "invalid_grant"
    assert rp.token(data, dpop=key.proof()).status_code == 200

    contradicted = rp.browser.post("/par", data=rp.authorize_params(dpop_jkt=DPoPKey().jkt),
                                   headers={"DPoP": key.proof(url=push_url)})  # fmt: skip
    assert contradicted.status_code == 400
    assert contradicted.get_json()["error"] == "invalid_request"
    refused = rp.browser.post("/par", data=rp.authorize_params(), headers={
        "DPoP": key.proof(url="http://localhost/token")})  # fmt: skip
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_dpop_proof"


def test_a_malformed_dpop_jkt_is_invalid_request(app: Flask) -> None:
    """RFC 9449 10: a thumbprint is 43 base64url characters; anything else could match no key."""
    rp = public_rp(app)
    response = rp.authorize(dpop_jkt="not-a-thumbprint")
    assert response.status_code in (302, 303), response.text
    location = response.headers["Location"]
    assert location.startswith(rp.registered.redirect_uri)
    assert "error=invalid_request" in location


def test_client_credentials_with_a_proof_are_bound(rp: RelyingParty) -> None:
    key = DPoPKey()
    response = rp.token({"grant_type": "client_credentials"}, dpop=key.proof())
    assert response.status_code == 200, response.text
    assert response.get_json()["token_type"] == "DPoP"
    assert jwt_parts(response.get_json()["access_token"])[1]["cnf"] == {"jkt": key.jkt}


def test_userinfo_takes_a_dpop_token_with_its_proof(app: Flask) -> None:
    """RFC 9449 7.1: ``Authorization: DPoP`` and a proof for this request with ``ath``."""
    rp, key = public_rp(app), DPoPKey()
    token = dpop_tokens(rp, create_user(app), key)["access_token"]
    answer = dpop_userinfo(rp.browser, token, key.proof("GET", USERINFO_URL, access_token=token))
    assert answer.status_code == 200, answer.text
    assert answer.get_json()["sub"]
    posted = rp.browser.post("/userinfo", headers={
        "Authorization": f"DPoP {token}",
        "DPoP": key.proof("POST", USERINFO_URL, access_token=token)})  # fmt: skip
    assert posted.status_code == 200, posted.text


def test_a_bound_token_presented_as_bearer_is_refused(app: Flask) -> None:
    """RFC 9449 7.1: whoever has the token without the key gets nothing, and the challenge says
    DPoP with the algorithms idp takes."""
    rp, key = public_rp(app), DPoPKey()
    token = dpop_tokens(rp, create_user(app), key)["access_token"]
    refused = rp.userinfo(token)
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "invalid_token"
    challenge = refused.headers["WWW-Authenticate"]
    assert challenge.startswith('DPoP algs="ES256 RS256 PS256 EdDSA", error="invalid_token"')
    assert refused.headers["Access-Control-Expose-Headers"] == "WWW-Authenticate"


def test_userinfo_challenges_offer_dpop_beside_bearer(rp: RelyingParty, user: CreatedUser) -> None:
    """RFC 9449 7.2 (RFC 9110 11.6.1, RFC 6750 3): UserInfo takes both schemes, so its Bearer
    challenges are followed by a DPoP one naming the algorithms (7.1), which tells a client it may
    use DPoP: with no credentials neither carries an error (Figure 17); a bad bearer token's error
    is the Bearer challenge's alone (Figure 18)."""
    missing = rp.browser.get("/userinfo")
    assert missing.status_code == 401
    algs = 'DPoP algs="ES256 RS256 PS256 EdDSA"'
    assert missing.headers["WWW-Authenticate"] == f'Bearer realm="idp", {algs}'
    wrong = rp.userinfo("not-a-token")
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == (
        'Bearer realm="idp", error="invalid_token", '
        f'error_description="The access token is invalid or expired.", {algs}'
    )
    assert wrong.headers["Access-Control-Expose-Headers"] == "WWW-Authenticate"
    token = rp.tokens_for(user)["access_token"]
    assert rp.userinfo(token).status_code == 200


def test_userinfo_refuses_a_proof_of_another_key(app: Flask) -> None:
    rp, key = public_rp(app), DPoPKey()
    token = dpop_tokens(rp, create_user(app), key)["access_token"]
    thief = DPoPKey()
    refused = dpop_userinfo(rp.browser, token, thief.proof("GET", USERINFO_URL, access_token=token))
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "invalid_token"


def test_userinfo_refuses_a_proof_for_another_token(app: Flask) -> None:
    rp, key = public_rp(app), DPoPKey()
    token = dpop_tokens(rp, create_user(app), key)["access_token"]
    proof = key.proof("GET", USERINFO_URL, access_token=token + "x")
    refused = dpop_userinfo(rp.browser, token, proof)
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "invalid_dpop_proof"
    assert refused.headers["WWW-Authenticate"].startswith("DPoP ")


def test_userinfo_refuses_a_replayed_proof(app: Flask) -> None:
    rp, key = public_rp(app), DPoPKey()
    token = dpop_tokens(rp, create_user(app), key)["access_token"]
    proof = key.proof("GET", USERINFO_URL, access_token=token)
    assert dpop_userinfo(rp.browser, token, proof).status_code == 200
    again = dpop_userinfo(rp.browser, token, proof)
    assert again.status_code == 401
    assert again.get_json()["error"] == "invalid_dpop_proof"


def test_userinfo_without_the_openid_scope_answers_a_dpop_challenge(app: Flask) -> None:
    """RFC 9449 7.1 with RFC 6750 3.1: insufficient_scope, 403, in the scheme the client used."""
    rp, key = public_rp(app), DPoPKey()
    code = rp.obtain_code(create_user(app), scope="profile")["code"]
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": rp.registered.redirect_uri, "code_verifier": rp.verifier}  # fmt: skip
    token = rp.token(data, dpop=key.proof()).get_json()["access_token"]
    proof = key.proof("GET", USERINFO_URL, access_token=token)
    refused = dpop_userinfo(rp.browser, token, proof)
    assert refused.status_code == 403
    assert refused.headers["WWW-Authenticate"].startswith('DPoP algs="')
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]


def test_userinfo_refuses_a_bearer_token_sent_as_dpop(rp: RelyingParty, user: CreatedUser) -> None:
    token = rp.tokens_for(user)["access_token"]
    key = DPoPKey()
    refused = dpop_userinfo(rp.browser, token, key.proof("GET", USERINFO_URL, access_token=token))
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "invalid_token"


def test_introspection_names_the_key_of_a_bound_token(app: Flask) -> None:
    """RFC 9449 6.2: ``cnf.jkt`` and ``token_type`` DPoP."""
    rp, key = RelyingParty(app.test_client(), create_client(app)), DPoPKey()
    tokens = dpop_tokens(rp, create_user(app), key)
    answer = introspect(rp, tokens["access_token"])
    assert answer["active"] is True
    assert answer["token_type"] == "DPoP"
    assert answer["cnf"] == {"jkt": key.jkt}


def test_discovery_lists_the_dpop_algorithms(client: FlaskClient) -> None:
    """RFC 9449 5.1."""
    metadata = client.get("/.well-known/openid-configuration").get_json()
    assert metadata["dpop_signing_alg_values_supported"] == ["ES256", "RS256", "PS256", "EdDSA"]


def test_a_page_may_send_the_dpop_header(client: FlaskClient) -> None:
    """A single-page app's preflight (CORS) before it sends its proof."""
    answer = client.options("/token")
    assert "DPoP" in answer.headers["Access-Control-Allow-Headers"]


def test_a_device_polling_with_a_proof_gets_tokens_bound_to_its_key(app: Flask) -> None:
    """RFC 9449 5 with RFC 8628 3.4: the device code grant binds as the others do; a public
    client's refresh token too."""
    device, key = device_for(app, kind="native"), DPoPKey()
    phone = app.test_client()
    start_session(phone, create_user(app))
    codes = device.codes()
    answer(phone, codes["user_code"])
    data, headers = device._auth(
        {"grant_type": DEVICE_CODE_GRANT_TYPE, "device_code": codes["device_code"]}
    )
    polled = device.http.post("/token", data=data, headers={**headers, "DPoP": key.proof()})
    assert polled.status_code == 200, polled.text
    body = polled.get_json()
    assert body["token_type"] == "DPoP"
    assert jwt_parts(body["access_token"])[1]["cnf"] == {"jkt": key.jkt}
    rp = RelyingParty(device.http, device.registered)
    assert rp.refresh(body["refresh_token"]).get_json()["error"] == "invalid_grant"
    assert rp.refresh(body["refresh_token"], dpop=key.proof()).status_code == 200

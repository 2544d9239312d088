"""DPoP proofs as writes (RFC 9449 11.1: each proof's use is remembered, a row, until its window
ends; docs/operations.md, "Storage budgets"): a proof is recorded only once the request shows who
sends it, its client authenticated at the token and PAR endpoints, a live token bound to its key
at UserInfo; a public client, whose client_id authenticates nobody, spends the address's budget
first. Otherwise anyone could send endless fresh proofs, each signed with a key of its own, and
fill the table. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flask import Flask
from joserfc.jwk import RSAKey
from werkzeug.test import TestResponse

from idp.models import AccessToken, UsedDPoPProof
from idp.settings import Settings
from tests.support.dpop import USERINFO_URL, DPoPKey
from tests.support.factories import RegisteredClient, create_client, create_user, rows
from tests.support.flow import RelyingParty, client_assertion

PER_ADDRESS = Settings.anonymous_requests_per_address
PAR_URL = "http://localhost/par"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OTHER_ADDRESS = {"REMOTE_ADDR": "203.0.113.9"}


def proofs(app: Flask) -> int:
    return len(rows(app, UsedDPoPProof))


def basic(registered: RegisteredClient, secret: str | None = None) -> dict[str, str]:
    raw = f"{registered.client_id}:{secret or registered.client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def client_credentials(app: Flask, headers: dict[str, str], **environ: Any) -> TestResponse:
    return app.test_client().post(
        "/token", data={"grant_type": "client_credentials"},
        headers={**headers, "DPoP": DPoPKey().proof()}, environ_base=environ,
    )  # fmt: skip


def test_a_proof_is_recorded_only_once_its_client_authenticated(storage_app: Flask) -> None:
    """A token or PAR request whose client does not authenticate (a wrong secret, an unknown
    client) records no proof, however many fresh proofs it brings; the same request with the
    right secret records its one proof and gets a bound token."""
    registered = create_client(storage_app)
    rp = RelyingParty(storage_app.test_client(), registered)
    for _ in range(5):
        refused = client_credentials(storage_app, basic(registered, "wrong"))
        assert refused.status_code == 401, refused.text
        assert refused.get_json()["error"] == "invalid_client"
    unknown = RegisteredClient("no-such-client", None, registered.redirect_uri)
    refused = client_credentials(storage_app, basic(unknown, "secret"))
    assert refused.status_code == 401, refused.text
    pushed = rp.browser.post("/par", data=rp.authorize_params(), headers={
        **basic(registered, "wrong"), "DPoP": DPoPKey().proof("POST", PAR_URL)})  # fmt: skip
    assert pushed.status_code == 401, pushed.text
    assert proofs(storage_app) == 0
    issued = client_credentials(storage_app, basic(registered))
    assert issued.status_code == 200, issued.text
    assert issued.get_json()["token_type"] == "DPoP"
    assert proofs(storage_app) == 1


@pytest.mark.parametrize("endpoint", ["/token", "/par"])
def test_a_request_with_two_client_authentication_methods_spends_no_proof(
    storage_app: Flask, endpoint: str
) -> None:
    """RFC 6749 2.3: a client MUST NOT use more than one authentication method in a request
    (Basic and a ``client_secret`` in the body, or a ``client_id`` naming another client beside
    Basic, 3.2.1). Such a token or PAR request is ``invalid_request`` before its DPoP proof is
    checked: a refused proof does not turn the answer into ``invalid_dpop_proof`` (it was, and
    sent the client to fix a proof that may be right), and a good one is not spent, so the same
    proof then brought with one method is taken, and recorded once."""
    registered = create_client(storage_app)
    other = create_client(storage_app, name="Other")
    rp = RelyingParty(storage_app.test_client(), registered)
    body = {"grant_type": "client_credentials"} if endpoint == "/token" else rp.authorize_params()
    proof = DPoPKey().proof("POST", f"http://localhost{endpoint}")
    mixed = ({**body, "client_secret": registered.client_secret},
             {**body, "client_id": other.client_id})  # fmt: skip
    for form in mixed:
        for sent_proof in (proof, "not-a-proof", DPoPKey().proof("POST", "https://else.example/")):
            refused = storage_app.test_client().post(
                endpoint, data=form, headers={**basic(registered), "DPoP": sent_proof}
            )
            assert refused.status_code == 400, refused.text
            assert refused.get_json()["error"] == "invalid_request", refused.text
            assert refused.headers["Cache-Control"] == "no-store"
    assert proofs(storage_app) == 0
    taken = storage_app.test_client().post(
        endpoint, data=body, headers={**basic(registered), "DPoP": proof}
    )
    assert taken.status_code == (200 if endpoint == "/token" else 201), taken.text
    assert proofs(storage_app) == 1
    if endpoint == "/token":
        assert taken.get_json()["token_type"] == "DPoP"


def test_a_private_key_jwt_clients_proof_is_recorded_with_its_assertion(
    storage_app: Flask,
) -> None:
    """The assertion's jti is recorded in the request's transaction (RFC 7523 3) before the
    proof: the proof's record goes in the same transaction, committed at once (on SQLite a write
    of its own would wait for that transaction's write turn), and a replay of the proof with a
    fresh assertion is still refused."""
    key = RSAKey.generate_key(2048, parameters={"kid": "dpop-rp"})
    jwks = {"keys": [key.as_dict(private=False)]}
    registered = create_client(storage_app, auth_method="private_key_jwt", jwks=jwks)
    proof = DPoPKey().proof()

    def request() -> TestResponse:
        form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
                "client_assertion": client_assertion(registered.client_id, key,
                                                     "http://localhost")}  # fmt: skip
        return storage_app.test_client().post("/token", data=form, headers={"DPoP": proof})

    issued = request()
    assert issued.status_code == 200, issued.text
    assert issued.get_json()["token_type"] == "DPoP"
    replayed = request()
    assert replayed.status_code == 400, replayed.text
    assert replayed.get_json()["error"] == "invalid_dpop_proof"
    assert proofs(storage_app) == 1
    assert len(rows(storage_app, AccessToken)) == 1


@pytest.mark.usefixtures("clock")  # within one budget window
def test_a_public_clients_proofs_are_within_the_address_budget(storage_app: Flask) -> None:
    """A public client's token and PAR requests are anonymous: each proof recorded spends the
    address's budget, and past it the request is 429 temporarily_unavailable with nothing
    recorded and nothing spent (a push without a proof still goes); another address has its
    own budget, and a confidential client's proofs are not counted against its address (its
    backend serves all its users from one)."""
    public = create_client(storage_app, public=True, name="SPA")
    rp = RelyingParty(storage_app.test_client(), public)
    form = {"grant_type": "refresh_token", "refresh_token": "made-up"}
    answers = [rp.token(form, dpop=DPoPKey().proof()) for _ in range(PER_ADDRESS + 3)]
    assert [a.get_json()["error"] for a in answers[:PER_ADDRESS]] == ["invalid_grant"] * PER_ADDRESS
    assert [a.status_code for a in answers[PER_ADDRESS:]] == [429] * 3
    assert answers[-1].get_json()["error"] == "temporarily_unavailable"
    assert proofs(storage_app) == PER_ADDRESS
    pushed = rp.browser.post("/par", data=rp.authorize_params(),
                             headers={"DPoP": DPoPKey().proof("POST", PAR_URL)})  # fmt: skip
    assert pushed.status_code == 429, pushed.text
    assert rp.browser.post("/par", data=rp.authorize_params()).status_code == 201
    assert proofs(storage_app) == PER_ADDRESS
    elsewhere = storage_app.test_client().post(
        "/token", data={**form, "client_id": public.client_id},
        headers={"DPoP": DPoPKey().proof()}, environ_base=OTHER_ADDRESS,
    )  # fmt: skip
    assert elsewhere.get_json()["error"] == "invalid_grant"
    confidential = create_client(storage_app)
    assert client_credentials(storage_app, basic(confidential)).status_code == 200
    assert proofs(storage_app) == PER_ADDRESS + 2


@pytest.mark.usefixtures("clock")
def test_userinfo_records_a_proof_only_for_a_live_token_bound_to_its_key(
    storage_app: Flask,
) -> None:
    """UserInfo records a proof only once the request holds a live access token bound to the
    proof's key (a made-up token or another key's proof records nothing); a public client's
    token spends the address's budget, then 429 with nothing recorded."""
    public = create_client(storage_app, public=True, name="SPA")
    rp, key = RelyingParty(storage_app.test_client(), public), DPoPKey()
    code = rp.obtain_code(create_user(storage_app))["code"]
    exchanged = rp.token(
        {"grant_type": "authorization_code", "code": code,
         "redirect_uri": public.redirect_uri, "code_verifier": rp.verifier},
        dpop=key.proof(),
    )  # fmt: skip
    assert exchanged.status_code == 200, exchanged.text
    token = exchanged.get_json()["access_token"]

    def userinfo(token: str, key: DPoPKey) -> TestResponse:
        proof = key.proof("GET", USERINFO_URL, access_token=token)
        return rp.browser.get("/userinfo", headers={"Authorization": f"DPoP {token}",
                                                    "DPoP": proof})  # fmt: skip

    for _ in range(3):
        assert userinfo("made-up", DPoPKey()).status_code == 401
        assert userinfo(token, DPoPKey()).status_code == 401
    assert proofs(storage_app) == 1  # the exchange's
    answers = [userinfo(token, key).status_code for _ in range(PER_ADDRESS)]
    assert answers == [200] * (PER_ADDRESS - 1) + [429]
    assert proofs(storage_app) == PER_ADDRESS

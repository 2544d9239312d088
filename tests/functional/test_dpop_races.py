"""One DPoP proof brought by parallel requests (RFC 9449 11.1: a ``jti`` is accepted once):
real parallel requests on SQLite and PostgreSQL, each held once its proof passed every check and
before its use was recorded (idp.oidc.dpop.PROOF_CHECKPOINT), released together. Never a sleep:
the test waits for the arrivals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

from idp.models import AccessToken
from idp.oidc.dpop import PROOF_CHECKPOINT
from tests.functional.test_dpop import dpop_tokens, dpop_userinfo, public_rp
from tests.support.checkpoints import Checkpoints, in_thread, wait_until
from tests.support.dpop import USERINFO_URL, DPoPKey
from tests.support.factories import create_client, create_user, rows
from tests.support.flow import RelyingParty

PARALLEL = 3
WAIT_LIMIT = 60.0  # a stuck test fails instead of hanging; never a timing claim


def assert_one_passes(
    checkpoints: Checkpoints, request: Callable[[], Any], refused_status: int
) -> None:
    """``PARALLEL`` runs of ``request`` (one proof), each held at the checkpoint until all have
    arrived, then released together: one passes, the others are ``invalid_dpop_proof``."""
    outcome: dict[str, Any] = {}
    with checkpoints.holding(PROOF_CHECKPOINT):
        threads = [in_thread(outcome, f"r{n}", request) for n in range(PARALLEL)]
        wait_until(lambda: checkpoints.arrivals(PROOF_CHECKPOINT) >= PARALLEL
                   or not all(thread.is_alive() for thread in threads),
                   "every request checked the proof")  # fmt: skip
        assert all(thread.is_alive() for thread in threads), outcome
    for thread in threads:
        thread.join(WAIT_LIMIT)
        assert not thread.is_alive()
    answers = [outcome[f"r{n}"] for n in range(PARALLEL)]
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] + [refused_status] * (PARALLEL - 1), statuses
    refused = [a.get_json()["error"] for a in answers if a.status_code == refused_status]
    assert refused == ["invalid_dpop_proof"] * (PARALLEL - 1)


def test_parallel_token_requests_with_one_proof_pass_once(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """Every request checked the proof and found it good; the INSERT of its record decides (a
    primary key, on any node): one token is issued, the others are ``invalid_dpop_proof``."""
    registered = create_client(storage_app)
    proof = DPoPKey().proof()

    def request() -> Any:
        rp = RelyingParty(storage_app.test_client(), registered)
        return rp.token({"grant_type": "client_credentials"}, dpop=proof)

    assert_one_passes(checkpoints, request, refused_status=400)
    assert len(rows(storage_app, AccessToken)) == 1


def test_parallel_userinfo_requests_with_one_proof_pass_once(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """At UserInfo the proof is recorded after the token's lookup (a live token bound to its
    key) and a public client's budget count, still before the claims: of parallel requests
    carrying one proof, all held before the INSERT, one gets the claims, the others
    ``invalid_dpop_proof``."""
    rp, key = public_rp(storage_app), DPoPKey()
    token = dpop_tokens(rp, create_user(storage_app), key)["access_token"]
    proof = key.proof("GET", USERINFO_URL, access_token=token)

    def request() -> Any:
        return dpop_userinfo(storage_app.test_client(), token, proof)

    assert_one_passes(checkpoints, request, refused_status=401)

"""What DPoP (RFC 9449) costs a request in statements (docs/performance.md): the proof's record,
one INSERT committed on its own, and for a public client the address's budget count before it
(idp.oidc.dpop ``spend_proof``), beside the statements the same request sends without DPoP
(tests/functional/test_round_trips.py pins those, and they are unchanged). Counted on the engine
for one request at a time, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.functional.test_dpop import dpop_tokens, dpop_userinfo, public_rp
from tests.functional.test_round_trips import _first_words, _together, statements
from tests.support.dpop import USERINFO_URL, DPoPKey
from tests.support.factories import create_user

#: The statements counted must not depend on the clock: the client an earlier request cached stays
#: trusted until the test ends (tests/conftest.py ``node_caches_held``).
pytestmark = pytest.mark.usefixtures("node_caches_held")


def test_a_dpop_refresh_is_the_proofs_insert_and_the_usual_rotation(storage_app: Flask) -> None:
    """The public client's budget count and the proof's record first (committed before the
    rotation, so a replay on any node finds it), then the rotation as without DPoP: one spend,
    whose key condition rides in its WHERE, and the new tokens' INSERTs."""
    rp, key = public_rp(storage_app), DPoPKey()
    tokens = dpop_tokens(rp, create_user(storage_app), key)
    with statements(storage_app) as sent:
        response = rp.refresh(tokens["refresh_token"], dpop=key.proof())
    assert response.status_code == 200, response.text
    assert [_first_words(s) for s in sent[:2]] == [
        "INSERT ATTEMPT_COUNTERS",
        "INSERT USED_DPOP_PROOFS",
    ]
    assert sent[2].startswith("UPDATE REFRESH_TOKENS")
    assert "REFRESH_TOKENS.JKT" in sent[2]
    inserts = [_first_words(s) for s in sent[3:]]
    if _together(storage_app):
        assert inserts == ["INSERT ACCESS_TOKENS + REFRESH_TOKENS"]
    else:
        assert inserts == ["INSERT ACCESS_TOKENS", "INSERT REFRESH_TOKENS"]


def test_a_dpop_userinfo_is_the_proofs_insert_and_the_one_lookup(storage_app: Flask) -> None:
    """The token's one lookup first (a caller without a live token bound to the key records
    nothing), then the public client's budget count and the proof's record, before the claims
    (read from the lookup's row)."""
    rp, key = public_rp(storage_app), DPoPKey()
    token = dpop_tokens(rp, create_user(storage_app), key)["access_token"]
    proof = key.proof("GET", USERINFO_URL, access_token=token)
    with statements(storage_app) as sent:
        response = dpop_userinfo(rp.browser, token, proof)
    assert response.status_code == 200, response.text
    assert [_first_words(s) for s in sent] == [
        "SELECT ACCESS_TOKENS",
        "INSERT ATTEMPT_COUNTERS",
        "INSERT USED_DPOP_PROOFS",
    ]

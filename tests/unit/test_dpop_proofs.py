"""DPoP proofs (RFC 9449 4.3): each check of idp.services.dpop.check_proof, and the record that
lets a proof through once (``remember_proof``, RFC 9449 11.1)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select

from idp.database import configure_engine
from idp.models import Base, UsedDPoPProof
from idp.services.dpop import (
    NONCE_LIFETIME,
    PROOF_AHEAD,
    PROOF_WINDOW,
    DPoPNonceError,
    DPoPProof,
    DPoPProofError,
    check_proof,
    new_nonce,
    remember_proof,
)
from tests.support.dpop import TOKEN_URL, USERINFO_URL, DPoPKey, b64url

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())


@pytest.fixture(scope="module")
def key() -> DPoPKey:
    return DPoPKey("ES256")


def check(proof: str, **overrides: Any) -> DPoPProof:
    arguments: dict[str, Any] = {"method": "POST", "url": TOKEN_URL, "now": NOW}
    arguments.update(overrides)
    return check_proof(proof, **arguments)


def refused(proof: str, words: str, **overrides: Any) -> None:
    with pytest.raises(DPoPProofError, match=words):
        check(proof, **overrides)


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    encode = lambda value: b64url(json.dumps(value).encode())  # noqa: E731
    return f"{encode(header)}.{encode(claims)}.{b64url(signature)}"


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256", "EdDSA"])
def test_a_proof_of_each_supported_alg_names_its_keys_thumbprint(alg: str) -> None:
    signer = DPoPKey(alg)
    proof = check(signer.proof(iat=NOW_S))
    assert proof.jkt == signer.jkt  # RFC 7638, SHA-256
    assert proof.iat == NOW_S


def test_two_proofs_in_one_header_are_refused(key: DPoPKey) -> None:
    # RFC 9449 4.3 item 1: a second DPoP header reaches the application joined by a comma.
    refused(f"{key.proof(iat=NOW_S)}, {key.proof(iat=NOW_S)}", "one DPoP proof")


def test_a_proof_that_is_no_jwt_is_refused() -> None:
    refused("not-a-jwt", "one DPoP proof")
    refused("a.b.c", "well-formed")


def test_a_proof_of_another_typ_is_refused(key: DPoPKey) -> None:
    refused(key.proof(iat=NOW_S, header={"typ": "JWT"}), "'typ'")
    refused(key.proof(iat=NOW_S, header={"typ": None}), "'typ'")


def test_alg_none_is_refused(key: DPoPKey) -> None:
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk()}
    claims = {"jti": "j", "htm": "POST", "htu": TOKEN_URL, "iat": NOW_S}
    refused(unsigned(header, claims), "'alg'")


def test_a_mac_alg_is_refused(key: DPoPKey) -> None:
    # HS256 keyed with the public key's bytes, the classic confusion (RFC 8725 2.1).
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": key.public_jwk()}
    claims = {"jti": "j", "htm": "POST", "htu": TOKEN_URL, "iat": NOW_S}
    refused(unsigned(header, claims, b"x" * 32), "'alg'")


def test_a_proof_without_a_jwk_is_refused(key: DPoPKey) -> None:
    refused(key.proof(iat=NOW_S, header={"jwk": None}), "no 'jwk'")


def test_a_private_key_in_the_jwk_is_refused(key: DPoPKey) -> None:
    # RFC 9449 4.3 item 7: the header must not carry the private key.
    private = dict(key.key.as_dict(private=True))
    refused(key.proof(iat=NOW_S, header={"jwk": private}), "public key")


def test_a_jwk_of_another_key_type_than_the_alg_is_refused(key: DPoPKey) -> None:
    rsa = DPoPKey("RS256")
    refused(key.proof(iat=NOW_S, header={"jwk": rsa.public_jwk()}), "not a key for its 'alg'")


def test_a_signature_by_another_key_is_refused(key: DPoPKey) -> None:
    # Signed by ``key``, naming another key of the same type: item 6.
    other = DPoPKey("ES256")
    refused(key.proof(iat=NOW_S, header={"jwk": other.public_jwk()}), "signature")


def test_a_tampered_claim_breaks_the_signature(key: DPoPKey) -> None:
    header, _, signature = key.proof(iat=NOW_S).split(".")
    claims = {"jti": "j", "htm": "POST", "htu": TOKEN_URL, "iat": NOW_S}
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    refused(f"{header}.{forged}.{signature}", "signature")


def test_another_method_is_refused(key: DPoPKey) -> None:
    refused(key.proof("GET", iat=NOW_S), "'htm'")


def test_another_uri_is_refused(key: DPoPKey) -> None:
    refused(key.proof(url=USERINFO_URL, iat=NOW_S), "'htu'")
    refused(key.proof(url="https://localhost/token", iat=NOW_S), "'htu'")
    refused(key.proof(url="http://localhost/token/", iat=NOW_S), "'htu'")


def test_the_uri_is_compared_without_query_and_fragment(key: DPoPKey) -> None:
    # RFC 9449 4.3 item 9: "ignoring any query and fragment parts"; scheme and host case-blind.
    check(key.proof(url="HTTP://LOCALHOST/token?x=1#f", iat=NOW_S))


def test_an_iat_older_than_the_window_is_refused(key: DPoPKey) -> None:
    check(key.proof(iat=NOW_S - PROOF_WINDOW))
    refused(key.proof(iat=NOW_S - PROOF_WINDOW - 1), "'iat'")


def test_an_iat_in_the_future_is_refused(key: DPoPKey) -> None:
    check(key.proof(iat=NOW_S + PROOF_AHEAD))
    refused(key.proof(iat=NOW_S + PROOF_AHEAD + 1), "'iat'")


def test_an_iat_that_is_no_integer_is_refused(key: DPoPKey) -> None:
    refused(key.proof(claims={"iat": str(NOW_S)}), "'iat'")
    refused(key.proof(claims={"iat": True}), "'iat'")


def test_a_proof_without_a_jti_is_refused(key: DPoPKey) -> None:
    refused(key.proof(iat=NOW_S, claims={"jti": None}), "'jti'")


def test_at_a_resource_the_ath_must_be_the_tokens(key: DPoPKey) -> None:
    good = key.proof("GET", USERINFO_URL, access_token="the-token", iat=NOW_S)
    check(good, method="GET", url=USERINFO_URL, access_token="the-token")
    refused(good, "'ath'", method="GET", url=USERINFO_URL, access_token="another-token")
    without = key.proof("GET", USERINFO_URL, iat=NOW_S)
    refused(without, "'ath'", method="GET", url=USERINFO_URL, access_token="the-token")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'dpop.db'}")
    configure_engine(engine)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_a_proof_is_remembered_once_until_its_window_ends(engine: Engine, key: DPoPKey) -> None:
    """RFC 9449 11.1: the same ``jti`` of the same key passes once; another key's same ``jti``
    is another proof (nobody spends a ``jti`` of a key they do not hold)."""

    def write(statement: Any, parameters: Any) -> int:
        with engine.begin() as connection:
            return int(connection.execute(statement, dict(parameters)).rowcount)

    proof = DPoPProof(jkt=key.jkt, jti="once", iat=NOW_S)
    assert remember_proof(write, "sqlite", proof)
    assert not remember_proof(write, "sqlite", proof)
    assert remember_proof(write, "sqlite", DPoPProof(jkt="another", jti="once", iat=NOW_S))
    with engine.connect() as connection:
        kept = connection.scalars(select(UsedDPoPProof.expires_at)).all()
    assert {stamp.replace(tzinfo=UTC) for stamp in kept} == {NOW + timedelta(seconds=PROOF_WINDOW)}


NONCE_KEY = b"n" * 32


def test_a_proof_without_the_servers_nonce_is_refused(key: DPoPKey) -> None:
    """RFC 9449 8 and 4.3 item 10: when idp requires nonces, a proof carries the one it gave."""
    with pytest.raises(DPoPNonceError):
        check(key.proof(iat=NOW_S), nonce_key=NONCE_KEY)
    given = new_nonce(NONCE_KEY, NOW)
    assert check(key.proof(iat=NOW_S, claims={"nonce": given}), nonce_key=NONCE_KEY).jkt == key.jkt


def test_a_stale_or_forged_nonce_is_refused(key: DPoPKey) -> None:
    stale = new_nonce(NONCE_KEY, NOW - timedelta(seconds=NONCE_LIFETIME + 1))
    forged = new_nonce(b"another key" * 3, NOW)
    made, _, mac = new_nonce(NONCE_KEY, NOW).partition(".")
    moved = f"{int(made) + 1}.{mac}"  # another time under the same MAC
    for nonce in (stale, forged, moved, "", 17):
        with pytest.raises(DPoPNonceError):
            check(key.proof(iat=NOW_S, claims={"nonce": nonce}), nonce_key=NONCE_KEY)
    # Made a little ahead by another node is fine; made in the future beyond the skew is not.
    ahead = new_nonce(NONCE_KEY, NOW + timedelta(seconds=PROOF_AHEAD))
    check(key.proof(iat=NOW_S, claims={"nonce": ahead}), nonce_key=NONCE_KEY)
    far = new_nonce(NONCE_KEY, NOW + timedelta(seconds=PROOF_AHEAD + 1))
    with pytest.raises(DPoPNonceError):
        check(key.proof(iat=NOW_S, claims={"nonce": far}), nonce_key=NONCE_KEY)

"""Signing keys: creation, encryption at rest, publication, rotation and unpublication."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import InvalidToken
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from idp.clock import FrozenClock
from idp.composition import Container
from idp.models import Base, SigningKey
from idp.models.base import utcnow
from idp.services.crypto import fernet_for
from idp.services.signing_keys import SUPPORTED_ALGS, KeyStore
from idp.services.tokens import (
    ACCESS_TOKEN_TYP,
    mint_access_token,
    unverified_claims,
    verify_issued_jwt,
)
from idp.settings import load_settings

SECRET = "signing-key-test-secret-0123456789abcdef"
ISSUER = "http://localhost"
#: Private members of RSA, EC and OKP JWKs (RFC 7518 6.2.2, 6.3.2; RFC 8037 2).
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth"}


def runtime(**overrides: object) -> Container:
    settings = {"issuer": ISSUER, "secret_key": SECRET, **overrides}
    return Container.build(load_settings(settings, environ={}))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Session]:
    engine = create_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


@pytest.fixture
def keys(db: Session) -> KeyStore:
    store = runtime().keys
    store.ensure_keys(db)
    db.commit()
    return store


def clocked_store(cache_ttl: int) -> tuple[FrozenClock, KeyStore]:
    """A key store whose clock the test moves (tokens live an hour at most)."""
    clock = FrozenClock(datetime(2030, 1, 1, tzinfo=UTC))
    fernet = fernet_for(SECRET, "idp signing keys at rest")
    keys = KeyStore(encrypt=fernet.encrypt, decrypt=fernet.decrypt, cache_ttl=cache_ttl,
                    max_token_lifetime=3600, clock=clock)  # fmt: skip
    return clock, keys


def active_kids(db: Session) -> dict[str, str]:
    rows = db.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None)))
    return {row.alg: row.kid for row in rows}


def published_kids(db: Session, keys: KeyStore) -> set[str]:
    return {jwk["kid"] for jwk in keys.public_jwks(db)["keys"]}


def test_ensure_keys_creates_one_active_key_per_supported_alg(db: Session) -> None:
    created = runtime().keys.ensure_keys(db)
    db.commit()
    assert sorted(row.alg for row in created) == sorted(SUPPORTED_ALGS)
    assert set(active_kids(db)) == {"RS256", "ES256", "EdDSA"}


def test_ensure_keys_again_creates_nothing(db: Session, keys: KeyStore) -> None:
    before = active_kids(db)
    assert keys.ensure_keys(db) == []
    db.commit()
    assert active_kids(db) == before


def test_private_key_is_stored_encrypted(db: Session, keys: KeyStore) -> None:
    for row in db.scalars(select(SigningKey)):
        assert '"d"' not in row.private_jwk_encrypted
        assert "d" not in row.public_jwk
        decrypted = json.loads(
            fernet_for(SECRET, "idp signing keys at rest").decrypt(row.private_jwk_encrypted)
        )
        assert decrypted["kid"] == row.kid
        assert "d" in decrypted


def test_private_key_does_not_decrypt_with_another_secret(db: Session, keys: KeyStore) -> None:
    other = fernet_for("another-secret-key-0123456789abcdef012", "idp signing keys at rest")
    row = db.scalars(select(SigningKey)).first()
    assert row is not None
    with pytest.raises(InvalidToken):
        other.decrypt(row.private_jwk_encrypted)


def test_key_encryption_is_bound_to_its_purpose(db: Session, keys: KeyStore) -> None:
    # The same secret under another HKDF purpose is another key (no cross-purpose reuse).
    row = db.scalars(select(SigningKey)).first()
    assert row is not None
    with pytest.raises(InvalidToken):
        fernet_for(SECRET, "idp client secrets").decrypt(row.private_jwk_encrypted)


def test_public_jwks_names_each_key_and_holds_no_private_members(
    db: Session, keys: KeyStore
) -> None:
    jwks = keys.public_jwks(db)["keys"]
    assert {jwk["alg"] for jwk in jwks} == set(SUPPORTED_ALGS)
    for jwk in jwks:
        assert jwk["use"] == "sig"
        assert jwk["kid"]
        assert not PRIVATE_MEMBERS & set(jwk), jwk


def test_kids_are_unique(db: Session, keys: KeyStore) -> None:
    kids = [jwk["kid"] for jwk in keys.public_jwks(db)["keys"]]
    assert len(kids) == len(set(kids)) == 3


def test_rotate_activates_a_new_key_per_alg(db: Session, keys: KeyStore) -> None:
    before = active_kids(db)
    keys.rotate(db)
    db.commit()
    after = active_kids(db)
    assert set(after) == set(before)
    for alg in SUPPORTED_ALGS:
        assert after[alg] != before[alg]
        assert keys.signing_key(db, alg).kid == after[alg]


def test_rotate_keeps_old_keys_published_until_their_tokens_expire(
    db: Session, keys: KeyStore
) -> None:
    old = set(active_kids(db).values())
    rotated_at = utcnow()
    keys.rotate(db)
    db.commit()
    new = set(active_kids(db).values())
    assert published_kids(db, keys) == old | new
    # ID tokens live longest (3600 s by default): nothing they signed may lose its key early.
    longest_token = timedelta(seconds=3600)
    for row in db.scalars(select(SigningKey).where(SigningKey.kid.in_(old))):
        assert row.retired_at is not None
        assert row.unpublish_after is not None
        assert row.unpublish_after >= rotated_at + longest_token


def test_unpublish_window_follows_the_longest_token_lifetime(db: Session) -> None:
    keys = runtime(access_token_ttl=7200, id_token_ttl=600).keys
    keys.ensure_keys(db)
    db.commit()
    rotated_at = utcnow()
    keys.rotate(db, ("ES256",))
    db.commit()
    row = db.scalars(select(SigningKey).where(SigningKey.retired_at.is_not(None))).one()
    assert row.alg == "ES256"
    assert row.unpublish_after is not None
    assert row.unpublish_after >= rotated_at + timedelta(seconds=7200)


def test_a_rotated_key_is_unpublished_when_the_store_clock_says(db: Session) -> None:
    """The store's clock stamps a key's creation and retirement, and decides when a retired key
    leaves the JWKS: its tokens' longest lifetime, the cache window and a minute after."""
    clock, keys = clocked_store(cache_ttl=0)
    first = keys.ensure_keys(db)
    db.commit()
    assert {row.created_at for row in first} == {clock.now()}
    old = set(active_kids(db).values())
    clock.advance(timedelta(days=1))
    rotated_at = clock.now()
    created = keys.rotate(db)
    db.commit()
    assert {row.created_at for row in created} == {rotated_at + timedelta(microseconds=1)}
    for row in db.scalars(select(SigningKey).where(SigningKey.kid.in_(old))):
        assert row.retired_at == rotated_at
        assert row.unpublish_after == rotated_at + timedelta(seconds=3600 + 0 + 60)
    clock.advance(timedelta(seconds=3659))
    assert old <= published_kids(db, keys)
    clock.advance(timedelta(seconds=1))
    assert published_kids(db, keys) == set(active_kids(db).values())


def test_rotating_one_alg_leaves_the_others_active(db: Session, keys: KeyStore) -> None:
    before = active_kids(db)
    keys.rotate(db, ("EdDSA",))
    db.commit()
    after = active_kids(db)
    assert after["RS256"] == before["RS256"]
    assert after["ES256"] == before["ES256"]
    assert after["EdDSA"] != before["EdDSA"]


def test_old_key_leaves_the_jwks_after_unpublish_after(db: Session, keys: KeyStore) -> None:
    old = set(active_kids(db).values())
    keys.rotate(db)
    db.commit()
    for row in db.scalars(select(SigningKey).where(SigningKey.kid.in_(old))):
        row.unpublish_after = utcnow() - timedelta(seconds=1)
    db.commit()
    keys.invalidate()
    published = published_kids(db, keys)
    assert published == set(active_kids(db).values())
    assert not old & published
    assert all(keys.by_kid(db, kid) is None for kid in old)


def mint(db: Session, keys: KeyStore) -> str:
    return mint_access_token(
        db,
        keys,
        alg="ES256",
        issuer=ISSUER,
        audience=ISSUER,
        client_id="client",
        subject="user",
        scope="openid",
        ttl=600,
        issued_at=int(time.time()),
    )


def test_token_signed_by_a_rotated_key_verifies_while_published(
    db: Session, keys: KeyStore
) -> None:
    token = mint(db, keys)
    keys.rotate(db)
    db.commit()
    claims = verify_issued_jwt(db, keys, token, issuer=ISSUER, typ=ACCESS_TOKEN_TYP)
    assert claims is not None
    assert claims["sub"] == "user"


def test_token_signed_by_an_unpublished_key_no_longer_verifies(db: Session, keys: KeyStore) -> None:
    token = mint(db, keys)
    keys.rotate(db)
    for row in db.scalars(select(SigningKey).where(SigningKey.retired_at.is_not(None))):
        row.unpublish_after = utcnow() - timedelta(seconds=1)
    db.commit()
    keys.invalidate()
    assert verify_issued_jwt(db, keys, token, issuer=ISSUER, typ=ACCESS_TOKEN_TYP) is None


def test_new_tokens_are_signed_with_the_new_key(db: Session, keys: KeyStore) -> None:
    keys.rotate(db)
    db.commit()
    token = mint(db, keys)
    header = json.loads(_b64decode(token.split(".")[0]))
    assert header["kid"] == active_kids(db)["ES256"]


def test_another_node_sees_a_rotation_once_its_cache_expires(db: Session, keys: KeyStore) -> None:
    # Nodes share only the database; a zero cache window makes "expired" immediate.
    other_node = runtime(key_cache_ttl=0).keys
    assert other_node.signing_key(db, "RS256").kid == active_kids(db)["RS256"]
    keys.rotate(db)
    db.commit()
    assert other_node.signing_key(db, "RS256").kid == active_kids(db)["RS256"]


def test_a_token_signed_with_a_key_rotated_elsewhere_verifies_before_the_cache_expires(
    db: Session, keys: KeyStore
) -> None:
    """Statelessness: the node that rotated (or reloaded first) signs with the new key at once;
    a node whose cache is still fresh must not refuse that token (found by the multi-node test)."""
    other_node = runtime(key_cache_ttl=3600).keys
    assert other_node.public_jwks(db)["keys"]  # its cache is filled and will not expire here
    keys.rotate(db)
    db.commit()
    token = mint(db, keys)
    claims = verify_issued_jwt(db, other_node, token, issuer=ISSUER, typ=ACCESS_TOKEN_TYP)
    assert claims is not None
    assert claims["sub"] == "user"


def test_an_id_token_hint_signed_with_a_key_rotated_elsewhere_verifies_at_logout(
    db: Session, keys: KeyStore
) -> None:
    other_node = runtime(key_cache_ttl=3600).keys
    assert other_node.public_jwks(db)["keys"]
    keys.rotate(db)
    db.commit()
    new_kid = active_kids(db)["RS256"]
    verifying = other_node.verification_keyset(db, unpublished_within=timedelta(0))
    assert new_kid in {key.kid for key in verifying.keys}


def test_an_id_token_hint_verifies_while_its_session_may_live_after_its_key_left_the_jwks(
    db: Session,
) -> None:
    """RP-Initiated Logout 1.0 section 2: accept an ID token "even when the exp time has passed"
    while its session may be live: a key unpublished less than ``unpublished_within`` ago (the
    sessions' absolute lifetime) still verifies a hint, never a token (the JWKS lacks it)."""
    clock, keys = clocked_store(cache_ttl=0)
    keys.ensure_keys(db)
    db.commit()
    old = keys.signing_key(db, "RS256").kid
    keys.rotate(db, ("RS256",))
    db.commit()
    clock.advance(timedelta(hours=2))  # past its unpublish_after
    assert old not in published_kids(db, keys)
    month = timedelta(days=30)
    assert old in {k.kid for k in keys.verification_keyset(db, unpublished_within=month).keys}
    clock.advance(month)
    assert old not in {k.kid for k in keys.verification_keyset(db, unpublished_within=month).keys}


def test_signing_without_keys_asks_for_init(db: Session) -> None:
    with pytest.raises(LookupError, match="idp init"):
        runtime().keys.signing_key(db, "RS256")


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@pytest.mark.parametrize("alg", SUPPORTED_ALGS)
def test_access_token_signed_with_the_key_object_verifies_with_joserfc(
    db: Session, keys: KeyStore, alg: str
) -> None:
    """idp signs access tokens with ``cryptography`` directly (KeyMaterial.jws_signature); an
    independent library, holding only the published public key, must accept them (RFC 7515,
    RFC 9068 2.1 and 2.2)."""
    token = mint_access_token(
        db, keys, alg=alg, issuer=ISSUER, audience=ISSUER, client_id="client", subject="user",
        scope="openid offline_access", ttl=600, issued_at=int(time.time()),
    )  # fmt: skip
    public = KeySet.import_key_set(keys.public_jwks(db))  # type: ignore[arg-type]
    decoded = jwt.decode(token, public, algorithms=[alg])
    assert decoded.header == {"alg": alg, "typ": ACCESS_TOKEN_TYP, "kid": active_kids(db)[alg]}
    claims = decoded.claims
    assert {k: claims[k] for k in ("iss", "sub", "aud", "client_id", "scope")} == {
        "iss": ISSUER, "sub": "user", "aud": ISSUER, "client_id": "client",
        "scope": "openid offline_access",
    }  # fmt: skip
    assert claims["exp"] - claims["iat"] == 600
    assert len(claims["jti"]) >= 16
    assert unverified_claims(token) == claims


def test_a_tampered_access_token_does_not_verify(db: Session, keys: KeyStore) -> None:
    header, payload, signature = mint(db, keys).split(".")
    other = mint(db, keys).split(".")[1]
    assert verify_issued_jwt(db, keys, f"{header}.{payload}.{signature}", issuer=ISSUER,
                             typ=ACCESS_TOKEN_TYP) is not None  # fmt: skip
    assert verify_issued_jwt(db, keys, f"{header}.{other}.{signature}", issuer=ISSUER,
                             typ=ACCESS_TOKEN_TYP) is None  # fmt: skip


@pytest.mark.parametrize(
    "value",
    ["", "a.b", "a.b.c.d", "e30.!!!.x", "e30.WzFd.x", "e30./w.x"],  # WzFd: [1], /w: not UTF-8
)
def test_unverified_claims_refuse_what_is_no_compact_jws_of_an_object(value: str) -> None:
    with pytest.raises(ValueError, match=r"compact JWS|base64url JSON|JSON object"):
        unverified_claims(value)


def test_a_new_key_is_published_before_it_signs(db: Session) -> None:
    """RFC 7517 4.5, OpenID Connect Core 10.1.1: a rotated key is in every JWKS before any token
    carries its kid. It signs once two cache windows have passed (every node's key cache and
    every relying party's copy of the JWKS, served with the same max-age); the old key signs
    until then."""
    clock, keys = clocked_store(cache_ttl=5)
    keys.ensure_keys(db)
    db.commit()
    first = keys.signing_key(db, "RS256").kid  # the first start: its new keys sign at once
    clock.advance(timedelta(days=1))
    [new] = keys.rotate(db, ("RS256",))
    db.commit()
    assert new.kid in published_kids(db, keys)
    assert keys.signing_key(db, "RS256").kid == first
    clock.advance(timedelta(seconds=9))
    keys.invalidate()
    assert keys.signing_key(db, "RS256").kid == first
    clock.advance(timedelta(seconds=2))
    keys.invalidate()
    assert keys.signing_key(db, "RS256").kid == new.kid
    [old] = db.scalars(select(SigningKey).where(SigningKey.kid == first)).all()
    # It signed 10 s past its retirement: still published for its tokens' whole lifetime.
    assert old.unpublish_after is not None
    assert old.unpublish_after >= clock.now() + timedelta(seconds=3600)

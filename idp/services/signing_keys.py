"""Signing keys: generation, encryption at rest, rotation, publication and a per-node cache.

Every node reads keys from the shared database and caches them for ``key_cache_ttl`` seconds, so a
key rotated on one node is used and published by every node shortly after (storage).
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey
from sqlalchemy import select
from sqlalchemy.orm import Session, scoped_session

from idp.clock import SYSTEM_CLOCK, Clock
from idp.models import SigningKey

#: What we can sign with. RS256 is the default every OIDC client must support (OIDC Core 15.1).
SUPPORTED_ALGS = ("RS256", "ES256", "EdDSA")

# RFC 9864 deprecates the polymorphic "EdDSA" name in favour of "Ed25519", and joserfc warns on
# every signature. Relying-party libraries accept "EdDSA" today (few know "Ed25519" yet), so idp
# keeps it and silences only this notice, which would otherwise fill the logs.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)

AnyKey = RSAKey | ECKey | OKPKey


def generate_key(alg: str) -> AnyKey:
    if alg == "RS256":
        return RSAKey.generate_key(2048)
    if alg == "ES256":
        return ECKey.generate_key("P-256")
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519")
    raise ValueError(f"unsupported signing alg {alg!r}")


def import_key(jwk: dict[str, Any]) -> AnyKey:
    kty = jwk["kty"]
    if kty == "RSA":
        return RSAKey.import_key(jwk)
    if kty == "EC":
        return ECKey.import_key(jwk)
    return OKPKey.import_key(jwk)


@dataclass(frozen=True)
class KeyMaterial:
    """A loaded key: the private key for signing plus its published public JWK."""

    kid: str
    alg: str
    private_key: AnyKey
    public_jwk: dict[str, Any]

    def jws_signature(self, signing_input: bytes) -> bytes:
        """The JWS Signature over ``signing_input`` with this key's ``alg`` (RFC 7515 5.1 step 5),
        computed by ``cryptography`` on the key object it holds, without joserfc's generic
        path (its registry, key checks and header handling cost as much as the signature; the
        access tokens are signed this way, docs/performance.md)."""
        return self._signer(signing_input)

    @cached_property
    def _signer(self) -> Callable[[bytes], bytes]:
        # Made once per loaded key: the material is cached by KeyStore and never changes.
        key: Any = self.private_key.private_key
        if self.alg == "ES256":
            signature = ec.ECDSA(SHA256())

            def es256(data: bytes) -> bytes:
                # RFC 7518 3.4: R and S as 32-byte big-endian integers, not the DER that
                # cryptography returns.
                r, s = decode_dss_signature(key.sign(data, signature))
                return r.to_bytes(32, "big") + s.to_bytes(32, "big")

            return es256
        if self.alg == "RS256":
            pkcs1 = padding.PKCS1v15()
            sha256 = SHA256()
            return lambda data: bytes(key.sign(data, pkcs1, sha256))  # RFC 7518 3.3
        if self.alg == "EdDSA":
            return lambda data: bytes(key.sign(data))  # RFC 8037 3.1: Ed25519
        raise ValueError(f"unsupported signing alg {self.alg!r}")


class KeyStore:
    """Reads, creates and rotates signing keys; thread-safe cache per process."""

    def __init__(
        self,
        *,
        encrypt: Callable[[bytes], bytes],
        decrypt: Callable[[bytes], bytes],
        cache_ttl: float,
        max_token_lifetime: int,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._encrypt = encrypt
        self._decrypt = decrypt
        self._cache_ttl = cache_ttl
        self._max_token_lifetime = max_token_lifetime
        #: When a key is made, retired and unpublished (the cache's age is monotonic time).
        self.clock = clock
        self._lock = threading.Lock()
        self._loaded_at = -1e9
        self._active: dict[str, KeyMaterial] = {}
        self._by_kid: dict[str, KeyMaterial] = {}
        self._published: list[dict[str, Any]] = []

    # -- writing --------------------------------------------------------------------------------
    def create(self, db: Session, alg: str, now: datetime | None = None) -> SigningKey:
        key = generate_key(alg)
        kid = key.thumbprint()  # RFC 7638 thumbprint: stable, unique, derived from the key
        public = key.as_dict(private=False)
        public.update({"kid": kid, "alg": alg, "use": "sig"})
        private_jwk = key.as_dict(private=True)
        private_jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        private = json.dumps(private_jwk).encode()
        row = SigningKey(
            kid=kid,
            alg=alg,
            public_jwk=public,
            private_jwk_encrypted=self._encrypt(private).decode(),
            created_at=now or self.clock.now(),
        )
        db.add(row)
        return row

    def ensure_keys(self, db: Session) -> list[SigningKey]:
        """Create an active key for every supported alg that has none (first start)."""
        created = []
        active_algs = {row.alg for row in db.scalars(select(SigningKey).where(_is_active()))}
        for alg in SUPPORTED_ALGS:
            if alg not in active_algs:
                created.append(self.create(db, alg))
        self.invalidate()
        return created

    @property
    def publish_first(self) -> timedelta:
        """How long a new key is published before it signs: every node's key cache and every
        relying party's copy of the JWKS (served ``max-age`` the same ``key_cache_ttl``) has it
        by then, so nobody meets a token whose ``kid`` their JWKS lacks (RFC 7517 4.5; OpenID
        Connect Core 10.1.1: publish the new key, then sign with it)."""
        return timedelta(seconds=2 * self._cache_ttl)

    def rotate(self, db: Session, algs: tuple[str, ...] = SUPPORTED_ALGS) -> list[SigningKey]:
        """New keys, published at once and signing after ``publish_first``; the old ones sign
        until then, and stay published until every token they signed has expired (plus the cache
        window, so every node has seen the change)."""
        now = self.clock.now()
        unpublish_after = (
            now
            + self.publish_first
            + timedelta(seconds=self._max_token_lifetime + self._cache_ttl + 60)
        )
        for row in db.scalars(select(SigningKey).where(_is_active(), SigningKey.alg.in_(algs))):
            row.retired_at = now
            row.unpublish_after = unpublish_after
        # A new key is created a moment later than the one it replaces: "newest wins".
        created = [self.create(db, alg, now + timedelta(microseconds=1)) for alg in algs]
        self.invalidate()
        return created

    def list_keys(self, db: Session) -> list[SigningKey]:
        return list(db.scalars(select(SigningKey).order_by(SigningKey.created_at.desc())))

    def signing_kids(self, db: Session) -> set[str]:
        """The keys that sign now, by the rule every node's cache applies (``_refresh``): a
        rotated key may still sign while its successor is being published."""
        now = self.clock.now()
        rows = _published(db, now)
        return {row.kid for row in _signers(rows, now - self.publish_first).values()}

    # -- reading --------------------------------------------------------------------------------
    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = -1e9

    def signing_key(self, db: Session | scoped_session[Any], alg: str) -> KeyMaterial:
        """The active key for ``alg``. ``db`` may be a scoped session, which opens a Session only
        when the keys are read again (every ``key_cache_ttl``)."""
        self._refresh(db)
        try:
            return self._active[alg]
        except KeyError:
            raise LookupError(f"no active {alg} signing key: run `idp init`") from None

    def by_kid(self, db: Session, kid: str) -> KeyMaterial | None:
        self._refresh(db)
        material = self._by_kid.get(kid)
        if material is None:
            # A key rotated elsewhere signs tokens on the nodes that have reloaded before this
            # node's cache expires; an unknown kid is looked up again at once (one small SELECT,
            # like the token lookup every bearer check makes anyway).
            self._refresh(db, force=True)
            material = self._by_kid.get(kid)
        return material

    def hint_key(
        self, db: Session, kid: str, *, unpublished_within: timedelta
    ) -> KeyMaterial | None:
        """The key ``kid`` names, for verifying an ID token idp issued that comes back as a hint:
        a published one (``by_kid``), or else one unpublished less than ``unpublished_within``
        ago (``verification_keyset``'s rule: a hint outlives its key's publication while the
        session it was issued in may live)."""
        material = self.by_kid(db, kid)
        if material is not None:
            return material
        unpublished = self._unpublished(db, unpublished_within, SigningKey.kid == kid)
        return unpublished[0] if unpublished else None

    def public_jwks(self, db: Session) -> dict[str, Any]:
        self._refresh(db)
        return {"keys": list(self._published)}

    def verification_keyset(self, db: Session, *, unpublished_within: timedelta) -> KeySet:
        """Every published key, and every key unpublished less than ``unpublished_within`` ago,
        for verifying an ID token we issued (the id_token_hint of RP-initiated logout, which
        RP-Initiated Logout 1.0 section 2 asks to accept after its ``exp`` while its session may
        still be live: the sessions' absolute lifetime). Read afresh: the hint may be signed by a
        key another node started using after this node last loaded its keys, and logouts are
        rare."""
        self._refresh(db, force=True)
        unpublished = self._unpublished(db, unpublished_within)
        return KeySet([m.private_key for m in (*self._by_kid.values(), *unpublished)])

    def _unpublished(self, db: Session, within: timedelta, *where: Any) -> list[KeyMaterial]:
        """The keys unpublished less than ``within`` ago (and matching ``where``): an ID token
        they signed still comes back as a hint while its session may live."""
        now = self.clock.now()
        rows = db.scalars(
            select(SigningKey).where(
                SigningKey.unpublish_after <= now,
                SigningKey.unpublish_after > now - within,
                *where,
            )
        )
        return [self._material(row) for row in rows]

    def _material(self, row: SigningKey) -> KeyMaterial:
        """A stored key, decrypted (the secret key's derived key, idp.services.crypto)."""
        private_key = _import_private(self._decrypt(row.private_jwk_encrypted.encode()))
        return KeyMaterial(
            kid=row.kid, alg=row.alg, private_key=private_key, public_jwk=row.public_jwk
        )

    def _refresh(self, db: Session | scoped_session[Any], *, force: bool = False) -> None:
        if not force and time.monotonic() - self._loaded_at < self._cache_ttl:
            return
        with self._lock:
            if not force and time.monotonic() - self._loaded_at < self._cache_ttl:
                return
            now = self.clock.now()
            rows = _published(db, now)
            by_kid: dict[str, KeyMaterial] = {}
            for row in rows:
                by_kid[row.kid] = self._by_kid.get(row.kid) or self._material(row)
            signers = _signers(rows, now - self.publish_first)
            self._by_kid = by_kid
            self._active = {alg: by_kid[row.kid] for alg, row in signers.items()}
            self._published = [m.public_jwk for m in by_kid.values()]
            self._loaded_at = time.monotonic()


def _published(db: Session | scoped_session[Any], now: datetime) -> Sequence[SigningKey]:
    """The keys in the JWKS at ``now``, newest first."""
    return db.scalars(
        select(SigningKey)
        .where((SigningKey.unpublish_after.is_(None)) | (SigningKey.unpublish_after > now))
        .order_by(SigningKey.created_at.desc())
    ).all()


def _signers(newest_first: Sequence[SigningKey], signs_from: datetime) -> dict[str, SigningKey]:
    """The key that signs for each alg: the newest made at ``signs_from`` or before, that is
    published long enough (``publish_first``); for an alg none of whose keys is (the first
    start: nothing was published before, so nobody holds a JWKS without it), its newest."""
    newest: dict[str, SigningKey] = {}
    settled: dict[str, SigningKey] = {}
    for row in newest_first:
        newest.setdefault(row.alg, row)
        if row.alg not in settled and row.created_at <= signs_from:
            settled[row.alg] = row
    return {**newest, **settled}


def _import_private(raw: bytes) -> AnyKey:
    return import_key(json.loads(raw))


def _is_active() -> Any:
    return SigningKey.retired_at.is_(None)

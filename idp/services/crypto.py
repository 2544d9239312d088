"""Small cryptographic building blocks shared by the services."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import ClassVar

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def token_hash(value: str) -> str:
    """SHA-256 of a high-entropy bearer secret (code, refresh token, session id).

    A plain hash suffices for values with >= 128 bits of entropy: nobody can brute-force them, and
    the database never holds a usable secret.
    """
    return hashlib.sha256(value.encode()).hexdigest()


def new_secret(nbytes: int = 32) -> str:
    """A URL-safe random secret; 32 bytes = 256 bits."""
    return secrets.token_urlsafe(nbytes)


def derive_key(secret_key: str, purpose: str, length: int = 32) -> bytes:
    """Derive an independent key for one purpose from the deployment's secret key (RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose.encode()).derive(
        secret_key.encode()
    )


def fernet_for(secret_key: str, purpose: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(derive_key(secret_key, purpose)))


class KeyedHasher:
    """HMAC-SHA256 under a server key: for stored secrets that must stay useless if the database
    leaks without the configuration (client secrets)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def hash(self, value: str) -> str:
        # The one-shot HMAC (RFC 2104) in OpenSSL: the same digest as ``hmac.new(...)``, without
        # the Python object that copies two hash states (checked on every client authentication).
        return hmac.digest(self._key, value.encode(), "sha256").hex()

    def verify(self, stored: str | None, value: str) -> bool:
        if not stored or not value:
            return False
        return hmac.compare_digest(stored, self.hash(value))


class PageSigner:
    """What a signer of values that a page carries and the browser sends back shares: a
    128-bit tag, HMAC-SHA256 under a key derived from the deployment's secret key for the
    subclass's ``PURPOSE`` alone, so that nobody else can make or change such a value and one
    kind is never taken for another (a signed WebAuthn challenge id, idp.services.challenges; a
    carried authorization request, idp.services.carried_requests)."""

    PURPOSE: ClassVar[str]

    def __init__(self, secret_key: str) -> None:
        self._signer = KeyedHasher(derive_key(secret_key, self.PURPOSE))

    def tag_of(self, text: str) -> str:
        return self._signer.hash(text)[:32]

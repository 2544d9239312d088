"""Per-application collaborators built once from the settings (no Flask imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet

from idp.services.crypto import KeyedHasher, derive_key, fernet_for
from idp.services.passwords import PasswordService
from idp.services.signing_keys import KeyStore
from idp.settings import Settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    keys: KeyStore
    passwords: PasswordService
    client_secrets: KeyedHasher
    #: Keyed hashes for backup codes and for rate-limit keys derived from emails.
    backup_code_hasher: KeyedHasher
    attempt_key_hasher: KeyedHasher
    #: Keyed hashes of device-flow user codes (RFC 8628 5.1: too short for a plain hash).
    user_code_hasher: KeyedHasher
    #: Keyed hashes of admin API tokens (idp.services.api_tokens).
    api_token_hasher: KeyedHasher
    totp_fernet: Fernet
    redis: Any = None

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        key_encryption = fernet_for(settings.secret_key, "idp signing keys at rest")
        longest_token = max(settings.access_token_ttl, settings.id_token_ttl)
        return cls(
            settings=settings,
            keys=KeyStore(
                encrypt=key_encryption.encrypt,
                decrypt=key_encryption.decrypt,
                cache_ttl=settings.key_cache_ttl,
                max_token_lifetime=longest_token,
            ),
            passwords=PasswordService(
                memory_kib=settings.argon2_memory_kib,
                time_cost=settings.argon2_time_cost,
                parallelism=settings.argon2_parallelism,
            ),
            client_secrets=KeyedHasher(derive_key(settings.secret_key, "idp client secrets")),
            backup_code_hasher=KeyedHasher(derive_key(settings.secret_key, "idp backup codes")),
            attempt_key_hasher=KeyedHasher(derive_key(settings.secret_key, "idp attempt keys")),
            user_code_hasher=KeyedHasher(derive_key(settings.secret_key, "idp device user codes")),
            api_token_hasher=KeyedHasher(derive_key(settings.secret_key, "idp api tokens")),
            totp_fernet=fernet_for(settings.secret_key, "idp totp secrets at rest"),
            redis=_redis(settings.redis_url),
        )


def _redis(url: str) -> Any:
    if not url:
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

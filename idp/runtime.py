"""Per-application collaborators built once from the settings (no Flask imports)."""

from __future__ import annotations

from dataclasses import dataclass

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
        )

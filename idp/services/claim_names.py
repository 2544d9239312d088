"""Which names a claim map may give its claim, and which scopes release mapped claims.

A mapped claim must never shadow a claim whose meaning a relying party relies on: the registered
JWT claims (RFC 7519 4.1), the ID token's claims (OIDC Core 2, 7.4), the standard claims (OIDC Core
5.1) and scopes (5.4), a security event token's (RFC 8417 2.2: a logout token's), the access
token's (RFC 9068 2.2, RFC 8693 4), and idp's own ``groups``.
"""

from __future__ import annotations

import re

#: A claim name a map may use; also the name of the scope that releases it on its own.
CLAIM_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

RESERVED_CLAIMS = frozenset(
    {
        # RFC 7519 4.1
        "iss", "sub", "aud", "exp", "nbf", "iat", "jti",
        # OIDC Core 2 (ID token) and 3.1.3.6, 3.3.2.11
        "auth_time", "nonce", "acr", "amr", "azp", "at_hash", "c_hash", "s_hash", "sid",
        # OIDC Core 5.1 standard claims
        "name", "given_name", "family_name", "middle_name", "nickname", "preferred_username",
        "profile", "picture", "website", "email", "email_verified", "gender", "birthdate",
        "zoneinfo", "locale", "phone_number", "phone_number_verified", "address", "updated_at",
        # OIDC Core 5.6.2 aggregated and distributed claims
        "_claim_names", "_claim_sources",
        # OIDC Core 7.4 (a self-issued ID token's key)
        "sub_jwk",
        # OIDC Core 5.4: the scope of phone_number and phone_number_verified (address and the
        # others are claims above); a mapped claim's scope of that name would redefine it
        "phone",
        # RFC 8417 2.2 and Back-Channel Logout 1.0 2.4: what makes a JWT a logout token
        "events", "txn", "toe",
        # RFC 9068 2.2 and RFC 8693 4
        "client_id", "scope", "cnf", "act", "may_act", "typ",
        # idp's own claim, and the scopes that are not claims
        "groups", "openid", "offline_access",
    }
)  # fmt: skip


def is_claim_scope(scope: str) -> bool:
    """A client may be allowed a scope named after a mapped claim (claim maps are
    released by ``groups`` or by a scope of the claim's own name)."""
    return bool(CLAIM_NAME.fullmatch(scope)) and scope not in RESERVED_CLAIMS

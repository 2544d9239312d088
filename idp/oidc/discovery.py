"""OpenID Provider metadata: complete and truthful (advertise only what works)."""

from __future__ import annotations

from typing import Any

from idp.oidc.checks import PROMPT_VALUES
from idp.oidc.client_auth import CLIENT_ASSERTION_ALGS
from idp.services.assurance import ACR_VALUES_SUPPORTED
from idp.services.device import DEVICE_CODE_GRANT_TYPE
from idp.services.dpop import DPOP_ALGS
from idp.services.signing_keys import SUPPORTED_ALGS
from idp.settings import Settings


def provider_metadata(settings: Settings) -> dict[str, Any]:
    endpoint = settings.endpoint
    auth_methods = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
    return {
        "issuer": settings.issuer,
        "authorization_endpoint": endpoint("/authorize"),
        "token_endpoint": endpoint("/token"),
        "userinfo_endpoint": endpoint("/userinfo"),
        "jwks_uri": endpoint("/jwks"),
        "revocation_endpoint": endpoint("/revoke"),
        "introspection_endpoint": endpoint("/introspect"),
        "end_session_endpoint": endpoint("/logout"),
        # RFC 8628 4: the device authorization endpoint, for clients allowed the device grant.
        "device_authorization_endpoint": endpoint("/device_authorization"),
        # RFC 9126 5: the PAR endpoint, and whether every client must use it (each client's own
        # requirement, RFC 9126 6, is its registration's).
        "pushed_authorization_request_endpoint": endpoint("/par"),
        "require_pushed_authorization_requests": settings.require_pushed_authorization_requests,
        "scopes_supported": ["openid", "profile", "email", "offline_access", "groups"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post"],
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            DEVICE_CODE_GRANT_TYPE,
        ],
        # OIDC Core 8: each client's own choice (idp.services.subjects).
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": list(SUPPORTED_ALGS),
        "token_endpoint_auth_methods_supported": auth_methods,
        # RFC 8414 2: with private_key_jwt among an endpoint's methods, its algorithms MUST be
        # listed too ("No default algorithms are implied").
        "token_endpoint_auth_signing_alg_values_supported": list(CLIENT_ASSERTION_ALGS),
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": list(CLIENT_ASSERTION_ALGS),
        "introspection_endpoint_auth_methods_supported": auth_methods[:3],
        "introspection_endpoint_auth_signing_alg_values_supported": list(CLIENT_ASSERTION_ALGS),
        "code_challenge_methods_supported": ["S256"],
        # RFC 9449 5.1: the token endpoint and userinfo take DPoP proofs signed with these.
        "dpop_signing_alg_values_supported": list(DPOP_ALGS),
        "prompt_values_supported": sorted(PROMPT_VALUES),
        "acr_values_supported": ACR_VALUES_SUPPORTED,
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "acr",
            "amr",
            "sid",
            "at_hash",
            "name",
            "preferred_username",
            "email",
            "email_verified",
            "groups",
        ],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "frontchannel_logout_supported": False,
        # OpenID Connect Back-Channel Logout 1.0 section 2.1 (idp.services.backchannel_logout):
        # logout tokens always carry ``sid``.
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }

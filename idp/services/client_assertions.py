"""Which audience a ``private_key_jwt`` client assertion may name (RFC 7523 3 item 3 as
draft-ietf-oauth-rfc7523bis section 4 replaces it).

The audience-injection attack: a client that uses one key with several authorization servers
signs an assertion for whatever token endpoint a server's metadata names. A malicious server
publishes idp's token endpoint as its own, receives an assertion whose ``aud`` is idp's token
endpoint, and replays it here as the client. An issuer identifier cannot be borrowed that way
(a client checks that the metadata it fetched names the issuer it asked for, RFC 8414 3.3), so
the update requires the issuer identifier as the assertion's sole audience and the server to
reject any other.

idp holds every assertion to that, except while an operator lets clients that still send the
token endpoint (or the device authorization endpoint) migrate: ``client_assertion_endpoint_
audiences``. Even then an assertion typed ``client-authentication+jwt`` is held to the new
rule: its client declares that it follows it (draft-ietf-oauth-rfc7523bis 4, Client
Authentication Processing), so refusing anything else there costs no client anything."""

from __future__ import annotations

from collections.abc import Iterable

#: The explicit type draft-ietf-oauth-rfc7523bis 4 defines for client authentication JWTs.
CLIENT_AUTHENTICATION_TYP = "client-authentication+jwt"


def explicitly_typed(typ: object) -> bool:
    """The header's ``typ`` is ``client-authentication+jwt`` (RFC 7515 4.1.9: compared without
    case, and the ``application/`` prefix may be left out)."""
    if not isinstance(typ, str):
        return False
    value = typ.lower()
    return value.removeprefix("application/") == CLIENT_AUTHENTICATION_TYP


def _sole_value(aud: object) -> str | None:
    """The audience's one value: a string, or an array of exactly one string (the update allows
    a single-valued array; RFC 7519 4.1.3)."""
    if isinstance(aud, str):
        return aud
    if isinstance(aud, list) and len(aud) == 1 and isinstance(aud[0], str):
        return aud[0]
    return None


def audience_refusal(
    aud: object,
    typ: object,
    issuer: str,
    endpoints: Iterable[str],
    endpoints_allowed: bool,
) -> str | None:
    """Why a client assertion's ``aud`` is refused, or None. ``endpoints`` are the URLs RFC 7523
    had clients name (the token endpoint; the device authorization endpoint, RFC 8628 3.1),
    accepted only with ``endpoints_allowed`` and only from an assertion not typed as following
    the update. Values compare as whole strings (RFC 3986 6.2.1, Simple String Comparison)."""
    if _sole_value(aud) == issuer:
        return None
    if endpoints_allowed and not explicitly_typed(typ):
        accepted = {issuer, *endpoints}
        named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        # RFC 7523 3 as first published: the audience contains a value naming this server.
        if any(isinstance(value, str) and value in accepted for value in named):
            return None
    return f"The assertion's 'aud' must be the issuer identifier {issuer} as its only value."

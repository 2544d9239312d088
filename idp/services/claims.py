"""Which user claims each scope releases (OIDC Core 5.4)."""

from __future__ import annotations

from typing import Any

from idp.models import User

#: What each scope lets an application do, in the words the consent and apps pages use.
SCOPE_DESCRIPTIONS = {
    "openid": "know who you are",
    "profile": "see your name",
    "email": "see your email address",
    "offline_access": "stay connected when you are not using it",
}


def describe_scope(scope: str) -> str:
    return SCOPE_DESCRIPTIONS.get(scope, scope)


def user_claims(user: User, scope: str) -> dict[str, Any]:
    scopes = set(scope.split())
    claims: dict[str, Any] = {"sub": user.id}
    if "profile" in scopes:
        claims["name"] = user.name
        claims["preferred_username"] = user.email
    if "email" in scopes:
        claims["email"] = user.email
        claims["email_verified"] = user.email_verified
    return claims

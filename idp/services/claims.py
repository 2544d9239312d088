"""Which user claims each scope releases (OIDC Core 5.4)."""

from __future__ import annotations

from typing import Any

from idp.models import User


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

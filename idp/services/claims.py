"""Which user claims each scope releases (OIDC Core 5.4)."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.orm import Session, scoped_session

from idp.models import User
from idp.services.group_access import GroupClaims, group_claims, released_claims, wants_group_claims

#: What each scope lets an application do, in the words the consent and apps pages use.
SCOPE_DESCRIPTIONS = {
    "openid": "know who you are",
    "profile": "see your name",
    "email": "see your email address",
    "offline_access": "stay connected when you are not using it",
    "groups": "see the groups you belong to, and the roles they give you there",
}


def describe_scope(scope: str) -> str:
    # Any other scope a client may be allowed is a mapped claim's own (idp.services.claim_names).
    return SCOPE_DESCRIPTIONS.get(scope, f"see your {scope} there, from your groups")


class ClaimsSubject(Protocol):
    """What the standard claims are made of: a ``User``, or the columns the userinfo endpoint
    read with the access token (idp.services.tokens.TokenHolder)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def email_verified(self) -> bool: ...


def user_claims(user: ClaimsSubject, scope: str, subject: str | None = None) -> dict[str, Any]:
    """``subject``: the ``sub`` the client knows the user by (idp.services.subjects); the user's
    id when None (a public client's)."""
    scopes = set(scope.split())
    claims: dict[str, Any] = {"sub": user.id if subject is None else subject}
    if "profile" in scopes:
        if user.name:
            # OIDC Core 5.3.2: a claim without a value is omitted, "not present with a null or
            # empty string value" (the name is optional).
            claims["name"] = user.name
        # OIDC Core 5.4 puts preferred_username under profile; idp's is the email address, which
        # a user consents to share under email only (the consent page: "profile", your name).
        if "email" in scopes:
            claims["preferred_username"] = user.email
    if "email" in scopes:
        claims["email"] = user.email
        claims["email_verified"] = user.email_verified
    return claims


def client_claims(
    db: Session | scoped_session[Any],
    user: ClaimsSubject,
    client_id: str,
    scope: str,
    found: GroupClaims | None = None,
    subject: str | None = None,
) -> dict[str, Any]:
    """Everything the ID token and userinfo release to ``client_id`` under ``scope``: the
    standard claims (``sub`` the client's own, ``subject``: OIDC Core 8), then ``groups`` and the
    client's mapped claims (one query, only when a scope can release them, and none when the
    caller has ``found`` them already)."""
    claims = user_claims(user, scope, subject)
    scopes = scope.split()
    if wants_group_claims(scopes):
        if found is None:
            found = group_claims(db, user.id, client_id)
        claims.update(released_claims(found, scopes))
    return claims


def shared_with_apps(db: Session, user: User, apps: list[Any]) -> dict[str, dict[str, Any]]:
    """For the portal's connected apps: what each app receives under the scopes the user agreed
    to, keyed by client id (the claims the ID token and userinfo would carry, but ``sub``)."""
    shared: dict[str, dict[str, Any]] = {}
    for app in apps:
        claims = client_claims(db, user, app.client.client_id, " ".join(app.scopes))
        claims.pop("sub", None)
        shared[app.client.client_id] = claims
    return shared

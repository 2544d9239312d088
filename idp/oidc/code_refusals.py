"""A token request refused after it spent its code, refresh token or device code takes the grant
back (RFC 6749 4.1.3, 6; RFC 8628 3.5).

The code is spent before any other check (idp.oidc.server ``query_authorization_code``: a replay
revokes the grant), so a refusal after the spend (a ``redirect_uri`` other than the
authorization request's, RFC 6749 4.1.3; a ``code_verifier`` that is missing, unexpected or does
not match, RFC 7636 4.6 and RFC 9700 4.8; any later OAuth error) leaves a grant whose only code
is spent and which holds no token: nothing can ever issue one, and pruning keeps a grant whose
code was spent (idp.services.retention ``take_back_unredeemed``). The refusal revokes it in the
spend's own transaction, the rotation's when it was sent apart (idp.oidc.rotation), else the
``Session`` the token view commits with the error answer. A code the spend's own reads refuse
(expired, its user or client disabled) has its grant taken back by the spend itself
(idp.services.spent_codes ``spent_code``).

A refresh token or a device code spent and then refused is the same (RFC 9700 4.14.2: a spent
refresh token presented again is a replay that revokes the grant anyway, so the client's retry
could only revoke it later): expired, its grant or user or client refused by the spend's own
reads, or any OAuth error after the spend. ``remember_spend`` names the grant once spent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidGrantError

from idp.composition import clock, services
from idp.services.spent_codes import (
    REFUSED_EXCHANGE,
    REFUSED_REDIRECT_URI,
    TAKE_BACK_GRANT,
    SpentCode,
)


def check_redirect_uri(request: Any, code: SpentCode) -> None:
    """Remember the code ``request`` spent, for ``take_back``, and refuse a ``redirect_uri`` other
    than its authorization request's (RFC 6749 4.1.3: identical; Authlib's own check, which
    comes next, then never refuses), naming the refusal for the grant's revocation."""
    remember_spend(request, code.grant.id)
    if code.redirect_uri != request.payload.redirect_uri:
        request.exchange_refusal = REFUSED_REDIRECT_URI
        raise InvalidGrantError("Invalid 'redirect_uri' in request.")


@contextmanager
def refused_as(request: Any, reason: str) -> Iterator[None]:
    """An OAuth refusal raised inside is named ``reason`` when ``take_back`` revokes the grant."""
    try:
        yield
    except OAuth2Error:
        request.exchange_refusal = reason
        raise


def remember_spend(request: Any, grant_id: str, refusal: str | None = None) -> None:
    """``request`` spent a secret of grant ``grant_id``: a refusal from now on takes it back,
    named ``refusal`` unless a later check names its own."""
    request.spent_grant = grant_id
    if refusal is not None:
        request.exchange_refusal = refusal


def take_back(request: Any, default: str = REFUSED_EXCHANGE) -> None:
    """Revoke the grant whose secret ``request`` spent, if any, in the spend's transaction (a
    grant revoked already keeps its reason)."""
    grant_id: str | None = getattr(request, "spent_grant", None)
    if grant_id is None:
        return
    reason = getattr(request, "exchange_refusal", None) or default
    now = clock().now()
    rotation = getattr(request, "rotation", None)
    if rotation is not None and rotation.open:
        rotation.write(TAKE_BACK_GRANT, {"grant": grant_id, "now": now, "reason": reason})
    else:
        services().grants.revoke_grant(grant_id, reason, now)

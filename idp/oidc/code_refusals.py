"""A code exchange refused after its code was spent takes its grant back (RFC 6749 4.1.3).

The code is spent before any other check (idp.oidc.server ``query_authorization_code``: a replay
revokes the grant), so a refusal after the spend (a ``redirect_uri`` other than the
authorization request's, RFC 6749 4.1.3; a ``code_verifier`` that is missing, unexpected or does
not match, RFC 7636 4.6 and RFC 9700 4.8; any later OAuth error) leaves a grant whose only code
is spent and which holds no token: nothing can ever issue one, and pruning keeps a grant whose
code was spent (idp.services.retention ``take_back_unredeemed``). The refusal revokes it in the
spend's own transaction, the rotation's when it was sent apart (idp.oidc.rotation), else the
``Session`` the token view commits with the error answer."""

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
    request.spent_code = code
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


def take_back(request: Any) -> None:
    """Revoke the grant of the code ``request`` spent, if any, in the spend's transaction."""
    code: SpentCode | None = getattr(request, "spent_code", None)
    if code is None:
        return
    reason = getattr(request, "exchange_refusal", None) or REFUSED_EXCHANGE
    now = clock().now()
    rotation = getattr(request, "rotation", None)
    if rotation is not None and rotation.open:
        rotation.write(TAKE_BACK_GRANT, {"grant": code.grant.id, "now": now, "reason": reason})
    else:
        services().grants.revoke_grant(code.grant.id, reason, now)

"""Typed errors of the authorization endpoint, mapped to responses in one place (views)."""

from __future__ import annotations


class AuthorizationError(Exception):
    """An authorization request failed a check.

    ``redirectable`` is False until the client and its redirect URI are known to be valid: before
    that the error is shown on a page and never sent to an unverified URI (RFC 6749 4.1.2.1,
    RFC 9700 4.11: no open redirect).
    """

    def __init__(self, error: str, description: str, *, redirectable: bool = True) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirectable = redirectable
        # Where a redirectable error goes, filled in once the redirect URI has been verified.
        self.redirect_uri: str | None = None
        self.state: str | None = None
        self.response_mode = "query"


def page_error(description: str) -> AuthorizationError:
    return AuthorizationError("invalid_request", description, redirectable=False)

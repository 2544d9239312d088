"""Typed errors of the authorization endpoint, mapped to responses in one place (views), and what
any error description may hold (RFC 6749 5.2)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from authlib.oauth2 import OAuth2Error

from idp.services.anonymous import budget_refused

#: RFC 6749 4.1.2.1 and 5.2: an error description holds only %x20-21 / %x23-5B / %x5D-7E
#: (printable ASCII but the double quote and the backslash).
_NOT_IN_A_DESCRIPTION = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def error_description(text: str) -> str:
    """``text`` as an error description may hold it (RFC 6749 5.2): each character it may not
    hold is a ``?``. For a description that quotes the request (a parameter's name, a JOSE header
    value in a verifier's message): Authlib refuses to build an error around any other, a 500."""
    return _NOT_IN_A_DESCRIPTION.sub("?", text)


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


class BudgetSpentError(OAuth2Error):
    """A token-side request over a budget or rate limit (docs/operations.md, "Storage budgets"):
    429 (RFC 6585 4; RFC 9126 2.3 names it for PAR) with RFC 6749 4.1.2.1's
    ``temporarily_unavailable``, and ``Retry-After`` saying when the budget counted in ``window``
    frees a slot (RFC 9110 10.2.3, ``idp.services.anonymous.retry_after``), so that a client
    comes back then rather than at once or never. Each budget's refusal is a subclass with its
    own description; ``budget`` names the budget the refusal is counted under
    (``idp_budget_refusals_total``)."""

    error = "temporarily_unavailable"
    status_code = 429

    def __init__(
        self, budget: str, window: timedelta, now: datetime, description: str | None = None
    ) -> None:
        super().__init__(description=description)
        self.retry_after = budget_refused(budget, window, now)

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[Any] = super().get_headers()
        return [*headers, ("Retry-After", str(self.retry_after))]

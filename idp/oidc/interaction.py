"""What a valid authorization request needs next: a sign-in, consent, or the code.

Pure decisions over the request, the browser session and the stored consent, so that every
prompt / max_age / acr rule is testable without HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from idp.models import BrowserSession, Client
from idp.oidc.checks import AuthorizationRequest
from idp.oidc.errors import AuthorizationError
from idp.services.assurance import satisfies


class Next(Enum):
    LOGIN = "login"
    CONSENT = "consent"
    ISSUE_CODE = "issue_code"


@dataclass(frozen=True)
class InteractionState:
    """What happened during this request's interaction (stored with the pending request)."""

    #: When the pending request was created: a sign-in after it is a fresh one for this request.
    started_at: datetime | None = None
    consent_given: bool = False


def needs_login(
    request: AuthorizationRequest,
    session: BrowserSession | None,
    state: InteractionState,
    now: datetime,
) -> bool:
    if session is None or session.restricted:
        # A recovery session may only add a sign-in method; it never authorizes a client.
        return True
    if signed_in_for_the_request(session, state):
        # A sign-in completed for this very request satisfies prompt=login, max_age and the
        # (voluntary, OIDC Core 5.5.1.1) acr request; the ID token reports what was achieved.
        # Not another user than the id_token_hint names: ``decide`` answers that with an error.
        return False
    # OIDC Core 3.1.2.1 prompt=login and select_account: the user must sign in (again).
    if "login" in request.prompt or "select_account" in request.prompt:
        return True
    # OIDC Core 3.1.2.1 max_age: re-authenticate when the last sign-in is older.
    if request.max_age is not None and session.auth_time + timedelta(seconds=request.max_age) < now:
        return True
    # A request for a stronger acr than the session has steps the user up.
    if not satisfies(session.acr, request.acr_values):
        return True
    # OIDC Core 3.1.2.1 id_token_hint: the client expects a particular user.
    return request.id_token_hint_sub is not None and request.id_token_hint_sub != session.user_id


def hint_names_another_user(
    request: AuthorizationRequest, session: BrowserSession | None, state: InteractionState
) -> bool:
    """Whether a sign-in completed for this request is another user's than the id_token_hint's
    (a session from before the request is asked to sign in again instead: ``needs_login``)."""
    if session is None or session.restricted or request.id_token_hint_sub is None:
        return False
    return signed_in_for_the_request(session, state) and (
        request.id_token_hint_sub != session.user_id
    )


def signed_in_for_the_request(session: BrowserSession, state: InteractionState) -> bool:
    """Whether ``session`` began with a sign-in completed for this very request."""
    return state.started_at is not None and session.auth_time >= state.started_at


def needs_consent(
    request: AuthorizationRequest,
    client: Client,
    consented_scopes: set[str] | None,
    state: InteractionState,
) -> bool:
    if client.first_party:
        return False
    if "consent" in request.prompt and not state.consent_given:
        return True
    if state.consent_given:
        return False
    return consented_scopes is None or not set(request.scope.split()) <= consented_scopes


def decide(
    request: AuthorizationRequest,
    client: Client,
    session: BrowserSession | None,
    consented_scopes: set[str] | None,
    state: InteractionState,
    now: datetime,
) -> Next:
    """Raise the prompt=none errors of OIDC Core 3.1.2.6, or say what comes next."""
    interactive = "none" not in request.prompt
    if hint_names_another_user(request, session, state):
        # OIDC Core 3.1.2.1 id_token_hint: the user the client expects is neither signed in nor
        # "logged in by the request" (someone else signed in on its page): "SHOULD return an
        # error, such as login_required", rather than a code for someone else.
        raise AuthorizationError("login_required", "Another user than the hint names signed in.")
    if needs_login(request, session, state, now):
        if not interactive:
            raise AuthorizationError("login_required", "The user is not signed in.")
        return Next.LOGIN
    if needs_consent(request, client, consented_scopes, state):
        if not interactive:
            raise AuthorizationError("consent_required", "The user has not consented.")
        return Next.CONSENT
    return Next.ISSUE_CODE

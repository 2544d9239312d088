"""The id_token_hint's ``sub`` read back as a user (OIDC Core 3.1.2.1 and 8.1)."""

from __future__ import annotations

from dataclasses import replace

from idp.composition import runtime
from idp.extensions import db
from idp.models import BrowserSession, Client
from idp.oidc.checks import AuthorizationRequest


def hint_in_user_ids(
    request: AuthorizationRequest, client: Client, session: BrowserSession | None
) -> AuthorizationRequest:
    """``request`` with its id_token_hint's ``sub`` as the signed-in user's id when it names
    them: the hint carries the ``sub`` the client knows the user by, pairwise for a pairwise
    client (OIDC Core 8.1), which no one can turn back into a user without a guess. The
    session's user is the one guess the decisions need (idp.oidc.interaction compares the hint
    with the session's user): a hint of anyone else stays as it came and matches nobody. A
    ``sub`` the client was given before a change of its subjects names the user too
    (``SubjectIdentifiers.names``)."""
    hinted = request.id_token_hint_sub
    if hinted is None or session is None or hinted == session.user_id:
        return request
    if not runtime().subjects.names(db.session, client, session.user_id, hinted):
        return request
    return replace(request, id_token_hint_sub=session.user_id)

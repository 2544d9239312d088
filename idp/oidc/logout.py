"""Ending a browser session for RP-initiated logout."""

from __future__ import annotations

from typing import Any

from flask import g
from sqlalchemy import select, update

from idp.extensions import db
from idp.models import AccessToken, BrowserSession, Grant
from idp.models.base import utcnow
from idp.services import audit
from idp.services.grants import GrantService
from idp.web import current_session, request_context


def end_browser_session(id_token_claims: dict[str, Any] | None) -> None:
    """End the session named by the ID token's ``sid`` (or the current one) and the tokens it
    authorised. Grants with offline_access keep their refresh tokens: OIDC Core 11 offline access
    exists to outlive the user's session; their access tokens still end now."""
    now = utcnow()
    sessions: dict[str, BrowserSession] = {}
    sid = (id_token_claims or {}).get("sid")
    if isinstance(sid, str):
        named = db.session.scalar(select(BrowserSession).where(BrowserSession.sid == sid))
        if named is not None:
            sessions[named.sid] = named
    current = current_session()
    if current is not None and (
        id_token_claims is None or current.user_id == id_token_claims.get("sub")
    ):
        sessions[current.sid] = current
    grants = GrantService(db.session())
    for session in sessions.values():
        session.revoked_at = now
        for grant in db.session.scalars(
            select(Grant).where(Grant.sid == session.sid, Grant.revoked_at.is_(None))
        ):
            if "offline_access" in grant.scope.split():
                db.session.execute(
                    update(AccessToken)
                    .where(AccessToken.grant_id == grant.id, AccessToken.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
            else:
                grants.revoke_grant(grant.id, "logout", now)
        audit.record(
            db.session(),
            "logout",
            subject_id=session.user_id,
            context=request_context(),
            sid=session.sid,
        )
    g.idp_session_ended = True

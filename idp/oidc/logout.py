"""Ending a browser session for RP-initiated logout."""

from __future__ import annotations

from flask import g
from sqlalchemy import select, update

from idp.extensions import db
from idp.models import AccessToken, BrowserSession, Grant
from idp.models.base import utcnow
from idp.services import audit
from idp.services.grants import GrantService
from idp.web import request_context


def end_browser_session(session: BrowserSession | None) -> None:
    """End this browser's session (``session``, decided by the view: only ever the requesting
    browser's own, ``idp.services.sessions.rp_logout``) and the tokens it authorised. Grants with
    offline_access keep their refresh tokens: OIDC Core 11 offline access exists to outlive the
    user's session; their access tokens still end now."""
    if session is None:
        return
    now = utcnow()
    grants = GrantService(db.session())
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
        db.session(), "logout", subject_id=session.user_id, context=request_context(),
        sid=session.sid,
    )  # fmt: skip
    g.idp_session_ended = True

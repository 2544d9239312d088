"""An admin API token stands on the authority of the admin who created it (docs/api.md, Tokens).

A token made in the console records its creator (``api_tokens.created_by``); one made with
``idp api-tokens create`` has none, the operator of the host standing behind it. An admin's
token is worth what the admin is: when they are disabled, lose the admin role or are deleted,
the tokens they created are revoked in the same transaction (``revoke_created_by``, called by
idp.services.user_admin.UserAdmin from the console, the API and the CLI alike), for good: an
admin enabled or promoted again makes new tokens. Authentication checks the creator too
(``creator_refusal``), so a token whose creator left another way (by a node still on a version
without this rule, during a rolling upgrade) is refused all the same. Creating a token holds the
creator's row (``lock_creator``), so a creation racing the creator's demotion either committed
first, and the demotion revokes it, or finds the creator no longer an admin.

No Flask: the console, the CLI and the API share it. The precedent is Okta's: an API token is
deactivated when its creating admin is deactivated or loses admin privileges.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from idp.models import ApiToken, User
from idp.services import audit

#: Why a token with a creator does not work, as audited (``reason``) and stored
#: (``api_tokens.revoked_reason``).
CREATOR_DISABLED = "creator_disabled"
CREATOR_DEMOTED = "creator_demoted"
CREATOR_DELETED = "creator_deleted"
#: What the console and the CLI say of each.
WHY = {
    CREATOR_DISABLED: "its creator was disabled",
    CREATOR_DEMOTED: "its creator is no longer an admin",
    CREATOR_DELETED: "its creator was deleted",
}


def creator_id_of(actor_id: str | None) -> str | None:
    """The user a new token stands on: None when made by the operator's command line."""
    return None if actor_id in (None, audit.CLI_ACTOR) else actor_id


def creator_refusal(created_by: str | None, creator: User | None) -> str | None:
    """Why a token created by ``created_by`` (its row ``creator``, None once deleted) must not
    work, or None while its creator is an active admin or it has no creator."""
    if creator_id_of(created_by) is None:
        return None
    if creator is None:
        return CREATOR_DELETED
    if creator.disabled_at is not None:
        return CREATOR_DISABLED
    if not creator.is_admin:
        return CREATOR_DEMOTED
    return None


def lock_creator(db: Session, creator_id: str) -> str | None:
    """Hold the creator's row to the end of the transaction (PostgreSQL's row lock, SQLite's write
    lock: what ``UserAdmin`` holds while it disables, demotes or deletes an admin) and say why
    they may not create a token now, or None."""
    creator = db.get(User, creator_id, with_for_update=True, populate_existing=True)
    return creator_refusal(creator_id, creator)


def revoke_created_by(
    db: Session, creator: User, now: datetime, reason: str, record: Callable[..., Any]
) -> list[str]:
    """Revoke every live token ``creator`` made, each audited ``api_token.revoked`` with the
    reason by ``record(kind, creator, **details)`` (the audit of the change that ends them: its
    actor, its surface); the names revoked. One conditional UPDATE: a token revoked meanwhile by
    hand is neither revoked nor audited twice."""
    names = sorted(
        db.scalars(
            update(ApiToken)
            .where(ApiToken.created_by == creator.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .returning(ApiToken.name)
            .execution_options(synchronize_session="fetch")
        )
    )
    for name in names:
        record("api_token.revoked", creator, token=name, reason=reason)
    return names

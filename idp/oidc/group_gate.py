"""Access follows group membership at the token endpoint (docs/admins.md, "Groups"): the check
every grant that redeems something (a code, a refresh token, a device code) makes before it
issues tokens."""

from __future__ import annotations

from typing import Any

from flask import g

from idp.composition import clock
from idp.extensions import db
from idp.models import Client, Grant
from idp.services.group_access import group_claims, revoke_for_lost_access
from idp.services.refresh_tokens import RotatedGrant
from idp.services.spent_codes import CodeGrant


def still_allowed(
    grant: Grant | RotatedGrant | CodeGrant,
    client: Client,
    *,
    restricted_as_stored: bool = False,
    request: Any = None,
    issued_before: bool = False,
) -> bool:
    """Access follows membership (docs/admins.md): a user who left the client's allowed groups
    while a code or refresh token was on its way gets nothing from it (RFC 6749 5.2
    ``invalid_grant``), and the grant is revoked as leaving the group revokes it.

    Restricted is what this process's cached registration says or what the redemption read of
    the stored one (``restricted_as_stored``, in the spend's own statement: no query added). The
    restriction revokes the grants of users outside the groups in its transaction, but not a
    grant an authorization opened at the same moment from the registration as it was before
    (it checked no membership, and committed after the revocation ran); on another node or
    worker the cached copy still says unrestricted for ``client_cache_ttl``, and that grant's
    code, redeemed there, would have issued tokens to a user the client no longer admits.

    For a restricted client the check reads the user's groups and the client's claim maps in
    the same statement, kept for the ID token of this request (``generate_user_info``), so that a
    sign-in with groups costs one query at the token endpoint, not two. A refusal inside a spend
    sent apart from the ``Session`` (``request.rotation``, idp.oidc.rotation) rolls that back
    first: the grant's revocation is written through the ``Session`` (on SQLite, the spend's
    transaction holds the one write lock), and a revoked grant's code or token issues nothing."""
    if not (client.restricted_to_groups or restricted_as_stored):
        return True
    found = group_claims(db.session(), grant.user_id, client.client_id)
    if found.in_allowed_group:
        g.group_claims = (grant.user_id, client.client_id, found)
        return True
    rotation = getattr(request, "rotation", None)
    if rotation is not None:
        rotation.rollback()
        request.rotation = None
    # A refresh (``issued_before``): the client holds an ID token of the grant, and is told
    # its access ended (Back-Channel Logout 1.0 2.7), as leaving the group tells it.
    revoke_for_lost_access(db.session(), grant.id, clock().now(), told=issued_before)
    return False

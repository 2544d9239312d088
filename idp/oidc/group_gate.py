"""Access follows group membership at the token endpoint (docs/admins.md, "Groups"): the check
every grant that redeems something (a code, a refresh token, a device code) makes before it
issues tokens."""

from __future__ import annotations

from flask import g

from idp.composition import clock, services
from idp.extensions import db
from idp.models import Client, Grant
from idp.services.group_access import GROUP_ACCESS_REVOKED, group_claims
from idp.services.refresh_tokens import RotatedGrant
from idp.services.spent_codes import CodeGrant


def still_allowed(grant: Grant | RotatedGrant | CodeGrant, client: Client) -> bool:
    """Access follows membership (docs/admins.md): a user who left the client's allowed groups
    while a code or refresh token was on its way gets nothing from it (RFC 6749 5.2
    ``invalid_grant``), and the grant is revoked as leaving the group revokes it.

    For a restricted client the check reads the user's groups and the client's claim maps in
    the same statement, kept for the ID token of this request (``generate_user_info``), so that a
    sign-in with groups costs one query at the token endpoint, not two."""
    if not client.restricted_to_groups:
        return True
    found = group_claims(db.session(), grant.user_id, client.client_id)
    if found.admits(client):
        g.group_claims = (grant.user_id, client.client_id, found)
        return True
    services().grants.revoke_grant(grant.id, GROUP_ACCESS_REVOKED, clock().now())
    return False

"""A code exchange refused after the code was spent leaves nothing behind (idp.oidc.code_refusals):
the code is spent before any other check, so a refusal after it (the user taken out of the
client's allowed groups between /authorize and /token, docs/admins.md "Groups, per-app access
and claim maps"; a ``redirect_uri`` other than the authorization request's, RFC 6749 4.1.3; a
``code_verifier`` that does not match, RFC 7636 4.6) left a live grant with a spent code and no
token, which pruning keeps. The real HTTP path on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update

from idp.extensions import db
from idp.models import Client, Grant
from idp.services.group_access import GROUP_ACCESS_REVOKED
from idp.services.groups import GroupService
from idp.services.spent_codes import REFUSED_CODE_VERIFIER, REFUSED_REDIRECT_URI
from tests.support.factories import CreatedUser, change, create_client, create_user, rows
from tests.support.flow import RelyingParty

SCOPE = "openid profile offline_access"


def _groups(app: Flask, act: Callable[[GroupService], Any]) -> None:
    with app.app_context():
        act(GroupService(db.session()))
        db.session.commit()


def _out_of_the_group(app: Flask, rp: RelyingParty, user: CreatedUser) -> tuple[str, dict]:
    """Taken out of the client's one allowed group once the code was issued."""
    client_id = rp.registered.client_id

    def restrict(s: GroupService) -> None:
        s.add_members(s.create("staff"), s.find_users([user.email]))
        s.set_allowed_groups(db.session.get(Client, client_id), ["staff"])

    _groups(app, restrict)
    code = rp.obtain_code(user, scope=SCOPE)["code"]
    _groups(app, lambda s: s.remove_members(s.require("staff"), s.find_users([user.email])))
    return code, {}


def _out_of_the_group_missed(app: Flask, rp: RelyingParty, user: CreatedUser) -> tuple[str, dict]:
    """The same, the removal's own revocation having missed the grant (its transaction
    interleaved with the code's): the token endpoint's check is what refuses."""
    code, sent = _out_of_the_group(app, rp, user)
    change(app, update(Grant).values(revoked_at=None, revoked_reason=None))
    return code, sent


def _other_redirect_uri(app: Flask, rp: RelyingParty, user: CreatedUser) -> tuple[str, dict]:
    code = rp.obtain_code(user, scope=SCOPE)["code"]
    return code, {"redirect_uri": rp.registered.redirect_uri + "/other"}


def _wrong_verifier(app: Flask, rp: RelyingParty, user: CreatedUser) -> tuple[str, dict]:
    code = rp.obtain_code(user, scope=SCOPE)["code"]
    return code, {"code_verifier": "v" * 43}


REFUSALS = {
    "group": (_out_of_the_group, GROUP_ACCESS_REVOKED),
    "group_missed": (_out_of_the_group_missed, GROUP_ACCESS_REVOKED),
    "redirect_uri": (_other_redirect_uri, REFUSED_REDIRECT_URI),
    "code_verifier": (_wrong_verifier, REFUSED_CODE_VERIFIER),
}


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_a_code_exchange_refused_after_the_spend_takes_its_grant_back(
    storage_app: Flask, refusal: str
) -> None:
    """Refused after the code's spend: the grant is revoked (its reason names the refusal) in the
    spend's transaction, the code can be used no more (the corrected request is refused too),
    and the portal shows no connected app."""
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    scene, reason = REFUSALS[refusal]
    code, sent = scene(storage_app, rp, user)
    refused = rp.exchange(code, **sent)
    assert refused.status_code == 400, refused.text
    assert refused.get_json()["error"] == "invalid_grant"
    [grant] = rows(storage_app, Grant, Grant.user_id == user.id)
    assert (grant.revoked_at is not None, grant.revoked_reason) == (True, reason)
    again = rp.exchange(code)
    assert (again.status_code, again.get_json()["error"]) == (400, "invalid_grant")
    [grant] = rows(storage_app, Grant, Grant.user_id == user.id)
    assert grant.revoked_reason == reason
    apps = rp.browser.get("/account/apps")
    assert apps.status_code == 200
    assert "Relying Party" not in apps.text

"""A code exchange refused after the code was spent leaves nothing behind (idp.oidc.code_refusals):
the code is spent before any other check, so a refusal after it (the user taken out of the
client's allowed groups between /authorize and /token, docs/admins.md "Groups, per-app access
and claim maps"; a ``redirect_uri`` other than the authorization request's, RFC 6749 4.1.3; a
``code_verifier`` that does not match or is missing, RFC 7636 4.5 and 4.6) left a live grant with
a spent code and no token, which pruning keeps. The real HTTP path on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update

from idp.clock import FrozenClock
from idp.extensions import db
from idp.models import Client, Grant, User
from idp.services.group_access import GROUP_ACCESS_REVOKED
from idp.services.groups import GroupService
from idp.services.spent_codes import (
    REFUSED_CLIENT_DISABLED,
    REFUSED_CODE_VERIFIER,
    REFUSED_EXPIRED_CODE,
    REFUSED_REDIRECT_URI,
    REFUSED_USER_DISABLED,
)
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


def _no_verifier(app: Flask, rp: RelyingParty, user: CreatedUser) -> tuple[str, dict]:
    """A confidential client's code made with a challenge, exchanged without its verifier (RFC
    7636 4.5: refused once the code, read by its spend, shows the challenge)."""
    code = rp.obtain_code(user, scope=SCOPE)["code"]
    return code, {"code_verifier": None}


#: Each refusal: its scene (the code and what the exchange sends otherwise), the revoked grant's
#: reason, the error answered (RFC 6749 5.2).
REFUSALS = {
    "group": (_out_of_the_group, GROUP_ACCESS_REVOKED, "invalid_grant"),
    "group_missed": (_out_of_the_group_missed, GROUP_ACCESS_REVOKED, "invalid_grant"),
    "redirect_uri": (_other_redirect_uri, REFUSED_REDIRECT_URI, "invalid_grant"),
    "code_verifier": (_wrong_verifier, REFUSED_CODE_VERIFIER, "invalid_grant"),
    "no_code_verifier": (_no_verifier, REFUSED_CODE_VERIFIER, "invalid_request"),
}


@pytest.mark.parametrize("spent_apart", [False, True], ids=["session", "thin_transaction"])
@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_a_code_exchange_refused_after_the_spend_takes_its_grant_back(
    storage_app: Flask, refusal: str, spent_apart: bool
) -> None:
    """Refused after the code's spend: the grant is revoked (its reason names the refusal) in the
    spend's transaction, the code can be used no more (the corrected request is refused too),
    and the portal shows no connected app. The spend goes through the ORM ``Session``, or, once
    the token side has the client in its cache, in a thin transaction of its own
    (idp.oidc.rotation): the revocation is written in that one."""
    registered = create_client(storage_app)
    if spent_apart:
        # Another user's exchange puts the client in the token side's cache.
        RelyingParty(storage_app.test_client(), registered).tokens_for(
            create_user(storage_app, email="warm@example.com"), scope="openid"
        )
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), registered)
    scene, reason, error = REFUSALS[refusal]
    code, sent = scene(storage_app, rp, user)
    refused = rp.exchange(code, **sent)
    assert refused.status_code == 400, refused.text
    assert refused.get_json()["error"] == error
    [grant] = rows(storage_app, Grant, Grant.user_id == user.id)
    assert (grant.revoked_at is not None, grant.revoked_reason) == (True, reason)
    again = rp.exchange(code)
    assert (again.status_code, again.get_json()["error"]) == (400, "invalid_grant")
    [grant] = rows(storage_app, Grant, Grant.user_id == user.id)
    assert grant.revoked_reason == reason
    apps = rp.browser.get("/account/apps")
    assert apps.status_code == 200
    assert "Relying Party" not in apps.text


def _expired(app: Flask, clock: FrozenClock) -> None:
    clock.advance(timedelta(seconds=app.extensions["idp"].settings.code_ttl + 1))


def _user_disabled_missed(app: Flask, clock: FrozenClock) -> None:
    """The user's disabling, its own revocation of their grants having missed this one."""
    change(app, update(User).values(disabled_at=clock.now()))


def _client_disabled_elsewhere(app: Flask, clock: FrozenClock) -> None:
    """The client disabled on another node: this node's cached copy (idp.services.client_cache)
    still lets the exchange spend the code, and the spend reads the disabling."""
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(update(Client.__table__).values(disabled_at=clock.now()))


#: Each refusal of the spend's own reads (idp.services.spent_codes ``spend_refusal``): its scene,
#: the revoked grant's reason, and whether the spend can go through the ORM ``Session`` (a
#: client disabled elsewhere is seen there, read afresh, before any code is spent).
SPEND_REFUSALS = {
    "expired": (_expired, REFUSED_EXPIRED_CODE, True),
    "user_disabled_missed": (_user_disabled_missed, REFUSED_USER_DISABLED, True),
    "client_disabled_elsewhere": (_client_disabled_elsewhere, REFUSED_CLIENT_DISABLED, False),
}


@pytest.mark.parametrize(
    ("refusal", "spent_apart"),
    [(name, apart) for name, (_, _, in_session) in sorted(SPEND_REFUSALS.items())
     for apart in ((False, True) if in_session else (True,))],
)  # fmt: skip
def test_a_code_its_spend_refuses_takes_its_grant_back(
    storage_app: Flask, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch, refusal: str,
    spent_apart: bool,
) -> None:  # fmt: skip
    """A code the exchange spends and its own reads then refuse (RFC 6749 5.2 invalid_grant: the
    code expired, or its user or client was disabled) is spent all the same, and its grant, a
    grant of that code alone that issued nothing, stayed live: pruning keeps a grant whose code
    was spent, so it was an app connected to the account for ever. The grant is taken back in
    the spend's transaction (the ``Session``'s, or the thin one apart once the token side has
    the client cached, idp.oidc.rotation), its reason naming the refusal; the code stays
    refused. On SQLite and PostgreSQL through the real HTTP path, on a frozen clock."""
    cache = storage_app.extensions["idp"].client_cache
    cached_at = time.monotonic()
    monkeypatch.setattr(cache, "monotonic", lambda: cached_at)  # the client's copy stays fresh
    registered = create_client(storage_app)
    if spent_apart:
        # Another user's exchange puts the client in the token side's cache.
        RelyingParty(storage_app.test_client(), registered).tokens_for(
            create_user(storage_app, email="warm@example.com"), scope="openid"
        )
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), registered)
    code = rp.obtain_code(user, scope=SCOPE)["code"]
    scene, reason, _ = SPEND_REFUSALS[refusal]
    scene(storage_app, clock)
    refused = rp.exchange(code)
    assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_grant")
    [grant] = rows(storage_app, Grant, Grant.user_id == user.id)
    assert (grant.revoked_at is not None, grant.revoked_reason) == (True, reason)
    again = rp.exchange(code)
    assert (again.status_code, again.get_json()["error"]) == (400, "invalid_grant")
    [grant] = rows(storage_app, Grant, Grant.user_id == user.id)
    assert grant.revoked_reason == reason

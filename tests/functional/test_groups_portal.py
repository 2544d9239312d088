"""What the user sees of groups: the consent page names the groups scope, and the portal lists
their groups and, for each connected app, what it receives (docs/users)."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from idp.extensions import db
from idp.models import Client
from idp.services.groups import ClaimMapEntry, GroupService
from tests.support.factories import CreatedUser, create_client
from tests.support.flow import RelyingParty, csrf_token


def test_consent_names_the_groups_scope_and_the_portal_shows_what_each_app_receives(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    registered = create_client(
        app, first_party=False, name="Wiki", scopes=["openid", "profile", "groups", "roles"]
    )
    with app.app_context():
        service = GroupService(db.session())
        admins = service.create("admins", "Wiki admins")
        service.add_members(admins, service.find_users([user.email]))
        wiki = db.session.get(Client, registered.client_id)
        service.set_claim_maps(wiki, [ClaimMapEntry("roles", "admins", "admin")])
        db.session.commit()
    rp = RelyingParty(client, registered)
    response = rp.sign_in(rp.sign_in_page(scope="openid profile groups"), user)
    while "/consent" not in response.headers["Location"]:
        response = client.get(response.headers["Location"])
    page = client.get(response.headers["Location"]).text
    assert "see the groups you belong to" in page
    pending = re.search(r'name="request" value="([^"]+)"', page)
    assert pending
    allow = {"csrf_token": csrf_token(page), "request": pending.group(1), "decision": "allow"}
    rp.follow_to_callback(client.post("/consent", data=allow))
    apps = client.get("/account/apps").text
    assert "Your groups:" in apps
    assert '<strong title="">Wiki admins</strong> (<code>admins</code>)' in apps
    receives = apps.split('class="muted app-receives">')[1].split("</div>")[0]
    assert "<li><code>groups</code> admins</li>" in receives
    assert "<li><code>roles</code> admin</li>" in receives
    assert "<li><code>name</code> Ada Lovelace</li>" in receives

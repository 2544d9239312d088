"""The console's groups pages (docs/admins.md, "Groups"): list with member counts, create, rename,
delete with confirmation, members added and removed; a user's groups; a client's allowed groups
and claim maps; the claims preview. Every change through the real forms, as an admin signed in
with a passkey."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import pytest
from flask import Flask
from markupsafe import escape
from werkzeug.test import TestResponse

from idp.models import AuditEvent, ClaimMap, Client, ClientAllowedGroup, Group, GroupMember
from tests.functional.test_admin_clients import client_form
from tests.functional.test_groups import GROUP_SCOPES, _claim_maps, _make_group, _restrict
from tests.support.admin import VERSION, ConsoleBrowser, passkey_browser
from tests.support.factories import CreatedUser, create_client, create_user, rows
from tests.support.flow import RelyingParty, jwt_parts


@pytest.fixture
def admin(storage_app: Flask) -> ConsoleBrowser:
    return passkey_browser(storage_app, "root@example.com")


@pytest.fixture
def ada(storage_app: Flask) -> CreatedUser:
    return create_user(storage_app, email="ada@example.com")


def save_access(admin: ConsoleBrowser, client_id: str, form: dict[str, Any]) -> TestResponse:
    """Post the client's access page with the version it was read from."""
    return admin.post_read_version(f"/admin/clients/{client_id}/access", form)


def _create(admin: ConsoleBrowser, name: str) -> None:
    response = admin.post("/admin/groups", {"name": name, "display_name": name.title()})
    assert response.status_code == 302, response.text
    assert response.headers["Location"].endswith(f"/admin/groups/{name}")


def test_create_add_members_list_rename_and_remove(
    storage_app: Flask, admin: ConsoleBrowser, ada: CreatedUser
) -> None:
    _create(admin, "staff")
    added = admin.post("/admin/groups/staff/members", {"emails": f"{ada.email}, root@example.com"})
    assert added.status_code == 302
    listing = admin.browser.get("/admin/groups").text
    assert 'data-group="staff"' in listing
    assert '<td class="member-count" data-label="Members">2</td>' in listing
    assert ada.email in admin.browser.get("/admin/groups/staff").text
    user_page = admin.browser.get(f"/admin/users/{ada.id}").text
    assert "<code>staff</code>" in user_page
    renamed = admin.post(
        "/admin/groups/staff/rename",
        {"new_name": "team", "display_name": "Team", "description": "Everyone at work"},
    )
    assert renamed.headers["Location"].endswith("/admin/groups/team")
    removed = admin.post("/admin/groups/team/members/remove", {"email": ada.email})
    assert removed.status_code == 302
    members = rows(storage_app, GroupMember)
    assert len(members) == 1
    kinds = [e.kind for e in rows(storage_app, AuditEvent, AuditEvent.kind.like("group.%"))]
    assert kinds.count("group.member_added") == 2
    assert {"group.created", "group.renamed", "group.member_removed"} <= set(kinds)


def test_group_page_heads_with_display_name_and_shows_claim_name_apart(
    admin: ConsoleBrowser,
) -> None:
    _create(admin, "staff")
    page = admin.browser.get("/admin/groups/staff").text
    assert "<h1>Staff</h1>" in page
    assert 'claim: <code id="group-name" class="group-name">staff</code>' in page
    admin.post("/admin/groups", {"name": "ops"})  # no display name: the name heads the page
    assert "<h1>ops</h1>" in admin.browser.get("/admin/groups/ops").text


@pytest.mark.parametrize("name", ["Bad Name", "staff"])
def test_bad_or_duplicate_name_is_shown_and_changes_nothing(
    storage_app: Flask, admin: ConsoleBrowser, name: str
) -> None:
    _create(admin, "staff")
    refused = admin.post("/admin/groups", {"name": name})
    assert refused.headers["Location"].endswith("/admin/groups")
    page = admin.browser.get("/admin/groups").text
    assert "invalid group name" in page or "already exists" in page
    assert [g.name for g in rows(storage_app, Group)] == ["staff"]


def test_adding_an_unknown_address_adds_no_one(
    storage_app: Flask, admin: ConsoleBrowser, ada: CreatedUser
) -> None:
    _create(admin, "staff")
    admin.post("/admin/groups/staff/members", {"emails": f"{ada.email} ghost@example.com"})
    assert "no user ghost@example.com" in admin.browser.get("/admin/groups/staff").text
    assert rows(storage_app, GroupMember) == []


def test_more_members_at_once_than_a_statement_binds_are_refused_not_a_server_error(
    storage_app: Flask, admin: ConsoleBrowser, ada: CreatedUser
) -> None:
    # 70,000 distinct addresses in one form: more parameters than PostgreSQL binds (65,535),
    # which failed the read as a storage outage (503), and a refusal naming every one of them
    # in the session cookie, far past the 4,096 bytes a browser keeps (RFC 6265 6.1).
    _create(admin, "staff")
    words = " ".join(format(number, "x") for number in range(70_000))
    refused = admin.post("/admin/groups/staff/members", {"emails": f"{ada.email} {words}"})
    assert refused.status_code == 302, refused.status_code
    assert all(len(c) < 4096 for c in refused.headers.getlist("Set-Cookie"))
    assert "name at most 200 users at once" in admin.browser.get("/admin/groups/staff").text
    assert rows(storage_app, GroupMember) == []


def test_a_refusal_names_only_the_first_unknown_addresses_each_cut_short(
    storage_app: Flask, admin: ConsoleBrowser
) -> None:
    _create(admin, "staff")
    ghosts = [f"ghost{n}@example.com" for n in range(150)] + ["g" * 5000 + "@example.com"]
    refused = admin.post("/admin/groups/staff/members", {"emails": " ".join(ghosts[::-1])})
    assert all(len(c) < 4096 for c in refused.headers.getlist("Set-Cookie"))
    page = admin.browser.get("/admin/groups/staff").text
    assert f"no user {'g' * 80}…, ghost149@example.com, ghost148@example.com" in page
    assert "(and 146 more)" in page


def test_a_refused_name_claim_map_or_group_is_named_cut_short(
    storage_app: Flask, admin: ConsoleBrowser
) -> None:
    # Each refusal named what it refused whole: the console shows it from the session cookie,
    # which with 6,000 characters no compression shrinks was past the 4,096 bytes a browser
    # keeps (RFC 6265 6.1), and the CSRF token went with it.
    _create(admin, "staff")
    client_id = create_client(storage_app).client_id
    noise = secrets.token_hex(3000)
    refusals = [
        ("/admin/groups", {"name": noise}, f"invalid group name '{noise[:80]}…'"),
        ("/admin/groups/staff/rename", {"new_name": noise}, f"invalid group name '{noise[:80]}…'"),
        (f"/admin/clients/{client_id}/access", {"access": "groups", "allowed_groups": noise},
         f"no group '{noise[:80]}…'"),
        (f"/admin/clients/{client_id}/access", {"access": "everyone", "claim_maps": noise},
         f"a claim map is CLAIM:GROUP=VALUE, not '{noise[:80]}…'"),
        (f"/admin/clients/{client_id}/access",
         {"access": "everyone", "claim_maps": f"{noise}:staff=v"},
         f"invalid claim name '{noise[:80]}…'"),
    ]  # fmt: skip
    for path, form, message in refusals:
        if path.endswith("/access"):
            refused = admin.post_read_version(path, form)
        else:
            refused = admin.post(path, form)
        assert refused.status_code == 302, (path, refused.status_code)
        assert all(len(c) < 4096 for c in refused.headers.getlist("Set-Cookie")), path
        assert escape(message) in admin.browser.get(refused.headers["Location"]).text


def test_delete_of_a_clients_only_group_needs_the_confirmation(
    storage_app: Flask, admin: ConsoleBrowser
) -> None:
    _create(admin, "staff")
    registered = create_client(storage_app, name="Grafana")
    saved = save_access(
        admin,
        registered.client_id,
        {"access": "groups", "allowed_groups": "staff", "claim_maps": ""},
    )
    assert saved.status_code == 302
    confirm_page = admin.browser.get("/admin/groups/staff/delete").text
    assert "only allowed group of" in confirm_page
    assert "Grafana" in confirm_page
    refused = admin.post("/admin/groups/staff/delete")
    assert refused.headers["Location"].endswith("/admin/groups/staff/delete")
    assert [g.name for g in rows(storage_app, Group)] == ["staff"]
    (before,) = rows(storage_app, Client)
    deleted = admin.post("/admin/groups/staff/delete", {"confirm_sole": "1"})
    assert deleted.headers["Location"].endswith("/admin/groups")
    assert rows(storage_app, Group) == []
    # The client's access changed: an access page opened before the deletion is stale.
    (after,) = rows(storage_app, Client)
    assert after.version > before.version
    client_page = admin.browser.get(f"/admin/clients/{registered.client_id}").text
    assert "No one: its allowed groups were deleted" in client_page


def test_client_access_page_sets_groups_and_claim_maps_and_preview_shows_them(
    storage_app: Flask, admin: ConsoleBrowser, ada: CreatedUser
) -> None:
    _create(admin, "admins")
    _create(admin, "staff")
    admin.post("/admin/groups/admins/members", {"emails": ada.email})
    admin.post("/admin/groups/staff/members", {"emails": ada.email})
    registered = create_client(
        storage_app, name="Wiki", scopes=["openid", "profile", "groups", "roles"]
    )
    saved = save_access(
        admin,
        registered.client_id,
        {
            "access": "groups",
            "allowed_groups": ["staff"],
            "claim_maps": "roles:admins=admin\nroles:staff=viewer",
        },
    )
    assert saved.status_code == 302
    page = admin.browser.get(f"/admin/clients/{registered.client_id}").text
    assert "<code>roles:admins=admin</code>" in page
    assert '<code class="group-name">staff</code>' in page
    preview = admin.browser.get(
        f"/admin/clients/{registered.client_id}/claims", query_string={"email": ada.email}
    ).text
    shown = re.search(r'<pre id="claims-preview"[^>]*><code>(.*?)</code>', preview, re.S)[1]
    claims = json.loads(shown.replace("&#34;", '"').replace("&quot;", '"'))
    assert claims["groups"] == ["admins", "staff"]
    assert claims["roles"] == ["admin", "viewer"]
    assert claims["sub"] == ada.id
    # The preview is what the app really gets.
    rp = RelyingParty(storage_app.test_client(), registered)
    _, id_claims = jwt_parts(rp.tokens_for(ada, scope="openid groups roles")["id_token"])
    assert {k: id_claims[k] for k in ("groups", "roles")} == {
        k: claims[k] for k in ("groups", "roles")
    }


def test_an_access_page_opened_before_another_change_saves_nothing(
    storage_app: Flask, admin: ConsoleBrowser
) -> None:
    """The page saves the allowed groups and claim maps as it showed them. Opened before another
    admin took a group from the client (and its claim map), its save would put both back, unseen
    (RFC 9110 13.1.1, the lost update): it applies only to the client's version it was read
    from, else a 409 that shows the access as it is now and saves nothing; a page without its
    version likewise. A change of groups or claim maps takes a new version as a change of the
    client's settings does, so a client edit form opened before it is stale too."""
    _create(admin, "staff")
    _create(admin, "contractors")
    registered = create_client(storage_app, name="Wiki", scopes=GROUP_SCOPES)
    client_id = registered.client_id
    both = {"access": "groups", "allowed_groups": ["staff", "contractors"],
            "claim_maps": "roles:contractors=guest"}  # fmt: skip
    assert save_access(admin, client_id, both).status_code == 302
    page = admin.browser.get(f"/admin/clients/{client_id}/access").text
    stale = VERSION.search(page)
    assert stale is not None
    edit_form = admin.browser.get(f"/admin/clients/{client_id}/edit").text
    # The other tab: the contractors lose the app.
    staff_only = {"access": "groups", "allowed_groups": ["staff"], "claim_maps": ""}
    assert save_access(admin, client_id, staff_only).status_code == 302
    names = {group.id: group.name for group in rows(storage_app, Group)}
    renamed = {**both, "claim_maps": "roles:contractors=guest\nroles:staff=member"}
    for form in ({**renamed, "version": stale.group(1)}, renamed):
        response = admin.post(f"/admin/clients/{client_id}/access", form)
        assert response.status_code == 409
        assert "Nothing was saved" in response.text
        assert 'value="contractors" checked' not in response.text  # the access as it is now
        assert "roles:contractors=guest" not in response.text
        assert [names[a.group_id] for a in rows(storage_app, ClientAllowedGroup)] == ["staff"]
        assert rows(storage_app, ClaimMap) == []
    changes = rows(storage_app, AuditEvent, AuditEvent.kind == "client.access_changed")
    assert len(changes) == 2
    # The client's edit form read before the change is stale too: one version for the client.
    version = VERSION.search(edit_form)
    assert version is not None
    form = {**client_form(), "version": version.group(1)}
    assert admin.post(f"/admin/clients/{client_id}/edit", form).status_code == 409
    again = save_access(admin, client_id, {**staff_only, "claim_maps": "roles:staff=member"})
    assert again.status_code == 302
    maps = [(m.claim, names[m.group_id], m.value) for m in rows(storage_app, ClaimMap)]
    assert maps == [("roles", "staff", "member")]


@pytest.mark.parametrize(
    ("claim_maps", "message"),
    [("sub:staff=x", "registered JWT"), ("roles:ghosts=x", "no group"), ("roles", "CLAIM:GROUP")],
)
def test_client_access_page_refuses_bad_claim_maps_and_changes_nothing(
    storage_app: Flask, admin: ConsoleBrowser, claim_maps: str, message: str
) -> None:
    _create(admin, "staff")
    registered = create_client(storage_app, name="Wiki")
    refused = save_access(
        admin,
        registered.client_id,
        {"access": "groups", "allowed_groups": "staff", "claim_maps": claim_maps},
    )
    assert refused.headers["Location"].endswith("/access")
    assert message in admin.browser.get(refused.headers["Location"]).text
    page = admin.browser.get(f"/admin/clients/{registered.client_id}").text
    assert '<dd id="allowed-groups">Everyone</dd>' in page


def test_the_preview_of_a_user_outside_the_allowed_groups_shows_nothing_received(
    storage_app: Flask,
) -> None:
    """docs/admins.md: the preview shows "what a chosen user would receive there"; outside the
    allowed groups that is nothing (the sign-in is refused), whatever the claim maps say."""
    admin = passkey_browser(storage_app, "root@example.com")
    outsider = create_user(storage_app, email="outsider@example.com")
    registered = create_client(storage_app, name="Wiki", scopes=GROUP_SCOPES)
    _make_group(storage_app, "staff")
    _make_group(storage_app, "admins", outsider.email)
    _restrict(storage_app, registered.client_id, "staff")
    _claim_maps(storage_app, registered.client_id, "roles:admins=admin")
    page = admin.browser.get(
        f"/admin/clients/{registered.client_id}/claims", query_string={"email": outsider.email}
    ).text
    assert 'id="claims-preview"' not in page
    assert 'id="claims-refused"' in page
    assert "the app receives nothing" in page


def test_deleting_a_group_is_audited_for_each_client_that_named_it(storage_app: Flask) -> None:
    """docs/admins.md: every change of a client's access or claim maps is in the audit log; a
    group's deletion changes both for the clients that name it."""
    registered = create_client(storage_app, name="Wiki", scopes=GROUP_SCOPES)
    _make_group(storage_app, "staff")
    _make_group(storage_app, "admins")
    _restrict(storage_app, registered.client_id, "staff", "admins")
    _claim_maps(storage_app, registered.client_id, "roles:staff=viewer", "roles:admins=admin")
    admin = passkey_browser(storage_app, "root@example.com")
    before = {e.id for e in rows(storage_app, AuditEvent)}
    deleted = admin.post("/admin/groups/staff/delete")
    assert deleted.headers["Location"].endswith("/admin/groups")
    written = {e.kind: e for e in rows(storage_app, AuditEvent) if e.id not in before}
    access = written["client.access_changed"]
    assert access.client_id == registered.client_id
    assert (access.details["previous"], access.details["allowed_groups"]) == (
        ["admins", "staff"],
        ["admins"],
    )
    maps = written["client.claim_maps_changed"]
    assert maps.client_id == registered.client_id
    assert maps.details["claim_maps"] == ["roles:admins=admin"]

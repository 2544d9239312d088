"""What an admin's change leaves in the audit log: who, what, and the values before and after
(OWASP ASVS 4.0 7.1.3 / 7.2.2: security-relevant events, with what the investigation after an
incident needs), through the admin API as an automation calls it."""

from __future__ import annotations

from flask import Flask

from idp.models import AuditEvent
from idp.services.api_tokens import FAILED_AUTH_LIMIT
from tests.functional.test_api import REDIRECT, Api, create, issue
from tests.support.factories import rows


def _events(app: Flask, kind: str) -> list[AuditEvent]:
    return rows(app, AuditEvent, AuditEvent.kind == kind)


def test_an_admin_renaming_a_user_records_the_old_and_the_new_name(storage_app: Flask) -> None:
    api = Api(storage_app, issue(storage_app))
    created = api.call("POST", "/users", {"email": "grace@example.com", "name": "Grace",
                                          "invite": False})  # fmt: skip
    assert created.status_code == 201, created.text
    user_id = created.get_json()["id"]
    assert api.call("PATCH", f"/users/{user_id}", {"name": "Grace Hopper"}).status_code == 200
    [event] = _events(storage_app, "admin.user_renamed")
    assert (event.actor_id, event.subject_id) == ("api-token:ci", user_id)
    assert event.details["previous_name"] == "Grace"
    assert event.details["name"] == "Grace Hopper"


def test_a_client_update_records_each_changed_settings_old_and_new_value(
    storage_app: Flask,
) -> None:
    """A redirect URI slipped into a client is where its codes go (RFC 6749 10.6): the audit
    row says which URI, not only that ``redirect_uris`` changed."""
    api = Api(storage_app, issue(storage_app))
    client_id = create(api)["client_id"]
    evil = "https://evil.example/callback"
    patched = api.call("PATCH", f"/clients/{client_id}", {"redirect_uris": [REDIRECT, evil]},
                       headers={"If-Match": '"v1"'})  # fmt: skip
    assert patched.status_code == 200, patched.text
    [event] = _events(storage_app, "client.updated")
    assert (event.actor_id, event.client_id) == ("api-token:ci", client_id)
    assert event.details["changed"] == ["redirect_uris"]
    assert event.details["changes"] == {
        "redirect_uris": {"old": [REDIRECT], "new": [REDIRECT, evil]}
    }


def test_a_group_edit_records_old_and_new_texts_and_nothing_when_nothing_changed(
    storage_app: Flask,
) -> None:
    api = Api(storage_app, issue(storage_app))
    created = api.call("POST", "/groups", {"name": "staff", "display_name": "Staff"})
    assert created.status_code == 201, created.text
    same = api.call("PATCH", "/groups/staff", {"display_name": "Staff", "description": ""})
    assert same.status_code == 200, same.text
    assert _events(storage_app, "group.updated") == []
    edited = api.call("PATCH", "/groups/staff", {"display_name": "Everyone"})
    assert edited.status_code == 200, edited.text
    [event] = _events(storage_app, "group.updated")
    assert event.actor_id == "api-token:ci"
    assert event.details["group"] == "staff"
    assert event.details["changes"] == {"display_name": {"old": "Staff", "new": "Everyone"}}


def test_failed_api_authentications_from_one_ipv6_64_share_one_budget(storage_app: Flask) -> None:
    """Each refused API token writes an audit row: one host holds a whole IPv6 /64 (RFC 4291
    2.5.1), so a budget per address would let it write rows without end, one per address."""
    bad = Api(storage_app, "idp_" + "A" * 43)
    for n in range(FAILED_AUTH_LIMIT):
        answer = bad.call("GET", "/clients", environ_base={"REMOTE_ADDR": f"2001:db8::{n + 1:x}"})
        assert answer.status_code == 401
    refused = bad.call("GET", "/clients", environ_base={"REMOTE_ADDR": "2001:db8::ffff"})
    assert refused.status_code == 429, refused.text
    assert len(_events(storage_app, "api.authentication_failed")) == FAILED_AUTH_LIMIT
    elsewhere = bad.call("GET", "/clients", environ_base={"REMOTE_ADDR": "2001:db8:0:1::1"})
    assert elsewhere.status_code == 401

"""What an admin's change leaves in the audit log: who, what, and the values before and after
(OWASP ASVS 4.0 7.1.3 / 7.2.2: security-relevant events, with what the investigation after an
incident needs), through the admin API as an automation calls it."""

from __future__ import annotations

from flask import Flask

from idp.models import AuditEvent
from tests.functional.test_api import Api, issue
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

"""API tokens in the admin console (docs/api.md): shown once, listed without the secret, revoked
after a confirmation, created only after a fresh passkey sign-in."""

from __future__ import annotations

import re

from flask import Flask

from idp.models import ApiToken, AuditEvent
from tests.support.admin import age_sign_in, passkey_browser
from tests.support.factories import rows

TOKEN = re.compile(r"idp_[A-Za-z0-9_-]{43}")


def test_the_console_shows_a_new_token_once_and_revokes_after_asking(app: Flask) -> None:
    admin = passkey_browser(app, "root@example.com")
    form = {"name": "terraform", "expires_in": "90", "scopes": ["clients:write", "groups:write"]}
    created = admin.post("/admin/api-tokens", form)
    assert created.status_code == 200, created.text
    secret = TOKEN.search(created.text)
    assert secret is not None
    api = app.test_client()
    bearer = {"Authorization": f"Bearer {secret.group(0)}"}
    assert api.get("/api/v1/groups", headers=bearer).status_code == 200
    listed = admin.browser.get("/admin/api-tokens")
    assert "terraform" in listed.text
    assert secret.group(0) not in listed.text
    assert not TOKEN.search(listed.text)
    asked = admin.browser.get("/admin/api-tokens/terraform/revoke")
    assert asked.status_code == 200
    assert rows(app, ApiToken)[0].revoked_at is None
    revoked = admin.post("/admin/api-tokens/terraform/revoke")
    assert revoked.status_code == 303
    assert api.get("/api/v1/groups", headers=bearer).status_code == 401
    events = [(e.kind, e.actor_id) for e in rows(app, AuditEvent) if e.kind.startswith("api_")]
    assert events == [("api_token.created", admin.user.id), ("api_token.revoked", admin.user.id)]


def test_the_console_refuses_a_token_without_a_scope(app: Flask) -> None:
    admin = passkey_browser(app, "root@example.com")
    refused = admin.post("/admin/api-tokens", {"name": "ci", "expires_in": "30"})
    assert refused.status_code == 400
    assert "at least one scope" in refused.text
    assert rows(app, ApiToken) == []


def test_creating_a_token_needs_a_fresh_passkey_sign_in(app: Flask) -> None:
    admin = passkey_browser(app, "root@example.com")
    age_sign_in(app, admin.user.id, 11)
    token = admin.browser.get("/admin/api-tokens")
    assert token.status_code == 302
    assert "/login" in token.headers["Location"]
    assert rows(app, ApiToken) == []

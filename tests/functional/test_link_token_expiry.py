"""A one-time link ends with the authority it was minted from (docs/api.md, Tokens): a link an
API token issues expires no later than the token does. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import select

from idp.clock import FrozenClock
from idp.extensions import db
from idp.models import ApiToken
from tests.functional.test_api import Api, issue
from tests.support.factories import create_user


def test_a_link_an_api_token_issues_does_not_outlive_the_token(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """A help-desk token that expires tomorrow issued, an hour before, a rescue link for a day:
    once the token has expired, its link, a bearer secret to the account, works no more, as it
    would not after the token's revocation."""
    member = create_user(storage_app, email="member@example.com")
    helpdesk = Api(storage_app, issue(storage_app, "login-links:write", name="helpdesk",
                                      expires_in_days=1))  # fmt: skip
    with storage_app.app_context():
        token = db.session.scalars(select(ApiToken).where(ApiToken.name == "helpdesk")).one()
        assert token.expires_at is not None
        token_end = token.expires_at
    clock.set(token_end - timedelta(hours=1))

    issued = helpdesk.call("POST", f"/users/{member.id}/login-links", {"ttl_seconds": 86400})
    assert issued.status_code == 201, issued.text
    assert datetime.fromisoformat(issued.get_json()["expires_at"]) == token_end
    path = str(issued.get_json()["url"]).removeprefix("http://localhost")
    assert storage_app.test_client().get(path).status_code == 200

    clock.set(token_end + timedelta(minutes=1))
    assert storage_app.test_client().get(path).status_code == 400

"""Admin sessions for the console tests: an admin signed in with a passkey, through the real
sign-in pages, and the tools to age that sign-in or post the console's forms."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from werkzeug.test import TestResponse

from idp.admin.policy import BOOLEAN_FIELDS
from idp.extensions import db
from idp.models import BrowserSession
from idp.models.base import utcnow
from idp.services.sign_in_policy import FIELDS, load_policy, policy_version
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import CreatedUser, create_user
from tests.support.passkey_flow import PasskeyPages, csrf_meta

#: The hidden field of a console page that saves onto the version it was read from.
VERSION = re.compile(r'name="version" value="(\d+)"')


@dataclass
class ConsoleBrowser:
    """A browser signed in with a passkey (amr hwk or swk), as the admin console requires."""

    browser: FlaskClient
    user: CreatedUser
    authenticator: SoftAuthenticator = field(default_factory=SoftAuthenticator)

    def csrf(self, path: str = "/account") -> str:
        page = self.browser.get(path)
        assert page.status_code == 200, (path, page.status_code)
        return csrf_meta(page.text)

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> TestResponse:
        """POST a console form with a valid CSRF token, as the page's own form would."""
        return self.browser.post(path, data={"csrf_token": self.csrf(), **(data or {})}, **kwargs)

    def post_read_version(self, path: str, form: dict[str, Any]) -> TestResponse:
        """POST the console page at ``path`` as the browser would: ``form`` with the version the
        page was read from (its hidden field; a stale one is refused, RFC 9110 13.1.1)."""
        version = VERSION.search(self.browser.get(path).text)
        assert version is not None, path
        return self.post(path, {**form, "version": version.group(1)})


def passkey_browser(
    app: Flask, email: str, *, admin: bool = True, authenticator: SoftAuthenticator | None = None
) -> ConsoleBrowser:
    """Password sign-in, register a first passkey (of ``authenticator``, a plain one unless
    given), then sign in with it: a passkey session."""
    user = create_user(app, email=email, admin=admin)
    signed_in = ConsoleBrowser(browser=app.test_client(), user=user)
    if authenticator is not None:
        signed_in.authenticator = authenticator
    pages = PasskeyPages(signed_in.browser)
    pages.sign_in_with_password(user)
    registered = pages.add_passkey(signed_in.authenticator)
    assert registered.status_code == 201, registered.text
    verified = pages.sign_in_with_passkey(signed_in.authenticator)
    assert verified.status_code == 200, verified.text
    return signed_in


def age_sign_in(app: Flask, user_id: str, minutes: float) -> None:
    """Time travel: the user's sign-ins happened ``minutes`` ago."""
    with app.app_context():
        db.session.execute(
            update(BrowserSession)
            .where(BrowserSession.user_id == user_id)
            .values(auth_time=utcnow() - timedelta(minutes=minutes))
        )
        db.session.commit()


def policy_form(app: Flask, **changes: Any) -> dict[str, str]:
    """What the policy page's form sends: the values in force, with ``changes``, and the
    version of the policy they were read from."""
    with app.app_context():
        in_force = load_policy(db.session(), app.extensions["idp"].settings)
    values = in_force.as_dict()
    values.update(changes)
    form: dict[str, str] = {"version": policy_version(in_force)}
    for policy_field in FIELDS:
        name, value = policy_field.name, values[policy_field.name]
        if name in BOOLEAN_FIELDS:
            if value:
                form[name] = "on"
        elif isinstance(value, list | tuple):
            form[name] = "\n".join(value)
        else:
            form[name] = str(value)
    return form

"""Consents given at once (docs/security.md, "OAuth and OpenID Connect endpoints"): real parallel
requests on SQLite and PostgreSQL, the first held where its consent read what the user agreed to
before (idp.services.grants.CONSENT_CHECKPOINT) while the second reads it too or waits for the
first's lock. Never a sleep: the test waits for arrivals and locks."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from idp.models import AuditEvent, Consent, Grant
from idp.oidc.views import ISSUE_CODE_CHECKPOINT
from idp.services.grants import CONSENT_CHECKPOINT
from tests.support.checkpoints import Checkpoints, answered_while_held
from tests.support.factories import create_client, create_user, rows
from tests.support.flow import RelyingParty, csrf_token, query_of, start_session
from tests.support.writers import held_together


def _consent_form(rp: RelyingParty, scope: str) -> dict[str, str]:
    location = rp.authorize(scope=scope).headers["Location"]
    page = rp.browser.get(location)
    assert page.status_code == 200, page.text
    return {"csrf_token": csrf_token(page.text), "request": query_of(location)["request"],
            "decision": "allow"}  # fmt: skip


def _allow(browser: FlaskClient, form: dict[str, str]) -> Any:
    return lambda: browser.post("/consent", data=form)


def test_two_tabs_allowing_one_app_at_once_both_go_on_and_both_consents_are_kept(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """OIDC Core 3.1.2.4: a user allows a third-party app in two tabs at once, its first consent
    (one for its name, one for the email address). Each read that there was no consent yet and
    inserted one: the second broke the unique (user, client) row and its tab got a 500 (a double
    click on Allow did the same). Each consent now waits for the other's, and the row holds both
    scope sets: each tab goes on to its code, and neither is asked again."""
    user = create_user(storage_app)
    registered = create_client(storage_app, first_party=False, name="Third Party")
    tabs = [RelyingParty(storage_app.test_client(), registered) for _ in range(2)]
    for tab in tabs:
        start_session(tab.browser, user)
    forms = [_consent_form(tabs[0], "openid profile"), _consent_form(tabs[1], "openid email")]

    answers = held_together(storage_app, checkpoints, _allow(tabs[0].browser, forms[0]),
                            _allow(tabs[1].browser, forms[1]), at=CONSENT_CHECKPOINT)  # fmt: skip
    assert [a.status_code for a in answers] == [302, 302], [a.text[:200] for a in answers]
    for tab, answer in zip(tabs, answers, strict=True):
        assert "code" in tab.follow_to_callback(answer)
    [consent] = rows(storage_app, Consent)
    assert sorted(consent.scopes) == ["email", "openid", "profile"]
    assert len(rows(storage_app, AuditEvent, AuditEvent.kind == "consent.granted")) == 2
    for tab in tabs:  # remembered: neither scope set asks again
        for scope in ("openid profile", "openid email"):
            again = tab.authorize(scope=scope, prompt="none")
            assert "code" in query_of(again.headers["Location"]), again.headers["Location"]


@pytest.mark.parametrize("prompt", ["none", None])
def test_an_app_disconnected_while_a_code_is_on_its_way_gets_none(
    storage_app: Flask, checkpoints: Checkpoints, prompt: str | None
) -> None:
    """A third-party app's silent sign-in (``prompt=none``, a single-page app renewing its
    tokens) read the user's consent; the user then disconnected the app on another tab (its
    consent deleted, its grants revoked); then the code's grant was opened: the app got a code,
    and tokens, from a consent that no longer existed, and its new grant was one the Disconnect
    never saw. The code now finds the consent still there, locked until its grant is committed,
    or asks again: ``consent_required`` without a page, the consent page with one (OIDC Core
    3.1.2.4, 3.1.2.6)."""
    user = create_user(storage_app)
    registered = create_client(storage_app, first_party=False, name="Third Party")
    rp = RelyingParty(storage_app.test_client(), registered)
    start_session(rp.browser, user)
    consent = _consent_form(rp, "openid profile")
    assert "code" in rp.follow_to_callback(rp.browser.post("/consent", data=consent))
    other_tab = storage_app.test_client()
    start_session(other_tab, user)
    form = {"csrf_token": csrf_token(other_tab.get("/account/apps").text), "confirm": "yes"}

    def disconnect() -> None:
        answer = other_tab.post(f"/account/apps/{registered.client_id}/revoke", data=form)
        assert answer.status_code == 302, answer.text

    answer = answered_while_held(
        checkpoints, ISSUE_CODE_CHECKPOINT,
        lambda: rp.authorize(scope="openid profile", prompt=prompt), disconnect,
    )  # fmt: skip
    location = answer.headers.get("Location", "")
    assert rows(storage_app, Consent) == []
    assert rows(storage_app, Grant, Grant.revoked_at.is_(None)) == []
    if prompt == "none":
        assert query_of(location).get("error") == "consent_required", location
    else:
        assert location.split("?", 1)[0] == "/consent", location
    assert "code" not in query_of(location)

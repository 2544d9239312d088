"""An id_token_hint issued before a change of the client's subject type or sector (docs/admins.md,
"Pairwise subject identifiers") still names its user: the relying party holds that ID token, and
its ``sub`` is the one the user's grant at the client recorded (``Grant.issued_sub``), so
prompt=none answers with a code (OIDC Core 3.1.2.1) and RP-initiated logout ends the session
without asking (RP-Initiated Logout 1.0 2). Another user's earlier ``sub`` names no one."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.functional.test_logout_after_subject_change import CHANGES
from tests.functional.test_pairwise_subjects import SHOP, confirm_subject_change, pairwise
from tests.support.factories import RegisteredClient, create_client, create_user
from tests.support.flow import RelyingParty, jwt_parts, query_of


def shop(app: Flask, subject_type: str) -> RegisteredClient:
    if subject_type == "pairwise":
        return pairwise(app, SHOP)
    return create_client(app, redirect_uris=[SHOP])


@pytest.mark.parametrize(("before", "subject_change"), CHANGES)
def test_prompt_none_with_a_hint_from_before_a_subject_change_issues_a_code(
    storage_app: Flask, before: str, subject_change: dict[str, str]
) -> None:
    app = storage_app
    user = create_user(app)
    registered = shop(app, before)
    rp = RelyingParty(app.test_client(), registered)
    tokens = rp.tokens_for(user)
    confirm_subject_change(app, registered.client_id, **subject_change)
    response = rp.authorize(prompt="none", id_token_hint=tokens["id_token"])
    assert response.status_code == 302, response.text
    assert "code" in query_of(response.headers["Location"])


@pytest.mark.parametrize(("before", "subject_change"), CHANGES)
def test_logout_with_a_hint_from_before_a_subject_change_ends_the_session_without_asking(
    storage_app: Flask, before: str, subject_change: dict[str, str]
) -> None:
    app = storage_app
    user = create_user(app)
    registered = shop(app, before)
    browser = app.test_client()
    tokens = RelyingParty(browser, registered).tokens_for(user)
    confirm_subject_change(app, registered.client_id, **subject_change)
    response = browser.get("/logout", query_string={"id_token_hint": tokens["id_token"]})
    assert 'name="confirm"' not in response.text
    assert browser.get("/account").status_code == 302  # signed out


def test_another_users_sub_from_before_a_subject_change_names_no_one(
    storage_app: Flask,
) -> None:
    """The earlier ``sub`` is looked up among the signed-in user's own grants at the client: the
    ID token of another user, issued before the change, is still another user's hint."""
    app = storage_app
    user = create_user(app)
    other = create_user(app, email="grace@example.com")
    registered = pairwise(app, SHOP)
    other_tokens = RelyingParty(app.test_client(), registered).tokens_for(other)
    browser = app.test_client()
    rp = RelyingParty(browser, registered)
    rp.tokens_for(user)
    confirm_subject_change(app, registered.client_id, subject_type="public")
    assert jwt_parts(other_tokens["id_token"])[1]["sub"] != other.id
    response = rp.authorize(prompt="none", id_token_hint=other_tokens["id_token"])
    assert query_of(response.headers["Location"])["error"] == "login_required"
    asked = browser.get("/logout", query_string={"id_token_hint": other_tokens["id_token"]})
    assert 'name="confirm"' in asked.text
    assert browser.get("/account").status_code == 200  # still signed in

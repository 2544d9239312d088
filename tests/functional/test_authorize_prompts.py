"""When the authorization endpoint asks the user to sign in or consent (OIDC Core 3.1.2.1-3.1.2.4):
prompt, max_age, login_hint, id_token_hint, acr_values and remembered consent."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from idp.extensions import db
from idp.models import AuditEvent, BrowserSession, Client, Consent, User
from idp.models.base import utcnow
from idp.services.clients import ClientService
from idp.services.groups import GroupService
from tests.conftest import sqlite_app
from tests.support.clock import key_unpublished
from tests.support.factories import CreatedUser, change, create_client, create_user, rows
from tests.support.flow import (
    CROSS_SITE,
    SAME_ORIGIN,
    RelyingParty,
    csrf_token,
    jwt_parts,
    query_of,
    resubmission,
    sign_in_address,
    start_session,
)

ISSUER = "http://localhost"


def backdate_sessions(app: Flask, seconds: int) -> None:
    """Pretend every browser session signed in ``seconds`` ago."""
    with app.app_context():
        db.session.execute(
            update(BrowserSession).values(auth_time=utcnow() - timedelta(seconds=seconds))
        )
        db.session.commit()


def is_login_page(response: TestResponse) -> bool:
    """The authorization endpoint answered with the sign-in page itself (docs/architecture.md)."""
    return response.status_code == 200 and sign_in_address(response) is not None


def address(response: TestResponse) -> str:
    found = sign_in_address(response)
    assert found is not None, response.status_code
    return found


def is_consent_page(response: TestResponse) -> bool:
    return response.status_code == 302 and urlpath(response) == "/consent"


def urlpath(response: TestResponse) -> str:
    return response.headers["Location"].split("?", 1)[0]


def callback(response: TestResponse, rp: RelyingParty) -> dict[str, str]:
    """The parameters of a direct redirect to the client (no page in between)."""
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(rp.registered.redirect_uri + "?"), location
    return query_of(location)


def id_token_claims(rp: RelyingParty, code: str) -> dict:
    response = rp.exchange(code)
    assert response.status_code == 200, response.text
    return jwt_parts(response.get_json()["id_token"])[1]


def answer_consent(rp: RelyingParty, response: TestResponse, decision: str) -> TestResponse:
    assert is_consent_page(response), response.headers.get("Location")
    page = rp.browser.get(response.headers["Location"])
    assert page.status_code == 200, page.text
    form = {
        "csrf_token": csrf_token(page.text),
        "request": query_of(response.headers["Location"])["request"],
        "decision": decision,
    }
    return rp.browser.post("/consent", data=form)


@pytest.fixture
def third_party(app: Flask, client: FlaskClient) -> RelyingParty:
    return RelyingParty(client, create_client(app, first_party=False, name="Third Party"))


# -- prompt=login and max_age: re-authentication --------------------------------------------------
def test_prompt_login_forces_the_login_page_even_with_a_session(
    app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    start_session(rp.browser, user)
    backdate_sessions(app, 3600)
    old = id_token_claims(rp, callback(rp.authorize(), rp)["code"])

    login = rp.authorize(prompt="login")
    assert is_login_page(login)
    new = id_token_claims(rp, rp.follow_to_callback(rp.sign_in(address(login), user))["code"])
    assert new["auth_time"] > old["auth_time"]
    assert new["auth_time"] >= new["iat"] - 5


def test_an_authorization_request_posted_from_the_relying_partys_site_sees_the_session(
    app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    """OIDC Core 3.1.2.1: the authorization endpoint MUST support POST. A browser withholds
    idp's SameSite=Lax session cookie from a cross-site POST (RFC 6265bis 5.6.7.1), so a request
    posted by the relying party's page never saw the session: the user signed in again, and
    prompt=none was always login_required. Such a POST is posted again from idp's own page,
    with the cookie, every parameter kept."""
    start_session(rp.browser, user)
    params = rp.authorize_params(prompt="none")
    from_the_rp = app.test_client().post("/authorize", data=params, headers=CROSS_SITE)
    action, fields = resubmission(from_the_rp)
    assert sorted(fields) == sorted(params.items())
    answer = rp.browser.post(action, data=MultiDict(fields), headers=SAME_ORIGIN)
    assert "code" in callback(answer, rp)


def test_max_age_zero_forces_login_and_reports_auth_time(
    rp: RelyingParty, user: CreatedUser
) -> None:
    start_session(rp.browser, user)
    login = rp.authorize(max_age="0")
    assert is_login_page(login)
    claims = id_token_claims(rp, rp.follow_to_callback(rp.sign_in(address(login), user))["code"])
    assert isinstance(claims["auth_time"], int)


def test_max_age_exceeded_forces_login(app: Flask, rp: RelyingParty, user: CreatedUser) -> None:
    start_session(rp.browser, user)
    backdate_sessions(app, 600)
    assert is_login_page(rp.authorize(max_age="300"))


def test_max_age_exceeded_with_prompt_none_is_login_required(
    app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    start_session(rp.browser, user)
    backdate_sessions(app, 600)
    assert callback(rp.authorize(max_age="300", prompt="none"), rp)["error"] == "login_required"


def test_max_age_satisfied_needs_no_login(app: Flask, rp: RelyingParty, user: CreatedUser) -> None:
    start_session(rp.browser, user)
    backdate_sessions(app, 60)
    claims = id_token_claims(rp, callback(rp.authorize(max_age="3600"), rp)["code"])
    assert claims["iat"] - 70 <= claims["auth_time"] <= claims["iat"] - 50


def test_auth_time_is_present_without_max_age(rp: RelyingParty, user: CreatedUser) -> None:
    """OIDC Core 2: idp always includes auth_time, so clients need not ask for it."""
    assert isinstance(jwt_parts(rp.tokens_for(user)["id_token"])[1]["auth_time"], int)


# -- login_hint -----------------------------------------------------------------------------------
def test_login_hint_prefills_the_email_input(rp: RelyingParty) -> None:
    login = rp.authorize(login_hint="ada@example.com")
    assert is_login_page(login)
    assert 'name="email" type="email" value="ada@example.com"' in login.text


def test_login_hint_is_escaped_on_the_login_page(rp: RelyingParty) -> None:
    hint = '"><script>alert(1)</script>'
    page = rp.authorize(login_hint=hint)
    assert is_login_page(page)
    assert "<script>alert(1)" not in page.text
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page.text


# -- id_token_hint --------------------------------------------------------------------------------
def test_id_token_hint_of_the_signed_in_user_with_prompt_none_issues_a_code(
    rp: RelyingParty, user: CreatedUser
) -> None:
    id_token = rp.tokens_for(user)["id_token"]
    params = callback(rp.authorize(prompt="none", id_token_hint=id_token), rp)
    assert params["state"] == rp.state
    assert rp.exchange(params["code"]).status_code == 200


def test_id_token_hint_of_another_user_with_prompt_none_is_login_required(
    app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    id_token = rp.tokens_for(user)["id_token"]
    start_session(rp.browser, create_user(app, email="grace@example.com"))
    response = rp.authorize(prompt="none", id_token_hint=id_token)
    assert callback(response, rp)["error"] == "login_required"


def test_id_token_hint_of_another_user_asks_for_login(
    app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    id_token = rp.tokens_for(user)["id_token"]
    start_session(rp.browser, create_user(app, email="grace@example.com"))
    assert is_login_page(rp.authorize(id_token_hint=id_token))


def test_another_user_signing_in_for_an_id_token_hint_is_login_required(
    app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    """OIDC Core 3.1.2.1 id_token_hint: when neither the hinted user is signed in nor "logged
    in by the request" (another user signs in on its page), the answer is login_required, not
    a code for the other user; the hinted user signing in gets the code."""
    id_token = rp.tokens_for(user)["id_token"]
    browser = RelyingParty(app.test_client(), rp.registered)
    grace = create_user(app, email="grace@example.com")
    params = browser.obtain_code(grace, id_token_hint=id_token)
    assert (params["error"], params["state"]) == ("login_required", browser.state)
    assert "code" in RelyingParty(app.test_client(), rp.registered).obtain_code(
        user, id_token_hint=id_token
    )


def test_an_id_token_hint_signed_by_a_key_since_unpublished_still_names_its_user(
    tmp_path: Path,
) -> None:
    """OIDC Core 3.1.2.1: id_token_hint is an ID token idp issued, expired or not. Two hours
    after a rotation its key has left the JWKS while the session it was issued in lives on (as
    RP-Initiated Logout 1.0 section 2 has the logout endpoint accept it): a relying party's
    prompt=none check with it was invalid_request; it gets the signed-in user's code, until no
    session of its can live."""
    app = sqlite_app(tmp_path)
    rp = RelyingParty(app.test_client(), create_client(app))
    id_token = rp.tokens_for(create_user(app))["id_token"]
    with key_unpublished(app, rp.browser, id_token) as frozen:
        params = callback(rp.authorize(prompt="none", id_token_hint=id_token), rp)
        assert params["state"] == rp.state
        assert "code" in params
        # Past the sessions' absolute lifetime (30 days) no session of its can live: refused.
        frozen.advance(timedelta(days=31))
        params = callback(rp.authorize(id_token_hint=id_token), rp)
        assert params["error"] == "invalid_request"


def test_an_id_token_naming_many_groups_is_still_a_hint_answered_to_the_client(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    """An ID token idp issued is a valid id_token_hint however long its ``groups`` claim makes it
    (OIDC Core 3.1.2.1): one over 4,096 characters was refused as a too-long parameter with an
    error page, so a prompt=none request, which may show no page (OIDC Core 3.1.2.6), never
    reached the client."""
    scopes = ["openid", "profile", "email", "groups", "offline_access"]
    rp = RelyingParty(client, create_client(app, scopes=scopes))
    with app.app_context():
        groups = GroupService(db.session())
        member = [db.session.get(User, user.id)]
        for number in range(64):
            group = groups.create(f"engineering-platform-team-{number:02d}-members")
            groups.add_members(group, member)
        db.session.commit()
    id_token = rp.tokens_for(user, scope="openid groups")["id_token"]
    assert len(id_token) > 4096
    params = callback(rp.authorize(prompt="none", id_token_hint=id_token), rp)
    assert params["state"] == rp.state
    assert rp.exchange(params["code"]).status_code == 200


# -- consent (OIDC Core 3.1.2.4) ------------------------------------------------------------------
def test_first_party_client_skips_consent(rp: RelyingParty, user: CreatedUser) -> None:
    login = rp.authorize()
    after_login = rp.browser.get(rp.sign_in(address(login), user).headers["Location"])
    assert "code" in callback(after_login, rp)


def test_third_party_client_asks_for_consent_and_allow_issues_a_code(
    third_party: RelyingParty, user: CreatedUser
) -> None:
    start_session(third_party.browser, user)
    allowed = answer_consent(third_party, third_party.authorize(), "allow")
    params = third_party.follow_to_callback(allowed)
    assert params["state"] == third_party.state
    assert third_party.exchange(params["code"]).status_code == 200


def test_consent_page_names_the_client_and_the_scopes(
    third_party: RelyingParty, user: CreatedUser
) -> None:
    start_session(third_party.browser, user)
    page = third_party.browser.get(third_party.authorize(scope="openid email").headers["Location"])
    assert "Third Party" in page.text
    assert "see your email address" in page.text
    assert "see your name" not in page.text


def test_consent_to_profile_alone_releases_no_email_address(
    third_party: RelyingParty, user: CreatedUser
) -> None:
    """OIDC Core 3.1.2.4: the consent page says what is released. "profile" says "see your
    name"; the email address (also idp's preferred_username) goes only with "email"."""
    start_session(third_party.browser, user)
    login = third_party.authorize(scope="openid profile")
    page = third_party.browser.get(login.headers["Location"])
    assert "see your name" in page.text
    assert "email address" not in page.text.split("Signed in as")[0]
    params = third_party.follow_to_callback(answer_consent(third_party, login, "allow"))
    tokens = third_party.exchange(params["code"]).get_json()
    claims = jwt_parts(tokens["id_token"])[1]
    released = third_party.userinfo(tokens["access_token"]).get_json()
    assert user.email not in [*claims.values(), *released.values()]
    assert released == {"sub": user.id, "name": released["name"]}


def test_deny_on_consent_redirects_with_access_denied(
    third_party: RelyingParty, user: CreatedUser
) -> None:
    start_session(third_party.browser, user)
    denied = answer_consent(third_party, third_party.authorize(), "deny")
    params = callback(denied, third_party)
    assert params["error"] == "access_denied"
    assert params["state"] == third_party.state
    assert params["iss"] == ISSUER
    assert "code" not in params


def test_the_consent_page_of_a_client_disabled_since_neither_shows_nor_remembers_consent(
    app: Flask, third_party: RelyingParty, user: CreatedUser
) -> None:
    """A client disabled counts at once (docs/admins.md): its requests get the error page at
    /authorize and at /authorize/continue. The consent page of a request that waited there still
    asked the user to share their data with it, and "Allow" remembered that consent, so the app
    skipped the question once enabled again. It is the error page now, and nothing is stored."""
    start_session(third_party.browser, user)
    asked = third_party.authorize()
    assert is_consent_page(asked)
    page = third_party.browser.get(asked.headers["Location"])
    form = {"csrf_token": csrf_token(page.text), "decision": "allow",
            "request": query_of(asked.headers["Location"])["request"]}  # fmt: skip
    with app.app_context():
        client = db.session.get(Client, third_party.registered.client_id)
        assert client is not None
        rt = app.extensions["idp"]
        ClientService(db.session(), rt.client_secrets, issuer=rt.settings.issuer).disable(client)
        db.session.commit()

    # Each is sent on to /authorize/continue, whose answer is the error page.
    for answer in (
        third_party.browser.get(asked.headers["Location"], follow_redirects=True),
        third_party.browser.post("/consent", data=form, follow_redirects=True),
    ):
        assert answer.status_code == 400, answer.text
        assert "Location" not in answer.headers
    assert rows(app, Consent) == []


def test_denied_consent_is_not_remembered(third_party: RelyingParty, user: CreatedUser) -> None:
    start_session(third_party.browser, user)
    answer_consent(third_party, third_party.authorize(), "deny")
    assert (
        callback(third_party.authorize(prompt="none"), third_party)["error"] == "consent_required"
    )


def test_consent_is_remembered_for_the_same_scopes(
    third_party: RelyingParty, user: CreatedUser
) -> None:
    start_session(third_party.browser, user)
    third_party.follow_to_callback(answer_consent(third_party, third_party.authorize(), "allow"))
    assert "code" in callback(third_party.authorize(), third_party)
    assert "code" in callback(third_party.authorize(prompt="none"), third_party)


def test_consent_covers_a_narrower_scope(third_party: RelyingParty, user: CreatedUser) -> None:
    start_session(third_party.browser, user)
    first = third_party.authorize(scope="openid profile email")
    third_party.follow_to_callback(answer_consent(third_party, first, "allow"))
    assert "code" in callback(third_party.authorize(scope="openid email"), third_party)


def test_wider_scope_asks_for_consent_again(third_party: RelyingParty, user: CreatedUser) -> None:
    start_session(third_party.browser, user)
    first = third_party.authorize(scope="openid profile")
    third_party.follow_to_callback(answer_consent(third_party, first, "allow"))
    assert is_consent_page(third_party.authorize(scope="openid profile email"))
    wider = third_party.authorize(scope="openid profile email", prompt="none")
    assert callback(wider, third_party)["error"] == "consent_required"


def test_consent_is_per_user(app: Flask, third_party: RelyingParty, user: CreatedUser) -> None:
    start_session(third_party.browser, user)
    third_party.follow_to_callback(answer_consent(third_party, third_party.authorize(), "allow"))
    start_session(third_party.browser, create_user(app, email="grace@example.com"))
    assert is_consent_page(third_party.authorize())


def test_consent_is_per_client(
    app: Flask, client: FlaskClient, third_party: RelyingParty, user: CreatedUser
) -> None:
    start_session(client, user)
    third_party.follow_to_callback(answer_consent(third_party, third_party.authorize(), "allow"))
    other = RelyingParty(client, create_client(app, first_party=False))
    assert is_consent_page(other.authorize())


def test_prompt_consent_shows_the_page_even_after_consent(
    third_party: RelyingParty, user: CreatedUser
) -> None:
    start_session(third_party.browser, user)
    third_party.follow_to_callback(answer_consent(third_party, third_party.authorize(), "allow"))
    again = third_party.authorize(prompt="consent")
    assert is_consent_page(again)
    assert "code" in third_party.follow_to_callback(answer_consent(third_party, again, "allow"))


def test_consent_post_needs_csrf_token(third_party: RelyingParty, user: CreatedUser) -> None:
    start_session(third_party.browser, user)
    location = third_party.authorize().headers["Location"]
    form = {"request": query_of(location)["request"], "decision": "allow"}
    assert third_party.browser.post("/consent", data=form).status_code == 400


def _open_consent_page(rp: RelyingParty, user: CreatedUser) -> tuple[str, dict[str, str]]:
    """The consent page's address and the form its Allow button posts."""
    start_session(rp.browser, user)
    location = rp.authorize().headers["Location"]
    page = rp.browser.get(location)
    assert page.status_code == 200, page.text
    assert 'value="allow"' in page.text
    form = {"csrf_token": csrf_token(page.text), "request": query_of(location)["request"],
            "decision": "allow"}  # fmt: skip
    return location, form


def _no_consent_was_remembered(app: Flask) -> None:
    assert rows(app, Consent) == []
    assert rows(app, AuditEvent, AuditEvent.kind == "consent.granted") == []


def test_a_client_disabled_while_its_consent_page_is_open_is_neither_shown_nor_consented_to(
    app: Flask, third_party: RelyingParty, user: CreatedUser
) -> None:
    """OIDC Core 3.1.2.4: consent is asked for, and given to, a client idp still serves. One an
    admin disabled while the page was open (its authorization and tokens are refused) is not
    shown again, and an Allow posted from the page shown before remembers nothing: the consent
    page showed it and stored a consent for it (device flow: its review page refuses the same)."""
    location, form = _open_consent_page(third_party, user)
    change(app, update(Client).where(Client.client_id == third_party.registered.client_id)
           .values(disabled_at=utcnow()))  # fmt: skip
    allowed = third_party.browser.post("/consent", data=form)
    shown = third_party.browser.get(location)
    for response in (allowed, shown):
        followed = third_party.browser.get(response.headers["Location"]) if (
            response.status_code == 302) else response  # fmt: skip
        assert followed.status_code == 400, followed.text
        assert 'value="allow"' not in followed.text
    _no_consent_was_remembered(app)


def test_a_user_left_out_of_the_clients_groups_is_not_asked_for_consent(
    app: Flask, third_party: RelyingParty, user: CreatedUser
) -> None:
    """docs/admins.md, "Per-app access": a client limited to groups refuses a user outside them
    before any consent, so that no one shares anything with an app that will refuse them. The
    consent page, opened directly or left open while an admin took the user out, asked all the
    same and stored the consent; it now answers as the request does: the refusal, nothing
    remembered."""
    location, form = _open_consent_page(third_party, user)
    with app.app_context():
        groups = GroupService(db.session())
        groups.create("staff")
        groups.set_allowed_groups(
            db.session.get_one(Client, third_party.registered.client_id), ["staff"]
        )
        db.session.commit()
    allowed = third_party.browser.post("/consent", data=form)
    assert allowed.status_code == 302, allowed.text
    refused = third_party.browser.get(allowed.headers["Location"])
    assert refused.status_code == 403, refused.text
    assert "staff" in refused.text
    _no_consent_was_remembered(app)
    assert third_party.browser.get(location).status_code in (302, 400)


# -- acr_values: step-up --------------------------------------------------------------------------
def test_acr_values_phr_with_a_password_session_asks_for_login(
    rp: RelyingParty, user: CreatedUser
) -> None:
    start_session(rp.browser, user)
    assert is_login_page(rp.authorize(acr_values="phr"))


def test_acr_values_phr_with_a_password_session_and_prompt_none_is_login_required(
    rp: RelyingParty, user: CreatedUser
) -> None:
    start_session(rp.browser, user)
    response = rp.authorize(acr_values="phr", prompt="none")
    assert callback(response, rp)["error"] == "login_required"


def test_acr_values_met_by_the_session_need_no_login(rp: RelyingParty, user: CreatedUser) -> None:
    start_session(rp.browser, user)
    params = callback(rp.authorize(acr_values="urn:idp:acr:password"), rp)
    assert id_token_claims(rp, params["code"])["acr"] == "urn:idp:acr:password"

"""The authorization endpoint's refusals, modelled on the OpenID Foundation's basic OP plan.

One named test per rule, asserting the exact error code and the shape of the answer: before the
client and its redirect URI are verified an error is a 400 page and never a redirect (RFC 6749
4.1.2.1, RFC 9700 4.11); after, it is a redirect carrying ``error``, ``state`` and ``iss``
(RFC 9207 2).
"""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from werkzeug.test import TestResponse

from idp.extensions import db
from idp.models import AuthorizationCode, Client
from idp.models.base import utcnow
from idp.services.backchannel_logout import mint_logout_token
from idp.services.client_fields import fields_of
from idp.services.clients import ClientService
from idp.services.device import DEVICE_CODE_GRANT_TYPE
from tests.functional.test_refresh_scope import allow_grants
from tests.support.factories import REDIRECT_URI, create_client, create_user, rows
from tests.support.flow import RelyingParty, csrf_token, query_of, s256, start_session

ISSUER = "http://localhost"


def assert_error_page(response: TestResponse) -> None:
    assert response.status_code == 400, response.text
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"


def error_redirect(response: TestResponse, rp: RelyingParty, *, state: bool = True) -> str:
    """The error code of a redirect to the client, after checking the redirect's shape."""
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert urlunsplit(urlsplit(location)._replace(query="")) == rp.registered.redirect_uri
    params = query_of(location)
    assert params["iss"] == ISSUER
    assert "code" not in params
    if state:
        assert params["state"] == rp.state
    else:
        assert "state" not in params
    return params["error"]


@pytest.fixture
def rp(app: Flask, client: FlaskClient) -> RelyingParty:
    return RelyingParty(client, create_client(app))


@pytest.fixture
def public_rp(app: Flask, client: FlaskClient) -> RelyingParty:
    return RelyingParty(client, create_client(app, public=True, redirect_uris=[REDIRECT_URI]))


# -- the client and its redirect URI: error pages, never redirects ------------------------------
def test_unknown_client_id_gets_error_page_never_a_redirect(rp: RelyingParty) -> None:
    # The redirect URI is registered, but for another client: it must not be used.
    assert_error_page(rp.authorize(client_id="no-such-client"))


def test_missing_client_id_gets_error_page(rp: RelyingParty) -> None:
    assert_error_page(rp.authorize(client_id=None))


def test_disabled_client_gets_error_page(app: Flask, rp: RelyingParty) -> None:
    with app.app_context():
        db.session.execute(update(Client).values(disabled_at=utcnow()))
        db.session.commit()
    assert_error_page(rp.authorize())


def test_missing_redirect_uri_gets_error_page(rp: RelyingParty) -> None:
    assert_error_page(rp.authorize(redirect_uri=None))


def test_unregistered_redirect_uri_gets_error_page(rp: RelyingParty) -> None:
    assert_error_page(rp.authorize(redirect_uri="https://attacker.example/callback"))


def test_unregistered_redirect_uri_page_and_log_name_the_uri_and_the_client(
    rp: RelyingParty, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever integrates the client learns what was refused: the URI as sent (escaped on the
    page, quoted in the log line) and the client it was sent for."""
    sent = 'https://app.example/cb?x="<b>bold</b>"'
    with caplog.at_level("WARNING", logger="idp.oidc.views"):
        response = rp.authorize(redirect_uri=sent)
    assert_error_page(response)
    assert "<b>bold</b>" not in response.text  # escaped, never markup
    assert "https://app.example/cb?x=\\&#34;&lt;b&gt;bold&lt;/b&gt;\\&#34;" in response.text
    assert "Relying Party" in response.text
    assert rp.registered.client_id in response.text
    [line] = [r.getMessage() for r in caplog.records if "redirect_uri" in r.getMessage()]
    assert '"https://app.example/cb?x=\\"<b>bold</b>\\""' in line
    assert rp.registered.client_id in line


@pytest.mark.parametrize(
    "redirect_uri",
    [
        pytest.param(REDIRECT_URI + "?next=1", id="added-query"),
        pytest.param("https://rp.example/other", id="changed-path"),
        pytest.param("https://rp.example/call", id="prefix"),
        pytest.param(REDIRECT_URI + "/extra", id="suffix"),
        pytest.param(REDIRECT_URI + "/", id="trailing-slash"),
        pytest.param("https://RP.example/callback", id="different-case-host"),
        pytest.param(REDIRECT_URI + "#fragment", id="fragment"),
        pytest.param("http://rp.example/callback", id="http-scheme"),
        pytest.param("https://rp.example:8443/callback", id="added-port"),
        pytest.param("https://rp.example.attacker.example/callback", id="host-suffix"),
        pytest.param("https://rp.example%2F@attacker.example/callback", id="userinfo"),
    ],
)
def test_redirect_uri_not_exactly_registered_is_refused_without_redirect(
    rp: RelyingParty, redirect_uri: str
) -> None:
    """RFC 9700 2.1 and OIDC Core 3.1.2.1: simple string comparison, never a prefix."""
    assert_error_page(rp.authorize(redirect_uri=redirect_uri))


def test_a_loopback_redirect_uri_longer_than_a_code_keeps_is_an_error_page(
    storage_app: Flask,
) -> None:
    """RFC 8252 7.3: a native app's loopback redirect URI takes any port, so the URI requested
    may be longer than the one registered (at most 2,000 characters); the code keeps it in a
    column of that width, where PostgreSQL refused a longer one with a 500 once the user was
    signed in (SQLite kept it). Such a URI is refused with the error page before anything is
    stored, as an unregistered one is; a port that fits still gets its code."""
    prefix = "http://127.0.0.1/"
    registered = prefix + "a" * (1996 - len(prefix))
    browser = storage_app.test_client()
    rp = RelyingParty(
        browser, create_client(storage_app, kind="native", redirect_uris=[registered])
    )
    start_session(browser, create_user(storage_app))

    too_long = registered.replace("127.0.0.1/", "127.0.0.1:65535/")
    assert len(too_long) > 2000
    assert_error_page(rp.authorize(redirect_uri=too_long))
    fits = registered.replace("127.0.0.1/", "127.0.0.1:1/")
    answer = rp.authorize(redirect_uri=fits)
    assert answer.status_code == 302, answer.text
    assert "code" in query_of(answer.headers["Location"])
    assert [code.redirect_uri for code in rows(storage_app, AuthorizationCode)] == [fits]


@pytest.mark.parametrize("name", ["client_id", "redirect_uri"])
def test_duplicate_client_id_or_redirect_uri_gets_error_page(rp: RelyingParty, name: str) -> None:
    params: list[tuple[str, Any]] = list(rp.authorize_params().items())
    params.append((name, rp.authorize_params()[name]))
    assert_error_page(rp.browser.get("/authorize", query_string=params))


def test_post_authorization_request_with_unknown_client_gets_error_page(rp: RelyingParty) -> None:
    """OIDC Core 3.1.2.1: POST is checked exactly like GET."""
    response = rp.browser.post("/authorize", data=rp.authorize_params(client_id="no-such-client"))
    assert_error_page(response)


# -- errors after the redirect URI is verified: redirects with error, state and iss ---------------
@pytest.mark.parametrize(
    "name", ["state", "scope", "response_type", "nonce", "code_challenge", "prompt"]
)
def test_duplicate_parameter_is_invalid_request(rp: RelyingParty, name: str) -> None:
    """RFC 6749 3.1: parameters MUST NOT be included more than once."""
    params: list[tuple[str, Any]] = list(rp.authorize_params().items())
    if name not in rp.authorize_params():
        params.append((name, "login"))
    params.append((name, "second"))
    response = rp.browser.get("/authorize", query_string=params)
    assert error_redirect(response, rp) == "invalid_request"


def test_request_object_is_request_not_supported(rp: RelyingParty) -> None:
    """OIDC Core 6.1 / 3.1.2.6: request objects are not supported (and not advertised)."""
    response = rp.authorize(request="eyJhbGciOiJub25lIn0.e30.")
    assert error_redirect(response, rp) == "request_not_supported"


def test_request_uri_is_request_uri_not_supported(rp: RelyingParty) -> None:
    response = rp.authorize(request_uri="https://rp.example/request.jwt")
    assert error_redirect(response, rp) == "request_uri_not_supported"


@pytest.mark.parametrize(
    "response_type", ["token", "id_token", "code id_token", "code token", "none", "CODE"]
)
def test_response_type_other_than_code_is_unsupported_response_type(
    rp: RelyingParty, response_type: str
) -> None:
    """RFC 9700 2.1.2: the implicit and hybrid flows are not offered."""
    response = rp.authorize(response_type=response_type)
    assert error_redirect(response, rp) == "unsupported_response_type"


def test_a_client_without_the_code_grant_is_unauthorized_client(
    app: Flask, client: FlaskClient
) -> None:
    """RFC 6749 4.1.2.1 unauthorized_client: an app registered for the device flow alone is
    answered before anyone signs in, not handed a code the token endpoint refuses."""
    registered = create_client(app, grant_types=["urn:ietf:params:oauth:grant-type:device_code"])
    rp = RelyingParty(client, registered)
    assert error_redirect(rp.authorize(), rp) == "unauthorized_client"


def test_missing_response_type_is_invalid_request(rp: RelyingParty) -> None:
    assert error_redirect(rp.authorize(response_type=None), rp) == "invalid_request"


@pytest.mark.parametrize("mode", ["fragment", "web_message", "query.jwt"])
def test_unsupported_response_mode_is_invalid_request_sent_in_the_query(
    rp: RelyingParty, mode: str
) -> None:
    assert error_redirect(rp.authorize(response_mode=mode), rp) == "invalid_request"


#: RFC 6749 4.1.2.1: "Values for the "error_description" parameter MUST NOT include characters
#: outside the set %x20-21 / %x23-5B / %x5D-7E".
ERROR_DESCRIPTION_CHARACTERS = set(map(chr, [0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)]))


@pytest.mark.parametrize("mode", ['frag"ment', "frag\\ment", "fragmént", "frag\nment"])
def test_an_error_description_sent_to_the_client_holds_only_the_characters_allowed(
    rp: RelyingParty, mode: str
) -> None:
    """RFC 6749 4.1.2.1: the description of an error redirected to the client quotes the request
    (an unsupported ``response_mode``) in the characters an error description may hold only; a
    quote, a backslash, a line break or a non-ASCII character was sent as it came."""
    response = rp.authorize(response_mode=mode)
    assert error_redirect(response, rp) == "invalid_request"
    description = query_of(response.headers["Location"])["error_description"]
    assert "response_mode" in description
    assert set(description) <= ERROR_DESCRIPTION_CHARACTERS


@pytest.mark.parametrize("scope", [None, "", "admin write", "profile-extended"])
def test_no_allowed_scope_is_invalid_scope(rp: RelyingParty, scope: str | None) -> None:
    response = rp.authorize(scope=scope)
    assert error_redirect(response, rp) == "invalid_scope"


def test_scope_outside_the_registration_is_invalid_scope(app: Flask, client: FlaskClient) -> None:
    rp = RelyingParty(client, create_client(app, scopes=["openid"]))
    assert error_redirect(rp.authorize(scope="profile email"), rp) == "invalid_scope"


def test_unknown_scopes_are_ignored(app: Flask, rp: RelyingParty) -> None:
    user = create_user(app)
    tokens = rp.tokens_for(user, scope="openid unknown email")
    assert tokens["scope"] == "openid email"


# -- PKCE (RFC 7636, RFC 9700 2.1.1): S256 required ----------------------------------------------
def test_public_client_without_code_challenge_is_invalid_request(public_rp: RelyingParty) -> None:
    response = public_rp.authorize(code_challenge=None, code_challenge_method=None)
    assert error_redirect(response, public_rp) == "invalid_request"


def test_confidential_client_without_code_challenge_is_invalid_request_by_default(
    rp: RelyingParty,
) -> None:
    response = rp.authorize(code_challenge=None, code_challenge_method=None)
    assert error_redirect(response, rp) == "invalid_request"


def test_code_challenge_method_plain_is_invalid_request(public_rp: RelyingParty) -> None:
    response = public_rp.authorize(code_challenge=public_rp.verifier, code_challenge_method="plain")
    assert error_redirect(response, public_rp) == "invalid_request"


def test_missing_code_challenge_method_means_plain_and_is_invalid_request(
    public_rp: RelyingParty,
) -> None:
    """RFC 7636 4.3: an absent method defaults to ``plain``."""
    response = public_rp.authorize(code_challenge_method=None)
    assert error_redirect(response, public_rp) == "invalid_request"


@pytest.mark.parametrize("method", ["s256", "S512", ""])
def test_unknown_code_challenge_method_is_invalid_request(rp: RelyingParty, method: str) -> None:
    assert error_redirect(rp.authorize(code_challenge_method=method), rp) == "invalid_request"


@pytest.mark.parametrize(
    "challenge",
    [
        pytest.param("too-short", id="too-short"),
        pytest.param("a" * 129, id="too-long"),
        pytest.param(s256("x")[:-1] + "=", id="padding"),
        pytest.param(s256("x")[:-1] + "+", id="plus"),
        pytest.param(s256("x")[:-1] + "/", id="slash"),
        # A regular expression's "$" matches before a final line break: it was accepted.
        pytest.param(s256("x") + "\n", id="line-break"),
    ],
)
def test_malformed_code_challenge_is_invalid_request(rp: RelyingParty, challenge: str) -> None:
    """RFC 7636 4.2: 43-128 characters of the unreserved set."""
    assert error_redirect(rp.authorize(code_challenge=challenge), rp) == "invalid_request"


def test_code_challenge_method_without_challenge_is_invalid_request(rp: RelyingParty) -> None:
    assert error_redirect(rp.authorize(code_challenge=None), rp) == "invalid_request"


# -- prompt, max_age, id_token_hint (OIDC Core 3.1.2.1, 3.1.2.6) ----------------------------------
def test_prompt_none_without_session_is_login_required(rp: RelyingParty) -> None:
    assert error_redirect(rp.authorize(prompt="none"), rp) == "login_required"


def test_prompt_none_without_consent_for_third_party_client_is_consent_required(
    app: Flask, client: FlaskClient
) -> None:
    start_session(client, create_user(app))
    rp = RelyingParty(client, create_client(app, first_party=False))
    assert error_redirect(rp.authorize(prompt="none"), rp) == "consent_required"


@pytest.mark.parametrize("prompt", ["none login", "login none", "none consent"])
def test_prompt_none_combined_with_another_value_is_invalid_request(
    rp: RelyingParty, prompt: str
) -> None:
    assert error_redirect(rp.authorize(prompt=prompt), rp) == "invalid_request"


@pytest.mark.parametrize("prompt", ["bogus", "login bogus", "NONE"])
def test_unknown_prompt_value_is_invalid_request(rp: RelyingParty, prompt: str) -> None:
    assert error_redirect(rp.authorize(prompt=prompt), rp) == "invalid_request"


@pytest.mark.parametrize("max_age", ["abc", "-1", "1.5", "1e3", " 10", "99999999999"])
def test_max_age_not_a_non_negative_integer_is_invalid_request(
    rp: RelyingParty, max_age: str
) -> None:
    assert error_redirect(rp.authorize(max_age=max_age), rp) == "invalid_request"


@pytest.mark.parametrize("max_age", ["\u00b2", "\u0661\u0662", "\uff11\uff10", "\U0001d7ce"])
def test_max_age_in_digits_other_than_ascii_is_invalid_request(
    rp: RelyingParty, max_age: str
) -> None:
    # OIDC Core 3.1.2.1: max_age is a number of seconds, in the request's decimal digits 0-9.
    # A superscript two was a 500 (str.isdigit accepts it, int() does not) and Arabic-Indic or
    # full-width digits were taken for seconds; each is invalid_request, sent to the client.
    assert error_redirect(rp.authorize(max_age=max_age), rp) == "invalid_request"


@pytest.mark.parametrize(
    "hint",
    [
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", id="alg-none"),
        pytest.param("a.b.c", id="undecodable"),
    ],
)
def test_invalid_id_token_hint_is_invalid_request(rp: RelyingParty, hint: str) -> None:
    assert error_redirect(rp.authorize(id_token_hint=hint), rp) == "invalid_request"


def test_id_token_hint_issued_to_another_client_is_invalid_request(
    app: Flask, client: FlaskClient, rp: RelyingParty
) -> None:
    other = RelyingParty(client, create_client(app, redirect_uris=["https://other.example/cb"]))
    id_token = other.tokens_for(create_user(app))["id_token"]
    response = rp.authorize(id_token_hint=id_token)
    assert error_redirect(response, rp) == "invalid_request"


def test_a_logout_token_is_no_id_token_hint(app: Flask, rp: RelyingParty) -> None:
    """OIDC Core 3.1.2.1: id_token_hint is an ID token idp issued. A logout token is signed with
    the same keys and names the client in ``aud`` and the user in ``sub``, but it is typed
    ``logout+jwt`` (RFC 8725 3.11, Back-Channel Logout 2.4): it was taken for an ID token and
    answered prompt=none with a code; it is invalid_request, as at the logout endpoint."""
    user = create_user(app)
    start_session(rp.browser, user)
    with app.app_context():
        rt = app.extensions["idp"]
        registered = db.session.get(Client, rp.registered.client_id)
        assert registered is not None
        logout_token = mint_logout_token(
            db.session(),
            rt.keys,
            rt.settings.issuer,
            registered,
            {"sid": "s", "sub": user.id},
            utcnow(),
        )
    response = rp.authorize(prompt="none", id_token_hint=logout_token)
    assert error_redirect(response, rp) == "invalid_request"


# -- the shape of every error redirect -----------------------------------------------------------
ERROR_CASES = [
    pytest.param({"response_type": "token"}, "unsupported_response_type", id="response_type"),
    pytest.param({"scope": "nothing-known"}, "invalid_scope", id="scope"),
    pytest.param({"code_challenge": None}, "invalid_request", id="pkce"),
    pytest.param({"prompt": "none"}, "login_required", id="prompt-none"),
    pytest.param({"request": "x.y.z"}, "request_not_supported", id="request"),
]


@pytest.mark.parametrize(("overrides", "error"), ERROR_CASES)
def test_every_error_redirect_carries_iss_and_echoes_state(
    rp: RelyingParty, overrides: dict[str, Any], error: str
) -> None:
    """RFC 9207 2 (iss) and RFC 6749 4.1.2.1 (state exactly as received)."""
    rp.state = "st<a>te & more/?"
    assert error_redirect(rp.authorize(**overrides), rp) == error


@pytest.mark.parametrize(("overrides", "error"), ERROR_CASES)
def test_error_redirect_without_state_has_iss_and_no_state(
    rp: RelyingParty, overrides: dict[str, Any], error: str
) -> None:
    response = rp.authorize(state=None, **overrides)
    assert error_redirect(response, rp, state=False) == error


def test_error_redirect_keeps_the_registered_query(app: Flask, client: FlaskClient) -> None:
    """RFC 6749 3.1.2: the redirect URI's own query component is retained."""
    rp = RelyingParty(client, create_client(app, redirect_uris=[REDIRECT_URI + "?tenant=a"]))
    response = rp.authorize(prompt="none")
    assert response.status_code == 302
    params = query_of(response.headers["Location"])
    assert params == {
        "tenant": "a",
        "error": "login_required",
        "error_description": params["error_description"],
        "state": rp.state,
        "iss": ISSUER,
    }


# -- what is tolerated ----------------------------------------------------------------------------
def test_unknown_parameters_are_ignored(app: Flask, rp: RelyingParty) -> None:
    """RFC 6749 3.1 and OIDC Core 3.1.2.1: unrecognised parameters MUST be ignored."""
    user = create_user(app)
    callback = rp.obtain_code(user, foo="bar", claims_locales="de", ui_locales="fr")
    assert callback["state"] == rp.state
    assert rp.exchange(callback["code"]).status_code == 200


@pytest.mark.parametrize("name", ["request", "request_uri", "state", "nonce", "id_token_hint"])
def test_a_parameter_sent_without_a_value_is_treated_as_omitted(
    app: Flask, rp: RelyingParty, name: str
) -> None:
    """RFC 6749 3.1: "Parameters sent without a value MUST be treated as if they were omitted
    from the request." An empty ``request`` or ``request_uri`` was request_not_supported, and an
    empty ``state`` came back as ``state=`` in the response (RFC 6749 4.1.2 echoes a state only
    when the request had one)."""
    start_session(rp.browser, create_user(app))
    response = rp.authorize(prompt="none", **{name: ""})
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert "error=" not in location, location
    assert "code=" in location, location
    if name == "state":
        assert "state=" not in urlsplit(location).query, location


# -- response_mode=form_post (OAuth 2.0 Form Post Response Mode 2) --------------------------------
HIDDEN_INPUT = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def form_post_fields(response: TestResponse, rp: RelyingParty) -> dict[str, str]:
    """The hidden inputs of an auto-submitting form to the redirect URI, after checking it."""
    assert response.status_code == 200, response.text
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"
    html = response.text
    assert re.search(
        rf'<form method="post" action="{re.escape(rp.registered.redirect_uri)}"', html
    ), html
    script = re.search(r'<script nonce="([^"]+)">([^<]*)</script>', html)
    assert script is not None, html
    assert ".submit()" in script.group(2)
    csp = response.headers["Content-Security-Policy"]
    assert f"script-src 'nonce-{script.group(1)}'" in csp
    return dict(HIDDEN_INPUT.findall(html))


def test_form_post_success_renders_an_auto_submitting_form(app: Flask, rp: RelyingParty) -> None:
    user = create_user(app)
    login = rp.sign_in_page(response_mode="form_post")
    continued = rp.sign_in(login, user)
    response = rp.browser.get(continued.headers["Location"])
    fields = form_post_fields(response, rp)
    assert set(fields) == {"code", "state", "iss"}
    assert fields["state"] == rp.state
    assert fields["iss"] == ISSUER
    assert rp.exchange(fields["code"]).status_code == 200


def test_form_post_error_is_posted_not_redirected(rp: RelyingParty) -> None:
    fields = form_post_fields(rp.authorize(response_mode="form_post", prompt="none"), rp)
    assert fields["error"] == "login_required"
    assert fields["state"] == rp.state
    assert fields["iss"] == ISSUER


def test_form_post_escapes_the_echoed_state(rp: RelyingParty) -> None:
    rp.state = '"><script>alert(1)</script>'
    response = rp.authorize(response_mode="form_post", prompt="none")
    fields = form_post_fields(response, rp)
    assert "<script>alert(1)" not in response.text
    assert fields["state"] == "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"


def test_a_redirect_uri_removed_while_the_request_waits_gets_no_code(
    app: Flask, client: FlaskClient
) -> None:
    """RFC 6749 3.1.2.3 / OIDC Core 3.1.2.1: the code goes only to a redirect URI registered for
    the client. A request waiting for sign-in (or consent) kept the URI checked when it arrived:
    an admin removing it (a lost domain, say) stopped nothing for up to the pending request's
    lifetime, and the code of the next sign-in went to the removed URI. The request is answered
    under the registration as it stands: an error page, never a redirect (OIDC Core 3.1.2.6)."""
    old = "https://lost.example/callback"
    rp = RelyingParty(client, create_client(app, redirect_uris=[old, REDIRECT_URI]))
    user = create_user(app)
    address = rp.sign_in_page()
    remove_redirect_uri(app, rp, keep=REDIRECT_URI)
    response = rp.sign_in(address, user)
    follow_to_the_page(response, rp, old)
    assert not rows(app, AuthorizationCode)


def test_a_denial_goes_to_no_redirect_uri_removed_while_the_request_waited(
    app: Flask, client: FlaskClient
) -> None:
    """The same for the consent page's answer: access_denied is not sent to the removed URI."""
    old = "https://lost.example/callback"
    rp = RelyingParty(
        client, create_client(app, redirect_uris=[old, REDIRECT_URI], first_party=False)
    )
    consent = rp.sign_in(rp.sign_in_page(), create_user(app))
    while not consent.headers["Location"].startswith("/consent"):
        consent = rp.browser.get(consent.headers["Location"])
    page = rp.browser.get(consent.headers["Location"])
    form = {"csrf_token": csrf_token(page.text), "decision": "deny",
            "request": query_of(consent.headers["Location"])["request"]}  # fmt: skip
    remove_redirect_uri(app, rp, keep=REDIRECT_URI)
    follow_to_the_page(rp.browser.post("/consent", data=form), rp, old)


def test_a_client_that_lost_the_code_grant_while_the_request_waits_is_unauthorized_client(
    app: Flask, rp: RelyingParty
) -> None:
    """RFC 6749 4.1.2.1 unauthorized_client, as for a request that arrives after the change: an
    admin took the authorization code grant from the client while its request waited for sign-in,
    and the sign-in still issued a code (stored, its grant opened, audited), which the token
    endpoint then refuses. The stored request is answered under the registration as it stands:
    the error goes back to the client with its state and ``iss``, and no code is issued."""
    address = rp.sign_in_page()
    allow_grants(app, rp.registered.client_id, [DEVICE_CODE_GRANT_TYPE])
    response = rp.sign_in(address, create_user(app))
    for _ in range(5):
        location = response.headers.get("Location", "")
        if response.status_code not in (302, 303) or location.startswith(REDIRECT_URI):
            break
        response = rp.browser.get(location)
    assert error_redirect(response, rp) == "unauthorized_client"
    assert not rows(app, AuthorizationCode)


def remove_redirect_uri(app: Flask, rp: RelyingParty, *, keep: str) -> None:
    with app.app_context():
        rt = app.extensions["idp"]
        service = ClientService(db.session(), rt.client_secrets, issuer=rt.settings.issuer)
        registered = service.get(rp.registered.client_id)
        assert registered is not None
        service.update(registered, dataclasses.replace(fields_of(registered), redirect_uris=[keep]))
        db.session.commit()


def follow_to_the_page(response: TestResponse, rp: RelyingParty, removed: str) -> None:
    """Follow idp's redirects, none of them to ``removed``, to the error page."""
    for _ in range(5):
        assert not response.headers.get("Location", "").startswith(removed), response.headers
        if response.status_code not in (302, 303):
            break
        response = rp.browser.get(response.headers["Location"])
    assert_error_page(response)


def test_pending_request_expires(app: Flask, rp: RelyingParty) -> None:
    """A sign-in page left open past the pending request's lifetime cannot mint a code."""
    from idp.models import PendingAuthorization

    user = create_user(app)
    login = rp.sign_in_page()
    with app.app_context():
        db.session.execute(
            update(PendingAuthorization).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
    rp.sign_in(login, user)
    pending_id = query_of(login)["request"]
    assert_error_page(rp.browser.get(f"/authorize/continue/{pending_id}"))

"""Property-based fuzzing of the browser-facing protocol endpoints (hypothesis): the authorization
endpoint (GET and POST) and RP-initiated logout (GET and POST). A registered client and redirect
URI are sent in most examples, so that the generated parameters reach the checks after them.

Whatever is sent: never a 5xx; an error about the client or its redirect URI is idp's own page,
never a redirect (RFC 6749 4.1.2.1, RFC 9700 4.11); every other error goes to the registered URI
with a registered `error`, the `state` sent and `iss` (RFC 9207); a repeated parameter is refused
(RFC 6749 3.1); a redirect goes only to idp itself or to a registered URI; nothing sent comes back
unescaped in a page or in a header.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from idp.oidc.checks import SINGLE_VALUED
from tests.support.factories import POST_LOGOUT_URI, REDIRECT_URI
from tests.support.fuzz_rig import ISSUER, RP_ORIGINS, Rig, fuzz_app
from tests.support.fuzzing import (
    BODY_KINDS,
    Raw,
    Tally,
    body,
    check_answer,
    encode,
    fresh_address,
    mutations,
    run_examples,
    values,
)

#: RFC 6749 4.1.2.1 and OIDC Core 3.1.2.6.
AUTHORIZE_ERRORS = frozenset(
    {
        "invalid_request",
        "unauthorized_client",
        "access_denied",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "interaction_required",
        "login_required",
        "account_selection_required",
        "consent_required",
        "invalid_request_uri",
        "invalid_request_object",
        "request_not_supported",
        "request_uri_not_supported",
        "registration_not_supported",
    }
)
AUTHORIZE_PARAMETERS = (*SINGLE_VALUED, "claims", "ui_locales", "registration")
LOGOUT_PARAMETERS = (
    "id_token_hint",
    "post_logout_redirect_uri",
    "state",
    "client_id",
    "logout_hint",
    "ui_locales",
    "confirm",
    "logout_return",
)
STATE = "st-1"
FORM_POST = f'action="{REDIRECT_URI}" id="form-post-response"'
HIDDEN_FIELD = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')
AUTHORIZE_EXAMPLES = 700
LOGOUT_EXAMPLES = 200


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Rig:
    return Rig.build(fuzz_app(tmp_path_factory.mktemp("fuzz-authorize")))


def run_counted(test: Callable[..., None], rig: Rig, examples: int) -> Tally:
    tally = Tally()
    run_examples(test, examples, rig, tally)
    return tally


def plain(value: str) -> bool:
    """Whether idp reads ``value`` back as it was sent (no raw bytes, no surrogate, no NUL)."""
    if isinstance(value, Raw) or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def sent_once(pairs: list[tuple[str, str]], name: str) -> str | None:
    """The value of ``name`` as idp reads it, or None when it is absent or not read as sent."""
    given_values = [value for n, value in pairs if n == name and value != ""]
    if len(given_values) != 1 or not plain(given_values[0]):
        return None
    return given_values[0]


def repeated(pairs: list[tuple[str, str]]) -> bool:
    names = [n for n, value in pairs if n in SINGLE_VALUED and value != ""]
    return len(names) != len(set(names))


def send(
    rig: Rig,
    path: str,
    pairs: list[tuple[str, str]],
    http_method: str,
    kind: str,
    headers: dict[str, str],
) -> TestResponse:
    if http_method == "GET":
        options: dict[str, Any] = {"query_string": encode(pairs)}
    else:
        options = body(pairs, kind)
    response = rig.http().open(
        path, method=http_method, headers=headers, environ_base=fresh_address(), **options
    )
    check_answer(response, allowed_hosts=RP_ORIGINS)
    return response


def redirect_query(response: TestResponse, registered: str) -> dict[str, list[str]] | None:
    """The query of a redirect to ``registered``, or None for any other answer."""
    location = response.headers.get("Location", "")
    if response.status_code not in (302, 303) or not location.startswith(registered):
        return None
    assert location.split("?", 1)[0] == registered, location
    return parse_qs(urlsplit(location).query, keep_blank_values=True)


# -- the authorization endpoint ------------------------------------------------------------------
@given(
    http_method=st.sampled_from(("GET", "POST")),
    signed_in=st.booleans(),
    spoiled=st.sampled_from((None, None, None, None, "client_id", "redirect_uri")),
    spoiler=values(),
    fuzz=st.one_of(st.just([]), mutations(AUTHORIZE_PARAMETERS, max_size=4)),
    kind=st.sampled_from(BODY_KINDS),
    cross_site=st.sampled_from((False, False, True)),
    mode=st.sampled_from((None, None, "query", "form_post")),
    prompt=st.sampled_from((None, None, "none", "login", "consent", "none login")),
)
def _authorize_example(
    rig: Rig,
    tally: Tally,
    http_method: str,
    signed_in: bool,
    spoiled: str | None,
    spoiler: str,
    fuzz: list[tuple[str, str]],
    kind: str,
    cross_site: bool,
    mode: str | None,
    prompt: str | None,
) -> None:
    params = rig.authorize_params("client_secret_basic", state=STATE)
    params.update({name: value for name, value in (("response_mode", mode), ("prompt", prompt))
                   if value is not None})  # fmt: skip
    if spoiled is not None:
        params[spoiled] = spoiler
    pairs = [*params.items(), *fuzz]
    headers = {"Cookie": rig.cookie} if signed_in else {}
    if cross_site:
        headers["Sec-Fetch-Site"] = "cross-site"
    response = send(rig, "/authorize", pairs, http_method, kind, headers)
    client_named = sent_once(pairs, "client_id") == params["client_id"] and spoiled != "client_id"
    uri_named = sent_once(pairs, "redirect_uri") == REDIRECT_URI and spoiled != "redirect_uri"
    query = redirect_query(response, REDIRECT_URI)
    page = response.get_data(as_text=True)
    if query is None and FORM_POST in page:
        # response_mode=form_post (OAuth 2.0 Form Post Response Mode 2): the same answer, as
        # the fields of a form the page posts to the redirect URI.
        query = {}
        for name, value in HIDDEN_FIELD.findall(page):
            query.setdefault(html.unescape(name), []).append(html.unescape(value))
        tally.add("form_post")
    if query is None:
        if not ((client_named and uri_named) or cross_site):
            # RFC 6749 4.1.2.1: an unknown client or redirect URI gets idp's error page.
            assert response.status_code in (400, 413), response.status_code
        tally.add(f"status {response.status_code}")
        return
    # Only a registered client's registered redirect URI, named once, is ever redirected to.
    assert client_named, pairs
    assert uri_named, pairs
    assert query.get("iss") == [ISSUER], query  # RFC 9207 2
    state = sent_once(pairs, "state")
    if state is not None and not repeated(pairs):
        assert query.get("state") == [state], (query, pairs)
    if "error" in query:
        assert query["error"][0] in AUTHORIZE_ERRORS, query
        tally.add("redirected error")
        return
    assert "code" in query, query
    # RFC 6749 3.1: a parameter sent twice is refused, never answered with a code.
    assert not repeated(pairs), pairs
    tally.add("code")


def test_authorization_endpoint_errors_and_redirects_by_the_rfc(rig: Rig) -> None:
    tally = run_counted(_authorize_example, rig, AUTHORIZE_EXAMPLES)
    for outcome in ("code", "redirected error", "status 400", "form_post"):
        assert tally[outcome] > 0, tally


# -- RP-initiated logout -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def id_token(rig: Rig) -> str:
    return str(rig.tokens("client_secret_basic")["id_token"])


@given(
    http_method=st.sampled_from(("GET", "POST")),
    signed_in=st.booleans(),
    hint=st.booleans(),
    uri=st.one_of(st.just(POST_LOGOUT_URI), st.just(POST_LOGOUT_URI), values()),
    fuzz=st.one_of(st.just([]), mutations(LOGOUT_PARAMETERS, max_size=3)),
    kind=st.sampled_from(BODY_KINDS),
)
def _logout_example(
    rig: Rig,
    tally: Tally,
    id_token: str,
    http_method: str,
    signed_in: bool,
    hint: bool,
    uri: str,
    fuzz: list[tuple[str, str]],
    kind: str,
) -> None:
    pairs = [("post_logout_redirect_uri", uri), ("state", STATE)]
    if hint:
        pairs.append(("id_token_hint", id_token))
    pairs += fuzz
    headers = {"Cookie": rig.session_cookie()} if signed_in else {}
    response = send(rig, "/logout", pairs, http_method, kind, headers)
    query = redirect_query(response, POST_LOGOUT_URI)
    if query is None:
        tally.add(f"status {response.status_code}")
        return
    # RP-Initiated Logout 3: only to a URI registered for the client the hint names, and the
    # state sent is given back.
    assert sent_once(pairs, "post_logout_redirect_uri") == POST_LOGOUT_URI, pairs
    assert sent_once(pairs, "id_token_hint") == id_token, pairs
    # Each parameter once, as at the authorization endpoint (RFC 6749 3.1).
    names = [name for name, _ in pairs if name in LOGOUT_PARAMETERS]
    if kind == "form" or http_method == "GET":
        assert len(names) == len(set(names)), pairs
    state = sent_once(pairs, "state")
    if state is not None:
        assert query.get("state") == [state], (query, pairs)
    tally.add("redirected back")


def test_logout_redirects_only_to_registered_uris(rig: Rig, id_token: str) -> None:
    tally = Tally()
    run_examples(_logout_example, LOGOUT_EXAMPLES, rig, tally, id_token)
    for outcome in ("redirected back", "status 200", "status 400"):
        assert tally[outcome] > 0, tally

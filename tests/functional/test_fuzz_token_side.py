"""Property-based fuzzing of the token side (hypothesis): the token endpoint for each grant and each
way a client authenticates, introspection, revocation, userinfo, device authorization, discovery
and the JWKS. Real credentials, codes and tokens are mixed with generated parameters so that the
requests get past the first checks; each test counts where its answers came from and fails if
the examples never reached past client authentication.

Whatever is sent: never a 5xx; an error is JSON with a code of the RFC's registered set and its
status (RFC 6749 5.2, RFC 7662 2.3, RFC 7009 2.2.1, RFC 8628 3.5, RFC 6750 3.1); token answers
are not stored (RFC 6749 5.1); nothing sent comes back unescaped or in a header.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from idp.services.device import DEVICE_CODE_GRANT_TYPE
from tests.support.factories import REDIRECT_URI
from tests.support.fuzz_rig import AUTH_METHODS, GRANTS, Rig, fuzz_app
from tests.support.fuzzing import (
    BODY_KINDS,
    Tally,
    basic,
    body,
    check_answer,
    encode,
    fresh_address,
    json_error,
    mutations,
    odd_text,
    run_examples,
    values,
)

#: RFC 6749 5.2.
TOKEN_ERRORS = frozenset({
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
    "unsupported_grant_type", "invalid_scope",
})  # fmt: skip
#: RFC 8628 3.5, at the token endpoint for the device grant.
DEVICE_POLL_ERRORS = frozenset({"authorization_pending", "slow_down", "access_denied",
                                "expired_token"})  # fmt: skip
#: RFC 7009 2.2.1: RFC 6749 5.2's and one of its own.
REVOCATION_ERRORS = TOKEN_ERRORS | {"unsupported_token_type"}
#: RFC 6750 3.1.
BEARER_ERRORS = frozenset({"invalid_request", "invalid_token", "insufficient_scope"})
TOKEN_PARAMETERS = (
    "grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "scope",
    "device_code", "client_id", "client_secret", "client_assertion", "client_assertion_type",
)  # fmt: skip


#: The endpoints a single-page app calls from its page (docs/security.md, CORS).
PAGE_CALLS = ("/token", "/revoke", "/userinfo")

#: A secret or assertion: most often the real one, so that the other parameters are what is fuzzed.
BROKEN = st.one_of(st.none(), st.none(), st.none(), values())


def fuzzed(names: tuple[str, ...]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """No fuzzed parameter in a third of the examples: those are the ones that succeed."""
    return st.one_of(st.just([]), mutations(names), mutations(names))


#: Examples per test: together with the browser side's, about a minute on a 2-core machine.
TOKEN_EXAMPLES = 800
ENDPOINT_EXAMPLES = 250


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Rig:
    return Rig.build(fuzz_app(tmp_path_factory.mktemp("fuzz-token-side")))


def header_safe(value: str) -> str:
    """A generated value as an HTTP client can send it in a header (ISO 8859-1, one line)."""
    return value.encode("latin-1", "replace").decode("latin-1").replace("\r", "").replace("\n", "")


def check_each_once(pairs: list[tuple[str, str]], kind: str) -> None:
    """RFC 6749 3.2: an answer other than an error means no parameter came twice."""
    names = [name for name, _ in pairs]
    if kind == "form":
        assert len(names) == len(set(names)), pairs


def check_error_status(response: TestResponse, error: str, headers: dict[str, str]) -> None:
    """RFC 6749 5.2: 400, but invalid_client is 401 when the client tried the Authorization
    header (and may be 401 otherwise)."""
    if error == "invalid_client":
        expected = {401} if "Authorization" in headers else {400, 401}
    elif error == "invalid_request":
        expected = {400, 413}  # 413: a body over the limit, refused before it is read
    else:
        expected = {400}
    assert response.status_code in expected, (response.status_code, error)


def client_auth(
    rig: Rig, method: str, broken: str | None
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The client of ``method`` authenticating, or with ``broken`` as its secret or assertion."""
    pairs, headers = rig.authentication(method)
    if broken is None:
        return pairs, headers
    if method == "client_secret_basic":
        return pairs, {"Authorization": basic(rig.clients[method].client_id, broken)}
    name = {"client_secret_post": "client_secret", "private_key_jwt": "client_assertion"}.get(
        method, "client_id"
    )
    return [(n, broken if n == name else v) for n, v in pairs], headers


def grant_pairs(rig: Rig, grant: str, method: str, real: bool) -> list[tuple[str, str]]:
    """The grant's own parameters, with a real code or token when ``real``."""
    if grant == "authorization_code":
        code = rig.code(method) if real else "not-a-code"
        return [("code", code), ("redirect_uri", REDIRECT_URI), ("code_verifier", rig.verifier)]
    if grant == "refresh_token":
        token = rig.tokens(method)["refresh_token"] if real else "not-a-token"
        return [("refresh_token", token)]
    if grant == DEVICE_CODE_GRANT_TYPE:
        return [("device_code", rig.device_code(method) if real else "not-a-code")]
    return [("scope", "openid")]


def send(
    rig: Rig,
    path: str,
    pairs: list[tuple[str, str]],
    kind: str,
    headers: dict[str, str],
    method: str = "POST",
) -> TestResponse:
    options: dict[str, Any] = body(pairs, kind) if method == "POST" else {}
    response = rig.http().open(
        path, method=method, headers=headers, environ_base=fresh_address(), **options
    )
    check_answer(response)
    if path.split("?")[0] in PAGE_CALLS:
        # A single-page app's script reads every answer, a refusal too (CORS).
        assert response.headers.get("Access-Control-Allow-Origin") == "*", response.headers
    return response


@given(
    grant=st.sampled_from(GRANTS),
    method=st.sampled_from(AUTH_METHODS),
    real=st.booleans(),
    broken=BROKEN,
    fuzz=fuzzed(TOKEN_PARAMETERS),
    kind=st.sampled_from(BODY_KINDS),
)
def _token_example(
    rig: Rig,
    tally: Tally,
    grant: str,
    method: str,
    real: bool,
    broken: str | None,
    fuzz: list[tuple[str, str]],
    kind: str,
) -> None:
    auth_pairs, headers = client_auth(rig, method, None if broken is None else header_safe(broken))
    pairs = [("grant_type", grant), *grant_pairs(rig, grant, method, real), *auth_pairs, *fuzz]
    response = send(rig, "/token", pairs, kind, headers)
    # RFC 6749 5.1 and 5.2: no token answer is stored by a cache, an error's neither.
    assert "no-store" in response.headers.get("Cache-Control", ""), response.headers
    tally.add(f"status {response.status_code}")
    if response.status_code == 200:
        check_each_once(pairs, kind)
        document = response.get_json()
        assert document["token_type"] == "Bearer", document
        assert document["access_token"], document
        tally.add(f"{grant} granted")
        tally.add(f"{method} authenticated")
        return
    error = json_error(response, TOKEN_ERRORS | DEVICE_POLL_ERRORS)
    check_error_status(response, error, headers)
    if error in DEVICE_POLL_ERRORS:
        assert grant == DEVICE_CODE_GRANT_TYPE, (grant, error)
    if error != "invalid_client":
        tally.add(f"{grant} past client authentication")
        tally.add(f"{method} authenticated")


def run_counted(test: Callable[..., None], rig: Rig, examples: int) -> Tally:
    tally = Tally()
    run_examples(test, examples, rig, tally)
    return tally


def test_token_endpoint_answers_every_grant_and_authentication_by_the_rfc(rig: Rig) -> None:
    tally = run_counted(_token_example, rig, TOKEN_EXAMPLES)
    for grant in GRANTS:
        assert tally[f"{grant} past client authentication"] + tally[f"{grant} granted"] > 0, tally
    for grant in ("authorization_code", "refresh_token", "client_credentials"):
        assert tally[f"{grant} granted"] > 0, tally
    for method in AUTH_METHODS:
        assert tally[f"{method} authenticated"] > 0, tally


# -- introspection (RFC 7662) and revocation (RFC 7009) ------------------------------------------
TOKEN_HINTS = ("access_token", "refresh_token")
LOOKUP_PARAMETERS = ("token", "token_type_hint", "client_id", "client_secret")


def a_token(rig: Rig, method: str, which: str) -> str:
    """A live token of the client of ``method`` (or of another client), or none."""
    if which == "none":
        return "not-a-token"
    owner = method if which != "another client's" else "client_secret_basic"
    kind = "refresh_token" if which.startswith("refresh") else "access_token"
    return str(rig.tokens(owner)[kind])


WHICH_TOKEN = st.sampled_from(("access", "refresh", "none", "another client's"))
#: The generated parts of an introspection's or a revocation's request (``_ask_about_a_token``).
ABOUT_A_TOKEN = {
    "method": st.sampled_from(AUTH_METHODS),
    "which": WHICH_TOKEN,
    "broken": BROKEN,
    "fuzz": fuzzed(LOOKUP_PARAMETERS),
    "kind": st.sampled_from(BODY_KINDS),
}


def _ask_about_a_token(
    rig: Rig,
    path: str,
    method: str,
    which: str,
    broken: str | None,
    fuzz: list[tuple[str, str]],
    kind: str,
) -> tuple[list[tuple[str, str]], dict[str, str], Any]:
    """Introspection's and revocation's request: a token of ``which`` kind, the client's
    authentication by ``method`` (``broken`` spoiling it) and the fuzzed pairs, as ``kind``."""
    auth_pairs, headers = client_auth(rig, method, None if broken is None else header_safe(broken))
    pairs = [("token", a_token(rig, method, which)), *auth_pairs, *fuzz]
    return pairs, headers, send(rig, path, pairs, kind, headers)


@given(**ABOUT_A_TOKEN)
def _introspection_example(
    rig: Rig,
    tally: Tally,
    method: str,
    which: str,
    broken: str | None,
    fuzz: list[tuple[str, str]],
    kind: str,
) -> None:
    pairs, headers, response = _ask_about_a_token(
        rig, "/introspect", method, which, broken, fuzz, kind
    )
    if response.status_code == 200:
        check_each_once(pairs, kind)
        # RFC 7662 2.2: always ``active``; anything else only for an active token.
        document = response.get_json()
        assert isinstance(document.get("active"), bool), document
        assert document["active"] or document == {"active": False}, document
        tally.add("active" if document["active"] else "inactive")
        return
    # RFC 7662 2.3: 401 for a client that failed to authenticate, else RFC 6749 5.2's 400.
    check_error_status(response, json_error(response, TOKEN_ERRORS), headers)


def test_introspection_answers_by_rfc_7662(rig: Rig) -> None:
    tally = run_counted(_introspection_example, rig, ENDPOINT_EXAMPLES)
    assert tally["active"] > 0, tally
    assert tally["inactive"] > 0, tally


@given(**ABOUT_A_TOKEN)
def _revocation_example(
    rig: Rig,
    tally: Tally,
    method: str,
    which: str,
    broken: str | None,
    fuzz: list[tuple[str, str]],
    kind: str,
) -> None:
    pairs, headers, response = _ask_about_a_token(rig, "/revoke", method, which, broken, fuzz, kind)
    if response.status_code == 200:
        check_each_once(pairs, kind)
        # RFC 7009 2.2: 200 for a revoked token and for an invalid one alike.
        tally.add(f"revoked {which}")
        return
    check_error_status(response, json_error(response, REVOCATION_ERRORS), headers)


def test_revocation_answers_by_rfc_7009(rig: Rig) -> None:
    tally = run_counted(_revocation_example, rig, ENDPOINT_EXAMPLES)
    assert tally["revoked access"] + tally["revoked refresh"] > 0, tally


# -- userinfo (OIDC Core 5.3, RFC 6750) ----------------------------------------------------------
@given(
    how=st.sampled_from(("header", "header", "body", "both", "query")),
    real=st.booleans(),
    value=values(),
    scheme=st.sampled_from(("Bearer", "bearer", "Basic", "Bearer  ", "")),
    fuzz=fuzzed(("access_token", "scope")),
    http_method=st.sampled_from(("GET", "POST")),
    kind=st.sampled_from(BODY_KINDS),
)
def _userinfo_example(
    rig: Rig,
    tally: Tally,
    how: str,
    real: bool,
    value: str,
    scheme: str,
    fuzz: list[tuple[str, str]],
    http_method: str,
    kind: str,
) -> None:
    token = rig.access_token() if real else header_safe(value)
    headers = {"Authorization": f"{scheme} {token}"} if how in ("header", "both") else {}
    pairs = [("access_token", token)] if how in ("body", "both") else []
    pairs += fuzz
    path = "/userinfo"
    if how == "query":
        path += "?access_token=" + token
    response = send(rig, path, pairs, kind, headers, method=http_method)
    if response.status_code == 200:
        assert response.get_json()["sub"] == rig.user.id
        tally.add("claims")
        return
    # RFC 6750 3: a challenge on every refusal; an error code only when a token came.
    assert response.status_code in (400, 401, 403, 413), response.status_code
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="idp"')
    if response.get_json():
        json_error(response, BEARER_ERRORS)
        tally.add("refused token")


def test_userinfo_answers_by_rfc_6750(rig: Rig) -> None:
    tally = run_counted(_userinfo_example, rig, ENDPOINT_EXAMPLES)
    assert tally["claims"] > 0, tally
    assert tally["refused token"] > 0, tally


# -- device authorization (RFC 8628 3.1, 3.2) ----------------------------------------------------
@given(
    method=st.sampled_from(AUTH_METHODS),
    broken=BROKEN,
    fuzz=fuzzed(("scope", "client_id", "client_secret")),
    kind=st.sampled_from(BODY_KINDS),
)
def _device_example(
    rig: Rig, tally: Tally, method: str, broken: str | None, fuzz: list[tuple[str, str]], kind: str
) -> None:
    auth_pairs, headers = client_auth(rig, method, None if broken is None else header_safe(broken))
    response = send(
        rig, "/device_authorization", [("scope", "openid"), *auth_pairs, *fuzz], kind, headers
    )
    assert "no-store" in response.headers.get("Cache-Control", ""), response.headers
    if response.status_code == 200:
        check_each_once([("scope", "openid"), *auth_pairs, *fuzz], kind)
        document = response.get_json()
        assert document["device_code"], document
        assert document["user_code"], document
        tally.add("codes")
        return
    error = json_error(response, TOKEN_ERRORS)
    check_error_status(response, error, headers)
    tally.add(error)


def test_device_authorization_answers_by_rfc_8628(rig: Rig) -> None:
    tally = run_counted(_device_example, rig, ENDPOINT_EXAMPLES)
    assert tally["codes"] > 0, tally
    assert tally["invalid_client"] > 0, tally


# -- discovery and the JWKS ----------------------------------------------------------------------
@given(
    path=st.sampled_from(("/.well-known/openid-configuration", "/jwks")),
    fuzz=mutations(("format", "callback", "alg"), max_size=4),
    header=odd_text,
)
def _document_example(
    rig: Rig, tally: Tally, path: str, fuzz: list[tuple[str, str]], header: str
) -> None:
    response = rig.http().get(
        path,
        query_string=encode(fuzz),
        headers={"Accept": header_safe(header), "Origin": header_safe(header)},
    )
    check_answer(response)
    # The same public document whatever the query or the headers: nothing of them comes back.
    if response.status_code == 400:
        # A query no view could mean (a NUL, bytes that are no UTF-8) is refused everywhere
        # (idp.web.form_request), the documents' paths too.
        tally.add("malformed")
        return
    assert response.status_code == 200, response.status_code
    assert response.get_data() == tally.documents.setdefault(path, response.get_data())
    tally.add(path)


def test_discovery_and_jwks_are_the_same_documents_whatever_is_sent(rig: Rig) -> None:
    tally = run_counted(_document_example, rig, 60)
    assert tally["/jwks"] > 0, tally
    assert tally["/.well-known/openid-configuration"] > 0, tally

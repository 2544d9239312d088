"""The authorization request a sign-in page carries (idp.services.carried_requests): showing the
page stores nothing, the browser cannot change the request, and one page gives one code however
often, and however many at once, its answers come back. Real requests through the Flask test
client on SQLite and PostgreSQL; the parallel answers are held where their sessions were accepted
(idp.oidc.views.ISSUE_CODE_CHECKPOINT), never raced by a sleep."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from flask import Flask

from idp.models import AuthorizationCode, PendingAuthorization
from idp.oidc.views import ISSUE_CODE_CHECKPOINT
from tests.support.authenticator import SoftAuthenticator
from tests.support.checkpoints import Checkpoints
from tests.support.factories import (
    DEFAULT_PASSWORD,
    RegisteredClient,
    create_client,
    create_user,
    rows,
)
from tests.support.flow import RelyingParty, csrf_token, query_of, shown_pending_id
from tests.support.passkey_flow import PasskeyPages, csrf_meta, page_options
from tests.support.writers import held_together


def _passkey_holder(
    app: Flask, registered: RegisteredClient, email: str = "ada@example.com"
) -> tuple[RelyingParty, Any]:
    """A new user with a passkey, and a browser of theirs on the relying party's way in."""
    user = create_user(app, email)
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    authenticator = SoftAuthenticator(backup_eligible=True, backed_up=True, counter_step=0)
    assert pages.add_passkey(authenticator).status_code == 201
    return RelyingParty(app.test_client(), registered), authenticator


def _answer(rp: RelyingParty, authenticator: Any, carried: str) -> Callable[[], Any]:
    """The passkey answer of ``rp``'s browser (its own page's challenge, bound to it) for the
    request ``carried``, ready to send."""
    page = rp.browser.get("/login")
    assert page.status_code == 200, page.text[:300]
    ceremony = page_options(page.text)
    body = {"challenge_id": ceremony["challenge_id"], "next": "", "request": carried,
            "credential": authenticator.get(ceremony["publicKey"])}  # fmt: skip
    headers = {"X-CSRFToken": csrf_meta(page.text)}
    return lambda: rp.browser.post("/login/passkey/verify", json=body, headers=headers)


def _carried(rp: RelyingParty, **overrides: str) -> str:
    page = rp.authorize(**overrides)
    carried = shown_pending_id(page.text)
    assert carried is not None, page.text[:300]
    assert "." in carried
    return carried


def _code_of(rp: RelyingParty, answer: Any) -> str | None:
    assert answer.status_code == 200, answer.text
    redirect = answer.get_json()["redirect"]
    if redirect.startswith(rp.registered.redirect_uri):
        return query_of(redirect).get("code")
    # No code: the request's own page says why (it was completed already).
    assert rp.browser.get(redirect).status_code == 400, redirect
    return None


def test_showing_the_sign_in_page_stores_no_request(storage_app: Flask) -> None:
    """Anyone may load /authorize as often as they like: the page carries the request, and
    nothing of it is written until a sign-in brings it back."""
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    for _ in range(5):
        assert rp.authorize().status_code == 200
    assert rows(storage_app, PendingAuthorization) == []


def test_one_page_answered_twice_gives_one_code(storage_app: Flask) -> None:
    """A second passkey answer carrying a request already answered signs its user in, with no
    code: the request was stored spent by the first (OIDC Core 3.1.2.5: one code per request)."""
    registered = create_client(storage_app)
    rp, authenticator = _passkey_holder(storage_app, registered)
    carried = _carried(rp)
    first = _code_of(rp, _answer(rp, authenticator, carried)())
    assert first is not None
    assert rp.exchange(first).status_code == 200
    assert _code_of(rp, _answer(rp, authenticator, carried)()) is None
    assert len(rows(storage_app, AuthorizationCode)) == 1


def test_a_password_sign_in_with_a_page_answered_already_gives_no_code(storage_app: Flask) -> None:
    """The same page's password form, sent after its passkey answer issued the code: the request
    waits under its id no more (stored spent), and its continue page refuses it."""
    registered = create_client(storage_app)
    rp, authenticator = _passkey_holder(storage_app, registered)
    carried = _carried(rp)
    assert _code_of(rp, _answer(rp, authenticator, carried)()) is not None
    other = storage_app.test_client()
    page = other.get("/login", query_string={"request": carried})
    assert page.status_code == 200
    assert shown_pending_id(page.text) == carried
    user = create_user(storage_app, "grace@example.com")
    posted = other.post("/login", data={"csrf_token": csrf_token(page.text), "email": user.email,
                                        "password": DEFAULT_PASSWORD,
                                        "request": carried})  # fmt: skip
    assert posted.status_code == 302, posted.text[:300]
    continued = other.get(posted.headers["Location"])
    assert continued.status_code == 400, (posted.headers["Location"], continued.text[:300])
    assert len(rows(storage_app, AuthorizationCode)) == 1


def test_a_request_changed_in_the_browser_gives_no_code(storage_app: Flask) -> None:
    """The carried request is signed: one with another redirect URI (or anything else changed)
    is no request, and the sign-in lands on the account instead of at any client."""
    registered = create_client(storage_app)
    rp, authenticator = _passkey_holder(storage_app, registered)
    payload, tag = _carried(rp).split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["p"]["redirect_uri"] = "https://attacker.example/callback"
    changed = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    answer = _answer(rp, authenticator, f"{changed}.{tag}")()
    assert answer.status_code == 200, answer.text
    assert answer.get_json()["redirect"] == "/account"
    assert rows(storage_app, AuthorizationCode) == []
    assert rows(storage_app, PendingAuthorization) == []


def test_answers_of_one_page_at_once_give_one_code(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """Two users answer with their passkeys for the one request a page carried, at once: both
    reach the code (held where their sessions were accepted, or the second waiting for the
    first's lock), then go on together. One code: the request's row is inserted spent once, and
    the other answer finds it spent (its INSERT waits for the first's commit on PostgreSQL, for
    the write lock on SQLite)."""
    registered = create_client(storage_app)
    one, one_key = _passkey_holder(storage_app, registered, "one@example.com")
    two, two_key = _passkey_holder(storage_app, registered, "two@example.com")
    carried = _carried(one)
    answers = {"one": _answer(one, one_key, carried), "two": _answer(two, two_key, carried)}
    answered = held_together(storage_app, checkpoints, answers["one"], answers["two"],
                             at=ISSUE_CODE_CHECKPOINT)  # fmt: skip
    codes = [_code_of(one, answered[0]), _code_of(two, answered[1])]
    assert len([code for code in codes if code is not None]) == 1, codes
    assert len(rows(storage_app, AuthorizationCode)) == 1
    [stored] = rows(storage_app, PendingAuthorization)
    assert stored.consumed_at is not None


def test_a_request_answered_by_a_page_of_idps_is_stored_for_it(storage_app: Flask) -> None:
    """A form_post response (OAuth 2.0 Form Post Response Mode 2) is a page: the passkey sign-in
    stores the carried request live under its id and sends the browser to /authorize/continue,
    which spends it and answers with the page posting the code; that address gives no second."""
    registered = create_client(storage_app)
    rp, authenticator = _passkey_holder(storage_app, registered)
    carried = _carried(rp, response_mode="form_post")
    answer = _answer(rp, authenticator, carried)()
    assert answer.status_code == 200, answer.text
    continue_at = answer.get_json()["redirect"]
    assert continue_at.startswith("/authorize/continue/"), continue_at
    [waiting] = rows(storage_app, PendingAuthorization)
    assert waiting.consumed_at is None
    page = rp.browser.get(continue_at)
    assert page.status_code == 200, page.text[:300]
    assert f'action="{registered.redirect_uri}"' in page.text
    assert 'name="code"' in page.text
    assert rp.browser.get(continue_at).status_code == 400
    assert len(rows(storage_app, AuthorizationCode)) == 1


def test_a_request_that_needs_consent_waits_stored_for_the_consent_page(
    storage_app: Flask,
) -> None:
    """OIDC Core 3.1.2.4: a third-party client's request goes from the passkey sign-in to the
    consent page, which finds the request stored under the id it carried; allowed, one code."""
    registered = create_client(storage_app, first_party=False, name="Third Party")
    rp, authenticator = _passkey_holder(storage_app, registered)
    carried = _carried(rp)
    answer = _answer(rp, authenticator, carried)()
    consent_at = answer.get_json()["redirect"]
    assert consent_at.startswith("/consent?request="), consent_at
    page = rp.browser.get(consent_at)
    assert page.status_code == 200, page.text[:300]
    form = {"csrf_token": csrf_token(page.text), "request": query_of(consent_at)["request"],
            "decision": "allow"}  # fmt: skip
    assert "code" in rp.follow_to_callback(rp.browser.post("/consent", data=form))
    assert len(rows(storage_app, AuthorizationCode)) == 1

"""The sign-in page's own WebAuthn challenge (idp.services.challenges.SignedChallenges).

The page embeds its request options so that conditional mediation starts without an options
request; its challenge is signed, not stored, so showing the page writes nothing (RFC 9110
9.2.1). The rules of every challenge still hold (WebAuthn L3 13.4.3): spent once, also by
parallel answers on SQLite and PostgreSQL; refused past its lifetime, from another browser,
altered or forged. It is stored, as spent, only when an answer to it verifies: an answer that
fails verification writes no challenge row (the storage budgets stay meaningful without one for
showing a page), and a verified answer refused later (a disabled user) spends it all the same.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from flask import Flask
from sqlalchemy import delete, update
from werkzeug.test import TestResponse

from idp.clock import KEPT_PAST_EXPIRY, FrozenClock
from idp.models import User, WebAuthnChallenge
from idp.models.base import utcnow
from idp.services.passkeys import CHALLENGE_TTL
from tests.functional.test_passkeys import last_failure_reason, synced
from tests.functional.test_round_trips import statements
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import CreatedUser, change, create_user, rows
from tests.support.http_flows import ParallelPasskeyAnswer
from tests.support.live import LiveIdp
from tests.support.passkey_flow import PasskeyPages

PARALLEL = 12
PASSWORD = "page challenges are signed"


def enrolled(app: Flask) -> tuple[CreatedUser, SoftAuthenticator]:
    user = create_user(app, email=f"page-{secrets.token_hex(4)}@example.com")
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    authenticator = synced()
    assert pages.add_passkey(authenticator).status_code == 201
    return user, authenticator


def answer(
    pages: PasskeyPages, ceremony: dict[str, Any], credential: dict[str, Any], csrf: str
) -> TestResponse:
    body = {"challenge_id": ceremony["challenge_id"], "credential": credential,
            "request": "", "next": ""}  # fmt: skip
    return pages.browser.post("/login/passkey/verify", json=body, headers={"X-CSRFToken": csrf})


def challenge_rows(app: Flask) -> list[WebAuthnChallenge]:
    """The sign-in challenges stored (the registration that enrolled the passkey stored its own)."""
    return rows(app, WebAuthnChallenge, WebAuthnChallenge.kind == "authentication")


def test_showing_the_sign_in_page_writes_nothing(storage_app: Flask) -> None:
    pages = PasskeyPages(storage_app.test_client())
    with statements(storage_app) as sent:
        for _ in range(3):
            ceremony, _csrf = pages.page_ceremony()
            assert ceremony["publicKey"]["allowCredentials"] == []
    assert [s for s in sent if not s.startswith("SELECT")] == []
    assert challenge_rows(storage_app) == []


def test_the_page_challenge_is_spent_once(storage_app: Flask) -> None:
    _user, authenticator = enrolled(storage_app)
    pages = PasskeyPages(storage_app.test_client())
    ceremony, csrf = pages.page_ceremony()
    credential = authenticator.get(ceremony["publicKey"])
    assert answer(pages, ceremony, credential, csrf).status_code == 200
    spent = challenge_rows(storage_app)
    assert len(spent) == 1
    assert spent[0].consumed_at is not None
    # Kept past the challenge's own expiry, so that pruning never races a node's expiry check.
    expiry = int(ceremony["challenge_id"].split(".")[0])
    assert spent[0].expires_at.timestamp() == expiry + KEPT_PAST_EXPIRY.total_seconds()

    replayed = answer(pages, ceremony, credential, csrf)
    assert replayed.status_code == 400, replayed.text
    assert last_failure_reason(storage_app, "login.passkey") == "challenge_invalid"
    # A new page, a new challenge: the same passkey signs in again.
    again, csrf = pages.page_ceremony()
    assert answer(pages, again, authenticator.get(again["publicKey"]), csrf).status_code == 200


def test_a_page_challenge_past_its_lifetime_is_refused(
    storage_app: Flask, clock: FrozenClock
) -> None:
    _user, authenticator = enrolled(storage_app)
    pages = PasskeyPages(storage_app.test_client())
    ceremony, csrf = pages.page_ceremony()
    credential = authenticator.get(ceremony["publicKey"])
    clock.advance(CHALLENGE_TTL + timedelta(seconds=1))
    refused = answer(pages, ceremony, credential, csrf)
    assert refused.status_code == 400, refused.text
    assert last_failure_reason(storage_app, "login.passkey") == "challenge_invalid"
    assert challenge_rows(storage_app) == []


def test_a_page_challenge_from_a_clock_since_stepped_back_is_refused(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """A page challenge carries its expiry, and its spent row outlives that by a little only: a
    challenge issued while the clock ran an hour ahead, answered, and its spent row pruned on
    that clock, would be live again for the hour after NTP steps the clock back, and the
    captured answer sign in a second time. Its expiry dates its issue (less its lifetime): one
    issued more than a minute after now is refused."""
    _user, authenticator = enrolled(storage_app)
    pages = PasskeyPages(storage_app.test_client())
    clock.advance(timedelta(hours=1))  # the clock runs ahead
    ceremony, csrf = pages.page_ceremony()
    credential = authenticator.get(ceremony["publicKey"])
    assert answer(pages, ceremony, credential, csrf).status_code == 200
    # The prune job, on that clock, removed the spent row once it was past its time.
    change(storage_app, delete(WebAuthnChallenge).where(WebAuthnChallenge.kind == "authentication"))
    clock.advance(-timedelta(hours=1))  # NTP steps it back

    replayed = answer(pages, ceremony, credential, csrf)
    assert replayed.status_code == 400, replayed.text
    assert last_failure_reason(storage_app, "login.passkey") == "challenge_invalid"
    # A page shown now (a few seconds' skew between nodes is nothing) signs in.
    clock.advance(timedelta(seconds=5))
    again, csrf = pages.page_ceremony()
    clock.advance(-timedelta(seconds=5))
    assert answer(pages, again, authenticator.get(again["publicKey"]), csrf).status_code == 200


def test_a_page_challenge_is_answered_only_from_its_browser(storage_app: Flask) -> None:
    _user, authenticator = enrolled(storage_app)
    ceremony, _csrf = PasskeyPages(storage_app.test_client()).page_ceremony()
    other = PasskeyPages(storage_app.test_client())
    _other_ceremony, other_csrf = other.page_ceremony()
    refused = answer(other, ceremony, authenticator.get(ceremony["publicKey"]), other_csrf)
    assert refused.status_code == 400, refused.text
    assert last_failure_reason(storage_app, "login.passkey") == "challenge_invalid"


def test_an_altered_or_forged_page_challenge_is_refused(storage_app: Flask) -> None:
    _user, authenticator = enrolled(storage_app)
    pages = PasskeyPages(storage_app.test_client())
    ceremony, csrf = pages.page_ceremony()
    _first, _ = pages.page_ceremony()
    second, csrf = pages.page_ceremony()
    expiry, tag = ceremony["challenge_id"].split(".")
    later = int(expiry) + 3600
    for challenge_id in (
        f"{later}.{tag}",  # a longer life
        f"{expiry}.{'0' * len(tag)}",  # a made-up tag
        f"{expiry}.{'é' * len(tag)}",  # not even ASCII
        f"١٢.{tag}",  # digits, but not ASCII ones
        second["challenge_id"],  # another page's id for this page's challenge
    ):
        forged = {**ceremony, "challenge_id": challenge_id}
        refused = answer(pages, forged, authenticator.get(ceremony["publicKey"]), csrf)
        assert refused.status_code == 400, (challenge_id, refused.text)
    # A challenge the client data carries but idp never issued: the tag does not match.
    made_up = authenticator.get(ceremony["publicKey"], challenge="A" * 43)
    assert answer(pages, ceremony, made_up, csrf).status_code == 400
    assert challenge_rows(storage_app) == []
    # None of these spent it: the genuine answer still signs in.
    genuine = answer(pages, ceremony, authenticator.get(ceremony["publicKey"]), csrf)
    assert genuine.status_code == 200, genuine.text


def test_an_answer_that_fails_verification_stores_nothing(storage_app: Flask) -> None:
    _user, authenticator = enrolled(storage_app)
    pages = PasskeyPages(storage_app.test_client())
    ceremony, csrf = pages.page_ceremony()
    wrong_origin = authenticator.get(ceremony["publicKey"], origin="https://evil.example")
    assert answer(pages, ceremony, wrong_origin, csrf).status_code == 400
    assert last_failure_reason(storage_app, "login.passkey") == "origin_not_allowed"
    assert challenge_rows(storage_app) == []


def test_a_verified_answer_refused_later_spends_the_page_challenge(storage_app: Flask) -> None:
    """A disabled user's valid assertion is refused, and its challenge is spent: enabling the
    user again within the challenge's lifetime does not make the captured answer good."""
    user, authenticator = enrolled(storage_app)
    change(storage_app, update(User).where(User.id == user.id).values(disabled_at=utcnow()))
    pages = PasskeyPages(storage_app.test_client())
    ceremony, csrf = pages.page_ceremony()
    credential = authenticator.get(ceremony["publicKey"])
    assert answer(pages, ceremony, credential, csrf).status_code == 400
    assert last_failure_reason(storage_app, "login.passkey") == "user_disabled"
    assert len(challenge_rows(storage_app)) == 1
    change(storage_app, update(User).where(User.id == user.id).values(disabled_at=None))
    assert answer(pages, ceremony, credential, csrf).status_code == 400
    assert last_failure_reason(storage_app, "login.passkey") == "challenge_invalid"


def test_parallel_answers_to_one_page_challenge_exactly_one_signs_in(live: LiveIdp) -> None:
    """The spend (``INSERT ... ON CONFLICT DO NOTHING RETURNING``) under real parallel requests to
    a multi-process server, on SQLite and PostgreSQL: one of N identical answers wins."""
    email = f"parallel-page-{secrets.token_hex(4)}@example.com"
    live.create_user(email, PASSWORD)
    prepared = ParallelPasskeyAnswer.prepare(live.url, email, PASSWORD, from_page=True)
    responses = prepared.send(PARALLEL)
    winners = [r for r in responses if r.status_code == 200]
    # Each answer's status and the start of its body: what a failure here needs to be read.
    seen = [(r.status_code, r.text[:160]) for r in responses]
    assert len(winners) == 1, seen
    assert {r.status_code for r in responses if r.status_code != 200} == {400}, seen

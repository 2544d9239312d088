"""The fallback path, one test per rule: password, then a TOTP code or a backup code; recovery;
attempt limits; enumeration safety; the password policy and rehash; the passkey prompt; and the
notifications each of them leaves (sign-in methods and invariants).

The sign-in and account views read a frozen clock (the ``clock`` fixture) so that which 30-second
TOTP step a code belongs to, and how long a delay has run, is decided by the test rather than by
where in a step the test happens to run. Nothing sleeps: elapsed time is simulated by moving
timestamps in the database or the frozen clock.
"""

from __future__ import annotations

import html
import re
import secrets
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import delete, update
from werkzeug.test import TestResponse

from idp import create_app
from idp.clock import FrozenClock
from idp.extensions import db
from idp.models import (
    AttemptCounter,
    AuditEvent,
    BackupCode,
    Base,
    BrowserSession,
    OutboxMessage,
    PartialLogin,
    TotpCredential,
    User,
)
from idp.models.base import utcnow
from idp.services import backup_codes as backup_codes_module
from idp.services import sign_in as messages
from idp.services.assurance import ACR_MFA
from idp.services.backup_codes import BackupCodeService
from idp.services.partial_logins import PARTIAL_LOGIN_TTL
from idp.services.passwords import PasswordPolicyError, PasswordService
from idp.services.rate_limits import (
    ADDRESS_FAILURES_PER_WINDOW,
    ADDRESS_WINDOW,
    COUNTER_LIFETIME,
    FREE_FAILURES,
    LOCK_AFTER,
    AttemptLimiter,
    DatabaseCounters,
    FactorLocks,
    window_end,
)
from idp.services.users import UserService
from idp.web import email_key
from tests.conftest import app_overrides
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import CreatedUser, change, create_client, create_user, rows
from tests.support.flow import (
    RelyingParty,
    csrf_token,
    query_of,
    shown_address,
    sign_in_address,
    start_session,
)
from tests.support.passkey_flow import PasskeyPages

MFA_AMR = ["pwd", "otp", "mfa"]
STEP = timedelta(seconds=30)
LOGIN_ADDRESS = "127.0.0.1"  # the Flask test client's REMOTE_ADDR
BACKUP_CODE = re.compile(r"<li><code>([a-z0-9-]+)</code></li>")
TOTP_SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


# The time the views decide with (TOTP steps, delays, step-up) is frozen by the ``clock`` fixture
# (tests/conftest.py), which sets the app's one clock.


def totp(secret: str, at: datetime) -> str:
    return pyotp.TOTP(secret).at(at)


# -- pages ----------------------------------------------------------------------------------------
def text_of(response: TestResponse) -> str:
    return html.unescape(response.text)


def location(response: TestResponse) -> str:
    """Where the response sends the browser; for the sign-in page the authorization endpoint
    shows itself (docs/architecture.md), the /login address of the same page."""
    shown = sign_in_address(response) or shown_address(response)
    if shown is not None and response.status_code == 200:
        return shown
    assert response.status_code in (302, 303), (response.status_code, response.text[:500])
    return response.headers["Location"]


def path_of(response: TestResponse) -> str:
    return location(response).split("#", 1)[0].split("?", 1)[0]


def password_step(
    browser: FlaskClient, email: str, password: str, *, address: str = LOGIN_ADDRESS
) -> TestResponse:
    page = browser.get("/login")
    form = {"csrf_token": csrf_token(page.text), "email": email, "password": password}
    return browser.post("/login", data=form, environ_base={"REMOTE_ADDR": address})


def second_step(browser: FlaskClient, code: str, method: str = "totp") -> TestResponse:
    page = browser.get("/login/second-step")
    assert page.status_code == 200, page.text
    form = {"csrf_token": csrf_token(page.text), "method": method, "code": code}
    return browser.post("/login/second-step", data=form)


def recover(browser: FlaskClient, email: str, code: str) -> TestResponse:
    page = browser.get("/login/recover")
    form = {"csrf_token": csrf_token(page.text), "email": email, "code": code}
    return browser.post("/login/recover", data=form)


def post_form(browser: FlaskClient, page_path: str, action: str, **form: str) -> TestResponse:
    """POST to ``action`` with the CSRF token of the page at ``page_path`` (every page carries
    one in base.html's meta tag, forms or not)."""
    page = browser.get(page_path)
    assert page.status_code == 200, page.text
    match = META_CSRF.search(page.text)
    assert match, "no CSRF token on the page"
    return browser.post(action, data={"csrf_token": match.group(1), **form})


@dataclass(frozen=True)
class Enrolled:
    user: CreatedUser
    secret: str
    codes: list[str]


def _setup_page(browser: FlaskClient) -> tuple[str, str]:
    """The set-up page's key and CSRF token."""
    page = browser.get("/account/totp")
    assert page.status_code == 200, page.text
    secret = TOTP_SECRET.search(page.text)
    assert secret, "no TOTP secret on the enrolment page"
    return secret.group(1), csrf_token(page.text)


def enrol_totp(browser: FlaskClient, clock: FrozenClock) -> tuple[str, list[str]]:
    """Set up an authenticator app on /account/totp in a signed-in browser; the backup codes
    page it answers with."""
    secret, token = _setup_page(browser)
    confirmed = browser.post(
        "/account/totp", data={"csrf_token": token, "code": totp(secret, clock.now())}
    )
    if confirmed.status_code == 302:  # the account still has backup codes: none are handed out
        assert path_of(confirmed) == "/account"
        return secret, []
    assert confirmed.status_code == 200, confirmed.text
    return secret, BACKUP_CODE.findall(confirmed.text)


def user_with_totp(app: Flask, clock: FrozenClock, email: str = "ada@example.com") -> Enrolled:
    """A user who enrolled TOTP (and so got backup codes); the clock then moves on two steps so
    that neither the current nor the previous step has been used yet."""
    user = create_user(app, email=email)
    browser = app.test_client()
    start_session(browser, user)
    secret, codes = enrol_totp(browser, clock)
    assert len(codes) == 10
    clock.advance(2 * STEP)
    return Enrolled(user=user, secret=secret, codes=codes)


def signed_in_with_totp(app: Flask, enrolled: Enrolled, clock: FrozenClock) -> FlaskClient:
    browser = app.test_client()
    assert path_of(password_step(browser, enrolled.user.email, enrolled.user.password)) == (
        "/login/second-step"
    )
    assert path_of(second_step(browser, totp(enrolled.secret, clock.now()))) == "/account"
    return browser


def verified_claims(client: FlaskClient, id_token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(client.get("/jwks").get_json())
    return dict(jwt.decode(id_token, keys, algorithms=["RS256", "ES256", "EdDSA"]).claims)


# -- the database ---------------------------------------------------------------------------------
def password_key(app: Flask, email: str) -> str:
    """The password factor's counter key: a keyed hash of the email, account or not."""
    with app.test_request_context():
        return f"pwd:{email_key(email)}"


def set_counter(app: Flask, key: str, failures: int, last_failure_at: datetime) -> None:
    with app.app_context():
        db.session.merge(
            AttemptCounter(key=key, failures=failures, last_failure_at=last_failure_at)
        )
        db.session.commit()


def failures(app: Flask, key: str) -> int:
    with app.app_context():
        return DatabaseCounters(db.session()).get(key)[0]


def session_of(app: Flask, user_id: str) -> BrowserSession:
    """The user's newest live session."""
    sessions = rows(app, BrowserSession, BrowserSession.user_id == user_id,
                    BrowserSession.revoked_at.is_(None))  # fmt: skip
    assert sessions, "no live session"
    return max(sessions, key=lambda s: s.created_at)


def outbox(app: Flask, user_id: str, kind: str) -> list[OutboxMessage]:
    return rows(app, OutboxMessage, OutboxMessage.user_id == user_id, OutboxMessage.kind == kind)


# == TOTP =========================================================================================
def test_password_and_totp_give_an_mfa_id_token(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    browser = app.test_client()
    rp = RelyingParty(browser, create_client(app))
    login = rp.authorize()
    assert path_of(login) == "/login"
    after_password = rp.sign_in(location(login), enrolled.user)
    assert path_of(after_password) == "/login/second-step"

    callback = rp.follow_to_callback(second_step(browser, totp(enrolled.secret, clock.now())))
    response = rp.exchange(callback["code"])
    assert response.status_code == 200, response.text
    claims = verified_claims(browser, response.get_json()["id_token"])
    assert claims["sub"] == enrolled.user.id
    assert claims["amr"] == MFA_AMR
    assert claims["acr"] == ACR_MFA == "urn:idp:acr:mfa"


@pytest.mark.parametrize("method", ["totp", "backup_code"])
def test_a_second_step_for_an_application_redirects_straight_to_it(
    app: Flask, clock: FrozenClock, method: str
) -> None:
    """The second step decides the way back with its new session, as a passkey sign-in does:
    its answer is the redirect to the client's redirect URI with the code, not to
    /authorize/continue first (one request and one round trip fewer)."""
    enrolled = user_with_totp(app, clock)
    browser = app.test_client()
    rp = RelyingParty(browser, create_client(app))
    login = rp.authorize()
    assert path_of(rp.sign_in(location(login), enrolled.user)) == "/login/second-step"
    code = totp(enrolled.secret, clock.now()) if method == "totp" else enrolled.codes[0]
    answer = second_step(browser, code, method)
    assert location(answer).startswith(rp.registered.redirect_uri + "?"), location(answer)
    callback = query_of(location(answer))
    assert callback["state"] == rp.state
    response = rp.exchange(callback["code"])
    assert response.status_code == 200, response.text
    claims = verified_claims(browser, response.get_json()["id_token"])
    assert claims["sub"] == enrolled.user.id
    assert claims["amr"] == MFA_AMR


def test_totp_secret_is_encrypted_at_rest(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    [credential] = rows(app, TotpCredential, TotpCredential.user_id == enrolled.user.id)
    assert credential.confirmed_at is not None
    assert enrolled.secret not in credential.secret_encrypted
    assert len(enrolled.secret) * 5 >= 160  # base32: a 160-bit secret (RFC 4226 4)


def test_totp_code_of_the_previous_step_is_accepted(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    browser = app.test_client()
    password_step(browser, enrolled.user.email, enrolled.user.password)
    response = second_step(browser, totp(enrolled.secret, clock.now() - STEP))
    assert path_of(response) == "/account"
    assert session_of(app, enrolled.user.id).amr == MFA_AMR


def test_totp_replay_of_an_accepted_step_is_refused(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    code = totp(enrolled.secret, clock.now())
    first = app.test_client()
    password_step(first, enrolled.user.email, enrolled.user.password)
    assert path_of(second_step(first, code)) == "/account"

    second = app.test_client()
    password_step(second, enrolled.user.email, enrolled.user.password)
    replay = second_step(second, code)
    assert replay.status_code == 401
    assert messages.CODE_FAILURE in text_of(replay)
    # RFC 6238 5.2: nor a step before the accepted one, though it is still inside the window.
    previous = second_step(second, totp(enrolled.secret, clock.now() - STEP))
    assert previous.status_code == 401
    assert messages.CODE_FAILURE in text_of(previous)
    assert len(rows(app, BrowserSession, BrowserSession.user_id == enrolled.user.id,
                    BrowserSession.amr == MFA_AMR)) == 1  # fmt: skip


def test_a_clock_stepped_back_does_not_let_a_totp_step_be_used_again(
    app: Flask, clock: FrozenClock
) -> None:
    """RFC 6238 5.2 holds whatever the clock does: the account keeps the last step it accepted
    and takes only a later one, so after a step back neither the accepted code nor the one of the
    step the clock now reads (seen earlier, say) signs anyone in, until a later step."""
    enrolled = user_with_totp(app, clock)
    accepted = totp(enrolled.secret, clock.now())
    first = app.test_client()
    password_step(first, enrolled.user.email, enrolled.user.password)
    assert path_of(second_step(first, accepted)) == "/account"

    clock.advance(-STEP)  # NTP steps the clock back a step
    second = app.test_client()
    password_step(second, enrolled.user.email, enrolled.user.password)
    for code in (accepted, totp(enrolled.secret, clock.now())):
        refused = second_step(second, code)
        assert refused.status_code == 401
        assert messages.CODE_FAILURE in text_of(refused)
    clock.advance(2 * STEP)  # the clock has passed the accepted step
    assert path_of(second_step(second, totp(enrolled.secret, clock.now()))) == "/account"


def test_totp_code_older_than_the_previous_step_is_refused(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    clock.advance(STEP)  # two steps back is then a step no code was ever accepted for
    browser = app.test_client()
    password_step(browser, enrolled.user.email, enrolled.user.password)
    response = second_step(browser, totp(enrolled.secret, clock.now() - 2 * STEP))
    assert response.status_code == 401
    assert messages.CODE_FAILURE in text_of(response)
    assert path_of(second_step(browser, totp(enrolled.secret, clock.now()))) == "/account"


def test_totp_code_of_the_next_step_is_refused(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    browser = app.test_client()
    password_step(browser, enrolled.user.email, enrolled.user.password)
    response = second_step(browser, totp(enrolled.secret, clock.now() + STEP))
    assert response.status_code == 401
    assert messages.CODE_FAILURE in text_of(response)
    assert path_of(second_step(browser, totp(enrolled.secret, clock.now()))) == "/account"


def test_the_code_step_refuses_a_spent_or_expired_partial_sign_in_and_a_disabled_user(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """The code step reads the partial sign-in and its user as values, by one Core statement
    (docs/performance.md): what it reads still decides. A partial sign-in spent meanwhile (by
    another tab's code) or past its ten minutes starts over; a user disabled after the password
    step is refused; neither gets a session."""
    enrolled = user_with_totp(storage_app, clock)
    user = enrolled.user
    sessions = len(rows(storage_app, BrowserSession, BrowserSession.user_id == user.id))

    def code_after(scene: Any) -> TestResponse:
        browser = storage_app.test_client()
        assert path_of(password_step(browser, user.email, user.password)) == "/login/second-step"
        page = browser.get("/login/second-step")
        scene()
        form = {"csrf_token": csrf_token(page.text), "code": totp(enrolled.secret, clock.now())}
        return browser.post("/login/second-step", data=form)

    spent = update(PartialLogin).where(PartialLogin.user_id == user.id)
    assert path_of(code_after(lambda: change(storage_app, spent.values(consumed_at=utcnow())))) == (
        "/login"
    )
    assert path_of(code_after(lambda: clock.advance(PARTIAL_LOGIN_TTL))) == "/login"
    disable = update(User).where(User.id == user.id).values(disabled_at=utcnow())
    refused = code_after(lambda: change(storage_app, disable))
    assert refused.status_code == 401
    assert messages.CODE_FAILURE in text_of(refused)
    assert len(rows(storage_app, BrowserSession, BrowserSession.user_id == user.id)) == sessions


@pytest.mark.parametrize("ending", ["change", "removal"])
def test_a_password_changed_or_removed_ends_the_sign_ins_waiting_for_their_second_step(
    storage_app: Flask, clock: FrozenClock, ending: str
) -> None:
    """Whoever knew the old password and got to the second step with it finishes nothing once
    the owner changed or removed the password in another browser (OWASP ASVS 4.0 2.1, 3.3): the
    authenticator app's code and a backup code are both refused, the second-step page starts
    over, and no session is opened."""
    enrolled = user_with_totp(storage_app, clock)
    user = enrolled.user
    owner = signed_in_with_totp(storage_app, enrolled, clock)
    if ending == "removal":  # a passkey first, and the step-up with it, so the password may go
        pages, key = PasskeyPages(owner), SoftAuthenticator()
        assert pages.add_passkey(key).status_code == 201
        assert pages.sign_in_with_passkey(key).status_code == 200
    intruder = storage_app.test_client()
    assert path_of(password_step(intruder, user.email, user.password)) == "/login/second-step"
    page = intruder.get("/login/second-step")
    assert page.status_code == 200

    if ending == "change":
        changed = post_form(owner, "/account", "/account/password",
                            new_password="an entirely new passphrase 7")  # fmt: skip
    else:
        changed = post_form(owner, "/account", "/account/password/remove", confirm="yes")
    assert path_of(changed) == "/account"
    sessions = len(rows(storage_app, BrowserSession, BrowserSession.user_id == user.id))

    clock.advance(STEP)  # a code the owner's own sign-in did not use
    code = {"csrf_token": csrf_token(page.text), "code": totp(enrolled.secret, clock.now())}
    assert path_of(intruder.post("/login/second-step", data=code)) == "/login"
    backup = {"csrf_token": csrf_token(page.text), "method": "backup_code",
              "code": enrolled.codes[0]}  # fmt: skip
    assert path_of(intruder.post("/login/second-step", data=backup)) == "/login"
    assert path_of(intruder.get("/login/second-step")) == "/login"
    assert len(rows(storage_app, BrowserSession, BrowserSession.user_id == user.id)) == sessions
    assert path_of(intruder.get("/account")) == "/login"
    kind = {"change": "password.changed", "removal": "password.removed"}[ending]
    [ended] = rows(storage_app, AuditEvent, AuditEvent.kind == kind)
    assert ended.details["partial_sign_ins_ended"] == 1


def test_sixth_wrong_totp_code_is_throttled_even_with_the_right_code(
    app: Flask, clock: FrozenClock
) -> None:
    enrolled = user_with_totp(app, clock)
    right = totp(enrolled.secret, clock.now())
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    browser = app.test_client()
    password_step(browser, enrolled.user.email, enrolled.user.password)
    for _ in range(FREE_FAILURES):
        response = second_step(browser, wrong)
        assert response.status_code == 401
        assert messages.CODE_FAILURE in text_of(response)

    throttled = second_step(browser, right)
    assert throttled.status_code == 401
    assert messages.THROTTLED in text_of(throttled)
    key = f"otp:{enrolled.user.id}"
    assert failures(app, key) == FREE_FAILURES + 1  # the refused attempt counted too

    # Once the delay has passed the right code works, and the success resets the count.
    change(app, update(AttemptCounter).where(AttemptCounter.key == key)
           .values(last_failure_at=clock.now() - timedelta(minutes=15)))  # fmt: skip
    assert path_of(second_step(browser, right)) == "/account"
    assert failures(app, key) == 0


def test_hundred_totp_failures_lock_the_factor(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    set_counter(app, f"otp:{enrolled.user.id}", LOCK_AFTER, clock.now() - timedelta(days=1))
    browser = app.test_client()
    password_step(browser, enrolled.user.email, enrolled.user.password)
    response = second_step(browser, totp(enrolled.secret, clock.now()))
    assert response.status_code == 401
    assert messages.LOCKED in text_of(response)


def test_totp_enrolment_needs_a_valid_first_code(app: Flask, clock: FrozenClock) -> None:
    user = create_user(app)
    browser = app.test_client()
    start_session(browser, user)
    page = browser.get("/account/totp")
    secret = TOTP_SECRET.search(page.text)
    assert secret
    wrong = f"{(int(totp(secret.group(1), clock.now())) + 1) % 1_000_000:06d}"
    response = browser.post("/account/totp", data={"csrf_token": csrf_token(page.text),
                                                   "code": wrong})  # fmt: skip
    assert response.status_code == 400
    assert rows(app, TotpCredential, TotpCredential.confirmed_at.is_not(None)) == []
    assert rows(app, BackupCode) == []


def _wrong_code(secret: str, at: datetime) -> str:
    """A code that is no code of ``secret`` at any step within an hour of ``at``."""
    near = {pyotp.TOTP(secret).at(at + n * STEP) for n in range(-120, 121)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in near)


def test_totp_setup_keeps_its_key_across_reloads_and_wrong_codes(
    app: Flask, clock: FrozenClock
) -> None:
    """The key scanned first stays the key until setup succeeds: a reload or a wrong code used
    to show a new one, which then refused every code of the app that had scanned the first."""
    user = create_user(app)
    browser = app.test_client()
    start_session(browser, user)
    secret, token = _setup_page(browser)
    assert _setup_page(browser)[0] == secret  # a reload
    wrong = _wrong_code(secret, clock.now())
    refused = browser.post("/account/totp", data={"csrf_token": token, "code": wrong})
    assert refused.status_code == 400
    assert TOTP_SECRET.search(refused.text).group(1) == secret  # type: ignore[union-attr]
    assert "That code did not match this key" in text_of(refused)
    assert "clock" not in text_of(refused)  # nothing suggests the phone's time is off
    clock.advance(timedelta(minutes=3))
    assert _setup_page(browser)[0] == secret
    confirmed = browser.post("/account/totp", data={"csrf_token": token,
                                                    "code": totp(secret, clock.now())})  # fmt: skip
    assert confirmed.status_code == 200
    [credential] = rows(app, TotpCredential, TotpCredential.confirmed_at.is_not(None))
    assert credential.user_id == user.id


def test_totp_setup_wrong_clock_is_named_only_for_a_code_of_the_key(
    app: Flask, clock: FrozenClock
) -> None:
    """A code of this key from 3 minutes ahead is a phone whose clock is off: only then does
    the page mention the clock (RFC 6238 6 accepts the current and previous step only)."""
    user = create_user(app)
    browser = app.test_client()
    start_session(browser, user)
    secret, token = _setup_page(browser)
    ahead = totp(secret, clock.now() + 6 * STEP)
    refused = browser.post("/account/totp", data={"csrf_token": token, "code": ahead})
    assert refused.status_code == 400
    assert "the clock on your phone is off" in text_of(refused)
    short = browser.post("/account/totp", data={"csrf_token": token, "code": "123"})
    assert "Enter the 6-digit code" in text_of(short)
    assert rows(app, TotpCredential) == []


def test_totp_setup_cancel_forgets_the_key(app: Flask, clock: FrozenClock) -> None:
    user = create_user(app)
    browser = app.test_client()
    start_session(browser, user)
    secret, token = _setup_page(browser)
    cancelled = browser.post("/account/totp/cancel", data={"csrf_token": token})
    assert path_of(cancelled) == "/account"
    again, _token = _setup_page(browser)
    assert again != secret
    refused = browser.post("/account/totp", data={"csrf_token": token,
                                                  "code": totp(secret, clock.now())})  # fmt: skip
    assert refused.status_code == 400  # the cancelled key no longer sets anything up
    assert rows(app, TotpCredential) == []


def test_totp_setup_key_expires_after_fifteen_minutes(app: Flask, clock: FrozenClock) -> None:
    user = create_user(app)
    browser = app.test_client()
    start_session(browser, user)
    secret, token = _setup_page(browser)
    clock.advance(timedelta(minutes=16))
    change(app, update(BrowserSession).values(auth_time=clock.now()))  # still a recent sign-in
    expired = browser.post("/account/totp", data={"csrf_token": token,
                                                  "code": totp(secret, clock.now())})  # fmt: skip
    assert path_of(expired) == "/account/totp"
    assert rows(app, TotpCredential) == []
    assert _setup_page(browser)[0] != secret


def test_visiting_the_totp_page_does_not_switch_off_an_enrolled_app(
    app: Flask, clock: FrozenClock
) -> None:
    """Opening /account/totp (a GET: no CSRF token, reachable by a link from anywhere) must not
    replace the confirmed secret: that would turn the second step off without the step-up,
    notification and audit a removal gets (sensitive actions)."""
    enrolled = user_with_totp(app, clock)
    browser = signed_in_with_totp(app, enrolled, clock)
    page = browser.get("/account/totp")
    assert path_of(page) == "/account"
    [credential] = rows(app, TotpCredential, TotpCredential.user_id == enrolled.user.id)
    assert credential.confirmed_at is not None

    clock.advance(STEP)
    other = app.test_client()
    after_password = password_step(other, enrolled.user.email, enrolled.user.password)
    assert path_of(after_password) == "/login/second-step"
    assert path_of(second_step(other, totp(enrolled.secret, clock.now()))) == "/account"


# == backup codes =================================================================================
def test_password_and_backup_code_give_an_mfa_id_token(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    browser = app.test_client()
    rp = RelyingParty(browser, create_client(app))
    assert path_of(rp.sign_in(location(rp.authorize()), enrolled.user)) == "/login/second-step"
    # Codes are accepted as printed, in upper case and with spaces: they are normalised.
    typed = enrolled.codes[0].upper().replace("-", " ")
    callback = rp.follow_to_callback(second_step(browser, typed, method="backup_code"))
    response = rp.exchange(callback["code"])
    assert response.status_code == 200, response.text
    claims = verified_claims(browser, response.get_json()["id_token"])
    assert claims["amr"] == MFA_AMR
    assert claims["acr"] == ACR_MFA


def test_backup_codes_are_ten_long_random_codes_stored_hashed(
    app: Flask, clock: FrozenClock
) -> None:
    enrolled = user_with_totp(app, clock)
    assert len(set(enrolled.codes)) == 10
    assert all(re.fullmatch(r"([2-9a-hjkmnp-tv-z]{4}-){3}[2-9a-hjkmnp-tv-z]{4}", c)
               for c in enrolled.codes)  # fmt: skip
    stored = rows(app, BackupCode, BackupCode.user_id == enrolled.user.id)
    assert len(stored) == 10
    hashes = " ".join(row.code_hash for row in stored)
    assert not any(code.replace("-", "") in hashes for code in enrolled.codes)


def test_backup_code_reuse_is_refused(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    code = enrolled.codes[3]
    first = app.test_client()
    password_step(first, enrolled.user.email, enrolled.user.password)
    assert path_of(second_step(first, code, method="backup_code")) == "/account"

    second = app.test_client()
    password_step(second, enrolled.user.email, enrolled.user.password)
    reuse = second_step(second, code, method="backup_code")
    assert reuse.status_code == 401
    assert messages.CODE_FAILURE in text_of(reuse)
    spent = rows(app, BackupCode, BackupCode.consumed_at.is_not(None))
    assert len(spent) == 1


def test_regenerated_backup_codes_void_the_old_set(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    browser = signed_in_with_totp(app, enrolled, clock)
    regenerated = post_form(browser, "/account", "/account/backup-codes", confirm="yes")
    assert regenerated.status_code == 200
    new_codes = BACKUP_CODE.findall(regenerated.text)
    assert len(new_codes) == 10
    assert not set(new_codes) & set(enrolled.codes)

    other = app.test_client()
    password_step(other, enrolled.user.email, enrolled.user.password)
    old = second_step(other, enrolled.codes[0], method="backup_code")
    assert old.status_code == 401
    assert messages.CODE_FAILURE in text_of(old)
    assert path_of(second_step(other, new_codes[0], method="backup_code")) == "/account"


def test_remaining_backup_code_count_decreases_on_the_account_page(
    app: Flask, clock: FrozenClock
) -> None:
    enrolled = user_with_totp(app, clock)
    browser = app.test_client()
    password_step(browser, enrolled.user.email, enrolled.user.password)
    second_step(browser, enrolled.codes[0], method="backup_code")
    assert "9 of 10 backup codes left." in text_of(browser.get("/account"))

    password_step(browser, enrolled.user.email, enrolled.user.password)
    second_step(browser, enrolled.codes[1], method="backup_code")
    assert "8 of 10 backup codes left." in text_of(browser.get("/account"))


def test_backup_code_use_is_notified_and_audited(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    browser = app.test_client()
    password_step(browser, enrolled.user.email, enrolled.user.password)
    assert path_of(second_step(browser, enrolled.codes[0], method="backup_code")) == "/account"

    [message] = outbox(app, enrolled.user.id, "backup_code_used")
    assert message.recipient == enrolled.user.email
    assert message.details == {"remaining": "9"}
    assert "9 backup codes are left" in message.body
    [event] = rows(app, AuditEvent, AuditEvent.kind == "backup_code.used")
    assert event.subject_id == enrolled.user.id
    assert event.outcome == "success"
    assert event.details == {"remaining": 9}


def test_backup_codes_alone_do_not_open_a_second_step(app: Flask, clock: FrozenClock) -> None:
    """Backup codes back up a second factor: with the app removed, the password alone signs in
    (the codes are not spent one per sign-in)."""
    enrolled = user_with_totp(app, clock)
    browser = signed_in_with_totp(app, enrolled, clock)
    post_form(browser, "/account", "/account/totp/remove", confirm="yes")
    other = app.test_client()
    assert path_of(password_step(other, enrolled.user.email, enrolled.user.password)) == "/account"
    assert rows(app, BackupCode, BackupCode.consumed_at.is_not(None)) == []


# == attempt limits ===============================================================================
def test_hundred_consecutive_password_failures_lock_the_factor(
    app: Flask, clock: FrozenClock
) -> None:
    user = create_user(app)
    key = password_key(app, user.email)
    with app.app_context():
        counters = DatabaseCounters(db.session())
        for _ in range(LOCK_AFTER - 1):
            counters.count([(key, COUNTER_LIFETIME)], clock.now() - timedelta(days=1))

    # The hundredth failure is a real attempt (the delays have long passed) ...
    hundredth = password_step(app.test_client(), user.email, "not the password")
    assert hundredth.status_code == 401
    assert messages.GENERIC_FAILURE in text_of(hundredth)
    assert failures(app, key) == LOCK_AFTER

    # ... after which the right password is refused, however long one waits.
    clock.advance(timedelta(days=30))
    locked = password_step(app.test_client(), user.email, user.password)
    assert locked.status_code == 401
    assert messages.LOCKED in text_of(locked)
    assert rows(app, BrowserSession) == []


def test_a_success_before_the_hundredth_failure_resets_the_count(
    app: Flask, clock: FrozenClock
) -> None:
    user = create_user(app)
    key = password_key(app, user.email)
    set_counter(app, key, LOCK_AFTER - 2, clock.now() - timedelta(days=1))
    assert password_step(app.test_client(), user.email, "not the password").status_code == 401
    assert failures(app, key) == LOCK_AFTER - 1

    change(app, update(AttemptCounter).where(AttemptCounter.key == key)
           .values(last_failure_at=clock.now() - timedelta(days=1)))  # fmt: skip
    assert path_of(password_step(app.test_client(), user.email, user.password)) == "/account"
    assert failures(app, key) == 0

    # Counting starts again from zero: one more failure is one, not a hundred.
    response = password_step(app.test_client(), user.email, "not the password")
    assert messages.GENERIC_FAILURE in text_of(response)
    assert failures(app, key) == 1


def test_admin_unlock_lifts_the_lock(app: Flask, clock: FrozenClock) -> None:
    from idp.composition import services

    enrolled = user_with_totp(app, clock)
    password = password_key(app, enrolled.user.email)
    otp = f"otp:{enrolled.user.id}"
    set_counter(app, password, LOCK_AFTER, clock.now())
    set_counter(app, otp, LOCK_AFTER, clock.now())
    locked = password_step(app.test_client(), enrolled.user.email, enrolled.user.password)
    assert messages.LOCKED in text_of(locked)

    # What `idp users unlock EMAIL` does: AttemptLimiter.unlock on each of the user's factors.
    with app.test_request_context():
        user = db.session.get(User, enrolled.user.id)
        assert user is not None
        services().sign_in.unlock(user)
        db.session.commit()
    assert failures(app, password) == failures(app, otp) == 0
    signed_in_with_totp(app, enrolled, clock)


def test_password_delays_grow_after_five_failures(app: Flask, clock: FrozenClock) -> None:
    user = create_user(app)
    key = password_key(app, user.email)
    for _ in range(FREE_FAILURES):
        response = password_step(app.test_client(), user.email, "not the password")
        assert messages.GENERIC_FAILURE in text_of(response)

    # Five failures: the next attempt waits a second, even with the right password.
    throttled = password_step(app.test_client(), user.email, user.password)
    assert throttled.status_code == 401
    assert messages.THROTTLED in text_of(throttled)

    def attempt_after(failure_count: int, seconds: float) -> str:
        set_counter(app, key, failure_count, clock.now() - timedelta(seconds=seconds))
        return text_of(password_step(app.test_client(), user.email, "not the password"))

    # Each further failure doubles the wait: 1 s after 5 failures, 2 s after 6, 4 s after 7.
    assert messages.GENERIC_FAILURE in attempt_after(FREE_FAILURES, 1.5)
    assert messages.THROTTLED in attempt_after(FREE_FAILURES + 1, 1.5)
    assert messages.GENERIC_FAILURE in attempt_after(FREE_FAILURES + 1, 2.5)
    assert messages.THROTTLED in attempt_after(FREE_FAILURES + 2, 3.5)
    assert messages.GENERIC_FAILURE in attempt_after(FREE_FAILURES + 2, 4.5)
    # ... up to fifteen minutes.
    # (Below the lock: a refused attempt counts, and the hundredth would lock the factor.)
    assert messages.THROTTLED in attempt_after(LOCK_AFTER - 2, 14 * 60)
    assert messages.GENERIC_FAILURE in attempt_after(LOCK_AFTER - 3, 15 * 60 + 1)


def test_refused_attempts_still_count(app: Flask, clock: FrozenClock) -> None:
    user = create_user(app)
    key = password_key(app, user.email)
    set_counter(app, key, FREE_FAILURES, clock.now())
    for expected in range(FREE_FAILURES + 1, FREE_FAILURES + 4):
        response = password_step(app.test_client(), user.email, user.password)
        assert messages.THROTTLED in text_of(response)
        assert failures(app, key) == expected


def test_per_address_failures_from_one_ipv6_64_count_together(
    app: Flask, clock: FrozenClock
) -> None:
    """One host on IPv6 holds a /64 and can send each guess from another of its 2**64 addresses
    (RFC 4291 2.5.1): counted per address, the cap on an address's failures never applied to it.
    The /64 counts as one address; another /64 keeps its own count."""
    user = create_user(app)
    address_key = AttemptLimiter.address_key("2001:db8:7:1::1", clock.now())
    set_counter(app, address_key, ADDRESS_FAILURES_PER_WINDOW, clock.now())
    refused = password_step(app.test_client(), user.email, user.password,
                            address="2001:db8:7:1::beef")  # fmt: skip
    assert refused.status_code == 401
    assert messages.THROTTLED in text_of(refused)
    elsewhere = password_step(app.test_client(), user.email, user.password,
                              address="2001:db8:7:2::1")  # fmt: skip
    assert path_of(elsewhere) == "/account"


def test_per_address_failures_are_capped_in_a_fixed_window(app: Flask, clock: FrozenClock) -> None:
    """docs/security.md: an address's failures count in a window that starts and ends on the
    clock; refused attempts in it do not move its end (not "resets after an idle hour")."""
    user = create_user(app)
    crowded, other = "198.51.100.7", "198.51.100.8"
    address_key = AttemptLimiter.address_key(crowded, clock.now())
    # Failures from one address, against other accounts: this account's counter is clean.
    set_counter(app, address_key, ADDRESS_FAILURES_PER_WINDOW - 1, clock.now())
    response = password_step(app.test_client(), user.email, user.password, address=crowded)
    assert path_of(response) == "/account"  # 49 are free, and a success takes its count back
    assert failures(app, address_key) == ADDRESS_FAILURES_PER_WINDOW - 1

    set_counter(app, address_key, ADDRESS_FAILURES_PER_WINDOW, clock.now())
    refused = password_step(app.test_client(), user.email, user.password, address=crowded)
    assert refused.status_code == 401
    assert messages.THROTTLED in text_of(refused)
    elsewhere = password_step(app.test_client(), user.email, user.password, address=other)
    assert path_of(elsewhere) == "/account"

    # Refused all through the window, one a minute: they count, and the window ends anyway.
    # (Other emails each time: the account's own backoff is not what this is about.)
    end = window_end(clock.now(), ADDRESS_WINDOW)
    minute = 0
    while clock.now() + timedelta(minutes=1) < end:
        clock.advance(timedelta(minutes=1))
        minute += 1
        again = password_step(app.test_client(), f"minute-{minute}@example.com", "guess",
                              address=crowded)  # fmt: skip
        assert messages.THROTTLED in text_of(again)
    clock.advance(end - clock.now())
    assert path_of(password_step(app.test_client(), user.email, user.password,
                                 address=crowded)) == "/account"  # fmt: skip
    # An address is never locked (NAT): the new window counts from one.
    wrong = password_step(app.test_client(), "someone@example.com", "guess", address=crowded)
    assert messages.GENERIC_FAILURE in text_of(wrong)
    assert failures(app, AttemptLimiter.address_key(crowded, clock.now())) == 1


@pytest.mark.parametrize("count", [0, 1, FREE_FAILURES - 1, FREE_FAILURES, FREE_FAILURES + 1,
                                   ADDRESS_FAILURES_PER_WINDOW, LOCK_AFTER - 1, LOCK_AFTER,
                                   LOCK_AFTER + 1])  # fmt: skip
@pytest.mark.parametrize(
    "elapsed", [timedelta(seconds=1), timedelta(days=1)], ids=["recent", "old"]
)
def test_unknown_email_is_counted_and_answered_like_a_known_one(
    app: Flask, clock: FrozenClock, count: int, elapsed: timedelta
) -> None:
    known = create_user(app, email="known@example.com")
    unknown = "unknown@example.com"
    answers = []
    for email in (known.email, unknown):
        key = password_key(app, email)
        if count:
            set_counter(app, key, count, clock.now() - elapsed)
        response = password_step(app.test_client(), email, "not the password")
        answers.append((response.status_code, _alert(response), failures(app, key)))
    assert answers[0] == answers[1]
    assert answers[0][2] == count + 1  # the unknown email was counted too


def _alert(response: TestResponse) -> str:
    match = re.search(r'<p class="error" role="alert">(.*?)</p>', response.text, re.S)
    assert match, "no error message on the page"
    return html.unescape(match.group(1))


# == enumeration ==================================================================================
def _normalised(response: TestResponse, email: str) -> tuple[int, str, list[str], list[str]]:
    """What a client can observe, minus the per-request randomness (CSRF tokens, CSP nonces, the
    passkey challenge) and the email the user typed, which the page echoes back."""
    body = response.text.replace(email, "EMAIL")
    body = re.sub(r'(name="csrf_token" value=|name="csrf-token" content=)"[^"]*"', r'\1""', body)
    body = re.sub(r'nonce="[^"]*"', 'nonce=""', body)
    # The page's passkey request options: a fresh random challenge for every page shown.
    body = re.sub(r'(id="passkey-options">)[^<]*(</script>)', r"\1\2", body)
    cookies = sorted(c.split("=", 1)[0] for c in response.headers.getlist("Set-Cookie"))
    headers = sorted(name for name, _ in response.headers if name != "Content-Length")
    return response.status_code, body, cookies, headers


def test_wrong_password_and_unknown_email_get_identical_answers(app: Flask) -> None:
    known = create_user(app, email="known@example.com")
    wrong_password = password_step(app.test_client(), known.email, "not the password")
    unknown_email = password_step(app.test_client(), "nobody@example.com", known.password)
    assert wrong_password.status_code == 401
    assert messages.GENERIC_FAILURE in text_of(wrong_password)
    assert _normalised(wrong_password, known.email) == _normalised(
        unknown_email, "nobody@example.com"
    )


def test_disabled_account_is_answered_like_an_unknown_email(app: Flask) -> None:
    disabled = create_user(app, email="gone@example.com")
    change(app, update(User).values(disabled_at=utcnow()))
    right_password = password_step(app.test_client(), disabled.email, disabled.password)
    unknown_email = password_step(app.test_client(), "nobody@example.com", disabled.password)
    assert right_password.status_code == 401
    assert _normalised(right_password, disabled.email) == _normalised(
        unknown_email, "nobody@example.com"
    )


def test_recovery_with_unknown_email_is_answered_like_a_wrong_code(
    app: Flask, clock: FrozenClock
) -> None:
    enrolled = user_with_totp(app, clock)
    never_issued = "2345-6789-abcd-efgh"
    wrong_code = recover(app.test_client(), enrolled.user.email, never_issued)
    unknown_email = recover(app.test_client(), "nobody@example.com", never_issued)
    # An unknown email with a code that is valid for another account, too.
    borrowed_code = recover(app.test_client(), "nobody@example.com", enrolled.codes[0])
    assert wrong_code.status_code == 401
    assert messages.RECOVERY_FAILURE in text_of(wrong_code)
    expected = _normalised(wrong_code, enrolled.user.email)
    assert _normalised(unknown_email, "nobody@example.com") == expected
    assert _normalised(borrowed_code, "nobody@example.com") == expected
    assert rows(app, BackupCode, BackupCode.consumed_at.is_not(None)) == []


# == passwords ====================================================================================
def _store_hash(app: Flask, user_id: str, password_hash: str) -> None:
    change(app, update(User).where(User.id == user_id).values(password_hash=password_hash))


def _stored_hash(app: Flask, user_id: str) -> str:
    [user] = rows(app, User, User.id == user_id)
    assert user.password_hash is not None
    return str(user.password_hash)


def test_password_is_rehashed_when_argon2_parameters_change(app: Flask) -> None:
    user = create_user(app)
    older = PasswordService(memory_kib=2048, time_cost=2, parallelism=1)
    _store_hash(app, user.id, older.hash(user.password))
    assert "m=2048,t=2,p=1" in _stored_hash(app, user.id)

    assert path_of(password_step(app.test_client(), user.email, user.password)) == "/account"
    # The app's parameters (tests/conftest.py FAST_ARGON2): m=1024, t=1, p=1.
    assert _stored_hash(app, user.id).startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert path_of(password_step(app.test_client(), user.email, user.password)) == "/account"


def test_a_password_signs_in_whatever_unicode_form_it_arrives_in(app: Flask) -> None:
    """NIST SP 800-63B 5.1.1.2 (normalisation, NFKC): a passphrase chosen with composed accents
    signs in when the browser sends them decomposed, and the other way round."""
    composed = unicodedata.normalize("NFC", "crème brûlée façade")
    decomposed = unicodedata.normalize("NFD", composed)
    user = create_user(app, password=composed)
    assert path_of(password_step(app.test_client(), user.email, decomposed)) == "/account"
    other = create_user(app, email="grace@example.com", password=decomposed)
    assert path_of(password_step(app.test_client(), other.email, composed)) == "/account"


def test_a_hash_of_a_password_as_typed_is_renewed_in_the_normal_form(app: Flask) -> None:
    """A hash made before idp normalised passwords holds the password as typed: it still signs
    in, and its renewal holds the normal form, so the other form signs in from then on."""
    decomposed = unicodedata.normalize("NFD", "crème brûlée façade")
    user = create_user(app)
    _store_hash(app, user.id, PasswordHasher(memory_cost=1024, time_cost=1).hash(decomposed))
    assert path_of(password_step(app.test_client(), user.email, decomposed)) == "/account"
    composed = unicodedata.normalize("NFC", decomposed)
    assert path_of(password_step(app.test_client(), user.email, composed)) == "/account"


def test_rehash_does_not_apply_the_new_password_policy(app: Flask) -> None:
    """A password set before today's policy (here: a common one) still signs in when its hash is
    upgraded: the policy governs new passwords (NIST SP 800-63B 5.1.1.2), and a sign-in that
    changes nothing the user chose must not fail."""
    user = create_user(app)
    older = PasswordService(memory_kib=2048, time_cost=1, parallelism=1)
    legacy = older.rehash("password123")  # as if set before the block list existed
    _store_hash(app, user.id, legacy)

    response = password_step(app.test_client(), user.email, "password123")
    assert path_of(response) == "/account"
    assert _stored_hash(app, user.id).startswith("$argon2id$v=19$m=1024,t=1,p=1$")


@pytest.mark.parametrize(
    ("new_password", "message"),
    [
        ("password123", "one of the most common ones"),
        ("Iloveyou1", "one of the most common ones"),
        ("short12", "Use at least 8 characters."),
    ],
)
def test_policy_breaking_password_is_refused_at_account_password(
    app: Flask, new_password: str, message: str
) -> None:
    user = create_user(app)
    browser = app.test_client()
    start_session(browser, user)
    before = _stored_hash(app, user.id)
    response = post_form(browser, "/account", "/account/password", new_password=new_password)
    assert path_of(response) == "/account"
    assert message in text_of(browser.get("/account"))
    assert _stored_hash(app, user.id) == before
    assert outbox(app, user.id, "password_changed") == []


@pytest.mark.parametrize("password", ["password123", "qwerty123", "1234567"])
def test_policy_breaking_password_is_refused_by_user_service_create(
    app: Flask, password: str
) -> None:
    with app.app_context():
        service = UserService(db.session(), app.extensions["idp"].passwords)
        with pytest.raises(PasswordPolicyError):
            service.create("new@example.com", password=password, allow_local_domains=False)
        db.session.rollback()
    assert rows(app, User) == []


def test_eight_character_minimum_is_inclusive(app: Flask) -> None:
    user = create_user(app, password="zq8#vLm2")
    assert path_of(password_step(app.test_client(), user.email, "zq8#vLm2")) == "/account"


def test_128_character_password_is_accepted(app: Flask) -> None:
    user = create_user(app)
    browser = app.test_client()
    start_session(browser, user)
    long_password = ("a long passphrase of many unrelated words " * 4)[:128]
    assert len(long_password) == 128
    response = post_form(browser, "/account", "/account/password", new_password=long_password)
    assert path_of(response) == "/account"
    assert "Password saved." in text_of(browser.get("/account"))
    assert path_of(password_step(app.test_client(), user.email, long_password)) == "/account"
    refused = password_step(app.test_client(), user.email, user.password)
    assert refused.status_code == 401


# == the passkey prompt ===========================================================================
@pytest.fixture(scope="module")
def prompting_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """An app with the passkey prompt on (the shared fixtures turn it off)."""
    instance: Path = tmp_path_factory.mktemp("prompt")
    flask_app = create_app(
        app_overrides(f"sqlite:///{instance / 'idp.db'}", instance, passkey_prompt=True)
    )
    with flask_app.app_context():
        Base.metadata.create_all(db.engine)
        flask_app.extensions["idp"].keys.ensure_keys(db.session())
        db.session.commit()
    return flask_app


@pytest.fixture
def prompted_user(prompting_app: Flask) -> Iterator[CreatedUser]:
    user = create_user(prompting_app, email=f"{secrets.token_hex(6)}@example.com")
    yield user
    change(prompting_app, delete(User).where(User.id == user.id))


def _prompt_then(response: TestResponse) -> str:
    assert path_of(response) == "/login/passkey-prompt"
    return query_of(location(response))["then"]


def test_password_only_sign_in_lands_on_the_passkey_prompt(
    prompting_app: Flask, prompted_user: CreatedUser
) -> None:
    browser = prompting_app.test_client()
    response = password_step(browser, prompted_user.email, prompted_user.password)
    assert _prompt_then(response) == "/account"
    page = browser.get(location(response))
    assert page.status_code == 200
    assert "Not now" in text_of(page)
    assert "Don't ask again" in text_of(page)


def test_not_now_continues_and_snoozes_the_prompt_for_fourteen_days(
    prompting_app: Flask, prompted_user: CreatedUser
) -> None:
    browser = prompting_app.test_client()
    prompt = location(password_step(browser, prompted_user.email, prompted_user.password))
    answered = post_form(browser, prompt, "/login/passkey-prompt", then="/account", choice="later")
    assert path_of(answered) == "/account"
    [user] = rows(prompting_app, User, User.id == prompted_user.id)
    assert user.passkey_prompt_snoozed_until is not None
    snooze = user.passkey_prompt_snoozed_until - utcnow()
    assert timedelta(days=13, hours=23) < snooze <= timedelta(days=14)

    again = password_step(prompting_app.test_client(), prompted_user.email, prompted_user.password)
    assert path_of(again) == "/account"

    # Fourteen days later the prompt is back.
    change(prompting_app, update(User).where(User.id == prompted_user.id)
           .values(passkey_prompt_snoozed_until=utcnow() - timedelta(seconds=1)))  # fmt: skip
    later = password_step(prompting_app.test_client(), prompted_user.email, prompted_user.password)
    assert _prompt_then(later) == "/account"


def test_dont_ask_again_disables_the_prompt(
    prompting_app: Flask, prompted_user: CreatedUser
) -> None:
    browser = prompting_app.test_client()
    prompt = location(password_step(browser, prompted_user.email, prompted_user.password))
    answered = post_form(browser, prompt, "/login/passkey-prompt", then="/account", choice="never")
    assert path_of(answered) == "/account"
    [user] = rows(prompting_app, User, User.id == prompted_user.id)
    assert user.passkey_prompt_disabled is True
    assert user.passkey_prompt_snoozed_until is None
    for _ in range(2):
        again = password_step(
            prompting_app.test_client(), prompted_user.email, prompted_user.password
        )
        assert path_of(again) == "/account"


def test_passkey_prompt_setting_off_never_shows_it(app: Flask) -> None:
    assert app.extensions["idp"].settings.passkey_prompt is False
    user = create_user(app)
    for _ in range(2):
        assert path_of(password_step(app.test_client(), user.email, user.password)) == "/account"


# == recovery =====================================================================================
def _recovered(app: Flask, enrolled: Enrolled) -> FlaskClient:
    browser = app.test_client()
    response = recover(browser, enrolled.user.email, enrolled.codes[0])
    assert path_of(response) == "/account/recover"
    return browser


def test_recovery_gives_a_restricted_session_limited_to_the_recover_page(
    app: Flask, clock: FrozenClock
) -> None:
    enrolled = user_with_totp(app, clock)
    browser = _recovered(app, enrolled)
    session = session_of(app, enrolled.user.id)
    assert session.restricted is True
    assert browser.get("/account/recover").status_code == 200
    assert path_of(browser.get("/account")) == "/account/recover"
    for path in ("/account/backup-codes", "/account/password", "/account/totp/remove"):
        assert path_of(post_form(browser, "/account/recover", path)) == "/account/recover"
    assert rows(app, TotpCredential, TotpCredential.confirmed_at.is_not(None))  # untouched
    [message] = outbox(app, enrolled.user.id, "backup_code_used")
    assert message.recipient == enrolled.user.email


def test_a_recovery_without_a_password_may_add_a_passkey_only(
    app: Flask, clock: FrozenClock
) -> None:
    """An authenticator app is a way in only beside a password (idp.services.method_removal):
    recovering a passwordless account with a backup code, the session may add a passkey and
    nothing else, or an app would promote it to a full session that signs in to relying
    parties while the account still has no way in."""
    enrolled = user_with_totp(app, clock)
    change(app, update(User).where(User.id == enrolled.user.id).values(password_hash=None))
    browser = _recovered(app, enrolled)
    session = session_of(app, enrolled.user.id)
    assert session.restricted is True
    assert session.passkey_only is True
    page = browser.get("/account/recover")
    assert "/account/totp" not in page.text
    assert "add a passkey on this device" in text_of(page)
    assert path_of(browser.get("/account/totp")) == "/account/recover"
    assert path_of(post_form(browser, "/account/recover", "/account/totp", code="000000")) == (
        "/account/recover"
    )
    assert session_of(app, enrolled.user.id).restricted is True
    rp = RelyingParty(browser, create_client(app))
    assert path_of(rp.authorize()) == "/login"


def test_a_recovery_with_a_password_may_add_an_app(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    browser = _recovered(app, enrolled)
    assert session_of(app, enrolled.user.id).passkey_only is False
    assert "/account/totp" in browser.get("/account/recover").text


def test_restricted_session_never_authorizes_a_client(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    browser = _recovered(app, enrolled)
    rp = RelyingParty(browser, create_client(app))
    assert path_of(rp.authorize()) == "/login"
    assert path_of(rp.authorize(prompt="none")) == rp.registered.redirect_uri
    assert query_of(location(rp.authorize(prompt="none")))["error"] == "login_required"


def test_totp_enrolment_ends_the_recovery_restriction(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    browser = _recovered(app, enrolled)
    clock.advance(STEP)
    secret, codes = enrol_totp(browser, clock)
    assert secret != enrolled.secret
    assert codes == []  # nine of the old codes are left: no new set is handed out
    assert session_of(app, enrolled.user.id).restricted is False
    home = browser.get("/account")
    assert home.status_code == 200
    assert "9 of 10 backup codes left." in text_of(home)
    rp = RelyingParty(browser, create_client(app))
    assert "code" in rp.follow_to_callback(rp.authorize())


def test_an_app_replaced_by_a_recovery_is_announced_and_audited_as_removed(
    app: Flask, clock: FrozenClock
) -> None:
    """A backup-code recovery may set up an authenticator app over the one the account has (it
    was lost): the old app stops working then, which is its removal. The owner is told so and
    the audit log says so, as for a removal in the portal: whoever holds a backup code must not
    swap the owner's app for their own with only a notice that "an authenticator app was
    added", which reads as a second app beside the owner's."""
    enrolled = user_with_totp(app, clock)
    browser = _recovered(app, enrolled)
    clock.advance(STEP)
    enrol_totp(browser, clock)
    [removed] = outbox(app, enrolled.user.id, "method_removed")
    assert removed.details == {"method": "The authenticator app"}
    assert "The authenticator app was removed" in removed.body
    [audited] = rows(app, AuditEvent, AuditEvent.kind == "totp.removed")
    assert (audited.subject_id, audited.details["reason"]) == (enrolled.user.id, "replaced")
    # Nothing is said of a removal where a recovery sets up the account's first app.
    fresh = user_with_totp(app, clock, email="grace@example.com")
    change(app, delete(TotpCredential).where(TotpCredential.user_id == fresh.user.id))
    again = _recovered(app, fresh)
    clock.advance(STEP)
    enrol_totp(again, clock)
    assert outbox(app, fresh.user.id, "method_removed") == []


# == step-up and notifications ====================================================================
def test_totp_removal_needs_a_recent_sign_in(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    browser = signed_in_with_totp(app, enrolled, clock)
    page = browser.get("/account")
    change(app, update(BrowserSession).values(auth_time=clock.now() - timedelta(minutes=6)))
    response = browser.post("/account/totp/remove", data={"csrf_token": csrf_token(page.text),
                                                          "confirm": "yes"})  # fmt: skip
    assert path_of(response) == "/login"
    assert query_of(location(response))["next"] == "/account/totp/remove"  # back to its question
    assert rows(app, TotpCredential, TotpCredential.user_id == enrolled.user.id)
    assert outbox(app, enrolled.user.id, "method_removed") == []


def test_totp_removal_leaves_a_notification(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    browser = signed_in_with_totp(app, enrolled, clock)
    change(app, update(BrowserSession).values(auth_time=clock.now() - timedelta(minutes=4)))
    asked = post_form(browser, "/account", "/account/totp/remove")  # no confirm field: asks
    assert asked.status_code == 200
    assert "Remove the authenticator app?" in text_of(asked)
    assert rows(app, TotpCredential, TotpCredential.user_id == enrolled.user.id)
    response = post_form(browser, "/account", "/account/totp/remove", confirm="yes")
    assert path_of(response) == "/account"
    assert rows(app, TotpCredential, TotpCredential.user_id == enrolled.user.id) == []
    [message] = outbox(app, enrolled.user.id, "method_removed")
    assert message.recipient == enrolled.user.email
    assert "The authenticator app was removed" in message.body


def test_totp_enrolment_needs_a_recent_sign_in(app: Flask, clock: FrozenClock) -> None:
    user = create_user(app)
    browser = app.test_client()
    start_session(browser, user)
    change(app, update(BrowserSession).values(auth_time=clock.now() - timedelta(minutes=6)))
    response = browser.get("/account/totp")
    assert path_of(response) == "/login"
    assert query_of(location(response))["next"] == "/account/totp"
    assert rows(app, TotpCredential) == []


def test_password_change_needs_a_recent_sign_in(app: Flask, clock: FrozenClock) -> None:
    user = create_user(app)
    browser = app.test_client()
    start_session(browser, user)
    before = _stored_hash(app, user.id)
    page = browser.get("/account")
    change(app, update(BrowserSession).values(auth_time=clock.now() - timedelta(minutes=6)))
    response = browser.post(
        "/account/password",
        data={"csrf_token": csrf_token(page.text), "new_password": "a brand new passphrase"},
    )
    assert path_of(response) == "/login"
    assert _stored_hash(app, user.id) == before


def test_adding_totp_is_notified(app: Flask, clock: FrozenClock) -> None:
    enrolled = user_with_totp(app, clock)
    [message] = outbox(app, enrolled.user.id, "method_added")
    assert message.recipient == enrolled.user.email
    assert message.details == {"method": "An authenticator app"}
    assert [e.kind for e in rows(app, AuditEvent, AuditEvent.kind == "totp.enabled")] == [
        "totp.enabled"
    ]


def test_password_change_is_notified(app: Flask) -> None:
    user = create_user(app)
    browser = app.test_client()
    start_session(browser, user)
    response = post_form(browser, "/account", "/account/password",
                         new_password="a brand new passphrase")  # fmt: skip
    assert path_of(response) == "/account"
    [message] = outbox(app, user.id, "password_changed")
    assert message.recipient == user.email
    assert message.subject == "Your password was changed"


# == recovery does the same work for every email ==================================================
def test_recovery_does_the_same_work_for_unknown_and_disabled_emails(
    app: Flask, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backup-code look-up ran only for real accounts (a timing oracle). Every
    recovery now hashes the code with the server's key and looks it up once, against no
    account's codes when the email has no usable account; counted here, not timed."""
    known = user_with_totp(app, clock, email="known@example.com")
    disabled = user_with_totp(app, clock, email="disabled@example.com")
    change(app, update(User).where(User.id == disabled.user.id).values(disabled_at=clock.now()))
    work: list[str] = []
    real_hash, real_consume = BackupCodeService._hash, backup_codes_module.consume_once

    def counted_hash(self: BackupCodeService, user_id: str, code: str) -> str:
        work.append("keyed hash")
        return real_hash(self, user_id, code)

    def counted_consume(*args: Any, **kwargs: Any) -> bool:
        work.append("look-up")
        return real_consume(*args, **kwargs)

    monkeypatch.setattr(BackupCodeService, "_hash", counted_hash)
    monkeypatch.setattr(backup_codes_module, "consume_once", counted_consume)
    wrong_code = "2345-6789-abcd-efgh"
    answers = {}
    for email in (known.user.email, "nobody@example.com", disabled.user.email):
        work.clear()
        response = recover(app.test_client(), email, wrong_code)
        answers[email] = (response.status_code, _alert(response), tuple(work))
    assert set(answers.values()) == {(401, messages.RECOVERY_FAILURE, ("keyed hash", "look-up"))}, (
        answers
    )
    # The disabled account's codes were looked up as no one's: none was spent by the right one.
    work.clear()
    refused = recover(app.test_client(), disabled.user.email, disabled.codes[0])
    assert (refused.status_code, work) == (401, ["keyed hash", "look-up"])
    assert rows(app, BackupCode, BackupCode.consumed_at.is_not(None)) == []


def test_a_success_lifts_a_lock_that_parallel_attempts_set_while_it_was_checked(
    storage_app: Flask,
) -> None:
    """Attempts in flight count until they succeed (docs/security.md): parallel attempts counted
    after a right one may reach the threshold and lock the factor while it is being checked. It
    was counted when no lock existed, so its success lifts that lock with the count; a lock that
    stood before an attempt refuses it, and no success can then lift it."""
    with storage_app.app_context():
        limiter = AttemptLimiter(DatabaseCounters(db.session()), FactorLocks(db.session()),
                                 lock_after=3)  # fmt: skip
        key, now = "pwd:in-flight", utcnow()
        right = limiter.reserve(key, "198.51.100.30", now)
        assert right.verdict.allowed
        parallel = [limiter.reserve(key, "198.51.100.30", now) for _ in range(3)]
        assert [a.verdict.allowed for a in parallel] == [True, True, False]
        for attempt in parallel[:2]:
            limiter.failed(attempt, now)
        db.session.commit()
        assert FactorLocks(db.session()).is_locked(key, now)

        limiter.succeeded(right)
        db.session.commit()
        assert not FactorLocks(db.session()).is_locked(key, now)
        assert limiter.reserve(key, "198.51.100.30", now).verdict.allowed

        # A lock already there refuses the attempt: there is no success to lift it.
        FactorLocks(db.session()).lock(key, now)
        db.session.commit()
        assert limiter.reserve(key, "198.51.100.30", now).verdict.locked

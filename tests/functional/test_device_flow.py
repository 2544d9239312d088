"""The device authorization grant (RFC 8628) through the Flask test client: the device endpoint,
the verification page, and the token endpoint's answers to polls.

The device and the person are two parties: ``Device`` speaks to /device_authorization and /token
as a TV would, the Flask test client with a session cookie is the person's phone. Time is a
frozen clock the views read, so ``slow_down`` and expiry are decided by the test, never by a
sleep. Storage-sensitive rules (attempt counters) run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from idp.clock import FrozenClock
from idp.extensions import db
from idp.models import (
    AuditEvent,
    BrowserSession,
    Client,
    Consent,
    DeviceAuthorization,
    Grant,
    Group,
    User,
)
from idp.models.base import utcnow
from idp.services.audit import RequestContext
from idp.services.claims import describe_scope
from idp.services.clients import ClientService
from idp.services.device import DEVICE_CODE_GRANT_TYPE, DeviceFlowService, normalise_user_code
from idp.services.groups import GroupService
from tests.conftest import sqlite_app
from tests.functional.test_groups import GROUP_SCOPES, _make_group
from tests.functional.test_refresh_scope import allow_grants, allow_only
from tests.support.factories import (
    CreatedUser,
    RegisteredClient,
    change,
    create_client,
    create_user,
    rows,
)
from tests.support.flow import csrf_token, jwt_parts, start_session

DEVICE_GRANTS = [DEVICE_CODE_GRANT_TYPE, "refresh_token"]


@dataclass
class Device:
    """A device client: asks for codes, then polls."""

    http: FlaskClient
    registered: RegisteredClient

    def _auth(self, data: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        headers: dict[str, str] = {}
        if self.registered.client_secret:
            raw = f"{self.registered.client_id}:{self.registered.client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        else:
            data = {"client_id": self.registered.client_id, **data}
        return data, headers

    def ask(self, scope: str = "openid profile offline_access") -> TestResponse:
        data, headers = self._auth({"scope": scope})
        return self.http.post("/device_authorization", data=data, headers=headers)

    def codes(self, scope: str = "openid profile offline_access") -> dict[str, Any]:
        response = self.ask(scope)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.get_json()
        return body

    def poll(self, device_code: str) -> TestResponse:
        data, headers = self._auth(
            {"grant_type": DEVICE_CODE_GRANT_TYPE, "device_code": device_code}
        )
        return self.http.post("/token", data=data, headers=headers)


def error_of(response: TestResponse) -> str:
    assert response.status_code == 400, (response.status_code, response.text)
    error: str = response.get_json()["error"]
    return error


def enter_code(phone: FlaskClient, code: str) -> TestResponse:
    page = phone.get("/device")
    assert page.status_code == 200, page.text
    return phone.post("/device", data={"csrf_token": csrf_token(page.text), "user_code": code})


def answer(phone: FlaskClient, code: str, decision: str = "approve") -> TestResponse:
    review = enter_code(phone, code)
    assert review.status_code == 200, review.text
    authorization = review.text.split('name="authorization" value="', 1)[1].split('"', 1)[0]
    return phone.post(
        "/device/decide",
        data={"csrf_token": csrf_token(review.text), "authorization": authorization,
              "decision": decision},
    )  # fmt: skip


def device_for(app: Flask, **kwargs: Any) -> Device:
    kwargs.setdefault("redirect_uris", [])
    kwargs.setdefault("grant_types", DEVICE_GRANTS)
    return Device(app.test_client(), create_client(app, **kwargs))


@pytest.fixture
def device(app: Flask) -> Device:
    return device_for(app)


@pytest.fixture
def phone(client: FlaskClient, user: CreatedUser) -> FlaskClient:
    start_session(client, user)
    return client


# -- the device authorization endpoint and discovery ---------------------------------------------
def test_discovery_names_the_device_endpoint_and_grant(client: FlaskClient) -> None:
    metadata = client.get("/.well-known/openid-configuration").get_json()
    assert metadata["device_authorization_endpoint"] == "http://localhost/device_authorization"
    assert DEVICE_CODE_GRANT_TYPE in metadata["grant_types_supported"]


@pytest.mark.parametrize(
    ("body", "status"),
    [("scope=openid&scope=%00", 400), ("scope=" + "a" * (1024 * 1024 + 1), 413)],
    ids=["NUL character", "body too large"],
)
def test_a_device_authorization_refused_before_the_endpoint_is_an_oauth_json_error(
    device: Device, body: str, status: int
) -> None:
    """RFC 8628 3.2 (RFC 6749 5.2): a device's request refused before the endpoint read it (a NUL
    in a parameter, a body over the limit) is the JSON error every other refusal there is, never
    idp's HTML error page."""
    _, headers = device._auth({})
    response = device.http.post("/device_authorization", data=body, headers=headers,
                                content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert response.status_code == status, response.text[:200]
    assert response.mimetype == "application/json", response.text[:200]
    assert response.get_json()["error"] == "invalid_request"
    assert response.headers["Cache-Control"] == "no-store"


def test_device_authorization_response_has_codes_uris_and_interval(device: Device) -> None:
    body = device.codes()
    assert set(body) == {"device_code", "user_code", "verification_uri",
                         "verification_uri_complete", "expires_in", "interval"}  # fmt: skip
    assert body["verification_uri"] == "http://localhost/device"
    assert (
        body["verification_uri_complete"]
        == f"http://localhost/device?user_code={body['user_code']}"
    )
    assert body["expires_in"] == 600
    assert body["interval"] == 5
    # RFC 8628 6.1: eight letters without vowels or look-alikes, shown in two halves.
    first, second = body["user_code"].split("-")
    assert len(first) == len(second) == 4
    assert set(first + second) <= set("BCDFGHJKLMNPQRSTVWXZ")
    assert len(body["device_code"]) >= 43  # 256 bits (RFC 8628 5.2)


def test_user_and_device_codes_are_stored_only_as_hashes(app: Flask, device: Device) -> None:
    body = device.codes()
    (row,) = rows(app, DeviceAuthorization)
    stored = " ".join(str(value) for value in vars(row).values())
    assert body["device_code"] not in stored
    assert body["user_code"].replace("-", "") not in stored
    assert body["user_code"] not in stored


def test_confidential_client_must_authenticate_at_the_device_endpoint(app: Flask) -> None:
    device = device_for(app)
    assert device.registered.client_secret
    response = device.http.post(
        "/device_authorization", data={"client_id": device.registered.client_id}
    )
    assert response.status_code == 401, response.text
    assert response.get_json()["error"] == "invalid_client"


def test_client_not_allowed_the_grant_is_unauthorized_client(app: Flask, device: Device) -> None:
    other = device_for(app, grant_types=["authorization_code"],
                       redirect_uris=["https://rp.example/callback"])  # fmt: skip
    assert error_of(other.ask()) == "unauthorized_client"
    # Nor may it redeem a device code issued to another client (RFC 6749 5.2).
    codes = device.codes()
    assert error_of(other.poll(codes["device_code"])) == "unauthorized_client"


def test_scopes_outside_the_registration_are_dropped(app: Flask) -> None:
    device = device_for(app, scopes=["openid", "profile"], grant_types=[DEVICE_CODE_GRANT_TYPE])
    device.codes("openid profile email offline_access")
    (row,) = rows(app, DeviceAuthorization)
    # offline_access needs the refresh_token grant (OIDC Core 11), email is not registered.
    assert row.scope == "openid profile"


def test_device_requests_are_budgeted_per_address(tmp_path: Path) -> None:
    """docs/operations.md, "Storage budgets": a public client asks anonymously, so the rows it
    makes are counted per address as pending authorization requests are
    (``anonymous_requests_per_address``, here at its least)."""
    app = sqlite_app(tmp_path, anonymous_requests_per_address=10)
    device = device_for(app)
    for _ in range(10):
        device.codes()
    refused = device.ask()
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "temporarily_unavailable"
    assert len(rows(app, DeviceAuthorization)) == 10


# -- the whole flow -------------------------------------------------------------------------------
def test_approved_device_gets_id_access_and_refresh_tokens(
    app: Flask, device: Device, phone: FlaskClient, user: CreatedUser, clock: FrozenClock
) -> None:
    codes = device.codes()
    assert error_of(device.poll(codes["device_code"])) == "authorization_pending"
    done = answer(phone, codes["user_code"])
    assert done.status_code == 200
    assert "Your device is signed in" in done.text
    clock.advance(timedelta(seconds=5))
    response = device.poll(codes["device_code"])
    assert response.status_code == 200, response.text
    tokens = response.get_json()
    assert {"access_token", "id_token", "refresh_token"} <= set(tokens)
    assert response.headers["Cache-Control"] == "no-store"
    _, claims = jwt_parts(tokens["id_token"])
    assert claims["sub"] == user.id
    assert claims["aud"] == device.registered.client_id
    assert claims["sid"]
    assert claims["auth_time"]
    assert claims["amr"] == ["pwd"]
    assert "nonce" not in claims
    userinfo = device.http.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert userinfo.get_json()["sub"] == user.id
    # The refresh token rotates as any other (the grant is the code flow's kind).
    data, headers = device._auth(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert device.http.post("/token", data=data, headers=headers).status_code == 200
    kinds = [e.kind for e in rows(app, AuditEvent, AuditEvent.kind.like("device.%"))]
    assert kinds == ["device.authorization_requested", "device.approved", "device.tokens_issued"]


def test_public_client_polls_with_its_client_id(app: Flask, phone: FlaskClient) -> None:
    device = device_for(app, kind="native")
    assert device.registered.client_secret is None
    codes = device.codes("openid")
    answer(phone, codes["user_code"])
    response = device.poll(codes["device_code"])
    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.get_json()  # no offline_access asked


def test_without_offline_access_no_refresh_token(device: Device, phone: FlaskClient) -> None:
    codes = device.codes("openid profile")
    answer(phone, codes["user_code"])
    tokens = device.poll(codes["device_code"]).get_json()
    assert "id_token" in tokens
    assert "refresh_token" not in tokens


def test_denied_request_answers_access_denied(
    app: Flask, device: Device, phone: FlaskClient
) -> None:
    codes = device.codes()
    done = answer(phone, codes["user_code"], decision="deny")
    assert done.status_code == 200
    assert "Request denied" in done.text
    assert error_of(device.poll(codes["device_code"])) == "access_denied"
    assert [e.kind for e in rows(app, AuditEvent, AuditEvent.kind == "device.denied")]


def test_expired_device_code_answers_expired_token(
    device: Device, phone: FlaskClient, clock: FrozenClock
) -> None:
    codes = device.codes()
    clock.advance(timedelta(seconds=600))
    assert error_of(device.poll(codes["device_code"])) == "expired_token"
    # Nor can the user still approve it.
    review = enter_code(phone, codes["user_code"])
    assert review.status_code == 400
    assert "not valid" in review.text


def test_polling_faster_than_the_interval_is_slow_down_and_the_interval_grows(
    device: Device, clock: FrozenClock
) -> None:
    code = device.codes()["device_code"]
    assert error_of(device.poll(code)) == "authorization_pending"
    clock.advance(timedelta(seconds=4))
    assert error_of(device.poll(code)) == "slow_down"  # 4 s < 5 s
    # RFC 8628 3.5: the interval is now 10 s for this and every later poll.
    clock.advance(timedelta(seconds=9))
    assert error_of(device.poll(code)) == "slow_down"  # 9 s < 10 s: now 15 s
    clock.advance(timedelta(seconds=15))
    assert error_of(device.poll(code)) == "authorization_pending"


def test_reused_device_code_is_refused_and_revokes_the_tokens(
    device: Device, phone: FlaskClient
) -> None:
    codes = device.codes()
    answer(phone, codes["user_code"])
    first = device.poll(codes["device_code"])
    assert first.status_code == 200
    assert error_of(device.poll(codes["device_code"])) == "invalid_grant"
    # As a replayed authorization code (RFC 6749 4.1.2): what was issued from it is revoked.
    access_token = first.get_json()["access_token"]
    userinfo = device.http.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    assert userinfo.status_code == 401


def test_an_approved_device_code_presented_by_another_client_is_invalid_grant(
    app: Flask, device: Device, phone: FlaskClient
) -> None:
    """RFC 6749 5.2 ``invalid_grant``: a device code is bound to the client it was issued to
    (RFC 8628 3.4). Another client allowed the device grant, holding an approved device code of
    the first (a leaked log line, a shared device), gets no tokens of the user, and spends and
    revokes nothing: the device it belongs to is still signed in."""
    other = device_for(app)
    codes = device.codes()
    assert answer(phone, codes["user_code"]).status_code == 200
    assert error_of(other.poll(codes["device_code"])) == "invalid_grant"
    response = device.poll(codes["device_code"])
    assert response.status_code == 200, response.text
    assert "access_token" in response.get_json()


def test_unknown_device_code_is_invalid_grant(device: Device) -> None:
    assert error_of(device.poll("not-a-device-code")) == "invalid_grant"


# -- the verification page ------------------------------------------------------------------------
def test_verification_page_sends_a_stranger_to_sign_in_and_back(client: FlaskClient) -> None:
    response = client.get("/device?user_code=BCDF-GHJK")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/device?user_code%3DBCDF-GHJK"
    # The sign-in page says what it is for (opened from a TV's QR code, a bare "Sign in" did not).
    page = client.get(response.headers["Location"]).text
    assert "to approve a sign-in on your TV, console or command line tool" in page
    assert "to approve a sign-in on" not in client.get("/login?next=/account").text


def test_complete_uri_only_fills_in_the_code(device: Device, phone: FlaskClient) -> None:
    codes = device.codes()
    page = phone.get(f"/device?user_code={codes['user_code'].lower()}")
    assert f'value="{codes["user_code"]}"' in page.text
    assert "Only enter a code that your own device is showing you" in page.text
    # RFC 8628 5.4: opening the link approved nothing; the user still confirms.
    assert error_of(device.poll(codes["device_code"])) == "authorization_pending"


def _placeholder(page: TestResponse) -> str:
    field = page.text.split('id="user_code"', 1)[1].split(">", 1)[0]
    return field.split('placeholder="', 1)[1].split('"', 1)[0]


def test_the_code_fields_placeholder_is_a_code_of_the_real_alphabet(phone: FlaskClient) -> None:
    """The page's example code is one a device could show: eight letters of the user codes'
    alphabet, consonants only (RFC 8628 6.1), in the shown form; "ABCD-EFGH" had vowels no code
    holds, and a person copying its form could think one was mistyped. Also on the page that
    answers a malformed code."""
    shown = phone.get("/device")
    refused = phone.post("/device", data={"csrf_token": csrf_token(shown.text),
                                          "user_code": "AEIO-UAEI"})  # fmt: skip
    assert refused.status_code == 400
    for page in (shown, refused):
        example = _placeholder(page)
        assert len(example) == 9, example
        assert example[4] == "-", example
        assert set(example.replace("-", "")) <= set("BCDFGHJKLMNPQRSTVWXZ"), example
        assert normalise_user_code(example) is not None


def test_a_code_with_vowels_is_refused_with_what_a_code_is(phone: FlaskClient) -> None:
    """Eight letters with a vowel (RFC 8628 6.1: the alphabet has none) are refused with what a
    code is, not "not a code of eight letters", which was untrue of them."""
    shown = phone.get("/device")
    refused = phone.post("/device", data={"csrf_token": csrf_token(shown.text),
                                          "user_code": "ABCD-EFGH"})  # fmt: skip
    assert refused.status_code == 400
    assert "codes are eight letters without vowels" in refused.text
    assert "not a code of eight letters" not in refused.text


def test_review_shows_client_scopes_time_and_own_device_warning(
    app: Flask, phone: FlaskClient, clock: FrozenClock
) -> None:
    device = device_for(app, name="Living Room TV")
    codes = device.codes("openid profile")
    review = enter_code(phone, codes["user_code"])
    assert "Living Room TV" in review.text
    assert clock.now().strftime("%Y-%m-%d %H:%M") + " UTC" in review.text
    for scope in ("openid", "profile"):
        assert f"<li>{describe_scope(scope)}</li>" in review.text
    assert "Approve only if your own device, right in front of you, shows the code" in review.text
    assert f'<code id="device-code">{codes["user_code"]}</code>' in review.text
    assert 'name="decision" value="approve"' in review.text


def test_the_review_shows_the_apps_logo_as_the_consent_page_does(
    app: Flask, phone: FlaskClient
) -> None:
    """The review is the device flow's consent page (RFC 8628 5.4: the user recognises the app
    before approving): the app's logo is shown, and its origin, and only it, joins the page's
    image sources, as on the consent page. The page's policy blocked it, so the review showed a
    broken image; without a logo the policy stays as it is."""
    device = device_for(app, name="Living Room TV", logo_uri="https://cdn.tv.example/logo.png")
    review = enter_code(phone, device.codes()["user_code"])
    assert '<img src="https://cdn.tv.example/logo.png"' in review.text
    policy = review.headers["Content-Security-Policy"]
    assert "img-src 'self' data: https://cdn.tv.example;" in policy
    assert "frame-ancestors 'none'" in policy
    plain = enter_code(phone, device_for(app, name="Radio").codes()["user_code"])
    assert "<img" not in plain.text
    assert "img-src 'self' data:;" in plain.headers["Content-Security-Policy"]


def test_typed_code_is_normalised(device: Device, phone: FlaskClient) -> None:
    codes = device.codes()
    sloppy = " " + codes["user_code"].replace("-", " ").lower() + " "
    review = enter_code(phone, sloppy)
    assert review.status_code == 200
    assert "Approve" in review.text


def test_user_code_is_single_use(device: Device, phone: FlaskClient) -> None:
    codes = device.codes()
    answer(phone, codes["user_code"])
    again = enter_code(phone, codes["user_code"])
    assert again.status_code == 400
    assert "not valid" in again.text


def test_decision_is_counted_once(device: Device, phone: FlaskClient) -> None:
    codes = device.codes()
    review = enter_code(phone, codes["user_code"])
    authorization = review.text.split('name="authorization" value="', 1)[1].split('"', 1)[0]
    form = {"csrf_token": csrf_token(review.text), "authorization": authorization}
    assert phone.post("/device/decide", data={**form, "decision": "approve"}).status_code == 200
    second = phone.post("/device/decide", data={**form, "decision": "deny"})
    assert second.status_code == 400
    assert device.poll(codes["device_code"]).status_code == 200


def test_of_two_answers_loaded_at_once_only_the_first_counts(app: Flask, device: Device) -> None:
    """Two tabs (or a double click) both showed the review page: the user code is spent by the
    first answer through the consume-once primitive, and the second changes nothing."""
    codes = device.codes()
    user = create_user(app, email="twice@example.com")
    with app.app_context():
        (row,) = db.session.scalars(select(DeviceAuthorization)).all()
        person = db.session.get(User, user.id)
        session = BrowserSession(id_hash="h", sid="s", user_id=user.id, auth_time=utcnow(),
                                 amr=["pwd"], acr="urn:idp:acr:password",
                                 expires_at=utcnow() + timedelta(hours=1))  # fmt: skip
        db.session.add(session)  # a live session: an ended one approves nothing
        service = DeviceFlowService(db.session(), app.extensions["idp"].user_code_hasher)
        assert person is not None
        answer = {"user": person, "session": session, "context": RequestContext(), "now": utcnow()}
        assert service.decide(row, approve=True, **answer) is True
        assert service.decide(row, approve=False, **answer) is False  # the same, stale, row
        db.session.commit()
    assert device.poll(codes["device_code"]).status_code == 200


def test_a_restricted_session_is_sent_to_sign_in_fully(
    app: Flask, device: Device, phone: FlaskClient
) -> None:
    """A restricted session (recovery, login link, invite) may only add a sign-in method; it
    never speaks for the user to a client, so it cannot approve a device either."""
    codes = device.codes()
    page = phone.get("/device")
    change(app, update(BrowserSession).values(restricted=True))
    for response in (
        phone.get("/device"),
        phone.post("/device", data={"csrf_token": csrf_token(page.text),
                                    "user_code": codes["user_code"]}),
    ):  # fmt: skip
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=/device")
    assert error_of(device.poll(codes["device_code"])) == "authorization_pending"


def test_decision_needs_the_csrf_token(device: Device, phone: FlaskClient) -> None:
    codes = device.codes()
    review = enter_code(phone, codes["user_code"])
    authorization = review.text.split('name="authorization" value="', 1)[1].split('"', 1)[0]
    forged = phone.post(
        "/device/decide", data={"authorization": authorization, "decision": "approve"}
    )
    assert forged.status_code == 400
    assert error_of(device.poll(codes["device_code"])) == "authorization_pending"


def test_third_party_approval_is_remembered_as_consent(
    app: Flask, phone: FlaskClient, user: CreatedUser
) -> None:
    device = device_for(app, first_party=False)
    codes = device.codes("openid profile")
    answer(phone, codes["user_code"])
    (consent,) = rows(app, Consent, Consent.user_id == user.id)
    assert consent.client_id == device.registered.client_id
    assert set(consent.scopes) == {"openid", "profile"}


def test_a_user_outside_the_allowed_groups_is_told_and_the_request_stays_for_its_user(
    app: Flask, phone: FlaskClient, device: Device, clock: FrozenClock
) -> None:
    """Per-app access (docs/admins.md): a signed-in user outside the client's allowed groups who
    types a valid user code is told the app is not open to them, on the page. The request is
    not theirs to answer (RFC 8628 3.3; 5.1: user codes are guessable): it was denied at once,
    so whoever knew a code refused someone else's device. Now it stays pending, its user code
    unspent, audited ``device.access_refused``; a member of the group then approves it and the
    device gets its tokens."""
    with app.app_context():
        groups = GroupService(db.session())
        groups.create("tv-viewers", display_name="TV viewers")
        client = db.session.get(Client, device.registered.client_id)
        groups.set_allowed_groups(client, ["tv-viewers"])
        db.session.commit()
    codes = device.codes()
    refused = enter_code(phone, codes["user_code"])
    assert refused.status_code == 403
    assert "TV viewers" in refused.text
    assert "left for whoever started it" in refused.text
    assert 'name="authorization"' not in refused.text
    assert error_of(device.poll(codes["device_code"])) == "authorization_pending"
    (row,) = rows(app, DeviceAuthorization)
    assert row.decided_at is None
    assert row.decision is None
    (event,) = rows(app, AuditEvent, AuditEvent.kind == "device.access_refused")
    assert event.outcome == "failure"
    assert event.details["reason"] == "not_in_allowed_groups"
    assert event.client_id == device.registered.client_id
    assert not rows(app, AuditEvent, AuditEvent.kind == "device.denied")

    member = create_user(app, email="viewer@example.com")
    with app.app_context():
        viewers = db.session.scalars(select(Group).where(Group.name == "tv-viewers")).one()
        GroupService(db.session()).add_members(viewers, [db.session.get(User, member.id)])
        db.session.commit()
    owner = app.test_client()
    start_session(owner, member)
    done = answer(owner, codes["user_code"])
    assert done.status_code == 200, done.text
    clock.advance(timedelta(seconds=10))
    tokens = device.poll(codes["device_code"])
    assert tokens.status_code == 200, tokens.text
    assert jwt_parts(tokens.get_json()["id_token"])[1]["sub"] == member.id


def _disable(app: Flask, client_id: str) -> None:
    with app.app_context():
        rt = app.extensions["idp"]
        client = db.session.get(Client, client_id)
        assert client is not None
        ClientService(db.session(), rt.client_secrets, issuer=rt.settings.issuer).disable(client)
        db.session.commit()


def test_a_request_of_a_client_disabled_since_is_neither_shown_nor_approved(
    app: Flask, phone: FlaskClient, device: Device, user: CreatedUser
) -> None:
    """RFC 8628 3.3 and RFC 6749 2: the user reviews a request of a client idp still serves. One
    disabled since the device asked (its token endpoint answers ``invalid_client``) is neither
    listed for approval nor approved from a review page shown before, and the page says why,
    calmly; no grant is opened for it."""
    codes = device.codes()
    shown = enter_code(phone, codes["user_code"])
    assert shown.status_code == 200, shown.text
    authorization = shown.text.split('name="authorization" value="', 1)[1].split('"', 1)[0]
    _disable(app, device.registered.client_id)

    approved = phone.post("/device/decide", data={"csrf_token": csrf_token(shown.text),
                          "authorization": authorization, "decision": "approve"})  # fmt: skip
    entered = enter_code(phone, codes["user_code"])
    for page in (approved, entered):
        assert page.status_code == 400, page.text
        assert "no longer available" in page.text
        assert 'name="authorization"' not in page.text
    with app.app_context():
        (row,) = db.session.scalars(select(DeviceAuthorization)).all()
        assert (row.decided_at, row.grant_id) == (None, None)
        assert db.session.scalars(select(Grant).where(Grant.user_id == user.id)).all() == []


def test_a_request_of_a_client_no_longer_allowed_the_grant_is_neither_shown_nor_approved(
    app: Flask, phone: FlaskClient, device: Device, user: CreatedUser
) -> None:
    """RFC 8628 3.3 and RFC 6749 5.2 ``unauthorized_client``: an admin took the device grant
    from the client after the device asked. The token endpoint refuses that client's polls, so
    the user is not asked to approve a request nobody can redeem (an approval opened a grant and
    remembered consent for nothing); the page says why and no grant is opened, as for a client
    disabled since."""
    codes = device.codes()
    shown = enter_code(phone, codes["user_code"])
    assert shown.status_code == 200, shown.text
    authorization = shown.text.split('name="authorization" value="', 1)[1].split('"', 1)[0]
    allow_grants(app, device.registered.client_id, ["client_credentials"])

    approved = phone.post("/device/decide", data={"csrf_token": csrf_token(shown.text),
                          "authorization": authorization, "decision": "approve"})  # fmt: skip
    entered = enter_code(phone, codes["user_code"])
    for page in (approved, entered):
        assert page.status_code == 400, page.text
        assert "may no longer sign in from a device" in page.text
        assert 'name="authorization"' not in page.text
    with app.app_context():
        (row,) = db.session.scalars(select(DeviceAuthorization)).all()
        assert (row.decided_at, row.grant_id) == (None, None)
        assert db.session.scalars(select(Grant).where(Grant.user_id == user.id)).all() == []
    assert error_of(device.poll(codes["device_code"])) == "unauthorized_client"


# -- brute force: user codes are counted per account and per address ----------------------------
@pytest.fixture
def storage_device(storage_app: Flask) -> tuple[Flask, Device]:
    return storage_app, device_for(storage_app)


def test_wrong_user_codes_are_limited_per_account(
    storage_device: tuple[Flask, Device], clock: FrozenClock
) -> None:
    app, device = storage_device
    phone = app.test_client()
    start_session(phone, create_user(app))
    codes = device.codes()
    for _ in range(5):
        assert enter_code(phone, "BBBB-BBBB").status_code == 400
    # The sixth attempt waits for the backoff, even with the right code (counted before it is
    # checked, docs/security.md).
    throttled = enter_code(phone, codes["user_code"])
    assert throttled.status_code == 429
    assert "Too many wrong codes" in throttled.text
    clock.advance(timedelta(seconds=2))
    assert enter_code(phone, codes["user_code"]).status_code == 200


def test_a_right_user_code_between_guesses_resets_no_backoff(
    storage_device: tuple[Flask, Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 8628 5.1: a guesser can always type a right code, its own device's; that proves
    nothing about the wrong ones, so it neither resets the account's count nor counts itself:
    the sixth wrong code waits, as with no right one between."""
    monkeypatch.setattr("idp.services.rate_limits.ADDRESS_FAILURES_PER_WINDOW", 10_000)
    app, _ = storage_device
    public = device_for(app, kind="native")  # anyone may start a request with a public client
    guesser = app.test_client()
    start_session(guesser, create_user(app, email="guesser@example.com"))
    own = public.codes("openid")["user_code"]
    for _ in range(5):
        assert enter_code(guesser, own).status_code == 200
        assert enter_code(guesser, "BBBB-BBBB").status_code == 400
    assert enter_code(guesser, "BBBB-BBBB").status_code == 429


def test_wrong_user_codes_are_limited_per_address(
    storage_device: tuple[Flask, Device], monkeypatch: pytest.MonkeyPatch, clock: FrozenClock
) -> None:
    monkeypatch.setattr("idp.services.rate_limits.ADDRESS_FAILURES_PER_WINDOW", 3)
    app, device = storage_device
    guesser, owner = app.test_client(), app.test_client()
    start_session(guesser, create_user(app, email="guesser@example.com"))
    start_session(owner, create_user(app, email="owner@example.com"))
    codes = device.codes()
    for _ in range(3):
        assert enter_code(guesser, "BBBB-BBBB").status_code == 400
    # Another account from the same address is refused too, until the window ends.
    assert enter_code(owner, codes["user_code"]).status_code == 429
    with app.app_context():
        failures = db.session.scalars(
            select(AuditEvent.details)
            .where(AuditEvent.kind == "device.user_code")
            .order_by(AuditEvent.id)  # in the order written (PostgreSQL gives no order without it)
        ).all()
    assert [d["reason"] for d in failures] == ["wrong_code"] * 3 + ["throttled"]


def test_a_scope_taken_from_the_client_while_a_device_request_waits_is_not_granted(
    app: Flask, phone: FlaskClient, user: CreatedUser
) -> None:
    """RFC 6749 3.3, as for a stored authorization request: a device request kept the scopes
    allowed when the device asked, so an approval after an admin took ``groups`` from the client
    still granted it (the review page listed it, the tokens carried it). The request is answered
    under the registration as it stands: the page, the grant and the tokens lose the scope."""
    _make_group(app, "staff", user.email)
    device = device_for(app, scopes=GROUP_SCOPES)
    codes = device.codes("openid groups offline_access")
    allow_only(app, device.registered.client_id, ["openid", "profile", "offline_access"])
    review = enter_code(phone, codes["user_code"])
    assert f"<li>{describe_scope('groups')}</li>" not in review.text
    answer(phone, codes["user_code"])
    response = device.poll(codes["device_code"])
    assert response.status_code == 200, response.text
    tokens = response.get_json()
    assert tokens["scope"] == "openid offline_access"
    assert jwt_parts(tokens["access_token"])[1]["scope"] == "openid offline_access"
    assert "groups" not in jwt_parts(tokens["id_token"])[1]


def test_a_scope_taken_from_the_client_after_the_approval_is_not_granted_by_the_poll(
    app: Flask, phone: FlaskClient, user: CreatedUser
) -> None:
    """RFC 6749 3.3, as a code's exchange is: the device's poll is where its tokens are issued,
    so a scope an admin took from the client between the user's approval and the device's next
    poll is not granted. The approval kept ``groups``; the poll issued it (the token response,
    the access token, the ID token's ``groups`` claim and the refresh token's grant)."""
    _make_group(app, "staff", user.email)
    device = device_for(app, scopes=GROUP_SCOPES)
    codes = device.codes("openid groups offline_access")
    answer(phone, codes["user_code"])
    allow_only(app, device.registered.client_id, ["openid", "profile", "offline_access"])
    response = device.poll(codes["device_code"])
    assert response.status_code == 200, response.text
    tokens = response.get_json()
    assert tokens["scope"] == "openid offline_access"
    assert jwt_parts(tokens["access_token"])[1]["scope"] == "openid offline_access"
    assert "groups" not in jwt_parts(tokens["id_token"])[1]
    data, headers = device._auth(
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    refreshed = device.http.post("/token", data=data, headers=headers)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.get_json()["scope"] == "openid offline_access"


def test_a_device_poll_after_the_client_lost_refresh_tokens_and_a_scope_gets_neither(
    app: Flask, phone: FlaskClient, user: CreatedUser
) -> None:
    """RFC 6749 3.3, as for a code exchanged after an admin took a scope from its client: the
    approval is the device's code, and the device's poll was answered with the scope approved,
    whatever the registration had become meanwhile (``groups`` and its claims, ``offline_access``
    of a client no longer allowed refresh tokens). The poll is answered under the registration as
    it stands, as the code's exchange is."""
    _make_group(app, "staff", user.email)
    device = device_for(app, scopes=GROUP_SCOPES)
    codes = device.codes("openid groups offline_access")
    answer(phone, codes["user_code"])
    allow_only(app, device.registered.client_id, ["openid", "profile", "offline_access"])
    allow_grants(app, device.registered.client_id, [DEVICE_CODE_GRANT_TYPE])

    response = device.poll(codes["device_code"])
    assert response.status_code == 200, response.text
    tokens = response.get_json()
    assert tokens["scope"] == "openid", tokens
    assert "refresh_token" not in tokens
    assert jwt_parts(tokens["access_token"])[1]["scope"] == "openid"
    assert "groups" not in jwt_parts(tokens["id_token"])[1]

"""Anonymous requests cannot grow the database without bound (docs/operations.md, "Storage
budgets"): what one request stores is capped, what one client address stores is budgeted, and
refused anonymous requests are counted, not audited one row each. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from idp.extensions import db
from idp.models import AttemptCounter, AuditEvent, Base, PendingAuthorization
from idp.oidc.checks import MAX_LOGIN_HINT_LENGTH, MAX_NONCE_LENGTH, MAX_STATE_LENGTH
from idp.services.anonymous import budget_address
from idp.services.assurance import ACR_VALUES_SUPPORTED
from idp.services.carried_requests import MAX_CARRIED_LENGTH
from idp.settings import Settings
from tests.conftest import sqlite_app
from tests.support.counted import counted
from tests.support.factories import create_client, rows
from tests.support.flow import RelyingParty, query_of, shown_pending_id, sign_in_address
from tests.support.passkey_flow import PasskeyPages

FOUR_KB = 4096
#: The default budget of pending requests and passkey options per address and window.
PER_ADDRESS = Settings.anonymous_requests_per_address
# A budget's window is a fixed quarter of an hour (idp.services.anonymous): a test that counts an
# address's requests against it must not straddle a boundary, so its clock stands still (the
# ``clock`` fixture).
ADDRESS = "203.0.113.9"
#: What a pending request can hold at most once every parameter is capped: the registered
#: redirect URI and scopes, plus the capped state, nonce and login_hint, the known acr values,
#: a code challenge and the field names (generous: a bound, not an estimate).
MAX_PENDING_PARAMS_BYTES = (
    MAX_STATE_LENGTH + MAX_NONCE_LENGTH + MAX_LOGIN_HINT_LENGTH
    + len(" ".join(ACR_VALUES_SUPPORTED)) + 128 + 1024
)  # fmt: skip


def _stored(app: Flask) -> dict[str, tuple[int, int]]:
    """Rows and bytes of every table (every column's value as stored, JSON as text)."""
    found: dict[str, tuple[int, int]] = {}
    with app.app_context():
        for table in Base.metadata.sorted_tables:
            count = 0
            size = 0
            for row in db.session.execute(select(table)).mappings():
                count += 1
                size += sum(len(_text(value)) for value in row.values())
            found[table.name] = (count, size)
        db.session.remove()
    return found


def _text(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value).encode()
    return str(value).encode()


def _growth(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict:
    return {
        table: (after[table][0] - before[table][0], after[table][1] - before[table][1])
        for table in after
        if after[table] != before.get(table)
    }


def _anonymous_authorize(browser: FlaskClient, rp: RelyingParty, **params: Any) -> TestResponse:
    return browser.get(
        "/authorize", query_string=rp.authorize_params(**params),
        environ_base={"REMOTE_ADDR": ADDRESS},
    )  # fmt: skip


@pytest.fixture
def rp(storage_app: Flask) -> RelyingParty:
    return RelyingParty(storage_app.test_client(), create_client(storage_app))


# -- /authorize -----------------------------------------------------------------------------------
def _carried_params(response: TestResponse) -> dict[str, Any]:
    """The parameters of the request the sign-in page carries (idp.services.carried_requests:
    the payload, before the dot, is the base64url of its JSON)."""
    carried = shown_pending_id(response.text) or ""
    assert len(carried) <= MAX_CARRIED_LENGTH
    payload = carried.split(".")[0]
    params: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )["p"]
    return params


def _shows_sign_in(response: TestResponse) -> bool:
    """The authorization endpoint showed its sign-in page, carrying the request."""
    return (sign_in_address(response) or "").startswith("/login?request=")


def test_200_anonymous_authorize_requests_with_4kb_parameters_store_a_bounded_amount(
    storage_app: Flask, rp: RelyingParty
) -> None:
    """The issue's measurement: 200 anonymous requests with 4 KB state, login_hint and
    acr_values. The oversize state is refused (invalid_request, back to the client): nothing is
    stored for them."""
    before = _stored(storage_app)
    big = {"state": "s" * FOUR_KB, "login_hint": "h" * FOUR_KB, "acr_values": "a" * FOUR_KB}
    for _ in range(200):
        response = _anonymous_authorize(storage_app.test_client(), rp, **big)
        assert response.status_code == 302
        assert query_of(response.headers["Location"])["error"] == "invalid_request"
    growth = _growth(before, _stored(storage_app))
    assert growth == {}, growth


@pytest.mark.usefixtures("clock")  # within one budget window (the comment by PER_ADDRESS)
def test_anonymous_authorize_requests_at_every_cap_store_nothing(
    storage_app: Flask, rp: RelyingParty
) -> None:
    """The worst an address can do within the caps: the longest state and nonce idp keeps, and
    4 KB login_hint and acr_values (dropped and filtered), past the address's budget. Each gets
    its sign-in page, which carries the request (idp.services.carried_requests): nothing is
    stored, not even a count, and each page's request is under its bound."""
    before = _stored(storage_app)
    worst = {"state": "s" * MAX_STATE_LENGTH, "nonce": "n" * MAX_NONCE_LENGTH,
             "login_hint": "h" * FOUR_KB, "acr_values": ("phr " + "a" * 40 + " ") * 90}  # fmt: skip
    answers = [
        _anonymous_authorize(storage_app.test_client(), rp, **worst)
        for _ in range(PER_ADDRESS + 80)
    ]
    assert all(_shows_sign_in(a) for a in answers)
    growth = _growth(before, _stored(storage_app))
    assert growth == {}, growth
    for answer in answers[:3]:
        params = _carried_params(answer)
        assert params["login_hint"] is None
        assert params["acr_values"] == "phr"
        assert len(json.dumps(params)) <= MAX_PENDING_PARAMS_BYTES


def _pushed_then_authorized(app: Flask, rp: RelyingParty, address: str) -> TestResponse:
    """A request the client pushed (RFC 9126 2), brought to /authorize by an anonymous browser
    at ``address``: stored there, as a pushed request's parameters stay off the browser."""
    pushed = rp.browser.post("/par", data=rp.authorize_params(), headers=_basic(rp))
    assert pushed.status_code == 201, pushed.text
    query = {"client_id": rp.registered.client_id, "request_uri": pushed.get_json()["request_uri"]}
    return app.test_client().get("/authorize", query_string=query,
                                 environ_base={"REMOTE_ADDR": address})  # fmt: skip


def _basic(rp: RelyingParty) -> dict[str, str]:
    raw = f"{rp.registered.client_id}:{rp.registered.client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def test_the_address_budget_follows_the_setting(tmp_path: Path) -> None:
    """anonymous_requests_per_address (docs/configuration.md) sets the budget of the requests
    /authorize stores for anonymous browsers (a pushed request's): a deployment where many
    people share one address raises it, and the refusal starts there."""
    app = sqlite_app(tmp_path, anonymous_requests_per_address=12)
    rp = RelyingParty(app.test_client(), create_client(app))
    answers = [_pushed_then_authorized(app, rp, ADDRESS) for _ in range(15)]
    opened = [a for a in answers if _shows_sign_in(a)]
    assert len(opened) == 12
    assert len(rows(app, PendingAuthorization)) == 12
    assert query_of(answers[-1].headers["Location"])["error"] == "temporarily_unavailable"


def test_an_oversize_state_is_refused_with_invalid_request_and_stores_nothing(
    storage_app: Flask, rp: RelyingParty
) -> None:
    response = _anonymous_authorize(
        storage_app.test_client(), rp, state="x" * (MAX_STATE_LENGTH + 1)
    )
    assert response.status_code == 302
    params = query_of(response.headers["Location"])
    assert params["error"] == "invalid_request"
    assert params["state"] == "x" * (MAX_STATE_LENGTH + 1)  # RFC 6749 4.1.2.1: sent back as is
    assert rows(storage_app, PendingAuthorization) == []
    accepted = _anonymous_authorize(storage_app.test_client(), rp, state="x" * MAX_STATE_LENGTH)
    assert _shows_sign_in(accepted)


def test_a_login_hint_that_cannot_be_an_email_is_dropped(
    storage_app: Flask, rp: RelyingParty
) -> None:
    hint = "ada@example.com"
    kept = _anonymous_authorize(storage_app.test_client(), rp, login_hint=hint)
    assert f'type="email" value="{hint}"' in kept.text  # the sign-in page's email field
    dropped = _anonymous_authorize(
        storage_app.test_client(), rp, login_hint="a" * (MAX_LOGIN_HINT_LENGTH + 1)
    )
    assert _shows_sign_in(dropped)
    assert 'type="email" value=""' in dropped.text
    assert [_carried_params(a)["login_hint"] for a in (kept, dropped)] == [hint, None]


def test_ipv6_addresses_of_one_64_share_a_budget() -> None:
    assert budget_address("2001:db8:1:2:aaaa::1") == budget_address("2001:db8:1:2:ffff::9")
    assert budget_address("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert budget_address("2001:db8:1:3::1") != budget_address("2001:db8:1:2::1")
    assert budget_address("::ffff:198.51.100.7") == "198.51.100.7"
    assert budget_address("198.51.100.7") == "198.51.100.7"


@pytest.mark.usefixtures("clock")  # within one budget window (the comment by PER_ADDRESS)
def test_pending_authorizations_are_budgeted_per_ipv6_64(
    storage_app: Flask, rp: RelyingParty
) -> None:
    for host in range(PER_ADDRESS):
        response = _pushed_then_authorized(storage_app, rp, f"2001:db8:7:7::{host + 1:x}")
        assert _shows_sign_in(response)
    next_host = _pushed_then_authorized(storage_app, rp, "2001:db8:7:7:1234::1")
    assert query_of(next_host.headers["Location"])["error"] == "temporarily_unavailable"


# -- passkey answers ------------------------------------------------------------------------------
def _anonymous_rejections(reason: str) -> float:
    return counted("idp_anonymous_rejections_total", kind="login.passkey", reason=reason)


MALFORMED_ANSWERS: list[dict[str, Any]] = [
    {"challenge_id": "", "credential": {"id": "x"}},  # no challenge
    {"challenge_id": "no-such-challenge", "credential": "not json"},  # an unknown one
]


@pytest.mark.usefixtures("clock")  # within one budget window (the comment by PER_ADDRESS)
def test_malformed_passkey_answers_do_not_write_an_audit_row_each(storage_app: Flask) -> None:
    """Anyone can post these as fast as they like and they name no account: each one is counted
    (idp_anonymous_rejections_total), one per address and window is audited, with a short user
    agent."""
    pages = PasskeyPages(storage_app.test_client())
    csrf = pages.csrf()
    before = {r: _anonymous_rejections(r) for r in ("challenge_missing", "challenge_invalid")}
    audit_before = _stored(storage_app)["audit_events"]

    def post(body: dict[str, Any], address: str) -> TestResponse:
        return pages.browser.post(
            "/login/passkey/verify", json=body,
            headers={"X-CSRFToken": csrf, "User-Agent": "u" * FOUR_KB},
            environ_base={"REMOTE_ADDR": address},
        )  # fmt: skip

    for index in range(100):
        assert post(MALFORMED_ANSWERS[index % 2], ADDRESS).status_code == 400
    assert post(MALFORMED_ANSWERS[0], "203.0.113.77").status_code == 400

    events = rows(storage_app, AuditEvent, AuditEvent.kind == "login.passkey")
    assert sorted(e.ip_address for e in events) == sorted([ADDRESS, "203.0.113.77"])
    assert all(e.details.get("aggregated") is True for e in events)
    assert all(len(e.user_agent) == 256 for e in events)  # docs/operations.md: 256 kept
    audit_rows, audit_bytes = _stored(storage_app)["audit_events"]
    assert audit_rows - audit_before[0] == 2
    assert audit_bytes - audit_before[1] < 2 * 2048
    assert _anonymous_rejections("challenge_missing") - before["challenge_missing"] == 51
    assert _anonymous_rejections("challenge_invalid") - before["challenge_invalid"] == 50


@pytest.mark.usefixtures("clock")  # within one budget window (the comment by PER_ADDRESS)
def test_passkey_answers_within_the_options_budget_store_a_bounded_amount(
    storage_app: Flask,
) -> None:
    """A challenge each, at most the options budget per address; the answers, malformed but
    spending those challenges, add one audit row for the address."""
    pages = PasskeyPages(storage_app.test_client())
    csrf = pages.csrf()
    before = _stored(storage_app)
    for _ in range(PER_ADDRESS + 20):
        issued = pages.browser.post(
            "/login/passkey/options", json={}, headers={"X-CSRFToken": csrf},
            environ_base={"REMOTE_ADDR": ADDRESS},
        )  # fmt: skip
        if issued.status_code != 200:
            assert issued.status_code == 429
            continue
        answer = pages.browser.post(
            "/login/passkey/verify",
            json={"challenge_id": issued.get_json()["challenge_id"], "credential": "{}"},
            headers={"X-CSRFToken": csrf}, environ_base={"REMOTE_ADDR": ADDRESS},
        )  # fmt: skip
        assert answer.status_code == 400
    growth = _growth(before, _stored(storage_app))
    assert growth["webauthn_challenges"][0] == PER_ADDRESS
    assert growth["audit_events"][0] == 1
    assert growth["attempt_counters"][0] <= 2  # the options budget and the audit window
    with storage_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AttemptCounter)) <= 2
        db.session.remove()

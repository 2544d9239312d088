"""Every 429 of the browser pages says when to come back (RFC 6585 4, RFC 9110 10.2.3), as the
protocol endpoints' do (functional/test_retry_after.py): the sign-in page's passkey options and
the sign-up page count in fixed windows, so a slot frees exactly when the window ends, and
``Retry-After`` is the seconds until then (idp.services.anonymous ``budget_refused``), not the
whole window; the device page's, when a guess is counted again. And every refusal past a budget,
pages and protocol endpoints alike, is counted by budget in ``idp_budget_refusals_total``
(docs/operations.md, "Metrics"). On SQLite and PostgreSQL (the counters are rows there)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import TestResponse

from idp.clock import FrozenClock
from idp.models.base import utcnow
from idp.services.anonymous import PASSKEY_OPTIONS_WINDOW
from idp.services.rate_limits import window_end
from idp.services.signup import MAX_MESSAGES_PER_ADDRESS
from idp.services.users import MAX_EMAIL_CHANGES_PER_HOUR, MAX_EMAIL_VERIFICATIONS_PER_HOUR
from tests.functional.test_device_flow import device_for, enter_code
from tests.functional.test_email_addresses import ask_change, ask_confirmation
from tests.support.apps import app_on
from tests.support.clock import app_clock
from tests.support.factories import create_client, create_user
from tests.support.flow import RelyingParty, csrf_token, query_of, start_session
from tests.support.passkey_flow import PasskeyPages

#: The least the per-address budget may be (idp.settings), so that the tests reach it quickly.
BUDGET = 10
#: The sign-up page's budget (idp.composition ``signup_budget``): 10 an hour per address.
SIGNUP_BUDGET, SIGNUP_WINDOW = 10, timedelta(hours=1)
METRICS_TOKEN = "scrape-" + "p" * 40


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def paged_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Flask]:  # fmt: skip
    """An app with sign-up open and its budgets at their least, on each database; each test sends
    from addresses of its own, so that one test's counts leave the others alone."""
    with app_on(
        request.param, tmp_path_factory.mktemp("page-retry-after"), signup_enabled=True,
        anonymous_requests_per_address=BUDGET, metrics_token=METRICS_TOKEN,
    ) as flask_app:  # fmt: skip
        yield flask_app


@pytest.fixture
def frozen(paged_app: Flask) -> Iterator[FrozenClock]:
    """Seven minutes and a fraction into an hour: inside every budget's window, at its start
    for none."""
    start = window_end(utcnow(), timedelta(hours=1))
    with app_clock(paged_app, FrozenClock(start + timedelta(minutes=7, seconds=13.4))) as clock:
        assert isinstance(clock, FrozenClock)
        yield clock


def _from(app: Flask, address: str) -> FlaskClient:
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = address
    return browser


def passkey_options(app: Flask, address: str) -> Callable[[], TestResponse]:
    pages = PasskeyPages(_from(app, address))
    headers = {"X-CSRFToken": pages.csrf()}
    return lambda: pages.browser.post("/login/passkey/options", json={}, headers=headers)


def signup(app: Flask, address: str) -> Callable[[], TestResponse]:
    browser = _from(app, address)
    sent = iter(range(10_000))

    def ask() -> TestResponse:
        page = browser.get("/signup")
        form = {"csrf_token": csrf_token(page.text), "email": f"s{next(sent)}@example.com"}
        return browser.post("/signup", data=form)

    return ask


#: Each page: the request, its budget, its window, and the budget's name in the metric.
PAGES = {
    "passkey_options": (passkey_options, BUDGET, PASSKEY_OPTIONS_WINDOW),
    "signup": (signup, SIGNUP_BUDGET, SIGNUP_WINDOW),
}


def _seconds_left(clock: FrozenClock, window: timedelta) -> int:
    return math.ceil((window_end(clock.now(), window) - clock.now()).total_seconds())


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_429_of_the_pages_says_when_its_window_ends(
    paged_app: Flask, frozen: FrozenClock, page: str
) -> None:
    """Past the budget, ``Retry-After`` is the seconds left in the window (rounded up), not the
    whole window; ten seconds later ten fewer; at the window's end the page serves again."""
    make, budget, window = PAGES[page]
    send = make(paged_app, f"198.51.100.{len(page)}")
    for _ in range(budget):
        assert send().status_code == 200
    refused = send()
    assert refused.status_code == 429
    left = _seconds_left(frozen, window)
    assert left < window.total_seconds()
    assert int(refused.headers["Retry-After"]) == left
    frozen.advance(timedelta(seconds=10))
    assert int(send().headers["Retry-After"]) == left - 10
    frozen.advance(window_end(frozen.now(), window) - frozen.now())
    assert send().status_code == 200


def test_the_device_pages_429_says_when_a_guess_is_counted_again(
    paged_app: Flask, frozen: FrozenClock
) -> None:
    """The sixth wrong user code waits the backoff's first second (RFC 8628 5.1): the 429 says
    so, and a guess after it is counted again."""
    phone = _from(paged_app, "198.51.100.77")
    start_session(phone, create_user(paged_app, email="phone@example.com"))
    for _ in range(5):
        assert enter_code(phone, "BBBB-BBBB").status_code == 400
    throttled = enter_code(phone, "BBBB-BBBB")
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"
    frozen.advance(timedelta(seconds=2))
    assert enter_code(phone, "BBBB-BBBB").status_code == 400


def _budget_refusals(app: Flask) -> dict[str, float]:
    scraped = app.test_client().get(
        "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert scraped.status_code == 200
    return {
        sample.labels["budget"]: sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
        if sample.name == "idp_budget_refusals_total"
    }


def test_budget_refusals_are_counted_by_budget(paged_app: Flask, frozen: FrozenClock) -> None:
    """Each refusal past a budget adds one under the budget's name: the pages' (passkey options,
    sign-up, the device page's guesses) and the protocol endpoints' (the device authorization
    endpoint's pending requests, through idp.oidc.errors ``BudgetSpentError``, and /authorize's
    for a pushed request, whose refusal is a redirect to the client); nothing else."""
    before = _budget_refusals(paged_app)
    for name, (make, budget, _window) in PAGES.items():
        send = make(paged_app, f"203.0.113.{len(name)}")
        for _ in range(budget):
            assert send().status_code == 200
        for _ in range(3):
            assert send().status_code == 429
    phone = _from(paged_app, "203.0.113.77")
    start_session(phone, create_user(paged_app, email="guesser@example.com"))
    statuses = [enter_code(phone, "BBBB-BBBB").status_code for _ in range(6)]
    assert statuses == [400] * 5 + [429]
    device = device_for(paged_app)
    device.http.environ_base["REMOTE_ADDR"] = "203.0.113.99"
    answers = [device.ask() for _ in range(BUDGET + 2)]
    assert [a.status_code for a in answers[:BUDGET]] == [200] * BUDGET
    assert {a.get_json()["error"] for a in answers[BUDGET:]} == {"temporarily_unavailable"}
    # /authorize stores a request a client pushed (RFC 9126 4) before its sign-in page; the page
    # it shows itself carries its request and stores nothing (idp.services.carried_requests).
    rp = RelyingParty(_from(paged_app, "203.0.113.98"), create_client(paged_app))
    registered = rp.registered
    auth = (registered.client_id, registered.client_secret or "")

    def pushed_and_authorized() -> TestResponse:
        pushed = rp.browser.post("/par", data=rp.authorize_params(), auth=auth)
        assert pushed.status_code == 201, pushed.text
        request_uri = pushed.get_json()["request_uri"]
        query = {"client_id": registered.client_id, "request_uri": request_uri}
        return rp.browser.get("/authorize", query_string=query)

    for _ in range(BUDGET):
        stored = pushed_and_authorized()  # to its sign-in page, a pending request stored
        assert stored.headers["Location"].startswith("/login?request="), stored.headers
    over = pushed_and_authorized()
    assert query_of(over.headers["Location"])["error"] == "temporarily_unavailable"
    after = _budget_refusals(paged_app)
    added = {name: after[name] - before.get(name, 0.0) for name in after}
    expected = {"passkey_options": 3, "signup": 3, "user_code_attempts": 1,
                "pending_authorization": 3}  # fmt: skip
    assert {name: n for name, n in added.items() if n} == expected


def test_email_change_and_mail_refusals_are_counted_by_budget(
    paged_app: Flask, frozen: FrozenClock
) -> None:
    """The per-user email-change limit, the per-user limit of confirmation links for the
    account's own address and the per-recipient sign-up mail limits are budgets too: each
    refusal past them adds one under its own name, read from ``/metrics`` (an account that asks
    for change after change, an address someone keeps signing up, show here)."""
    before = _budget_refusals(paged_app)
    changer = _from(paged_app, "203.0.113.120")
    start_session(changer, create_user(paged_app, email="changer@example.com"))
    for index in range(MAX_EMAIL_CHANGES_PER_HOUR + 1):
        ask_change(changer, f"changed{index}@example.com")
    unconfirmed = _from(paged_app, "203.0.113.119")
    start_session(unconfirmed, create_user(paged_app, email="unconfirmed@example.com"))
    for _ in range(MAX_EMAIL_VERIFICATIONS_PER_HOUR + 1):
        ask_confirmation(unconfirmed)
    create_user(paged_app, email="taken@example.com")
    for recipient in ("newcomer@example.com", "taken@example.com"):
        browser = _from(paged_app, f"203.0.113.{121 + len(recipient)}")
        for _ in range(MAX_MESSAGES_PER_ADDRESS + 1):
            page = browser.get("/signup")
            form = {"csrf_token": csrf_token(page.text), "email": recipient}
            assert browser.post("/signup", data=form).status_code == 200
    after = _budget_refusals(paged_app)
    added = {name: after[name] - before.get(name, 0.0) for name in after}
    expected = {"email_change": 1, "email_verification": 1, "mail_signup_link": 1,
                "mail_signup_existing": 1}  # fmt: skip
    assert {name: n for name, n in added.items() if n} == expected

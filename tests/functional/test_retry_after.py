"""Every 429 of the protocol endpoints says when to come back (RFC 6585 4, RFC 9110 10.2.3): the
PAR endpoint's budgets (a public client's pushes per address, a confidential client's per
minute), the DPoP proof budget of public clients at the token, PAR and UserInfo endpoints, and
the device authorization endpoint's budget. Budgets count in fixed windows, so a slot frees
exactly when the window ends: ``Retry-After`` is the seconds until then, rounded up, and a page's
script may read it (CORS). On SQLite and PostgreSQL (the counters are rows there)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from idp.clock import FrozenClock
from idp.services.anonymous import (
    CLIENT_PUSHES_WINDOW,
    DPOP_PROOFS_WINDOW,
    PENDING_AUTHORIZATIONS_WINDOW,
)
from idp.services.device import DEVICE_CODE_GRANT_TYPE
from tests.support.apps import app_on
from tests.support.clock import app_clock
from tests.support.dpop import TOKEN_URL, USERINFO_URL, DPoPKey
from tests.support.factories import create_client, create_user
from tests.support.flow import RelyingParty

#: The least each budget may be (idp.settings), so that the tests reach it quickly.
BUDGET = 10
PAR_URL = "http://localhost/par"
SPA = "https://spa.example/cb"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def budgeted_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Flask]:  # fmt: skip
    """An app whose budgets are at their least, on each database; each test sends from an
    address (and with clients) of its own, so that one test's counts leave the others alone."""
    with app_on(
        request.param, tmp_path_factory.mktemp("retry-after"),
        anonymous_requests_per_address=BUDGET, par_requests_per_client=BUDGET,
    ) as flask_app:  # fmt: skip
        yield flask_app


def at(frozen: FrozenClock) -> int:
    return int(frozen.now().timestamp())


def proof(frozen: FrozenClock, method: str = "POST", url: str = TOKEN_URL,
          key: DPoPKey | None = None, access_token: str | None = None) -> str:  # fmt: skip
    """A fresh proof issued at idp's (frozen) time, however far the test moves it."""
    return (key or DPoPKey()).proof(method, url, access_token=access_token, iat=at(frozen))


@dataclass(frozen=True)
class Case:
    #: Makes the clients a refused request needs; returns the request, sent again and again.
    setup: Callable[[Flask, FlaskClient, FrozenClock], Callable[[], TestResponse]]
    window: timedelta
    #: What the refusal's description says: which budget refused.
    says: str
    #: A page's script may call the endpoint (CORS): the header is exposed to it.
    page: bool = True
    #: What ``setup`` spent of the budget already.
    spent_before: int = 0


def public_pushes(app: Flask, http: FlaskClient, frozen: FrozenClock) -> Callable[[], TestResponse]:
    rp = RelyingParty(http, create_client(app, public=True, redirect_uris=[SPA]))
    return lambda: http.post("/par", data=rp.authorize_params())


def client_pushes(app: Flask, http: FlaskClient, frozen: FrozenClock) -> Callable[[], TestResponse]:
    registered = create_client(app, auth_method="client_secret_post")
    rp = RelyingParty(http, registered)
    secret = {"client_secret": registered.client_secret or ""}
    return lambda: http.post("/par", data={**rp.authorize_params(), **secret})


def token_proofs(app: Flask, http: FlaskClient, frozen: FrozenClock) -> Callable[[], TestResponse]:
    public = create_client(app, public=True, redirect_uris=[SPA])
    form = {
        "grant_type": "refresh_token",
        "refresh_token": "made-up",
        "client_id": public.client_id,
    }
    return lambda: http.post("/token", data=form, headers={"DPoP": proof(frozen)})


def push_proofs(app: Flask, http: FlaskClient, frozen: FrozenClock) -> Callable[[], TestResponse]:
    rp = RelyingParty(http, create_client(app, public=True, redirect_uris=[SPA]))
    return lambda: http.post(
        "/par", data=rp.authorize_params(), headers={"DPoP": proof(frozen, url=PAR_URL)}
    )


def userinfo_proofs(app: Flask, http: FlaskClient, frozen: FrozenClock
                    ) -> Callable[[], TestResponse]:  # fmt: skip
    rp, key = RelyingParty(http, create_client(app, public=True, redirect_uris=[SPA])), DPoPKey()
    code = rp.obtain_code(create_user(app))["code"]
    exchanged = http.post("/token", headers={"DPoP": proof(frozen, key=key)}, data={
        "grant_type": "authorization_code", "code": code,
        "client_id": rp.registered.client_id, "redirect_uri": SPA, "code_verifier": rp.verifier,
    })  # fmt: skip
    assert exchanged.status_code == 200, exchanged.text
    token = exchanged.get_json()["access_token"]
    return lambda: http.get("/userinfo", headers={
        "Authorization": f"DPoP {token}",
        "DPoP": proof(frozen, "GET", USERINFO_URL, key=key, access_token=token),
    })  # fmt: skip


def device_requests(app: Flask, http: FlaskClient, frozen: FrozenClock
                    ) -> Callable[[], TestResponse]:  # fmt: skip
    device = create_client(app, public=True, redirect_uris=[], grant_types=[DEVICE_CODE_GRANT_TYPE])
    form = {"client_id": device.client_id, "scope": "openid"}
    return lambda: http.post("/device_authorization", data=form)


CASES = {
    "PAR, a public client's pushes per address": Case(
        public_pushes, PENDING_AUTHORIZATIONS_WINDOW, "pushed requests from this network"
    ),
    "PAR, a confidential client's pushes per minute": Case(
        client_pushes, CLIENT_PUSHES_WINDOW, "pushed requests from this client"
    ),
    "token endpoint, a public client's DPoP proofs": Case(
        token_proofs, DPOP_PROOFS_WINDOW, "DPoP requests"
    ),
    "PAR, a public client's DPoP proofs": Case(push_proofs, DPOP_PROOFS_WINDOW, "DPoP requests"),
    "UserInfo, a public client's token's DPoP proofs": Case(
        userinfo_proofs, DPOP_PROOFS_WINDOW, "DPoP requests", spent_before=1
    ),
    "device authorization per address": Case(
        device_requests, PENDING_AUTHORIZATIONS_WINDOW, "device sign-in requests", page=False
    ),
}


def seconds_left(now: int, window: timedelta) -> int:
    """Worked out here apart from idp: the fixed window holding ``now`` ends on a multiple of
    its length (seconds since the epoch)."""
    length = int(window.total_seconds())
    return length - now % length


def check_refusal(refused: TestResponse, case: Case, retry_after: int) -> None:
    assert refused.status_code == 429, refused.text
    assert refused.get_json()["error"] == "temporarily_unavailable"
    assert case.says in refused.get_json()["error_description"]
    assert refused.headers["Cache-Control"] == "no-store"
    assert refused.headers.get("Retry-After") == str(retry_after), refused.headers
    if case.page:
        exposed = ", ".join(refused.headers.getlist("Access-Control-Expose-Headers"))
        assert "Retry-After" in exposed, refused.headers


@pytest.mark.parametrize("name", list(CASES))
def test_every_429_of_the_protocol_endpoints_says_when_its_window_ends(
    budgeted_app: Flask, name: str
) -> None:
    """RFC 6585 4 ("MAY include a Retry-After header"), RFC 9110 10.2.3: past a budget the
    protocol endpoint's 429 says in how many seconds the window ends, the time its fixed window
    frees a slot; ten seconds later it says ten fewer, and once that time has passed the same
    request is no longer refused for the budget."""
    case = CASES[name]
    # A whole second, at least 20 seconds before the end of its minute (and so of its quarter
    # of an hour): the counts below fall in one window, and "ten seconds later" in it too.
    now = int(time.time())
    now -= max(0, now % 60 - 40)
    frozen = FrozenClock(datetime.fromtimestamp(now, UTC))
    with app_clock(budgeted_app, frozen):
        http = budgeted_app.test_client()
        http.environ_base["REMOTE_ADDR"] = f"198.51.100.{list(CASES).index(name) + 10}"
        ask = case.setup(budgeted_app, http, frozen)
        # The budget's requests (UserInfo's first proof was its token's exchange), then 429.
        answers = [ask() for _ in range(BUDGET + 1 - case.spent_before)]
        assert 429 not in [a.status_code for a in answers[:-1]], [a.text for a in answers]
        left = seconds_left(at(frozen), case.window)
        check_refusal(answers[-1], case, left)
        frozen.advance(timedelta(seconds=10))
        check_refusal(ask(), case, left - 10)
        frozen.advance(timedelta(seconds=left - 10))
        taken = ask()
        assert taken.status_code != 429, taken.text

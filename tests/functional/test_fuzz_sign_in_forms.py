"""Property-based fuzzing of the forms a person fills in (hypothesis): sign-in (email and password),
the second step (authenticator app code, backup code), recovery, one-time login links, invites,
self-service sign-up, and the device verification page. Real accounts, links and codes are sent
in a share of the examples, so that the generated fields reach past the first checks.

Whatever is sent: never a 5xx; nothing sent comes back unescaped or in a header; a redirect goes
only to idp itself (``next`` is never an open redirect); a sign-in succeeds only with the real
secret.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pyotp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from idp.services.login_links import INVITE, LOGIN
from tests.conftest import sqlite_app
from tests.support.flow import shown_address
from tests.support.fuzz_rig import Rig, TotpUser, totp_user
from tests.support.fuzzing import (
    BODY_KINDS,
    Tally,
    body,
    check_answer,
    encode,
    fresh_address,
    mutations,
    run_examples,
    values,
)

FORM_EXAMPLES = 150
REVIEWED = re.compile(r'name="authorization" value="([^"]+)"')


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Rig:
    app = sqlite_app(
        tmp_path_factory.mktemp("fuzz-forms"),
        signup_enabled=True,
        anonymous_requests_per_address=1_000_000,
    )
    app.config["WTF_CSRF_ENABLED"] = False
    return Rig.build(app)


@pytest.fixture(scope="module")
def second_factor(rig: Rig) -> TotpUser:
    return totp_user(rig.app, "grace@example.com")


def send(
    rig: Rig,
    path: str,
    pairs: list[tuple[str, str]],
    http_method: str,
    kind: str,
    cookie: str | None = None,
) -> TestResponse:
    options: dict[str, Any] = (
        {"query_string": encode(pairs)} if http_method == "GET" else body(pairs, kind)
    )
    headers = {"Cookie": cookie} if cookie else {}
    response = rig.http().open(
        path, method=http_method, headers=headers, environ_base=fresh_address(), **options
    )
    check_answer(response)
    return response


def signed_in(response: TestResponse) -> bool:
    """Whether the answer started a session (its cookie set to a value)."""
    return any(
        cookie.startswith(("idp_session=", "__Host-idp_session=")) and "=;" not in cookie
        for cookie in response.headers.getlist("Set-Cookie")
    )


# -- sign-in: the password step ------------------------------------------------------------------
@given(
    http_method=st.sampled_from(("GET", "POST", "POST")),
    email=st.one_of(st.just("ada@example.com"), values()),
    password=st.one_of(st.just("right"), values()),
    fuzz=st.one_of(st.just([]), mutations(("email", "password", "next", "request", "login_hint"))),
    kind=st.sampled_from(BODY_KINDS),
)
def _login_example(
    rig: Rig,
    tally: Tally,
    http_method: str,
    email: str,
    password: str,
    fuzz: list[tuple[str, str]],
    kind: str,
) -> None:
    pairs = [
        ("email", email),
        ("password", rig.user.password if password == "right" else password),
        *fuzz,
    ]
    response = send(rig, "/login", pairs, http_method, kind)
    if signed_in(response):
        assert (email, password) == ("ada@example.com", "right"), pairs
        tally.add("signed in")
    else:
        tally.add(f"status {response.status_code}")


def test_sign_in_form(rig: Rig) -> None:
    tally = Tally()
    run_examples(_login_example, FORM_EXAMPLES, rig, tally)
    assert tally["signed in"] > 0, tally
    assert tally["status 401"] > 0, tally


# -- the second step and recovery ----------------------------------------------------------------
def partial_sign_in(rig: Rig, account: TotpUser) -> str:
    """The cookie of a browser past the password step, at the second step."""
    response = rig.http().post(
        "/login",
        data={"email": account.user.email, "password": account.user.password},
        environ_base=fresh_address(),
    )
    assert shown_address(response) == "/login/second-step", response.headers
    cookies = [c.split(";", 1)[0] for c in response.headers.getlist("Set-Cookie")]
    return "; ".join(cookies)


@given(
    method=st.sampled_from(("totp", "backup_code", "")),
    code=st.one_of(st.sampled_from(("right totp", "right backup")), values()),
    fuzz=st.one_of(st.just([]), mutations(("code", "method", "email"))),
    kind=st.sampled_from(BODY_KINDS),
    path=st.sampled_from(("/login/second-step", "/login/second-step", "/login/recover")),
)
def _second_step_example(
    rig: Rig,
    account: TotpUser,
    tally: Tally,
    method: str,
    code: str,
    fuzz: list[tuple[str, str]],
    kind: str,
    path: str,
) -> None:
    real = {"right totp": pyotp.TOTP(account.secret).now(), "right backup": account.backup_codes[0]}
    pairs = [("method", method), ("code", real.get(code, code)), *fuzz]
    if path == "/login/recover":
        pairs.append(("email", account.user.email))
    cookie = partial_sign_in(rig, account) if path != "/login/recover" else None
    response = send(rig, path, pairs, "POST", kind, cookie)
    if signed_in(response):
        # Only the account's own code signs in.
        assert code in real, pairs
        tally.add(f"{path} signed in")
    else:
        tally.add(f"{path} {response.status_code}")


def test_second_step_and_recovery_forms(rig: Rig, second_factor: TotpUser) -> None:
    tally = Tally()
    run_examples(_second_step_example, FORM_EXAMPLES, rig, second_factor, tally)
    # The codes reached the factor's check (a wrong one is 401; the right ones soon meet the
    # failure limits the wrong ones ran into, which have tests of their own).
    assert tally["/login/second-step 401"] > 0, tally
    assert tally["/login/recover 401"] > 0, tally


# -- one-time links: login links, invites, sign-up -------------------------------------------------
@given(
    kind_of_link=st.sampled_from((LOGIN, INVITE, "signup")),
    real=st.booleans(),
    secret=values(),
    http_method=st.sampled_from(("GET", "POST")),
    fuzz=st.one_of(st.just([]), mutations(("name", "password", "email"))),
    kind=st.sampled_from(BODY_KINDS),
)
def _link_example(
    rig: Rig,
    tally: Tally,
    kind_of_link: str,
    real: bool,
    secret: str,
    http_method: str,
    fuzz: list[tuple[str, str]],
    kind: str,
) -> None:
    if kind_of_link == "signup":
        # The sign-up form itself (its emailed link's page takes any secret below).
        response = send(rig, "/signup", [("email", secret), *fuzz], http_method, kind)
        tally.add(f"signup {response.status_code}")
        return
    if real:
        secret = rig.link(kind_of_link)
    prefix = "/invite/" if kind_of_link == INVITE else "/login/link/"
    path = prefix + quote(secret.encode("utf-8", "surrogatepass"), safe="")[:3000]
    response = send(rig, path, fuzz, http_method, kind)
    tally.add(f"{kind_of_link} {real} {'signed in' if signed_in(response) else 'not signed in'}")


def test_one_time_link_and_sign_up_pages(rig: Rig) -> None:
    tally = Tally()
    run_examples(_link_example, FORM_EXAMPLES, rig, tally)
    assert tally[f"{LOGIN} True signed in"] + tally[f"{INVITE} True signed in"] > 0, tally
    assert tally["signup 200"] > 0, tally
    # Only a real link signs anyone in.
    assert tally[f"{LOGIN} False signed in"] + tally[f"{INVITE} False signed in"] == 0, tally


# -- the device verification page (RFC 8628 3.3) ---------------------------------------------------
@given(
    step=st.sampled_from(("GET /device", "POST /device", "POST /device/decide")),
    real=st.booleans(),
    code=values(),
    fuzz=st.one_of(st.just([]), mutations(("user_code", "authorization", "decision"))),
    kind=st.sampled_from(BODY_KINDS),
)
def _device_page_example(
    rig: Rig, tally: Tally, step: str, real: bool, code: str, fuzz: list[tuple[str, str]], kind: str
) -> None:
    if real:
        answer = rig.http().post(
            "/device_authorization",
            data={"scope": "openid", "client_id": rig.clients["none"].client_id},
        )
        code = answer.get_json()["user_code"]
        if step == "POST /device/decide":
            # The review page's reference to the request, which the decision posts back.
            review = rig.http().post("/device", data={"user_code": code},
                                     headers={"Cookie": rig.cookie})  # fmt: skip
            found = REVIEWED.search(review.get_data(as_text=True))
            assert found, review.text[:300]
            code = found.group(1)
    http_method, path = step.split(" ")
    name = "authorization" if path == "/device/decide" else "user_code"
    pairs = [(name, code), *fuzz]
    response = send(rig, path, pairs, http_method, kind, rig.cookie)
    shown = 'name="authorization"' in response.get_data(as_text=True)
    decided = path == "/device/decide" and response.status_code == 200
    tally.add(f"{step} {'review' if shown else 'decided' if decided else response.status_code}")


def test_device_verification_page(rig: Rig) -> None:
    tally = Tally()
    run_examples(_device_page_example, FORM_EXAMPLES, rig, tally)
    assert tally["POST /device review"] + tally["GET /device review"] > 0, tally
    assert tally["POST /device/decide decided"] > 0, tally

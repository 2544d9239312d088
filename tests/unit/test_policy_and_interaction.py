"""Authentication strength (amr -> acr) and what an authorization request needs next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from idp.models import Client
from idp.oidc.checks import AuthorizationRequest, CheckContext, check_stored_request
from idp.oidc.errors import AuthorizationError
from idp.oidc.interaction import InteractionState, Next, decide
from idp.services.assurance import (
    ACR_MFA,
    ACR_PASSWORD,
    ACR_PHISHING_RESISTANT,
    ACR_PHISHING_RESISTANT_HARDWARE,
    acr_for_amr,
    satisfies,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
USER_ID = "user-1"
SCOPE = "openid profile email"


# -- amr -> acr -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("amr", "acr"),
    [
        (["hwk", "user", "mfa"], ACR_PHISHING_RESISTANT_HARDWARE),  # device-bound passkey
        (["swk", "user", "mfa"], ACR_PHISHING_RESISTANT),  # synced passkey
        (["pwd", "otp", "mfa"], ACR_MFA),
        (["pwd", "mfa"], ACR_MFA),
        (["pwd"], ACR_PASSWORD),
        ([], ACR_PASSWORD),
    ],
)
def test_acr_for_amr(amr: list[str], acr: str) -> None:
    assert acr_for_amr(amr) == acr


@pytest.mark.parametrize(
    ("session_acr", "acr_values", "expected"),
    [
        (ACR_PASSWORD, None, True),  # nothing asked
        (ACR_PASSWORD, "", True),
        (ACR_PASSWORD, "urn:example:unknown", True),  # unknown values are not a requirement
        (ACR_PASSWORD, ACR_PASSWORD, True),
        (ACR_PASSWORD, ACR_MFA, False),
        (ACR_MFA, ACR_PASSWORD, True),  # stronger satisfies weaker
        (ACR_MFA, ACR_PHISHING_RESISTANT, False),
        (ACR_PHISHING_RESISTANT, ACR_MFA, True),
        (ACR_PHISHING_RESISTANT, ACR_PHISHING_RESISTANT_HARDWARE, False),
        (ACR_PHISHING_RESISTANT_HARDWARE, ACR_PHISHING_RESISTANT, True),
        # Any listed value will do: the weakest one listed decides.
        (
            ACR_PHISHING_RESISTANT,
            f"{ACR_PHISHING_RESISTANT_HARDWARE} {ACR_PHISHING_RESISTANT}",
            True,
        ),
        (ACR_MFA, f"{ACR_PHISHING_RESISTANT_HARDWARE} {ACR_PHISHING_RESISTANT}", False),
        ("urn:example:unknown-session-acr", ACR_PASSWORD, False),
    ],
)
def test_satisfies(session_acr: str, acr_values: str | None, expected: bool) -> None:
    assert satisfies(session_acr, acr_values) is expected


# -- decide ---------------------------------------------------------------------------------------
def auth_request(**overrides: Any) -> AuthorizationRequest:
    values: dict[str, Any] = {
        "client_id": "client-1",
        "redirect_uri": "https://rp.example/cb",
        "response_mode": "query",
        "state": "state",
        "scope": SCOPE,
        "nonce": "nonce",
        "code_challenge": "c" * 43,
        "code_challenge_method": "S256",
        "prompt": (),
        "max_age": None,
        "login_hint": None,
        "id_token_hint_sub": None,
        "acr_values": None,
    }
    values.update(overrides)
    return AuthorizationRequest(**values)


def session(age: timedelta = timedelta(minutes=10), acr: str = ACR_PASSWORD) -> Any:
    return SimpleNamespace(user_id=USER_ID, auth_time=NOW - age, acr=acr, restricted=False)


FIRST_PARTY = SimpleNamespace(first_party=True)
THIRD_PARTY = SimpleNamespace(first_party=False)
ALL_CONSENTED = set(SCOPE.split())


def run(
    request: AuthorizationRequest,
    browser_session: Any,
    *,
    client: Any = FIRST_PARTY,
    consented: set[str] | None = None,
    state: InteractionState | None = None,
) -> Next:
    return decide(request, client, browser_session, consented, state or InteractionState(), NOW)


def login_required(request: AuthorizationRequest, browser_session: Any) -> str:
    with pytest.raises(AuthorizationError) as raised:
        run(request, browser_session)
    assert raised.value.redirectable is True  # sent to the client, not shown on a page
    return raised.value.error


def test_no_session_needs_login() -> None:
    assert run(auth_request(), None) is Next.LOGIN


def test_valid_session_of_first_party_client_gets_a_code() -> None:
    assert run(auth_request(), session()) is Next.ISSUE_CODE


def test_prompt_none_without_session_is_login_required() -> None:
    assert login_required(auth_request(prompt=("none",)), None) == "login_required"


def test_prompt_none_with_session_gets_a_code_silently() -> None:
    assert run(auth_request(prompt=("none",)), session()) is Next.ISSUE_CODE


@pytest.mark.parametrize("prompt", ["login", "select_account"])
def test_prompt_login_with_an_earlier_session_needs_login(prompt: str) -> None:
    started = NOW - timedelta(minutes=1)
    state = InteractionState(started_at=started)
    request = auth_request(prompt=(prompt,))
    assert run(request, session(age=timedelta(minutes=10)), state=state) is Next.LOGIN


def test_prompt_login_without_pending_request_needs_login() -> None:
    assert run(auth_request(prompt=("login",)), session(age=timedelta(0))) is Next.LOGIN


def test_prompt_login_satisfied_by_a_sign_in_made_for_this_request() -> None:
    started = NOW - timedelta(minutes=1)
    state = InteractionState(started_at=started)
    fresh = session(age=timedelta(seconds=30))
    assert run(auth_request(prompt=("login",)), fresh, state=state) is Next.ISSUE_CODE


def test_max_age_exceeded_needs_login() -> None:
    request = auth_request(max_age=300)
    assert run(request, session(age=timedelta(seconds=301))) is Next.LOGIN


def test_max_age_not_exceeded_gets_a_code() -> None:
    request = auth_request(max_age=300)
    assert run(request, session(age=timedelta(seconds=300))) is Next.ISSUE_CODE


def test_max_age_zero_forces_a_new_sign_in() -> None:
    assert run(auth_request(max_age=0), session(age=timedelta(seconds=1))) is Next.LOGIN


def test_max_age_exceeded_with_prompt_none_is_login_required() -> None:
    request = auth_request(max_age=60, prompt=("none",))
    assert login_required(request, session(age=timedelta(minutes=5))) == "login_required"


def test_max_age_satisfied_by_a_sign_in_made_for_this_request() -> None:
    state = InteractionState(started_at=NOW - timedelta(minutes=5))
    fresh = session(age=timedelta(minutes=2))
    assert run(auth_request(max_age=60), fresh, state=state) is Next.ISSUE_CODE


def test_stronger_acr_requested_steps_up() -> None:
    request = auth_request(acr_values=ACR_PHISHING_RESISTANT)
    assert run(request, session(acr=ACR_PASSWORD)) is Next.LOGIN


def test_acr_already_met_gets_a_code() -> None:
    request = auth_request(acr_values=ACR_MFA)
    assert run(request, session(acr=ACR_PHISHING_RESISTANT)) is Next.ISSUE_CODE


def test_acr_step_up_with_prompt_none_is_login_required() -> None:
    request = auth_request(acr_values=ACR_PHISHING_RESISTANT, prompt=("none",))
    assert login_required(request, session(acr=ACR_PASSWORD)) == "login_required"


def test_id_token_hint_for_another_user_needs_login() -> None:
    request = auth_request(id_token_hint_sub="someone-else")
    assert run(request, session()) is Next.LOGIN


def test_id_token_hint_for_another_user_with_prompt_none_is_login_required() -> None:
    request = auth_request(id_token_hint_sub="someone-else", prompt=("none",))
    assert login_required(request, session()) == "login_required"


def test_id_token_hint_for_the_signed_in_user_gets_a_code() -> None:
    assert run(auth_request(id_token_hint_sub=USER_ID), session()) is Next.ISSUE_CODE


# -- consent --------------------------------------------------------------------------------------
def test_third_party_client_without_consent_needs_consent() -> None:
    assert run(auth_request(), session(), client=THIRD_PARTY) is Next.CONSENT


def test_remembered_consent_covering_the_scopes_gets_a_code() -> None:
    outcome = run(auth_request(), session(), client=THIRD_PARTY, consented=ALL_CONSENTED)
    assert outcome is Next.ISSUE_CODE


def test_remembered_consent_missing_a_scope_needs_consent() -> None:
    outcome = run(auth_request(), session(), client=THIRD_PARTY, consented={"openid", "profile"})
    assert outcome is Next.CONSENT


def test_first_party_client_skips_consent() -> None:
    assert run(auth_request(), session(), client=FIRST_PARTY, consented=None) is Next.ISSUE_CODE


def test_prompt_consent_asks_again_despite_remembered_consent() -> None:
    request = auth_request(prompt=("consent",))
    outcome = run(request, session(), client=THIRD_PARTY, consented=ALL_CONSENTED)
    assert outcome is Next.CONSENT


def test_consent_given_for_this_request_gets_a_code() -> None:
    request = auth_request(prompt=("consent",))
    state = InteractionState(consent_given=True)
    outcome = run(request, session(), client=THIRD_PARTY, consented=None, state=state)
    assert outcome is Next.ISSUE_CODE


def test_prompt_none_with_consent_needed_is_consent_required() -> None:
    with pytest.raises(AuthorizationError) as raised:
        run(auth_request(prompt=("none",)), session(), client=THIRD_PARTY, consented=None)
    assert raised.value.error == "consent_required"


def test_login_is_decided_before_consent() -> None:
    # Without a session we cannot know the user, so we cannot know their consent either.
    with pytest.raises(AuthorizationError) as raised:
        run(auth_request(prompt=("none",)), None, client=THIRD_PARTY, consented=None)
    assert raised.value.error == "login_required"


# -- a stored request and the client's PAR requirement --------------------------------------------
CONTEXT = CheckContext(find_client=lambda _: None, verify_id_token_hint=lambda _: None,
                       pkce_required_for_all=True)  # fmt: skip


@pytest.mark.parametrize(("pushed", "refused"), [(False, True), (True, False), (None, False)])
def test_a_stored_request_not_pushed_is_refused_once_its_client_requires_par(
    pushed: bool | None, refused: bool
) -> None:
    """RFC 9126 6 and 7.4: a waiting request is answered under the client's requirement as it
    stands: one not pushed is invalid_request, sent to the client. A request stored before idp
    kept whether it was pushed (``pushed`` absent: stored before an upgrade, waiting through it)
    is answered as it was then."""
    client = Client(
        client_id="client-1", name="App", token_endpoint_auth_method="client_secret_basic",
        redirect_uris=["https://rp.example/cb"], scopes=SCOPE.split(),
        grant_types=["authorization_code"], require_pushed_authorization_requests=True,
    )  # fmt: skip
    stored = auth_request(pushed=pushed).to_params()
    if pushed is None:
        del stored["pushed"]
    request = AuthorizationRequest.from_params(stored)
    if not refused:
        assert check_stored_request(request, client, CONTEXT).scope == SCOPE
        return
    with pytest.raises(AuthorizationError) as error:
        check_stored_request(request, client, CONTEXT)
    assert error.value.error == "invalid_request"
    assert (error.value.redirect_uri, error.value.state) == (request.redirect_uri, "state")

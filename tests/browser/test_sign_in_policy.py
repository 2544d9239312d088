"""A passwordless-only deployment in a real browser (sign-in policy ``passwords_allowed = false``):
the sign-in page has no password step and its script still runs the passkey ceremonies; the
account page offers no password; a user who came in by a login link signs in with the passkey."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PHONE, BrowserUser, add_first_passkey, serve_idp
from tests.support.attestation_ca import root_ca
from tests.support.live import LiveIdp

pytestmark = pytest.mark.browser

NewUser = Callable[..., BrowserUser]


@contextlib.contextmanager
def _serve(**settings: str) -> Iterator[LiveIdp]:
    """``idp init`` + ``idp serve`` of its own (these tests change deployment-wide policy)."""
    with serve_idp("idp-browser-policy-", {"IDP_PASSKEY_PROMPT": "false"} | settings) as idp:
        yield idp


@pytest.fixture(scope="module")
def passwordless_idp() -> Iterator[LiveIdp]:
    with _serve(IDP_PASSWORDS_ALLOWED="false") as idp:
        yield idp


@pytest.fixture(scope="module")
def policy_idp() -> Iterator[LiveIdp]:
    with _serve() as idp:
        yield idp


@pytest.fixture(scope="module")
def attested_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveIdp]:
    """A deployment that trusts one authenticator vendor's attestation root (not Chromium's)."""
    roots = tmp_path_factory.mktemp("attestation") / "roots.pem"
    roots.write_bytes(root_ca("Example Vendor Root").pem)
    with _serve(IDP_WEBAUTHN_ATTESTATION_ROOTS=str(roots)) as idp:
        yield idp


def _add_first_passkey_by_link(user: BrowserUser, idp: LiveIdp, email: str) -> None:
    """A one-time login link, confirmed, then the account's first passkey (and its codes)."""
    page = user.page
    page.goto(idp.cli("login-link", email, "--json")["url"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{idp.url}/account/recover")
    add_first_passkey(page, idp)


def test_passwordless_only_signs_in_with_passkeys_and_never_shows_a_password_field(
    passwordless_idp: LiveIdp, new_user: NewUser
) -> None:
    idp = passwordless_idp
    email = "grace@example.com"
    idp.cli("users", "create", email, "--name", "Grace", "--json")

    user = new_user(conditional_mediation=False)
    page = user.page
    _add_first_passkey_by_link(user, idp, email)
    expect(page.locator("#passwordless-note")).to_be_visible()
    expect(page.locator("#new-password")).to_have_count(0)
    user.screenshot("1-account")
    page.get_by_role("button", name="Sign out", exact=True).click()

    page.goto(f"{idp.url}/login")
    expect(page.locator("#password")).to_have_count(0)
    expect(page.get_by_role("button", name="Use your password instead")).to_have_count(0)
    expect(page.get_by_role("button", name="Sign in with a passkey")).to_be_visible()
    user.screenshot("2-login")
    # Email first: "Continue" runs the passkey ceremony for that account.
    page.fill("#email", email)
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(f"{idp.url}/account")

    # Another browser, without the passkey: the ceremony fails, and still no password step.
    stranger = new_user(conditional_mediation=False)
    stranger.page.goto(f"{idp.url}/login")
    stranger.page.fill("#email", email)
    stranger.page.get_by_role("button", name="Continue").click()
    expect(stranger.page.locator("#form-errors .error")).to_contain_text("No passkey was used")
    expect(stranger.page.locator("#form-errors .error")).not_to_contain_text("password")
    expect(stranger.page.locator("#password")).to_have_count(0)
    stranger.screenshot("3-no-passkey")


DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "admins" / "images"


def test_an_admin_turns_passwords_off_on_the_policy_page(
    policy_idp: LiveIdp, new_user: NewUser
) -> None:
    idp = policy_idp
    idp.cli("users", "create", "root@example.com", "--admin", "--json")
    idp.create_user("ada@example.com", "correct horse battery staple 42", name="Ada")
    member = new_user(conditional_mediation=False)
    member.page.goto(f"{idp.url}/login")
    member.page.get_by_role("button", name="Use your password instead").click()
    expect(member.page.locator("#password")).to_be_visible()

    admin = new_user(conditional_mediation=False)
    page = admin.page
    _add_first_passkey_by_link(admin, idp, "root@example.com")
    page.goto(f"{idp.url}/admin/policy")
    expect(page).to_have_url(f"{idp.url}/login?next=/admin/policy")
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page).to_have_url(f"{idp.url}/admin/policy")
    expect(page.get_by_role("heading", name="Sign-in policy")).to_be_visible()
    admin.screenshot("policy")  # docs/admins/images/policy.png comes from test_admin.py

    # A value out of range is refused whole: nothing is saved.
    admin.allow_console_error(r"status of 400")
    page.get_by_label("Passwords allowed").uncheck()
    page.fill("#session_idle_ttl", "0")
    page.evaluate("document.getElementById('session_idle_ttl').removeAttribute('min')")
    page.get_by_role("button", name="Save policy").click()
    expect(page.locator("#policy-error")).to_contain_text("Nothing was saved")
    assert idp.cli("policy", "show", "--json")["overridden"] == []

    page.goto(f"{idp.url}/admin/policy")
    page.get_by_label("Passwords allowed").uncheck()
    page.fill("#lockout_threshold", "20")
    page.get_by_role("button", name="Save policy").click()
    expect(page.locator(".flashes p")).to_have_text("Policy saved (2 changes).")
    expect(page.locator("[data-overridden]")).to_have_count(2)
    admin.document("policy-saved", DOCS_IMAGES)
    shown = idp.cli("policy", "show", "--json")
    assert shown["overridden"] == ["lockout_threshold", "passwords_allowed"]

    page.get_by_role("link", name="Audit log").click()
    page.select_option("#filter-kind", "policy.changed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#audit-list tbody tr")).to_have_count(1)
    expect(page.locator("#audit-list tbody tr")).to_contain_text("root@example.com")
    admin.document("audit-policy-changed", DOCS_IMAGES)

    # Within the policy cache's few seconds (every worker), the sign-in page has no password.
    deadline = time.monotonic() + 8
    member.page.goto(f"{idp.url}/login")
    while member.page.locator("#password").count():
        assert time.monotonic() < deadline, "the sign-in page still asks for a password"
        member.page.wait_for_timeout(250)
        member.page.reload()


def test_a_passkey_without_a_trusted_attestation_is_refused_with_the_reason(
    attested_idp: LiveIdp, new_user: NewUser
) -> None:
    """docs/configuration.md, ``webauthn_attestation_roots``: the browser's authenticator attests
    by a certificate of no trusted vendor, idp refuses the passkey, and the page says why trying
    again will not help (on a phone's width)."""
    idp = attested_idp
    email = "lin@example.com"
    idp.cli("users", "create", email, "--name", "Lin", "--json")
    user = new_user(conditional_mediation=False, device=PHONE)
    user.allow_console_error(r"status of 400")
    page = user.page
    page.goto(idp.cli("login-link", email, "--json")["url"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{idp.url}/account/recover")
    page.wait_for_load_state("load")
    page.get_by_role("button", name="Add a passkey").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("approved authenticators")
    expect(page).to_have_url(f"{idp.url}/account/recover")
    user.screenshot("attestation-refused")

"""The sign-in policy: the admin page (/admin/policy), persistence across nodes, and one named test
per enforced rule, each failing when its enforcement is removed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from idp import create_app
from idp.extensions import db
from idp.models import AuditEvent, Base, BrowserSession, Passkey, PolicyOverride, User
from idp.models.base import utcnow
from idp.services.sign_in import GENERIC_FAILURE, LOCKED, PASSWORDS_OFF
from idp.services.sign_in_policy import (
    FIELDS,
    PolicyCache,
    change_policy,
    load_policy,
)
from tests.conftest import app_overrides, throwaway_postgres_database
from tests.functional.test_fallback import (
    _recovered,
    password_step,
    path_of,
    session_of,
    text_of,
    user_with_totp,
)
from tests.support.admin import passkey_browser, policy_form
from tests.support.authenticator import FLAG, SoftAuthenticator
from tests.support.clock import FrozenClock
from tests.support.factories import DEFAULT_PASSWORD, CreatedUser, change, create_user, rows
from tests.support.flow import csrf_token, start_session
from tests.support.passkey_flow import PasskeyPages

YUBIKEY_5 = "ee882879-721c-4913-9775-3dfcce97072a"
GOOGLE_PASSWORD_MANAGER = "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"


# -- helpers --------------------------------------------------------------------------------------
@pytest.fixture
def policy_app(app: Flask) -> Iterator[Flask]:
    """The SQLite app; its node-local policy cache is dropped afterwards, so that the next test
    does not start with this test's policy (the rows themselves are emptied by ``app``)."""
    yield app
    _drop_cache(app)


def _drop_cache(app: Flask) -> None:
    app.extensions["idp"].policy_cache.invalidate()


def set_policy(app: Flask, **changes: Any) -> None:
    """Change the policy through the service the page uses, and drop this node's cache."""
    with app.app_context():
        change_policy(db.session(), app.extensions["idp"].settings, changes, actor_id=None,
                      context=None, now=utcnow())  # fmt: skip
        db.session.commit()
    _drop_cache(app)


def failure_reasons(app: Flask, kind: str) -> list[str]:
    events = rows(app, AuditEvent, AuditEvent.kind == kind, AuditEvent.outcome == "failure")
    return [e.details.get("reason") for e in sorted(events, key=lambda e: e.id)]


def password_browser(app: Flask, user: CreatedUser) -> PasskeyPages:
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    return pages


# -- the page -------------------------------------------------------------------------------------
def test_policy_page_shows_every_setting_with_the_value_in_force(policy_app: Flask) -> None:
    admin = passkey_browser(policy_app, "root@example.com")
    page = admin.browser.get("/admin/policy")
    assert page.status_code == 200
    for field in FIELDS:
        assert f'name="{field.name}"' in page.text, field.name
    assert 'value="100"' in page.text  # the lockout threshold's default
    assert "Overrides the configured" not in page.text


def test_a_lifetime_in_seconds_is_also_said_in_days_and_hours(policy_app: Flask) -> None:
    """1209600 is a number an admin has to work out: the page says "14 days" beside it, for the
    value in force and for a value sent back with an error."""
    set_policy(policy_app, session_idle_ttl=14 * 86400, session_absolute_ttl=30 * 86400 + 43200)
    admin = passkey_browser(policy_app, "root@example.com")
    page = admin.browser.get("/admin/policy").text
    assert 'value="1209600"' in page
    assert '<span data-in-words="session_idle_ttl">Now 14 days.</span>' in page
    assert '<span data-in-words="session_absolute_ttl">Now 30 days 12 hours.</span>' in page
    # Counts in days already: nothing to add.
    assert 'data-in-words="passkey_prompt_snooze_days"' not in page
    form = policy_form(policy_app, session_idle_ttl="5400", lockout_threshold="0")
    refused = admin.post("/admin/policy", form)
    assert refused.status_code == 400
    assert '<span data-in-words="session_idle_ttl">Now 1 hour 30 minutes.</span>' in refused.text


def test_saving_the_policy_stores_it_and_audits_old_and_new_values(policy_app: Flask) -> None:
    admin = passkey_browser(policy_app, "root@example.com")
    form = policy_form(policy_app, lockout_threshold=10, passwords_allowed=False,
                       aaguid_allow_list=[YUBIKEY_5.upper()])  # fmt: skip
    saved = admin.post("/admin/policy", form)
    assert path_of(saved) == "/admin/policy"
    stored = {row.name: row.value for row in rows(policy_app, PolicyOverride)}
    assert stored == {"lockout_threshold": 10, "passwords_allowed": False,
                      "aaguid_allow_list": [YUBIKEY_5]}  # fmt: skip
    assert {row.updated_by for row in rows(policy_app, PolicyOverride)} == {admin.user.id}
    [event] = rows(policy_app, AuditEvent, AuditEvent.kind == "policy.changed")
    assert event.actor_id == admin.user.id
    assert event.details["changes"] == {
        "lockout_threshold": {"old": 100, "new": 10},
        "passwords_allowed": {"old": True, "new": False},
        "aaguid_allow_list": {"old": [], "new": [YUBIKEY_5]},
    }
    page = admin.browser.get("/admin/policy")
    assert page.text.count("Overrides the configured") == 3


def test_a_policy_page_opened_before_another_change_saves_nothing(policy_app: Flask) -> None:
    """The page's form sends every field as it showed them. Opened before another admin turned
    on a rule (admins sign in with a passkey only), its save of another field would turn that
    rule off again, unseen: it is saved only onto the policy it was read from (RFC 9110 13.1.1,
    the lost update), else a 409 that saves nothing and shows the values in force now; a form
    without its version likewise."""
    admin = passkey_browser(policy_app, "admin@example.com")
    stale = policy_form(policy_app, lockout_threshold=7)  # opened now, saved later
    assert "admin_passkey_required" not in stale  # off when the page was opened
    saved = admin.post("/admin/policy", policy_form(policy_app, admin_passkey_required=True))
    assert path_of(saved) == "/admin/policy"
    without_version = {k: v for k, v in stale.items() if k != "version"}
    for form in (stale, without_version):
        refused = admin.post("/admin/policy", form)
        assert refused.status_code == 409
        assert "someone changed the policy since this page was opened" in text_of(refused)
        with policy_app.app_context():
            policy = load_policy(db.session(), policy_app.extensions["idp"].settings)
        assert policy.admin_passkey_required is True
        assert policy.lockout_threshold != 7
    assert len(rows(policy_app, AuditEvent, AuditEvent.kind == "policy.changed")) == 1
    again = admin.post("/admin/policy", policy_form(policy_app, lockout_threshold=7))
    assert path_of(again) == "/admin/policy"
    _drop_cache(policy_app)


@pytest.mark.parametrize(
    ("name", "value"),
    [("lockout_threshold", "0"), ("lockout_threshold", "101"), ("session_idle_ttl", "0"),
     ("session_absolute_ttl", "-1"), ("user_verification", "discouraged"),
     ("aaguid_allow_list", "not an aaguid"), ("passkey_prompt_snooze_days", "0")],
)  # fmt: skip
def test_an_invalid_value_is_refused_and_nothing_is_saved(
    policy_app: Flask, name: str, value: str
) -> None:
    admin = passkey_browser(policy_app, "root@example.com")
    form = policy_form(policy_app, lockout_threshold=7)
    form[name] = value
    refused = admin.post("/admin/policy", form)
    assert refused.status_code == 400
    assert "Nothing was saved" in refused.text
    assert name in refused.text
    assert rows(policy_app, PolicyOverride) == []
    assert rows(policy_app, AuditEvent, AuditEvent.kind == "policy.changed") == []


def test_resetting_drops_every_override_and_is_audited(policy_app: Flask) -> None:
    admin = passkey_browser(policy_app, "root@example.com")
    admin.post("/admin/policy", policy_form(policy_app, lockout_threshold=9))
    reset = admin.post("/admin/policy/reset")
    assert path_of(reset) == "/admin/policy"
    assert rows(policy_app, PolicyOverride) == []
    events = rows(policy_app, AuditEvent, AuditEvent.kind == "policy.changed")
    assert [e.details["changes"] for e in sorted(events, key=lambda e: e.id)][-1] == {
        "lockout_threshold": {"old": 9, "new": 100}
    }


def test_a_non_admin_cannot_change_the_policy(policy_app: Flask, user: CreatedUser) -> None:
    browser = policy_app.test_client()
    start_session(browser, user)
    page = browser.get("/account")
    refused = browser.post("/admin/policy", data={"csrf_token": csrf_token(page.text),
                                                  "lockout_threshold": "1"})  # fmt: skip
    assert refused.status_code == 403
    assert rows(policy_app, PolicyOverride) == []


# -- two nodes on one database --------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def two_nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Flask, Flask, Any]]:
    """Two application instances (two nodes) sharing one database; node B trusts its cached
    policy for one second. The third item builds one more node on the same database."""

    def node(url: str, name: str, **extra: Any) -> Flask:
        return create_app(app_overrides(url, tmp_path / name, **extra))

    def run(url: str) -> Iterator[tuple[Flask, Flask, Any]]:
        first = node(url, "a")
        with first.app_context():
            Base.metadata.create_all(db.engine)
            first.extensions["idp"].keys.ensure_keys(db.session())
            db.session.commit()
        yield first, node(url, "b", policy_cache_ttl=1), lambda: node(url, "c")
        for each in (first,):
            with each.app_context():
                db.engine.dispose()

    if request.param == "sqlite":
        yield from run(f"sqlite:///{tmp_path / 'shared.db'}")
    else:
        with throwaway_postgres_database() as url:
            yield from run(url)


def test_a_policy_saved_on_one_node_reaches_the_other_within_the_cache_ttl(
    two_nodes: tuple[Flask, Flask, Any],
) -> None:
    node_a, node_b, another_node = two_nodes
    # Node B's cache reads a clock the test moves: the TTL passes when the test says, however
    # slow the machine is.
    now = [0.0]
    ttl = node_b.extensions["idp"].settings.policy_cache_ttl
    node_b.extensions["idp"].policy_cache = PolicyCache(ttl, clock=lambda: now[0])
    admin = passkey_browser(node_a, "root@example.com")
    user = create_user(node_a, email="ada@example.com")
    browser_b = node_b.test_client()
    assert 'name="password"' in browser_b.get("/login").text  # node B has read (and cached) it

    saved = admin.post("/admin/policy", policy_form(node_a, passwords_allowed=False))
    assert path_of(saved) == "/admin/policy"
    now[0] = ttl / 2
    assert 'name="password"' in browser_b.get("/login").text  # within the TTL: the cached copy
    now[0] = ttl
    assert 'name="password"' not in browser_b.get("/login").text  # the TTL is over: read again
    refused = password_step(browser_b, user.email, user.password)
    assert refused.status_code == 401
    assert PASSWORDS_OFF in text_of(refused)
    # A node started later (or restarted) reads the stored policy, not only its configuration.
    fresh = another_node()
    assert 'name="password"' not in fresh.test_client().get("/login").text


# -- enforcement: passwordless only ---------------------------------------------------------------
def test_passwordless_only_refuses_password_sign_in_and_hides_the_field(
    policy_app: Flask, user: CreatedUser
) -> None:
    set_policy(policy_app, passwords_allowed=False)
    browser = policy_app.test_client()
    page = browser.get("/login")
    assert 'name="password"' not in page.text
    assert "use-password" not in page.text
    refused = password_step(browser, user.email, user.password)
    assert refused.status_code == 401
    assert PASSWORDS_OFF in text_of(refused)
    assert failure_reasons(policy_app, "login.password") == ["passwords_disabled"]
    # The same answer for an unknown email (no enumeration).
    unknown = password_step(browser, "nobody@example.com", "whatever it is")
    assert unknown.status_code == 401
    assert PASSWORDS_OFF in text_of(unknown)
    set_policy(policy_app, passwords_allowed=True)
    assert path_of(password_step(browser, user.email, user.password)) == "/account"


def test_passwordless_only_refuses_setting_a_password_and_hides_the_form(
    policy_app: Flask,
) -> None:
    signed_in = passkey_browser(policy_app, "np@example.com")
    with policy_app.app_context():
        db.session.execute(update(User).values(password_hash=None))
        db.session.commit()
    set_policy(policy_app, passwords_allowed=False)
    home = signed_in.browser.get("/account")
    assert 'name="new_password"' not in home.text
    assert "passwordless-note" in home.text
    refused = signed_in.post("/account/password", {"new_password": "a brand new passphrase"})
    assert path_of(refused) == "/account"
    [row] = rows(policy_app, User, User.id == signed_in.user.id)
    assert row.password_hash is None


def test_passwordless_only_a_password_no_longer_counts_as_a_way_in(policy_app: Flask) -> None:
    """With passwords off, the last passkey of a user who still has a password stays: the
    password could not sign them in."""
    signed_in = passkey_browser(policy_app, "ada@example.com")  # has a password and a passkey
    set_policy(policy_app, passwords_allowed=False)
    [key] = rows(policy_app, Passkey)
    signed_in.post(f"/account/passkeys/{key.credential_id}/remove", {"confirm": "yes"})
    assert len(rows(policy_app, Passkey)) == 1


# -- enforcement: passkeys ------------------------------------------------------------------------
def test_aaguid_allow_list_refuses_a_passkey_from_an_unlisted_authenticator(
    policy_app: Flask, user: CreatedUser
) -> None:
    set_policy(policy_app, aaguid_allow_list=[YUBIKEY_5])
    pages = password_browser(policy_app, user)
    refused = pages.add_passkey(SoftAuthenticator(aaguid=GOOGLE_PASSWORD_MANAGER))
    assert refused.status_code == 400
    assert failure_reasons(policy_app, "passkey.registered") == ["authenticator_not_allowed"]
    assert rows(policy_app, Passkey) == []
    accepted = pages.add_passkey(SoftAuthenticator(aaguid=YUBIKEY_5))
    assert accepted.status_code == 201, accepted.text
    [stored] = rows(policy_app, Passkey)
    assert stored.aaguid == YUBIKEY_5


def test_user_verification_required_refuses_a_ceremony_without_uv(
    policy_app: Flask, user: CreatedUser
) -> None:
    pages = password_browser(policy_app, user)
    options = pages.registration_options().get_json()
    assert options["publicKey"]["authenticatorSelection"]["userVerification"] == "required"
    no_uv = SoftAuthenticator(user_verified=False)
    refused = pages.register(options["challenge_id"], no_uv.create(options["publicKey"]))
    assert refused.status_code == 400
    assert rows(policy_app, Passkey) == []


def test_user_verification_preferred_is_asked_for_and_a_passkey_without_uv_is_one_factor(
    policy_app: Flask, user: CreatedUser
) -> None:
    set_policy(policy_app, user_verification="preferred")
    pages = password_browser(policy_app, user)
    options = pages.registration_options().get_json()
    assert options["publicKey"]["authenticatorSelection"]["userVerification"] == "preferred"
    no_uv = SoftAuthenticator(user_verified=False)
    registered = pages.register(options["challenge_id"], no_uv.create(options["publicKey"]))
    assert registered.status_code == 201, registered.text

    browser = PasskeyPages(policy_app.test_client())
    ceremony = browser.authentication_options()
    assert ceremony["publicKey"]["userVerification"] == "preferred"
    verified = browser.verify(ceremony["challenge_id"], no_uv.get(ceremony["publicKey"]))
    assert verified.status_code == 200, verified.text
    sessions = rows(policy_app, BrowserSession)
    newest = max(sessions, key=lambda s: s.created_at)
    # RFC 8176: possession without user verification is not "user" and not "mfa".
    assert newest.amr == ["hwk"]
    # With UV the same passkey still earns both.
    ceremony = browser.authentication_options()
    with_uv = no_uv.get(ceremony["publicKey"], flags=FLAG.UP | FLAG.UV)
    assert browser.verify(ceremony["challenge_id"], with_uv).status_code == 200
    newest = max(rows(policy_app, BrowserSession), key=lambda s: s.created_at)
    assert newest.amr == ["hwk", "user", "mfa"]


def test_attestation_conveyance_is_asked_for_as_the_policy_says(
    policy_app: Flask, user: CreatedUser
) -> None:
    set_policy(policy_app, attestation="direct")
    options = password_browser(policy_app, user).registration_options().get_json()
    assert options["publicKey"]["attestation"] == "direct"


# -- enforcement: the passkey prompt --------------------------------------------------------------
def test_passkey_prompts_off_means_no_prompt_after_a_password_sign_in(
    policy_app: Flask, user: CreatedUser
) -> None:
    # The test settings turn the prompt off; the policy turns it on, then off again.
    set_policy(policy_app, passkey_prompt=True)
    prompted = password_step(policy_app.test_client(), user.email, user.password)
    assert path_of(prompted) == "/login/passkey-prompt"
    set_policy(policy_app, passkey_prompt=False)
    straight = password_step(policy_app.test_client(), user.email, user.password)
    assert path_of(straight) == "/account"


def test_the_prompt_is_snoozed_for_the_policy_s_number_of_days(
    policy_app: Flask, user: CreatedUser
) -> None:
    set_policy(policy_app, passkey_prompt=True, passkey_prompt_snooze_days=3)
    browser = policy_app.test_client()
    password_step(browser, user.email, user.password)
    page = browser.get("/login/passkey-prompt")
    browser.post("/login/passkey-prompt", data={"csrf_token": csrf_token(page.text),
                                                "choice": "later"})  # fmt: skip
    [row] = rows(policy_app, User, User.id == user.id)
    assert row.passkey_prompt_snoozed_until is not None
    remaining = row.passkey_prompt_snoozed_until - utcnow()
    assert timedelta(days=3) - timedelta(minutes=1) < remaining <= timedelta(days=3)


# -- enforcement: sessions ------------------------------------------------------------------------
def test_session_lifetimes_of_the_policy_apply_to_new_sessions(
    policy_app: Flask, user: CreatedUser
) -> None:
    set_policy(policy_app, session_absolute_ttl=3600, session_idle_ttl=600)
    browser = policy_app.test_client()
    signed_in = password_step(browser, user.email, user.password)
    cookie = next(h for h in signed_in.headers.getlist("Set-Cookie") if "idp_session=" in h)
    assert "Max-Age=3600" in cookie
    [session] = rows(policy_app, BrowserSession)
    assert session.expires_at - session.created_at == timedelta(seconds=3600)
    assert browser.get("/account").status_code == 200
    # Idle for longer than the policy's idle lifetime: the session no longer opens the portal.
    with policy_app.app_context():
        db.session.execute(
            update(BrowserSession).values(last_seen_at=utcnow() - timedelta(seconds=601))
        )
        db.session.commit()
    assert path_of(browser.get("/account")).startswith("/login")


# -- enforcement: lockout -------------------------------------------------------------------------
def test_the_lockout_threshold_of_the_policy_applies(policy_app: Flask, user: CreatedUser) -> None:
    set_policy(policy_app, lockout_threshold=3)
    browser = policy_app.test_client()
    for _ in range(3):
        wrong = password_step(browser, user.email, "not the password at all")
        assert GENERIC_FAILURE in text_of(wrong)
    locked = password_step(browser, user.email, user.password)
    assert locked.status_code == 401
    assert LOCKED in text_of(locked)


# -- enforcement: passkey required for admins -----------------------------------------------------
def test_passkey_required_for_admins_refuses_an_admin_s_password(policy_app: Flask) -> None:
    admin = create_user(policy_app, email="root@example.com", admin=True)
    member = create_user(policy_app, email="ada@example.com")
    set_policy(policy_app, admin_passkey_required=True)
    refused = password_step(policy_app.test_client(), admin.email, DEFAULT_PASSWORD)
    # Answered like a wrong password: no oracle for admin passwords.
    assert refused.status_code == 401
    assert GENERIC_FAILURE in text_of(refused)
    assert failure_reasons(policy_app, "login.password") == ["admin_passkey_required"]
    assert path_of(password_step(policy_app.test_client(), member.email, member.password)) == (
        "/account"
    )
    set_policy(policy_app, admin_passkey_required=False)
    assert path_of(password_step(policy_app.test_client(), admin.email, admin.password)) == (
        "/account"
    )


def test_passkey_required_for_admins_keeps_an_admin_s_last_passkey(policy_app: Flask) -> None:
    admin = passkey_browser(policy_app, "root@example.com")  # a password and one passkey
    [key] = rows(policy_app, Passkey)
    set_policy(policy_app, admin_passkey_required=True)
    kept = admin.post(f"/account/passkeys/{key.credential_id}/remove", {"confirm": "yes"})
    assert path_of(kept) == "/account"
    assert "Administrators must keep a passkey" in text_of(admin.browser.get("/account"))
    assert len(rows(policy_app, Passkey)) == 1
    # Off, the password is a way in, and the passkey may go.
    set_policy(policy_app, admin_passkey_required=False)
    admin.post(f"/account/passkeys/{key.credential_id}/remove", {"confirm": "yes"})
    assert rows(policy_app, Passkey) == []


def test_passkey_required_for_admins_an_invited_admin_chooses_no_password(
    policy_app: Flask,
) -> None:
    """An invite offers a password where the policy allows passwords, but never to an admin
    account where admins sign in with a passkey only: the password would open a full session of
    an admin with no passkey, which no later sign-in with that password could."""
    admin = passkey_browser(policy_app, "root@example.com")
    set_policy(policy_app, admin_passkey_required=True)
    for email, as_admin in (("grace@example.com", "on"), ("ada@example.com", "")):
        issued = admin.post("/admin/users/new", {"email": email, "action": "invite",
                                                 "admin": as_admin})  # fmt: skip
        match = re.search(r'<code id="issued-link"[^>]*>[^<]*/invite/([^<]+)</code>', issued.text)
        assert match, issued.text
        browser = policy_app.test_client()
        page = browser.get(f"/invite/{match.group(1)}")
        assert ('name="password"' in page.text) is (not as_admin)
        form = {"csrf_token": csrf_token(page.text), "name": "New",
                "password": "a long passphrase here"}  # fmt: skip
        accepted = browser.post(f"/invite/{match.group(1)}", data=form)
        [joined] = rows(policy_app, User, User.email == email)
        session = session_of(policy_app, joined.id)
        if as_admin:
            # A passkey first, as for a passwordless deployment; the password was ignored.
            assert path_of(accepted) == "/signup/passkey"
            assert (joined.password_hash, session.passkey_only) == (None, True)
        else:
            assert path_of(accepted) == "/account"
            assert joined.password_hash is not None
            assert (session.restricted, session.amr) == (False, ["pwd"])


def test_passkey_required_for_admins_a_recovery_may_add_a_passkey_only(
    policy_app: Flask, clock: FrozenClock
) -> None:
    """An admin's password signs nobody in where admins need a passkey, so a backup-code
    recovery of an admin with a password and an authenticator app may add a passkey and nothing
    else: an app would promote the session to a full one while the admin has no way in."""
    enrolled = user_with_totp(policy_app, clock)
    change(policy_app, update(User).where(User.id == enrolled.user.id).values(is_admin=True))
    set_policy(policy_app, admin_passkey_required=True)
    browser = _recovered(policy_app, enrolled)
    session = session_of(policy_app, enrolled.user.id)
    assert (session.restricted, session.passkey_only) == (True, True)
    assert "/account/totp" not in browser.get("/account/recover").text
    assert path_of(browser.get("/account/totp")) == "/account/recover"


# -- the command line ------------------------------------------------------------------------------
def test_cli_policy_set_show_and_reset(tmp_path: Path) -> None:
    import json

    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from idp.cli import main
    from tests.support.cli import initialised_cli

    runner = initialised_cli(tmp_path, IDP_LOCKOUT_THRESHOLD="50")
    url = runner.env["IDP_DATABASE_URL"]
    shown = json.loads(runner.invoke(main, ["policy", "show", "--json"]).output)
    assert shown["policy"]["lockout_threshold"] == 50  # the environment's default
    assert shown["overridden"] == []
    result = runner.invoke(main, ["policy", "set", "lockout_threshold=5",
                                  f"aaguid_allow_list={YUBIKEY_5},{GOOGLE_PASSWORD_MANAGER}",
                                  "passwords_allowed=false", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["policy"]["lockout_threshold"] == 5
    assert data["policy"]["aaguid_allow_list"] == [YUBIKEY_5, GOOGLE_PASSWORD_MANAGER]
    assert data["overridden"] == ["aaguid_allow_list", "lockout_threshold", "passwords_allowed"]
    assert "(overridden)" in runner.invoke(main, ["policy", "show"]).output
    refused = runner.invoke(main, ["policy", "set", "lockout_threshold=500"])
    assert refused.exit_code != 0
    assert "lockout_threshold" in refused.output
    refused = runner.invoke(main, ["policy", "set", "lockout_threshold"])
    assert refused.exit_code != 0
    engine = create_engine(url)
    with Session(engine) as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.kind == "policy.changed"))
        assert event.actor_id == "cli"
        assert event.details["via"] == "cli"
        assert event.details["changes"]["lockout_threshold"] == {"old": 50, "new": 5}
    reset = json.loads(runner.invoke(main, ["policy", "reset", "--json"]).output)
    assert reset["overridden"] == []
    assert reset["policy"]["lockout_threshold"] == 50
    with Session(engine) as session:
        assert session.scalars(select(PolicyOverride)).all() == []
    engine.dispose()


def test_admins_saving_at_once_never_collide(storage_app: Flask) -> None:
    """The override is one upsert per field: parallel saves of the same field all succeed and
    leave one row holding one of the values (no duplicate-key error on either database)."""
    import threading

    from sqlalchemy.orm import Session

    with storage_app.app_context():
        engine = db.engine
    settings = storage_app.extensions["idp"].settings
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def save(threshold: int) -> None:
        try:
            with Session(engine) as session:
                start.wait()
                change_policy(session, settings, {"lockout_threshold": threshold},
                              actor_id=None, context=None, now=utcnow())  # fmt: skip
                session.commit()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(10, 16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    [row] = rows(storage_app, PolicyOverride)
    assert row.value in range(10, 16)
    _drop_cache(storage_app)

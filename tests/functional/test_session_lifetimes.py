"""Session lifetimes (docs/security.md, Sessions): restricted sessions live minutes, keep to the
step-up window and become full sessions under a new id; every lifetime has an upper bound, in the
settings and in the policy alike; the portal lists exactly the sessions the loader accepts.

Time is moved with a frozen clock that the session loader and the sign-in and account views read
(nothing sleeps), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from idp import load_checked_settings
from idp.cli import main
from idp.clock import FrozenClock
from idp.extensions import db
from idp.models import BrowserSession, Passkey, PolicyOverride
from idp.models.base import utcnow
from idp.services.crypto import token_hash
from idp.services.lifetimes import YEAR
from idp.services.portal import STEP_UP_WINDOW
from idp.settings import SettingsError, load_settings
from idp.web.sessions import session_cookie_name
from tests.functional.test_admin_policy import policy_form, set_policy
from tests.functional.test_fallback import path_of, recover, user_with_totp
from tests.functional.test_invites import accept, invite
from tests.functional.test_login_links import issue, open_and_confirm
from tests.functional.test_signup import ask, confirm, mailed_link
from tests.support.admin import passkey_browser
from tests.support.authenticator import SoftAuthenticator
from tests.support.cli import initialised_cli
from tests.support.factories import CreatedUser, create_user, rows
from tests.support.flow import start_session
from tests.support.passkey_flow import PasskeyPages

SECOND = timedelta(seconds=1)


@pytest.fixture
def app_with_policy(storage_app: Flask) -> Iterator[Flask]:
    """The app on each database; its node-local policy cache is dropped before and after (the
    app outlives the test, and the rows the cache copied are emptied after each one)."""
    _drop_policy_cache(storage_app)
    yield storage_app
    _drop_policy_cache(storage_app)


def _drop_policy_cache(app: Flask) -> None:
    app.extensions["idp"].policy_cache.invalidate()


def cookie_of(browser: FlaskClient) -> str:
    cookie = browser.get_cookie(session_cookie_name_of(browser))
    assert cookie is not None, "no session cookie"
    return cookie.value


def session_cookie_name_of(browser: FlaskClient) -> str:
    with browser.application.test_request_context():
        return session_cookie_name()


def row_of(app: Flask, cookie_value: str) -> BrowserSession:
    [row] = rows(app, BrowserSession, BrowserSession.id_hash == token_hash(cookie_value))
    return row


def browser_with(app: Flask, cookie_value: str) -> FlaskClient:
    """Another browser that presents this session cookie (a copied or stolen cookie)."""
    other = app.test_client()
    other.set_cookie(session_cookie_name_of(other), cookie_value)
    return other


def link_session(app: Flask, user: CreatedUser) -> FlaskClient:
    """A browser signed in with a one-time login link: a restricted session."""
    browser = app.test_client()
    assert open_and_confirm(browser, issue(app, user)) == (302, "/account/recover")
    return browser


# == restricted sessions: minutes, not weeks ======================================================
def test_a_restricted_session_ends_at_its_short_absolute_lifetime(
    storage_app: Flask, clock: FrozenClock
) -> None:
    user = create_user(storage_app)
    browser = link_session(storage_app, user)
    ttl = timedelta(seconds=storage_app.extensions["idp"].settings.restricted_session_ttl)
    assert ttl == timedelta(minutes=15)
    # Used all along (never idle), it still ends at its absolute lifetime from the link's use.
    for _ in range(14):
        clock.advance(timedelta(minutes=1))
        assert browser.get("/account/recover").status_code == 200
    clock.advance(ttl - timedelta(minutes=14) - SECOND)
    assert browser.get("/account/recover").status_code == 200  # just inside
    clock.advance(SECOND)
    assert path_of(browser.get("/account/recover")) == "/login"  # just outside
    assert path_of(browser.get("/account")).startswith("/login")
    # A full session of the same user, as old, is not affected.
    full = storage_app.test_client()
    start_session(full, user)
    clock.advance(ttl + timedelta(days=1))
    assert full.get("/account").status_code == 200


def test_a_restricted_session_stored_before_the_limit_also_ends(storage_app: Flask) -> None:
    """The limit is the loader's: a restricted session whose row still says it lives 30 days (as
    every one did before the limit) ends after the restricted lifetime all the same."""
    user = create_user(storage_app)
    browser = link_session(storage_app, user)
    with storage_app.app_context():
        db.session.execute(
            update(BrowserSession).values(
                created_at=utcnow() - timedelta(minutes=16),
                auth_time=utcnow() - timedelta(minutes=16),
                expires_at=utcnow() + timedelta(days=30),
            )
        )
        db.session.commit()
    assert path_of(browser.get("/account/recover")) == "/login"


def restricted_by_invite(app: Flask, clock: FrozenClock) -> tuple[FlaskClient, str]:
    console = passkey_browser(app, "root@example.com")
    browser = app.test_client()
    status, location = accept(browser, invite(console, "grace@example.com"))
    assert status == 302
    return browser, location


def restricted_by_sign_up(app: Flask, clock: FrozenClock) -> tuple[FlaskClient, str]:
    set_policy(app, signup_enabled=True)
    browser = app.test_client()
    ask(browser, "ada@example.com")
    status, location = confirm(browser, mailed_link(app, "ada@example.com"))
    assert status == 302
    return browser, location


def restricted_by_backup_code(app: Flask, clock: FrozenClock) -> tuple[FlaskClient, str]:
    enrolled = user_with_totp(app, clock)
    browser = app.test_client()
    return browser, path_of(recover(browser, enrolled.user.email, enrolled.codes[0]))


def restricted_by_login_link(app: Flask, clock: FrozenClock) -> tuple[FlaskClient, str]:
    return link_session(app, create_user(app)), "/account/recover"


@pytest.mark.parametrize(
    "restricted_session",
    [restricted_by_login_link, restricted_by_invite, restricted_by_sign_up,
     restricted_by_backup_code],
    ids=["login-link", "invite", "sign-up", "backup-code"],
)  # fmt: skip
def test_every_kind_of_restricted_session_ends_at_its_short_lifetime(
    app_with_policy: Flask, clock: FrozenClock, restricted_session: Any
) -> None:
    browser, page = restricted_session(app_with_policy, clock)
    cookie = cookie_of(browser)
    assert row_of(app_with_policy, cookie).restricted
    ttl = timedelta(seconds=app_with_policy.extensions["idp"].settings.restricted_session_ttl)
    assert browser.get(page).status_code == 200
    clock.advance(ttl - SECOND)
    assert browser.get(page).status_code == 200
    clock.advance(SECOND)
    assert path_of(browser.get(page)).startswith("/login")


def test_the_restricted_session_lifetime_is_a_bounded_setting() -> None:
    assert load_settings({"restricted_session_ttl": 1800}, environ={}).restricted_session_ttl
    for refused in (1801, 30 * 24 * 3600, 299):
        with pytest.raises(SettingsError, match="restricted_session_ttl must be between"):
            load_checked_settings({"restricted_session_ttl": refused}, environ={})


def test_a_restricted_session_older_than_the_step_up_window_cannot_add_a_passkey(
    storage_app: Flask, clock: FrozenClock
) -> None:
    user = create_user(storage_app)
    pages = PasskeyPages(link_session(storage_app, user))
    authenticator = SoftAuthenticator()
    clock.advance(STEP_UP_WINDOW - SECOND)
    options = pages.post_json("/account/passkeys/options", {}, page="/account/recover")
    assert options.status_code == 200, options.text  # just inside the window
    ceremony = options.get_json()
    credential = authenticator.create(ceremony["publicKey"])
    clock.advance(2 * SECOND)  # just outside it
    refused = pages.browser.post(
        "/account/passkeys",
        json={"challenge_id": ceremony["challenge_id"], "credential": credential},
        headers={"X-CSRFToken": pages.csrf("/login")},
    )
    assert refused.status_code == 403
    assert refused.get_json()["error"] == "reauthenticate"
    late = pages.post_json("/account/passkeys/options", {}, page="/login")
    assert late.status_code == 403
    assert rows(storage_app, Passkey) == []
    # The page says so instead of offering a button that cannot work.
    page = pages.browser.get("/account/recover")
    assert "that time has passed" in page.text
    assert "add-passkey" not in page.text


def test_a_restricted_session_becomes_full_only_under_a_new_session_id(
    storage_app: Flask, clock: FrozenClock
) -> None:
    user = create_user(storage_app)
    browser = link_session(storage_app, user)
    restricted_cookie = cookie_of(browser)
    restricted = row_of(storage_app, restricted_cookie)
    assert restricted.restricted
    assert restricted.passkey_only
    clock.advance(timedelta(minutes=1))
    added = PasskeyPages(browser).post_json("/account/passkeys/options", {}, page="/login")
    ceremony = added.get_json()
    credential = SoftAuthenticator().create(ceremony["publicKey"])
    registered = PasskeyPages(browser).register(ceremony["challenge_id"], credential)
    assert registered.status_code == 201, registered.text
    full_cookie = cookie_of(browser)
    assert full_cookie != restricted_cookie
    full = row_of(storage_app, full_cookie)
    assert not full.restricted
    assert not full.passkey_only
    assert full.sid != restricted.sid
    assert full.auth_time == restricted.auth_time  # the sign-in it stands for is the same
    assert row_of(storage_app, restricted_cookie).revoked_at is not None
    assert browser.get("/account").status_code == 200
    # The restricted id stops working: a copy of the old cookie opens nothing.
    stolen = browser_with(storage_app, restricted_cookie)
    assert path_of(stolen.get("/account")).startswith("/login")
    assert path_of(stolen.get("/account/recover")) == "/login"
    # And the full session lives the full lifetime, past the restricted one.
    clock.advance(timedelta(hours=1))
    assert browser.get("/account").status_code == 200


# == every lifetime has an upper bound ============================================================
def test_a_huge_idle_lifetime_saved_in_the_console_is_a_form_error(policy_app: Flask) -> None:
    admin = passkey_browser(policy_app, "root@example.com")
    form = policy_form(policy_app, session_idle_ttl="100000000000000")
    refused = admin.post("/admin/policy", form)
    assert refused.status_code == 400
    assert "Nothing was saved" in refused.text
    assert "session_idle_ttl must be between 1 and 31536000 seconds" in refused.text
    assert rows(policy_app, PolicyOverride) == []
    assert admin.browser.get("/admin/policy").status_code == 200
    assert admin.browser.get("/account").status_code == 200


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"session_absolute_ttl": str(YEAR + 1)}, "session_absolute_ttl must be between"),
        ({"session_idle_ttl": str(YEAR + 1)}, "session_idle_ttl must be between"),
        ({"session_idle_ttl": "7200", "session_absolute_ttl": "3600"},
         "session_idle_ttl (7200) must not exceed session_absolute_ttl (3600)"),
    ],
)  # fmt: skip
def test_lifetimes_out_of_bounds_in_the_console_are_form_errors(
    policy_app: Flask, changes: dict[str, str], message: str
) -> None:
    admin = passkey_browser(policy_app, "root@example.com")
    refused = admin.post("/admin/policy", policy_form(policy_app, **changes))
    assert refused.status_code == 400
    assert message in refused.text
    assert rows(policy_app, PolicyOverride) == []


def test_idp_policy_set_refuses_a_lifetime_beyond_its_bound(tmp_path: Path) -> None:
    runner = initialised_cli(tmp_path)
    refused = runner.invoke(main, ["policy", "set", "session_idle_ttl=100000000000000"])
    assert refused.exit_code != 0
    assert "session_idle_ttl must be between 1 and 31536000 seconds" in refused.output
    accepted = runner.invoke(main, ["policy", "set", f"session_absolute_ttl={YEAR}"])
    assert accepted.exit_code == 0, accepted.output


@pytest.mark.parametrize(
    "stored",
    [
        {"session_idle_ttl": 100000000000000},
        {"session_absolute_ttl": 100000000000000},
        {"session_idle_ttl": "not a number", "session_absolute_ttl": [1]},
    ],
)
def test_a_stored_out_of_range_lifetime_is_ignored_with_a_log_line(
    app_with_policy: Flask, stored: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    """Written to the database directly (or by another version): requests never fail."""
    user = create_user(app_with_policy)
    with app_with_policy.app_context():
        for name, value in stored.items():
            db.session.add(PolicyOverride(name=name, value=value, updated_at=utcnow()))
        db.session.commit()
    browser = app_with_policy.test_client()
    with caplog.at_level(logging.WARNING, logger="idp.services.sign_in_policy"):
        start_session(browser, user)
        assert browser.get("/account").status_code == 200
        assert browser.get("/account/sessions").status_code == 200
    assert "ignoring stored policy override" in caplog.text
    [session] = rows(app_with_policy, BrowserSession)
    configured = app_with_policy.extensions["idp"].settings
    assert session.expires_at - session.created_at == timedelta(
        seconds=configured.session_absolute_ttl
    )


def test_a_stored_idle_lifetime_above_the_absolute_one_is_clamped_with_a_log_line(
    app_with_policy: Flask, caplog: pytest.LogCaptureFixture, clock: FrozenClock
) -> None:
    user = create_user(app_with_policy)
    with app_with_policy.app_context():
        for name, value in (("session_idle_ttl", 7200), ("session_absolute_ttl", 3600)):
            db.session.add(PolicyOverride(name=name, value=value, updated_at=utcnow()))
        db.session.commit()
    browser = app_with_policy.test_client()
    with caplog.at_level(logging.WARNING, logger="idp.services.sign_in_policy"):
        start_session(browser, user)
        assert browser.get("/account").status_code == 200
    assert "stored session_idle_ttl exceeds session_absolute_ttl" in caplog.text
    clock.advance(timedelta(seconds=3600) - SECOND)
    assert browser.get("/account").status_code == 200
    clock.advance(SECOND)
    assert path_of(browser.get("/account")).startswith("/login")


# == the portal lists exactly the sessions the loader accepts =====================================
@pytest.mark.parametrize(
    ("policy_idle", "absolute"),
    [(3600, 30 * 24 * 3600), (20 * 24 * 3600, 30 * 24 * 3600)],
    ids=["policy-shorter-than-configured", "policy-longer-than-configured"],
)
def test_the_portal_lists_exactly_the_sessions_the_policy_accepts(
    app_with_policy: Flask, clock: FrozenClock, policy_idle: int, absolute: int
) -> None:
    configured = app_with_policy.extensions["idp"].settings
    assert policy_idle != configured.session_idle_ttl
    set_policy(app_with_policy, session_idle_ttl=policy_idle, session_absolute_ttl=absolute)
    user = create_user(app_with_policy)
    idle = timedelta(seconds=policy_idle)
    browsers = {"outside": app_with_policy.test_client(), "inside": app_with_policy.test_client()}
    start_session(browsers["outside"], user)
    clock.advance(SECOND)
    start_session(browsers["inside"], user)
    # Now "inside" was last used just inside the policy's idle lifetime, "outside" just outside.
    clock.advance(idle - SECOND)
    current = app_with_policy.test_client()
    start_session(current, user)
    page = current.get("/account/sessions")
    assert page.status_code == 200
    listed = {
        row.sid
        for row in rows(app_with_policy, BrowserSession)
        if f'data-sid="{row.sid}"' in page.text
    }
    cookies = {name: cookie_of(browser) for name, browser in browsers.items()}
    sids = {name: row_of(app_with_policy, cookie).sid for name, cookie in cookies.items()}
    assert sids["inside"] in listed
    assert sids["outside"] not in listed
    # Exactly the accepted ones: each listed session opens the portal, the other one does not.
    assert browser_with(app_with_policy, cookies["inside"]).get("/account").status_code == 200
    refused = browser_with(app_with_policy, cookies["outside"]).get("/account")
    assert path_of(refused).startswith("/login")
    assert len(listed) == 2  # "inside" and the current session


@pytest.fixture
def policy_app(app: Flask) -> Iterator[Flask]:
    _drop_policy_cache(app)
    yield app
    _drop_policy_cache(app)


def test_a_session_seen_every_day_is_not_ended_as_idle(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """OWASP ASVS 3.3.2: the idle lifetime counts from the last request, a page that commits
    nothing included: a user on the account page every day stays signed in past 14 days (the
    absolute lifetime, 30 days, still ends the session)."""
    browser = storage_app.test_client()
    start_session(browser, create_user(storage_app))
    for day in range(1, 16):
        clock.advance(timedelta(days=1))
        page = browser.get("/account/sessions")
        assert page.status_code == 200, f"signed out on day {day} of daily use"
    [row] = rows(storage_app, BrowserSession)
    assert row.last_seen_at == clock.now()


def test_two_sign_ins_racing_in_one_browser_each_get_a_session(storage_app: Flask) -> None:
    """The same user signing in again continues the session's sid (idp.services.sessions
    ``_replaced``); of two sign-ins that both found the same session (a double submit), the
    second finds it replaced already and starts one of its own, instead of a second row with
    the sid the first took (unique: a server error)."""
    from sqlalchemy.orm.attributes import set_committed_value

    from idp.composition import services
    from idp.services.audit import RequestContext

    user = create_user(storage_app)
    with storage_app.app_context():
        sessions = services().sessions
        first = sessions.create(user.id, ["pwd"], RequestContext(), utcnow())
        db.session.commit()
        stale = db.session.get(BrowserSession, first.session.id_hash)
        assert stale is not None
        sid = stale.sid
        winner = sessions.create(user.id, ["pwd"], RequestContext(), utcnow(), previous=stale)
        db.session.commit()
        # The second request loaded it before the first committed: it holds the session as it
        # was (the values as read, not changes of its own).
        set_committed_value(stale, "sid", sid)
        set_committed_value(stale, "revoked_at", None)
        second = sessions.create(user.id, ["pwd"], RequestContext(), utcnow(), previous=stale)
        db.session.commit()
        assert winner.session.sid == sid
        assert second.session.sid != sid

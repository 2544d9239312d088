"""Self-service sign-up: off by default; email first, proven by a one-time link
(the GET spends nothing, the POST spends it once), no enumeration (the same answer for known and
new addresses; the owner of a known one gets a notice instead), then a passkey (or a password
where the policy allows one) and the new user is signed in. SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select, update

from idp.extensions import db
from idp.models import AuditEvent, OutboxMessage, Passkey, SignupLink, User
from idp.models.base import utcnow
from idp.services.audit import RequestContext
from idp.services.rate_limits import window_end
from idp.services.signup import MAX_MESSAGES_PER_ADDRESS
from tests.conftest import _empty_tables
from tests.support.admin import passkey_browser
from tests.support.apps import app_on
from tests.support.authenticator import SoftAuthenticator
from tests.support.clock import FrozenClock, app_clock
from tests.support.factories import change as change_rows
from tests.support.factories import create_user
from tests.support.flow import csrf_token
from tests.support.passkey_flow import PasskeyPages

LINK = re.compile(r"http://localhost(/signup/confirm/[A-Za-z0-9_-]+)")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def _signup_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    instance = tmp_path_factory.mktemp(f"signup-{request.param}")
    with app_on(request.param, instance, signup_enabled=True) as flask_app:
        yield flask_app


@pytest.fixture
def signup_app(_signup_app: Flask) -> Iterator[Flask]:
    yield _signup_app
    _empty_tables(_signup_app)


def ask(browser: FlaskClient, email: str) -> tuple[int, str]:
    page = browser.get("/signup")
    assert page.status_code == 200
    response = browser.post("/signup", data={"csrf_token": csrf_token(page.text), "email": email})
    return response.status_code, response.text


def mailed_link(app: Flask, email: str) -> str:
    with app.app_context():
        bodies = db.session.scalars(
            select(OutboxMessage.body).where(
                OutboxMessage.recipient == email, OutboxMessage.kind == "signup_link"
            ).order_by(OutboxMessage.id)
        ).all()  # fmt: skip
    assert bodies, f"no sign-up link was sent to {email}"
    match = LINK.search(bodies[-1])
    assert match, bodies[-1]
    return match.group(1)


def confirm(browser: FlaskClient, path: str, name: str = "Ada", **extra: str) -> tuple[int, str]:
    page = browser.get(path)
    if page.status_code != 200:
        return page.status_code, ""
    form = {"csrf_token": csrf_token(page.text), "name": name, **extra}
    response = browser.post(path, data=form)
    return response.status_code, response.headers.get("Location", "")


# -- off by default -------------------------------------------------------------------------------
def test_sign_up_is_off_by_default(app: Flask, client: FlaskClient) -> None:
    page = client.get("/signup")
    assert page.status_code == 404
    assert "does not offer sign-up" in page.text
    assert client.post("/signup", data={"email": "a@example.com"}).status_code in (400, 404)
    assert client.get("/signup/confirm/anything").status_code == 404
    with app.app_context():
        assert db.session.scalars(select(OutboxMessage)).all() == []


# -- the whole way --------------------------------------------------------------------------------
def test_sign_up_proves_the_email_then_a_passkey_signs_the_user_in(signup_app: Flask) -> None:
    browser = signup_app.test_client()
    status, text = ask(browser, " Ada@Example.com ")
    assert status == 200
    assert "Check your email" in text
    with signup_app.app_context():
        assert db.session.scalars(select(User)).all() == []  # nothing before the proof
    path = mailed_link(signup_app, "ada@example.com")
    for _ in range(3):  # a mail scanner's prefetch spends nothing
        assert browser.get(path).status_code == 200
    assert confirm(browser, path, name="Ada Lovelace") == (302, "/signup/passkey")
    assert browser.get("/account").headers["Location"] == "/account/recover"
    authenticator = SoftAuthenticator()
    assert PasskeyPages(browser).add_passkey(authenticator).status_code == 201
    assert browser.get("/account").status_code == 200
    with signup_app.app_context():
        user = db.session.scalars(select(User)).one()
        assert (user.email, user.name, user.email_verified, user.is_admin) == (
            "ada@example.com", "Ada Lovelace", True, False
        )  # fmt: skip
        kinds = db.session.execute(
            select(AuditEvent.kind, AuditEvent.outcome)
            .where(AuditEvent.kind.startswith("signup."))
            .order_by(AuditEvent.id)
        ).all()
        assert [tuple(k) for k in kinds] == [
            ("signup.requested", "success"), ("signup.completed", "success")
        ]  # fmt: skip
    assert PasskeyPages(signup_app.test_client()).sign_in_with_passkey(
        authenticator
    ).status_code == 200  # fmt: skip


def test_the_same_answer_for_a_known_address_and_its_owner_is_told(signup_app: Flask) -> None:
    """No enumeration: the page cannot tell the two apart; the owner gets a notice, no link."""
    create_user(signup_app, email="known@example.com")
    known = ask(signup_app.test_client(), "known@example.com")
    new = ask(signup_app.test_client(), "new@example.com")
    assert known[0] == new[0] == 200

    def strip(text: str, email: str) -> str:
        text = re.sub(r'content="[^"]+"|value="[^"]+"|nonce="[^"]+"', "", text)
        return text.replace(email, "EMAIL")

    assert strip(known[1], "known@example.com") == strip(new[1], "new@example.com")
    with signup_app.app_context():
        mail = db.session.execute(
            select(OutboxMessage.recipient, OutboxMessage.kind).order_by(OutboxMessage.id)
        ).all()
        assert [tuple(m) for m in mail] == [
            ("known@example.com", "signup_existing"), ("new@example.com", "signup_link")
        ]  # fmt: skip
        notice = db.session.scalars(
            select(OutboxMessage.body).where(OutboxMessage.kind == "signup_existing")
        ).one()
        assert "already have one" in notice
        assert "/signup/confirm/" not in notice
        # Both stored a link, the same work for both (a known address's secret is never
        # mailed, and ``complete_signup`` would refuse it): only the new address was sent one.
        stored = db.session.scalars(select(SignupLink.email).order_by(SignupLink.email)).all()
        assert stored == ["known@example.com", "new@example.com"]


def test_a_sign_up_link_works_once(signup_app: Flask) -> None:
    ask(signup_app.test_client(), "ada@example.com")
    path = mailed_link(signup_app, "ada@example.com")
    second = signup_app.test_client()
    page_two = second.get(path).text
    assert confirm(signup_app.test_client(), path)[0] == 302
    assert confirm(signup_app.test_client(), path) == (400, "")
    reused = second.post(path, data={"csrf_token": csrf_token(page_two), "name": "Eve"})
    assert reused.status_code == 400
    with signup_app.app_context():
        assert db.session.scalars(select(User.name)).all() == ["Ada"]


def test_an_expired_sign_up_link_is_refused(signup_app: Flask) -> None:
    ask(signup_app.test_client(), "ada@example.com")
    path = mailed_link(signup_app, "ada@example.com")
    with signup_app.app_context():
        db.session.execute(update(SignupLink).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert confirm(signup_app.test_client(), path) == (400, "")
    with signup_app.app_context():
        assert db.session.scalars(select(User)).all() == []


@pytest.mark.parametrize("secret", ["nothing", "y" * 300, "A" * 43])
def test_a_made_up_sign_up_link_is_refused(signup_app: Flask, secret: str) -> None:
    browser = signup_app.test_client()
    assert browser.get(f"/signup/confirm/{secret}").status_code == 400
    page = browser.get("/signup")
    posted = browser.post(f"/signup/confirm/{secret}", data={"csrf_token": csrf_token(page.text)})
    assert posted.status_code == 400
    with signup_app.app_context():
        assert db.session.scalars(select(User)).all() == []


def test_a_link_for_an_address_taken_meanwhile_is_refused(signup_app: Flask) -> None:
    ask(signup_app.test_client(), "ada@example.com")
    path = mailed_link(signup_app, "ada@example.com")
    create_user(signup_app, email="ada@example.com")  # an admin created it meanwhile
    assert confirm(signup_app.test_client(), path) == (400, "")
    with signup_app.app_context():
        assert db.session.scalars(select(User.name)).all() == ["Ada Lovelace"]


def test_an_unfinished_sign_up_can_be_finished_by_proving_the_address_again(
    signup_app: Flask,
) -> None:
    """A sign-up that stopped before its passkey is no dead end (and no notice is sent)."""
    ask(signup_app.test_client(), "ada@example.com")
    assert confirm(signup_app.test_client(), mailed_link(signup_app, "ada@example.com"))[0] == 302
    status, _ = ask(signup_app.test_client(), "ada@example.com")
    assert status == 200
    browser = signup_app.test_client()
    assert confirm(browser, mailed_link(signup_app, "ada@example.com"), name="Ada L.")[0] == 302
    assert PasskeyPages(browser).add_passkey(SoftAuthenticator()).status_code == 201
    with signup_app.app_context():
        assert db.session.scalars(select(User.name)).all() == ["Ada L."]
        assert db.session.scalars(
            select(OutboxMessage.kind).where(OutboxMessage.kind == "signup_existing")
        ).all() == []  # fmt: skip
    # Once set up, the address is an existing account like any other.
    ask(signup_app.test_client(), "ada@example.com")
    with signup_app.app_context():
        assert db.session.scalars(
            select(OutboxMessage.kind).where(OutboxMessage.kind == "signup_existing")
        ).all() == ["signup_existing"]  # fmt: skip


def test_an_unfinished_admin_account_is_not_finished_by_sign_up(signup_app: Flask) -> None:
    create_user(signup_app, email="root@example.com", password="", admin=True)
    ask(signup_app.test_client(), "root@example.com")
    with signup_app.app_context():
        kinds = db.session.scalars(select(OutboxMessage.kind)).all()
        assert kinds == ["signup_existing"]
        # A link is stored for every address (the same work), but only a new address is mailed
        # one: no message holds this one's secret.
        bodies = db.session.scalars(select(OutboxMessage.body)).all()
        assert not any("/signup/confirm/" in body for body in bodies)


def test_sign_up_with_a_password_where_allowed(signup_app: Flask) -> None:
    ask(signup_app.test_client(), "ada@example.com")
    browser = signup_app.test_client()
    path = mailed_link(signup_app, "ada@example.com")
    weak = browser.post(path, data={"csrf_token": csrf_token(browser.get(path).text),
                                    "name": "Ada", "password": "123"})  # fmt: skip
    assert weak.status_code == 400  # and the link is not spent:
    assert confirm(browser, path, password="a long enough passphrase") == (302, "/account")
    assert browser.get("/account").status_code == 200
    with signup_app.app_context():
        assert db.session.scalars(select(User)).one().password_hash is not None


def test_mail_to_one_address_is_limited(signup_app: Flask) -> None:
    """Typing someone's address again and again must not flood their mailbox; the answer
    stays the same."""
    create_user(signup_app, email="known@example.com")
    for _ in range(5):
        assert ask(signup_app.test_client(), "new@example.com")[0] == 200
        assert ask(signup_app.test_client(), "known@example.com")[0] == 200
    with signup_app.app_context():
        kinds = db.session.scalars(select(OutboxMessage.kind)).all()
        assert sorted(kinds) == ["signup_existing"] * 3 + ["signup_link"] * 3


@pytest.mark.parametrize("email", ["", "no-at-sign", "@example.com", "a@", "a b@example.com"])
def test_a_malformed_address_is_refused_calmly(signup_app: Flask, email: str) -> None:
    status, text = ask(signup_app.test_client(), email)
    assert status == 400
    assert "Enter an email address" in text
    with signup_app.app_context():
        assert db.session.scalars(select(OutboxMessage)).all() == []


@pytest.fixture
def passwordless_signup_app(tmp_path: Path) -> Iterator[Flask]:
    with app_on("sqlite", tmp_path, signup_enabled=True, passwords_allowed=False) as flask_app:
        yield flask_app


def test_passwords_off_sign_up_offers_no_password_and_ignores_one(
    passwordless_signup_app: Flask,
) -> None:
    app = passwordless_signup_app
    ask(app.test_client(), "ada@example.com")
    path = mailed_link(app, "ada@example.com")
    browser = app.test_client()
    assert 'name="password"' not in browser.get(path).text
    assert confirm(browser, path, password="a long enough passphrase") == (302, "/signup/passkey")
    with app.app_context():
        assert db.session.scalars(select(User)).one().password_hash is None


def test_two_links_to_one_address_spent_at_once_make_one_account(signup_app: Flask) -> None:
    """Real concurrent transactions: the first creates the account and holds its transaction
    open; the second's insert waits on the unique email, then finds the (unfinished) account
    instead of failing with a database error."""
    from idp.services.notifications import Notifier
    from idp.services.signup import Joining, NewAccount

    ask(signup_app.test_client(), "ada@example.com")
    first = mailed_link(signup_app, "ada@example.com").rsplit("/", 1)[1]
    ask(signup_app.test_client(), "ada@example.com")
    second = mailed_link(signup_app, "ada@example.com").rsplit("/", 1)[1]
    assert first != second
    holding, outcome = threading.Event(), {}

    def complete(secret: str, hold: bool) -> None:
        with signup_app.app_context():
            try:
                joining = Joining(
                    db.session(), signup_app.extensions["idp"].passwords, Notifier(db.session())
                )
                user = joining.complete_signup(
                    secret, NewAccount(name=secret[:4]), RequestContext(), utcnow()
                )
                if hold:
                    holding.set()
                    threading.Event().wait(0.5)  # the other transaction starts meanwhile
                db.session.commit()
                outcome[secret] = user.id if user else None
            finally:
                holding.set()

    one = threading.Thread(target=complete, args=(first, True))
    one.start()
    holding.wait(10)
    two = threading.Thread(target=complete, args=(second, False))
    two.start()
    one.join(30)
    two.join(30)
    with signup_app.app_context():
        users = db.session.scalars(select(User)).all()
        assert len(users) == 1
        assert outcome == {first: users[0].id, second: users[0].id}


@pytest.fixture
def clock(signup_app: Flask) -> Iterator[FrozenClock]:
    """The time the sign-up views decide with, frozen a minute into a fixed hour window."""
    frozen = FrozenClock(window_end(utcnow(), timedelta(hours=1)) + timedelta(minutes=1))
    with app_clock(signup_app, frozen):
        yield frozen


def test_sign_up_requests_per_client_address_are_limited(
    signup_app: Flask, clock: FrozenClock
) -> None:
    """One address typing many strangers' emails gets 10 mails an hour, then a calm 429; another
    address is unaffected. Ten parallel requests past the budget send nothing more."""
    crowd = from_address(signup_app, "198.51.100.7")
    for n in range(10):
        assert ask(crowd, f"stranger{n}@example.com")[0] == 200

    def one_more(n: int, codes: list[int]) -> None:
        codes.append(ask(from_address(signup_app, "198.51.100.7"), f"late{n}@example.com")[0])

    codes: list[int] = []
    threads = [threading.Thread(target=one_more, args=(n, codes)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [429] * 10
    with signup_app.app_context():
        late = db.session.scalars(
            select(OutboxMessage).where(OutboxMessage.recipient.like("late%"))
        ).all()
        assert late == []
    assert ask(from_address(signup_app, "203.0.113.9"), "someone@example.com")[0] == 200


def test_sign_up_requests_from_one_ipv6_64_share_one_budget(
    signup_app: Flask, clock: FrozenClock
) -> None:
    """One host on IPv6 holds a /64 and can send each request from another of its 2**64
    addresses (RFC 4291 2.5.1): counted per address, it got 10 mails an hour from each. The /64
    shares one budget, as every per-address budget does; another /64 keeps its own."""
    for n in range(10):
        address = f"2001:db8:1:2::{n + 1:x}"
        assert ask(from_address(signup_app, address), f"stranger{n}@example.com")[0] == 200
    assert ask(from_address(signup_app, "2001:db8:1:2::ff"), "one-more@example.com")[0] == 429
    assert ask(from_address(signup_app, "2001:db8:1:3::1"), "elsewhere@example.com")[0] == 200


def from_address(app: Flask, address: str) -> FlaskClient:
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = address
    return browser


def test_the_login_page_offers_sign_up_only_when_it_is_open(
    signup_app: Flask, client: FlaskClient
) -> None:
    assert 'href="/signup"' in signup_app.test_client().get("/login").text
    assert "/signup" not in client.get("/login").text


def test_refused_sign_ups_do_not_extend_the_client_address_window(
    signup_app: Flask, clock: FrozenClock
) -> None:
    """docs/security.md: the per-address budget counts in a fixed hour; a refusal counts nothing
    and moves nothing, so one request every few minutes cannot keep the address closed."""
    crowd = "198.51.100.20"
    for n in range(10):
        assert ask(from_address(signup_app, crowd), f"first{n}@example.com")[0] == 200
    end = window_end(clock.now(), timedelta(hours=1))
    refused = 0
    while clock.now() + timedelta(minutes=5) < end:
        clock.advance(timedelta(minutes=5))
        assert ask(from_address(signup_app, crowd), f"refused{refused}@example.com")[0] == 429
        refused += 1
    clock.advance(end - clock.now())
    assert ask(from_address(signup_app, crowd), "next-hour@example.com")[0] == 200


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_refused_mails_do_not_extend_the_recipient_window(
    signup_app: Flask, clock: FrozenClock, existing: bool
) -> None:
    """At most MAX_MESSAGES_PER_ADDRESS mails to one address in each fixed hour (links,
    or notices to an existing account); the requests refused meanwhile do not move the hour."""
    email = "target@example.com"
    if existing:
        create_user(signup_app, email=email)
    kind = "signup_existing" if existing else "signup_link"

    def mails() -> int:
        with signup_app.app_context():
            return len(db.session.scalars(select(OutboxMessage).where(
                OutboxMessage.recipient == email, OutboxMessage.kind == kind)).all())  # fmt: skip

    def ask_from(n: int) -> None:  # a new client address each time: only the recipient's cap
        assert ask(from_address(signup_app, f"203.0.113.{n + 1}"), email)[0] == 200

    for n in range(MAX_MESSAGES_PER_ADDRESS + 2):
        ask_from(n)
    assert mails() == MAX_MESSAGES_PER_ADDRESS
    end = window_end(clock.now(), timedelta(hours=1))
    n = 10
    while clock.now() + timedelta(minutes=10) < end:
        clock.advance(timedelta(minutes=10))
        ask_from(n)
        n += 1
    assert mails() == MAX_MESSAGES_PER_ADDRESS
    clock.advance(end - clock.now())
    ask_from(n)
    assert mails() == MAX_MESSAGES_PER_ADDRESS + 1


def test_sign_up_does_not_take_over_an_account_that_lost_its_passkeys(signup_app: Flask) -> None:
    """docs/admins.md: "an existing account's owner gets a notice that someone tried to sign up
    instead". An account that was set up and then lost every way in (its only passkey revoked
    after a lost phone) is no unfinished sign-up: proving the address again gets the notice, not
    a link into the account; its owner recovers with a backup code or an admin's login link."""
    ada_browser = signup_app.test_client()
    ask(ada_browser, "ada@example.com")
    assert confirm(ada_browser, mailed_link(signup_app, "ada@example.com"), name="Ada")[0] == 302
    assert PasskeyPages(ada_browser).add_passkey(SoftAuthenticator()).status_code == 201
    with signup_app.app_context():
        ada_id = db.session.scalars(select(User.id)).one()
        credential_id = db.session.scalars(select(Passkey.credential_id)).one()
    admin = passkey_browser(signup_app, "root@example.com")
    revoked = admin.post(f"/admin/users/{ada_id}/passkeys/revoke",
                         {"credential_id": credential_id, "confirm": "yes"})  # fmt: skip
    assert revoked.status_code == 303
    admin.post(f"/admin/users/{ada_id}/backup-codes/void")  # not even her backup codes are left
    assert ask(signup_app.test_client(), "ada@example.com")[0] == 200
    with signup_app.app_context():
        kinds = db.session.scalars(
            select(OutboxMessage.kind)
            .where(OutboxMessage.recipient == "ada@example.com",
                   OutboxMessage.kind.startswith("signup"))
            .order_by(OutboxMessage.id)
        ).all()  # fmt: skip
    assert kinds[-1] == "signup_existing"


def test_made_up_joining_links_are_audited_once_per_address_and_window(
    signup_app: Flask, clock: FrozenClock
) -> None:
    """A POST to a sign-up, invite or login link that was never issued names no account: anyone can
    send them as fast as they like (one CSRF token serves many). Each is refused and counted
    (``idp_anonymous_rejections_total``); one audit row per address, kind and window says so,
    not a row each, so nobody fills the audit log (docs/operations.md, "Storage budgets")."""
    browser = signup_app.test_client()
    token = csrf_token(browser.get("/signup").text)
    for n in range(12):
        for path in (f"/signup/confirm/made-up-{n}", f"/invite/made-up-{n}",
                     f"/login/link/made-up-{n}"):  # fmt: skip
            assert browser.post(path, data={"csrf_token": token, "name": "Eve"}).status_code == 400
    with signup_app.app_context():
        refused = db.session.execute(
            select(AuditEvent.kind, AuditEvent.details).where(AuditEvent.outcome == "failure")
        ).all()
        assert db.session.scalars(select(User)).all() == []
    kinds = sorted(kind for kind, _details in refused)
    assert kinds == ["invite.accepted", "login.link", "signup.completed"]
    assert all(details["aggregated"] for _kind, details in refused)


@pytest.mark.usefixtures("node_caches_held")  # statements compared: no cache expiry between
def test_a_sign_up_request_does_the_same_work_whatever_the_address_has(signup_app: Flask) -> None:
    """Not only the page: the statements a sign-up request runs, in their order, are the same for
    a new address and for one whose account has a password, only a passkey, is disabled or is
    an admin's (OWASP ASVS 4.0 2.2.1; Forgot Password Cheat Sheet, "return a consistent message
    ... and ensure that the same amount of time is taken"). A new address stored a link where a
    known one stored nothing, and an account's ways in were read one statement at a time until
    one was found: on PostgreSQL each is a round trip, which said whether the address has an
    account and whether it has a password. Counted, not timed."""
    create_user(signup_app, email="password@example.com")
    create_user(signup_app, email="admin@example.com", admin=True)
    disabled = create_user(signup_app, email="disabled@example.com")
    change_rows(signup_app, update(User).where(User.id == disabled.id).values(disabled_at=utcnow()))
    keyholder = passkey_browser(signup_app, "passkey@example.com", admin=False)
    change_rows(signup_app, update(User).where(User.id == keyholder.user.id)
                .values(password_hash=None))  # fmt: skip
    with signup_app.app_context():
        engine = db.engine
    work: dict[str, tuple[int, tuple[str, ...]]] = {}
    for email in ("new@example.com", "password@example.com", "passkey@example.com",
                  "disabled@example.com", "admin@example.com"):  # fmt: skip
        browser = signup_app.test_client()
        form = {"csrf_token": csrf_token(browser.get("/signup").text), "email": email}
        seen: list[str] = []

        def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            seen.append(re.sub(r"\s+", " ", statement))  # noqa: B023 (used before the loop moves on)

        event.listen(engine, "before_cursor_execute", record)
        try:
            status = browser.post("/signup", data=form).status_code
        finally:
            event.remove(engine, "before_cursor_execute", record)
        work[email] = (status, tuple(seen))
    assert len(set(work.values())) == 1, "\n".join(f"{e}: {w}" for e, w in work.items())
    assert work["new@example.com"][0] == 200

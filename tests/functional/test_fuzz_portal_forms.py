"""Property-based fuzzing of the portal (idp/account/), signed in with a fresh step-up (hypothesis):
every form (passkey rename and removal, password, authenticator app, backup codes, sessions,
connected apps, name, email change, the address's confirmation) and every page that reads its
query, with the fields missing, repeated, oversized, in bytes that are no UTF-8, with NUL, CR LF,
odd Unicode or numbers, and ids that are the user's own, another user's or nobody's.

Whatever is sent: never a 5xx; nothing comes back unescaped or in a header; a redirect goes only to
idp itself; another user's passkey, session, grant or link is never changed by an id of theirs
(their rows are read before and after); without the form's CSRF token, or with a wrong one,
nothing changes; and whatever sequence of removals the user makes, they keep a way in
(docs/architecture.md, "Invariants": never the last way in).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import pyotp
import pytest
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from idp.extensions import db
from idp.models import AttemptCounter, Passkey, TotpCredential, User
from idp.models.base import utcnow
from idp.services.sign_in_policy import change_policy, reset_policy
from tests.support.factories import change, create_user
from tests.support.fuzz_rig import TOTP_SECRET, TotpUser, totp_user
from tests.support.fuzzing import (
    BODY_KINDS,
    Tally,
    csrf_refused,
    forged,
    header_value,
    mutations,
    rows_of,
    run_given,
    segment,
    send,
    values,
)
from tests.support.signed_in_rig import (
    Scene,
    add_passkey,
    owned_rows,
    passkey_ids,
    scene_on,
    session_ids,
)

#: Examples on each database: fewer on PostgreSQL, whose round trips cost more, to stay in the
#: time of the other fuzzing files.
EXAMPLES_PER_ROUTE = {"sqlite": 12, "postgresql": 4}
CSRF_EXAMPLES = {"sqlite": 40, "postgresql": 12}
SEQUENCE_EXAMPLES = {"sqlite": 50, "postgresql": 40}
#: The ids a fuzzed request may name, resolved at each example.
OWN, VICTIM, UNKNOWN = "@own", "@victim", "@unknown"
IDS = (OWN, VICTIM, UNKNOWN)
GOOD_PASSWORD = "a long enough new password 7"

#: Every route of the portal that reads what it is sent: its methods, its path (``{passkey}``,
#: ``{sid}``, ``{client}``: an id), and the fields its page sends, with a value that works.
ROUTES: dict[str, tuple[tuple[str, ...], str, dict[str, str]]] = {
    "home": (("GET",), "/account", {"resume": "add-passkey"}),
    "activity": (("GET",), "/account/activity", {"cursor": "eyJhZnRlciI6MTAwMDAwMH0"}),
    "sessions": (("GET",), "/account/sessions", {}),
    "apps": (("GET",), "/account/apps", {}),
    "rename": (("POST",), "/account/passkeys/{passkey}/rename", {"name": "Work laptop"}),
    "remove passkey": (("GET", "POST"), "/account/passkeys/{passkey}/remove", {"confirm": "yes"}),
    "password": (("POST",), "/account/password", {"new_password": GOOD_PASSWORD}),
    "remove password": (("GET", "POST"), "/account/password/remove", {"confirm": "yes"}),
    # Removal first, while the set-up app is there; then enrolments (each removes it first).
    "remove totp": (("GET", "POST"), "/account/totp/remove", {"confirm": "yes"}),
    "totp": (("GET", "POST"), "/account/totp", {"code": "123456"}),
    "totp cancel": (("POST",), "/account/totp/cancel", {}),
    "backup codes": (("GET", "POST"), "/account/backup-codes", {"confirm": "yes"}),
    "revoke session": (("GET", "POST"), "/account/sessions/{sid}/revoke", {"confirm": "yes"}),
    "revoke others": (("POST",), "/account/sessions/revoke-others", {"then": "home"}),
    "disconnect": (("GET", "POST"), "/account/apps/{client}/revoke", {"confirm": "yes"}),
    "profile": (("GET", "POST"), "/account/profile", {"name": "Grace Hopper"}),
    "email": (("POST",), "/account/email", {"email": "grace.new@example.com"}),
    "email cancel": (("POST",), "/account/email/cancel", {}),
    "email confirm": (("GET", "POST"), "/account/email/confirm", {"token": "t"}),
    # The user's own address, unconfirmed (``unconfirmed``): its confirmation link mailed.
    "email verify": (("POST",), "/account/email/verify", {}),
    "passkey options": (("POST",), "/account/passkeys/options", {"mediation": "conditional"}),
    "passkey register": (("POST",), "/account/passkeys",
                         {"challenge_id": "c", "credential": "{}", "name": "n"}),
}  # fmt: skip
#: The routes whose path names one of the user's objects. An app to disconnect is named by its
#: client id, which the victim's grant shares: every disconnection is the IDOR check already.
FORGEABLE = tuple(r for r, (_, path, _) in ROUTES.items() if "{passkey}" in path or "{sid}" in path)
#: Where a fuzzed request must have changed the user's rows at least once (deep paths reached).
MUST_CHANGE = ("rename", "remove passkey", "password", "remove password", "totp", "remove totp",
               "backup codes", "revoke session", "revoke others", "disconnect", "profile", "email",
               "email cancel", "email verify")  # fmt: skip


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def scene(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scene]:
    with scene_on(request.param, tmp_path_factory.mktemp("fuzz-portal")) as built:
        yield built


@pytest.fixture(scope="module")
def actor(scene: Scene) -> TotpUser:
    """The user who signs in and sends everything: a password, an authenticator app, backup
    codes, two passkeys and a grant of a client the victim uses too."""
    account = totp_user(scene.app, "grace@example.com")
    for number in (1, 2):
        add_passkey(scene.app, account.user.id, f"grace-passkey-{number}")
    scene.rig.tokens("client_secret_basic", scene.cookie(account.user.id))
    return account


def resolve(scene: Scene, actor_id: str, name: str, kind: str) -> str:
    """The id a name of ``IDS`` stands for (a fuzzed value stands for itself)."""
    own = {
        "passkey": lambda: (passkey_ids(scene.app, actor_id) or ["none"])[0],
        "sid": lambda: (session_ids(scene.app, actor_id) or ["none"])[0],
        "client": lambda: scene.victim_client,  # the same client: only the user differs
    }
    victims = {"passkey": scene.victim_passkey, "sid": scene.victim_sid,
               "client": scene.victim_client}  # fmt: skip
    if name == OWN:
        return own[kind]()
    if name == VICTIM:
        return victims[kind]
    return "no-such-id" if name == UNKNOWN else name


#: Numbers for the passkeys and sequence users made as the tests go, unique in the module.
NUMBERS = itertools.count(3)


def replenish(scene: Scene, actor_id: str) -> None:
    """Two passkeys and a password for the acting user before each example, so that removals
    keep reaching past their refusal (the last way in has a test of its own, below)."""
    while len(passkey_ids(scene.app, actor_id)) < 2:
        add_passkey(scene.app, actor_id, f"grace-passkey-{next(NUMBERS)}")
    with scene.app.app_context():
        user = db.session.get(User, actor_id)
        assert user is not None
        if user.password_hash is None:
            user.password_hash = scene.app.extensions["idp"].passwords.hash(GOOD_PASSWORD)
            db.session.commit()
        db.session.remove()


def unconfirmed(scene: Scene, actor_id: str) -> None:
    """The user's address unconfirmed (an invite whose link was handed out made the account),
    with the hour's email changes not yet spent: what the confirmation form acts on, each
    example afresh."""
    change(scene.app, update(User).where(User.id == actor_id).values(email_verified=False))
    spent = AttemptCounter.key.like("win:email-change:%:" + actor_id)
    change(scene.app, delete(AttemptCounter).where(spent))


def totp_enrolment(
    scene: Scene, actor_id: str, cookie: str, pairs: list[tuple[str, str]]
) -> tuple[str, list[tuple[str, str]]]:
    """An enrolment of an authenticator app under way, as the set-up page starts it: the app
    removed first, the page's key sealed in this browser's cookie, and its current code in place
    of the page's example code."""
    change(scene.app, delete(TotpCredential).where(TotpCredential.user_id == actor_id))
    page = scene.rig.http().get("/account/totp", headers={"Cookie": cookie})
    found = TOTP_SECRET.search(page.text)
    assert found, page.text[:300]
    sealed = [c.split(";", 1)[0] for c in page.headers.getlist("Set-Cookie")]
    code = pyotp.TOTP(found.group(1)).now()
    return "; ".join([cookie, *sealed]), [(n, code if v == "123456" else v) for n, v in pairs]


def fields(route: str) -> st.SearchStrategy[list[tuple[str, str]]]:
    """The route's fields, each its working value, a fuzzed one, or missing; then fuzzed pairs
    (a name perhaps again: repeated)."""
    named = ROUTES[route][2]
    one = [
        st.one_of(st.just([(n, v)]), st.just([]), values().map(lambda x, n=n: [(n, x)]))
        for n, v in named.items()
    ]
    return st.tuples(*one, mutations((*named, "confirm", "csrf_token"))).map(
        lambda parts: [pair for part in parts for pair in part]
    )


@st.composite
def portal_requests(
    draw: st.DrawFn, route: str
) -> tuple[str, str, list[tuple[str, str]], str, str]:
    """What is sent to ``route``: in two examples of three as its page sends it (the working values,
    the user's own ids, and first the same with another user's: ``portal_example``) with fuzzed
    pairs after them, so that they reach past the first checks; in the others, every part
    fuzzed, the ids the user's, another user's, nobody's or fuzzed."""
    methods, _, named = ROUTES[route]
    json_body = route.startswith("passkey ")
    if draw(st.integers(0, 2)) < 2:  # the first example (0) too: each route reaches deep
        pairs = [*named.items(), *draw(mutations(("name", "confirm", "then", "page")))]
        return route, methods[-1], pairs, "json" if json_body else "form", OWN
    kind = draw(st.sampled_from(("json",) if json_body else BODY_KINDS))
    return route, draw(st.sampled_from(methods)), draw(fields(route)), kind, draw(forged(IDS))


def path_of(scene: Scene, actor_id: str, route: str, name: str) -> str:
    path = ROUTES[route][1]
    for kind in ("passkey", "sid", "client"):
        if "{" + kind + "}" in path:
            path = path.replace("{" + kind + "}", segment(resolve(scene, actor_id, name, kind)))
    return path


# -- every form and page: no 5xx, nothing reflected, no foreign redirect, no IDOR -----------------
def portal_example(
    scene: Scene,
    actor: TotpUser,
    tally: Tally,
    request: tuple[str, str, list[tuple[str, str]], str, str],
) -> None:
    route, http_method, pairs, kind, name = request
    actor_id = actor.user.id
    replenish(scene, actor_id)
    cookie = scene.cookie(actor_id)
    scene.cookie(actor_id)  # another session of theirs, which "@own" may name
    if route == "totp":
        cookie, pairs = totp_enrolment(scene, actor_id, cookie, pairs)
    if route == "email verify":
        unconfirmed(scene, actor_id)
    if name == OWN and route in FORGEABLE:
        # Its twin first, the victim's id in place of the user's own (IDOR): nothing of theirs
        # changes, as every example checks below.
        forged_path = path_of(scene, actor_id, route, VICTIM)
        send(scene.rig.http(), forged_path, pairs, http_method, kind, cookie)
        assert scene.victim_rows() == scene.victim_before, (route, forged_path, pairs)
        tally.add(f"{route} forged")
    before = owned_rows(scene.app, actor_id)
    path = path_of(scene, actor_id, route, name)
    response = send(scene.rig.http(), path, pairs, http_method, kind, cookie)
    tally.add(f"status {response.status_code}")
    tally.add(f"{route} {response.status_code}")
    if owned_rows(scene.app, actor_id) != before:
        tally.add(f"{route} changed")
    # IDOR: the victim's passkey, sessions, grant and link are as they were.
    assert scene.victim_rows() == scene.victim_before, (route, path, pairs)


def test_portal_forms_and_pages(scene: Scene, actor: TotpUser) -> None:
    tally = Tally()
    for route in ROUTES:  # each route its share of the examples
        strategies = {"request": portal_requests(route)}
        run_given(
            portal_example, EXAMPLES_PER_ROUTE[scene.database], strategies, scene, actor, tally
        )
    # Every route that takes an id was sent another user's, with its working fields.
    for route in FORGEABLE:
        assert tally[f"{route} forged"] > 0, route
    # Deep paths: the forms changed the account, not merely refused.
    for route in MUST_CHANGE:
        assert tally[f"{route} changed"] > 0, (
            route,
            " ".join(f"{k}={v}" for k, v in sorted(tally.counts.items())),
        )
    assert tally["status 200"] > 0, tally.counts
    assert tally["status 302"] > 0, tally.counts


# -- CSRF: a missing or wrong token is refused and changes nothing --------------------------------
#: Forms that change the account at once when sent with their token (the others need a state the
#: fuzzing before may have used up: a grant, the hour's email changes).
TAKEN_WITH_THE_TOKEN = {"rename", "remove passkey", "password", "remove password", "backup codes",
                        "revoke session", "revoke others"}  # fmt: skip
POST_ROUTES = sorted(route for route, (methods, _, _) in ROUTES.items() if "POST" in methods)


@st.composite
def csrf_attempts(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str]]]:
    """A POST route, a way to get the token wrong, and the pairs that carry it: no token, a
    fuzzed one, another browser's real token, or a wrong one before the right one (a form reads
    the first of a repeated field)."""
    route = draw(st.sampled_from(POST_ROUTES))
    how = draw(st.sampled_from(("missing", "fuzzed", "other browser", "wrong first", "header")))
    return route, how, draw(st.lists(st.tuples(st.just("csrf_token"), values()), max_size=2))


def csrf_example(
    scene: Scene,
    actor: TotpUser,
    tally: Tally,
    attempt: tuple[str, str, list[tuple[str, str]]],
) -> None:
    route, how, fuzzed = attempt
    actor_id = actor.user.id
    replenish(scene, actor_id)
    browser, token = scene.csrf_browser(actor_id)
    _, other_token = scene.csrf_browser(actor_id)
    tokens = {
        "missing": [],
        "fuzzed": fuzzed or [("csrf_token", "x")],
        "other browser": [("csrf_token", other_token)],
        "wrong first": [*(fuzzed or [("csrf_token", "x")])[:1], ("csrf_token", token)],
        "header": [],
    }[how]
    headers = (
        {"X-CSRFToken": header_value((fuzzed or [("", "x")])[0][1])} if how == "header" else {}
    )
    path = path_of(scene, actor_id, route, OWN)
    pairs = [*ROUTES[route][2].items(), *tokens]
    before = owned_rows(scene.app, actor_id)
    kind = "json" if route.startswith("passkey ") else "form"
    response = send(browser, path, pairs, "POST", kind, headers=headers)
    assert csrf_refused(response), (route, how, response.status_code, response.text[:300])
    assert owned_rows(scene.app, actor_id) == before, (route, how)
    assert scene.victim_rows() == scene.victim_before
    tally.add(f"status {response.status_code}")
    tally.add(route)


def test_portal_forms_refuse_a_missing_or_wrong_csrf_token(scene: Scene, actor: TotpUser) -> None:
    scene.app.config["WTF_CSRF_ENABLED"] = True
    try:
        tally = Tally()
        strategies = {"attempt": csrf_attempts()}
        run_given(csrf_example, CSRF_EXAMPLES[scene.database], strategies, scene, actor, tally)
        assert len(tally.counts) >= len(POST_ROUTES) // 3, tally.counts
        # Not vacuous: with its real token, the same form is taken (and changes the account).
        changed = set()
        for route in POST_ROUTES:
            replenish(scene, actor.user.id)
            browser, token = scene.csrf_browser(actor.user.id)
            before = owned_rows(scene.app, actor.user.id)
            pairs = [*ROUTES[route][2].items()]
            headers = {"X-CSRFToken": token}
            kind = "json" if route.startswith("passkey ") else "form"
            sent = send(browser, path_of(scene, actor.user.id, route, OWN),
                        [*pairs, ("csrf_token", token)], "POST", kind, headers=headers)  # fmt: skip
            assert "This form expired" not in sent.text, route
            if owned_rows(scene.app, actor.user.id) != before:
                changed.add(route)
        assert changed >= TAKEN_WITH_THE_TOKEN, changed
    finally:
        scene.app.config["WTF_CSRF_ENABLED"] = False


# -- the last way in, whatever the sequence of removals -------------------------------------------
REMOVALS = ("passkey 0", "passkey 1", "passkey 2", "password", "totp", "set password")


def user_passkeys(scene: Scene, user_id: str) -> list[tuple[str, bool]]:
    """The user's passkeys: each one's id, and whether it is flagged (signs nobody in)."""
    found = rows_of(scene.app, select(Passkey.credential_id, Passkey.flagged_at)
                    .where(Passkey.user_id == user_id).order_by(Passkey.credential_id))  # fmt: skip
    return [(str(cid), flagged is not None) for cid, flagged in found[0]]


#: The sign-in policies the sequences run under (docs/configuration.md): a password is a way in
#: only where passwords are allowed, and an admin's only where admins may use one.
POLICIES = {
    "default": {},
    "passkeys only": {"passwords_allowed": False},
    "admins keep a passkey": {"admin_passkey_required": True},
}


def has_a_way_in(scene: Scene, user_id: str, policy: str) -> bool:
    """A passkey that signs in (a flagged one does not), or a password the policy lets sign in."""
    (user,) = rows_of(
        scene.app, select(User.password_hash, User.is_admin).where(User.id == user_id)
    )
    password, admin = user[0]
    rules = POLICIES[policy]
    password_signs_in = rules.get("passwords_allowed", True) and not (
        admin and rules.get("admin_passkey_required", False)
    )
    return any(not flagged for _, flagged in user_passkeys(scene, user_id)) or (
        password is not None and bool(password_signs_in)
    )


@contextmanager
def policy_in_force(scene: Scene, policy: str) -> Iterator[None]:
    """The sign-in policy ``policy`` for the duration, then the configured one again."""
    settings, cache = scene.app.extensions["idp"].settings, scene.app.extensions["idp"].policy_cache
    with scene.app.app_context():
        change_policy(db.session(), settings, POLICIES[policy], actor_id=None, context=None,
                      now=utcnow())  # fmt: skip
        db.session.commit()
    cache.invalidate()
    try:
        yield
    finally:
        with scene.app.app_context():
            reset_policy(db.session(), settings, actor_id=None, context=None, now=utcnow())
            db.session.commit()
        cache.invalidate()


#: A user's sign-in methods (each passkey flagged or not; a password or not), and the removals
#: (and the password set again) they then make, in order.
SEQUENCES = {
    "policy": st.sampled_from(sorted(POLICIES)),
    "admin": st.booleans(),
    "passkeys": st.lists(st.booleans(), min_size=0, max_size=3),
    "password": st.booleans(),
    "steps": st.lists(st.sampled_from(REMOVALS), min_size=1, max_size=8),
}


def sequence_example(
    scene: Scene,
    tally: Tally,
    policy: str,
    admin: bool,
    passkeys: list[bool],
    password: bool,
    steps: list[str],
) -> None:
    number = next(NUMBERS)
    email = f"seq-{number}@example.com"
    created = create_user(scene.app, email=email, password=GOOD_PASSWORD, admin=admin)
    if not password:
        change(scene.app, update(User).where(User.id == created.id).values(password_hash=None))
    for index, flagged in enumerate(passkeys):
        add_passkey(scene.app, created.id, f"seq-{number}-{index}", flagged=flagged)
    with policy_in_force(scene, policy):
        if has_a_way_in(scene, created.id, policy):  # else no way in to keep
            remove_in_turn(scene, tally, created.id, policy, steps)


def remove_in_turn(scene: Scene, tally: Tally, user_id: str, policy: str, steps: list[str]) -> None:
    """Each of ``steps`` through the portal, as the user (signed in anew, stepped up); after each,
    the user still has a way in."""
    for step in steps:
        cookie = scene.cookie(user_id)
        ids = [cid for cid, _ in user_passkeys(scene, user_id)]
        if step.startswith("passkey "):
            index = int(step.split()[1])
            if index >= len(ids):
                continue
            path, pairs = f"/account/passkeys/{segment(ids[index])}/remove", [("confirm", "yes")]
        elif step == "set password":
            path, pairs = "/account/password", [("new_password", GOOD_PASSWORD)]
        else:
            path, pairs = f"/account/{step}/remove", [("confirm", "yes")]
        before = owned_rows(scene.app, user_id)
        send(scene.rig.http(), path, pairs, "POST", "form", cookie)
        removed = owned_rows(scene.app, user_id) != before
        tally.add(f"{step} {'done' if removed else 'refused'}")
        tally.add(f"{policy} {step} {'done' if removed else 'refused'}")
        assert has_a_way_in(scene, user_id, policy), (policy, steps, step)


def test_no_sequence_of_removals_leaves_no_way_in(scene: Scene) -> None:
    tally = Tally()
    run_given(sequence_example, SEQUENCE_EXAMPLES[scene.database], SEQUENCES, scene, tally)
    # Both outcomes were reached: removals done, and removals refused to keep the way in.
    for step in ("passkey 0", "password"):
        assert tally[f"{step} done"] > 0, tally.counts
        assert tally[f"{step} refused"] > 0, tally.counts
    # Under each policy, some removal was refused to keep the way in.
    for policy in POLICIES:
        assert any(k.startswith(policy) and k.endswith("refused") for k in tally.counts), policy

"""Property-based fuzzing of the admin console (idp/admin/), signed in as an admin with a passkey
sign-in of the last ten minutes (hypothesis): users (list, create and invite, the user page and
its actions, login links), client apps (create, edit, secret, disable, delete, access and claim
maps, the claims preview), groups (create, rename, members, delete), the audit log's filters and
exports, the sign-in policy and API tokens, with the fields missing, repeated, oversized, in bytes
that are no UTF-8, with NUL, CR LF, odd Unicode or numbers, and ids that are the subject's, another
user's or nobody's.

Whatever is sent: never a 5xx; nothing comes back unescaped or in a header; a redirect goes only to
idp itself; an action on one user's page never changes another user's passkey, session, grant,
link or group membership named by a forged id (their rows are read before and after); and without
the form's CSRF token, or with a wrong one, nothing changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from flask import Flask
from hypothesis import strategies as st
from sqlalchemy import select

from idp.extensions import db
from idp.models import (
    ApiToken,
    Client,
    Grant,
    Group,
    GroupMember,
    LoginLink,
    Passkey,
    PolicyOverride,
    User,
)
from idp.models.base import utcnow
from idp.services.api_tokens import ApiTokenService
from idp.services.groups import GroupService
from idp.services.login_links import LINK_ID_LENGTH, LOGIN, LoginLinkService
from idp.services.sign_in_policy import FIELDS
from tests.support.admin import policy_form
from tests.support.factories import REDIRECT_URI, CreatedUser, create_client, create_user
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
    FUZZ_GROUP,
    Scene,
    add_passkey,
    owned_rows,
    passkey_ids,
    scene_on,
    session_ids,
)

#: Examples on each database: fewer on PostgreSQL, whose round trips cost more, to stay in the
#: time of the other fuzzing files.
EXAMPLES_PER_ROUTE = {"sqlite": 6, "postgresql": 3}
CSRF_EXAMPLES = {"sqlite": 40, "postgresql": 30}
OWN, VICTIM, UNKNOWN = "@own", "@victim", "@unknown"
CLIENT_FORM = (("name", "Fuzzed app"), ("kind", "web"), ("redirect_uris", REDIRECT_URI),
               ("scopes", "openid"), ("scopes", "profile"), ("grant_types", "authorization_code"),
               ("token_endpoint_auth_method", "client_secret_basic"),
               ("id_token_signed_response_alg", "RS256"), ("subject_type", "public"),
               ("version", "{version}"))  # fmt: skip

#: A page's hidden version: a client's number, or the policy's fingerprint (so not
#: tests/support/admin.py's VERSION, which reads a number).
VERSION = re.compile(r'name="version" value="([^"]*)"')
U = "/admin/users/{user}"
C = "/admin/clients/{client}"
G = "/admin/groups/{group}"
#: Every console route that reads what it is sent: its methods, its path, and the fields its page
#: sends with a value that works (``{passkey}``, ``{sid}``, ``{client}``, ``{link}``, ``{email}``:
#: an id, the subject's own, the victim's or nobody's; ``{version}``: read from the page;
#: ``{new}``, ``{fresh}``: an email address, a name no one has yet).
Fields = tuple[tuple[str, str], ...]
ROUTES: dict[str, tuple[tuple[str, ...], str, Fields]] = {
    "overview": (("GET",), "/admin", ()),
    "users": (("GET",), "/admin/users", (("q", "amy"), ("cursor", "eyJhZnRlciI6WyJhIiwiYiJdfQ"))),
    "user new": (("GET", "POST"), "/admin/users/new",
                 (("email", "{new}"), ("name", "New"), ("action", "create"), ("ttl", "900"))),
    "invite new": (("POST",), "/admin/users/new", (("email", "{new}"), ("ttl", "3600"))),
    "user": (("GET",), U, ()),
    "disable": (("POST",), U + "/disable", ()),
    "enable": (("POST",), U + "/enable", ()),
    "promote": (("POST",), U + "/promote", ()),
    "demote": (("POST",), U + "/demote", ()),
    "passkey revoke": (("GET", "POST"), U + "/passkeys/revoke",
                       (("credential_id", "{passkey}"), ("confirm", "yes"))),
    "totp reset": (("POST",), U + "/totp/reset", ()),
    "backup codes void": (("POST",), U + "/backup-codes/void", ()),
    "session revoke": (("POST",), U + "/sessions/revoke", (("sid", "{sid}"),)),
    "sessions revoke": (("POST",), U + "/sessions/revoke-all", ()),
    "consent revoke": (("POST",), U + "/consents/revoke", (("client_id", "{client}"),)),
    "link revoke": (("POST",), U + "/links/revoke", (("link_id", "{link}"),)),
    "login link": (("POST",), U + "/login-link", (("ttl", "900"),)),
    "invite": (("POST",), U + "/invite", (("ttl", "900"),)),
    "delete": (("POST",), U + "/delete", (("confirm", "{email}"),)),
    "clients": (("GET",), "/admin/clients", (("cursor", "eyJhZnRlciI6WyJhIiwiYiJdfQ"),)),
    "client new": (("GET", "POST"), "/admin/clients/new", CLIENT_FORM),
    "client": (("GET",), C, ()),
    "client edit": (("GET", "POST"), C + "/edit", CLIENT_FORM),
    "rotate": (("POST",), C + "/rotate-secret", (("overlap", "3600"),)),
    "client disable": (("POST",), C + "/disable", ()),
    "client enable": (("POST",), C + "/enable", ()),
    "client access": (("GET", "POST"), C + "/access",
                      (("access", "groups"), ("allowed_groups", FUZZ_GROUP),
                       ("claim_maps", f"roles:{FUZZ_GROUP}=fuzzer"), ("version", "{version}"))),
    "claims": (("GET",), C + "/claims", (("email", "{email}"),)),
    "client delete": (("GET", "POST"), C + "/delete", (("confirm", "yes"),)),
    "groups": (("GET", "POST"), "/admin/groups",
               (("name", "{fresh}"), ("display_name", "New"), ("description", "d"))),
    "group": (("GET",), G, (("cursor", "eyJiZWZvcmUiOiJhQGV4YW1wbGUuY29tIn0"),)),
    "group rename": (("POST",), G + "/rename",
                     (("new_name", FUZZ_GROUP), ("display_name", "Renamed"), ("description", "d"))),
    "members add": (("POST",), G + "/members", (("emails", "{email}"),)),
    "members remove": (("POST",), G + "/members/remove", (("email", "{email}"),)),
    "group delete": (("GET", "POST"), G + "/delete", (("confirm_sole", "1"),)),
    "audit": (("GET",), "/admin/audit",
              (("user", "{email}"), ("kind", "admin.*"), ("outcome", "success"),
               ("since", "2020-01-01T00:00"), ("until", "2999-01-01"),
               ("cursor", "eyJhZnRlciI6MX0"))),
    "audit export": (("POST",), "/admin/audit/export.{format}", (("kind", "admin.*"),)),
    # The form as the page shows it: every field with the value in force (``policy_form``).
    "policy": (("GET", "POST"), "/admin/policy",
               (*((f.name, "{policy}") for f in FIELDS), ("version", "{version}"))),
    "policy reset": (("POST",), "/admin/policy/reset", ()),
    "api tokens": (("GET", "POST"), "/admin/api-tokens",
                   (("name", "{fresh}"), ("scopes", "users:read"), ("expires_in", "30"))),
    "api token revoke": (("GET", "POST"), "/admin/api-tokens/{token}/revoke", ()),
}  # fmt: skip
#: The placeholders of ids in fields, and those of them that name one of a user's objects only
#: (an app to disconnect is named by its client id, which the victim's grant shares: every
#: disconnection is the IDOR check already).
IDS_IN_FIELDS = frozenset({"{passkey}", "{sid}", "{client}", "{link}", "{email}"})
FORGED_IDS = frozenset({"{passkey}", "{sid}", "{link}"})
#: The user page's actions that take an id of one of the user's objects in a field.
FORGEABLE = tuple(route for route, (_, _, named) in ROUTES.items()
                  if FORGED_IDS & {v for _, v in named})  # fmt: skip
#: Where a fuzzed request must have changed something at least once (deep paths reached).
MUST_CHANGE = ("disable", "enable", "passkey revoke", "session revoke", "consent revoke",
               "link revoke", "login link", "delete", "user new", "client new", "client edit",
               "client access", "groups", "members add", "policy", "api tokens")  # fmt: skip


@dataclass
class Console:
    """The scene, its admin, and the subject of the user pages: a user with a password, passkeys,
    sessions, a grant of the client the victim uses, and a login link (each put back when a
    request took it away)."""

    scene: Scene
    admin: CreatedUser
    subject: CreatedUser
    database: str = "sqlite"
    fuzz_client: str = ""
    token: str = ""
    made: list[int] = field(default_factory=lambda: [0])

    @property
    def app(self) -> Flask:
        return self.scene.app

    def fresh(self, prefix: str) -> str:
        self.made[0] += 1
        return f"{prefix}-{self.made[0]}"

    def replenish(self) -> None:
        """Put back what the subject's page acts on, and the client, group and token the other
        pages act on, so that requests keep reaching past their "no such" refusals."""
        app = self.app
        with app.app_context():
            subject = db.session.get(User, self.subject.id)
            db.session.remove()
        if subject is None:  # deleted: a new subject
            self.subject = create_user(app, email=self.fresh("amy") + "@example.com")
        if not passkey_ids(app, self.subject.id):
            add_passkey(app, self.subject.id, self.fresh("amy-passkey"))
        if not session_ids(app, self.subject.id):
            self.scene.cookie(self.subject.id)
        with app.app_context():
            groups = GroupService(db.session())
            if groups.get(FUZZ_GROUP) is None:
                groups.create(FUZZ_GROUP, "Fuzzers", "")
            found = db.session.get(Client, self.fuzz_client)
            live = db.session.scalar(select(ApiToken.name).where(ApiToken.revoked_at.is_(None)))
            if live is None:
                hasher = app.extensions["idp"].api_token_hasher
                live = ApiTokenService(db.session(), hasher).create(
                    self.fresh("fuzz-token"), ["users:read"]).token.name  # fmt: skip
            self.token = live
            db.session.commit()
            db.session.remove()
        if found is None:
            self.fuzz_client = create_client(app, name="Console app").client_id
        live_grant = select(Grant.id).where(Grant.user_id == self.subject.id,
                                            Grant.revoked_at.is_(None))  # fmt: skip
        active = select(User.id).where(User.id == self.subject.id, User.disabled_at.is_(None))
        grants, active_users = rows_of(app, live_grant, active)
        if active_users and not grants:
            # The subject's grant of the client the victim uses too: a forged client id on the
            # subject's page names both of theirs.
            self.scene.rig.tokens("client_secret_basic", self.scene.cookie(self.subject.id))
        with app.app_context():
            # Last: a new session of the subject ends their live links (a sign-in needs none).
            user = db.session.get(User, self.subject.id)
            assert user is not None
            LoginLinkService(db.session()).issue(user, ttl=900, now=utcnow(), purpose=LOGIN)
            db.session.commit()
            db.session.remove()

    def resolve(self, name: str, kind: str) -> str:
        """What ``name`` (one of OWN, VICTIM, UNKNOWN, or a fuzzed value) stands for as a
        ``kind`` of id."""
        if name == UNKNOWN:
            return "no-such-id"
        if name not in (OWN, VICTIM):
            return name
        victim, scene = name == VICTIM, self.scene
        if kind == "user":  # the victim's ids go to the subject's page (the victim's own page
            return self.subject.id  # is an admin's to act on: it is never in a path)
        if kind == "passkey":
            return scene.victim_passkey if victim else self.subject_passkey()
        if kind == "sid":
            return scene.victim_sid if victim else session_ids(self.app, self.subject.id)[0]
        if kind == "link":
            return scene.victim_link if victim else self.subject_link()
        if kind == "email":
            return scene.victim.email if victim else self.subject_email()
        if kind == "client":  # on the subject's page, the client both of them use
            return scene.victim_client
        return {"group": FUZZ_GROUP, "token": self.token, "format": "csv"}[kind]

    def subject_passkey(self) -> str:
        (found,) = rows_of(self.app, select(Passkey.credential_id).where(
            Passkey.user_id == self.subject.id))  # fmt: skip
        return str(found[0][0])

    def subject_link(self) -> str:
        (found,) = rows_of(self.app, select(LoginLink.id_hash).where(
            LoginLink.user_id == self.subject.id, LoginLink.revoked_at.is_(None),
            LoginLink.consumed_at.is_(None)))  # fmt: skip
        return str(found[0][0])[:LINK_ID_LENGTH]

    def subject_email(self) -> str:
        (found,) = rows_of(self.app, select(User.email).where(User.id == self.subject.id))
        return str(found[0][0])

    def everything(self) -> list[list[tuple[object, ...]]]:
        """What a request may have changed: the subject's rows, the clients, groups, members,
        tokens and the policy (not the audit log, which records refusals too)."""
        return [
            *owned_rows(self.app, self.subject.id, groups=(FUZZ_GROUP,)),
            *rows_of(
                self.app,
                select(User.id, User.disabled_at, User.is_admin).order_by(User.id),
                select(Client.client_id, Client.version, Client.disabled_at).order_by(
                    Client.client_id
                ),
                select(Group.__table__).order_by(Group.id),
                select(GroupMember.__table__).order_by(GroupMember.group_id),
                select(ApiToken.name, ApiToken.revoked_at).order_by(ApiToken.name),
                select(PolicyOverride.__table__),
            ),
        ]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def console(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    with scene_on(request.param, tmp_path_factory.mktemp("fuzz-console")) as scene:
        admin = create_user(scene.app, email="root@example.com", admin=True)
        subject = create_user(scene.app, email="amy@example.com")
        console = Console(scene, admin, subject, request.param)
        console.replenish()
        yield console


def fill(console: Console, route: str, field_name: str, value: str, name: str, cookie: str) -> str:
    """A field's working value, its placeholder resolved (``{version}``: read from the page;
    ``{policy}``: the value in force)."""
    if value == "{policy}":
        return policy_form(console.app).get(field_name, "")
    if value == "{version}":
        page = console.scene.rig.http().get(path_of(console, route, OWN),
                                            headers={"Cookie": cookie})  # fmt: skip
        found = VERSION.search(page.text)
        return found.group(1) if found else ""
    if value == "{new}":
        return console.fresh("new-user") + "@example.com"
    if value == "{fresh}":
        return console.fresh("fuzz")
    if value in IDS_IN_FIELDS:
        return console.resolve(name, value[1:-1])
    return value


def path_of(console: Console, route: str, name: str) -> str:
    path = ROUTES[route][1]
    for kind in ("user", "client", "group", "token", "format"):
        if "{" + kind + "}" in path:
            own = console.fuzz_client if kind == "client" and name == OWN else None
            value = own or console.resolve(VICTIM if name == VICTIM and kind == "user" else name,
                                           kind)  # fmt: skip
            if kind == "client" and name == VICTIM:
                value = "no-such-client"  # the victim's client is the admin's to change
            path = path.replace("{" + kind + "}", segment(value))
    return path


#: A route, the method, the pairs sent, how they are sent, and whose ids the path names.
Request = tuple[str, str, list[tuple[str, str]], str, str]


@st.composite
def console_requests(draw: st.DrawFn, route: str) -> Request:
    """What is sent to ``route``: in two examples of three the page's own fields (working values,
    the subject's ids, and first the same with the victim's: ``console_example``) and fuzzed
    pairs after them; in the others every part fuzzed, the ids the subject's, the victim's,
    nobody's or fuzzed."""
    methods, _, named = ROUTES[route]
    extra = draw(mutations([n for n, _ in named] or ["q"]))
    if draw(st.integers(0, 2)) < 2:  # the first example (0) too: each route reaches deep
        return route, methods[-1], [*named, *extra], "form", OWN
    one = [st.one_of(st.just([(n, v)]), st.just([]), values().map(lambda x, n=n: [(n, x)]))
           for n, v in named]  # fmt: skip
    parts = draw(st.tuples(*one)) if one else ()
    pairs = [pair for part in parts for pair in part] + extra
    name = draw(forged((OWN, VICTIM, UNKNOWN)))
    return route, draw(st.sampled_from(methods)), pairs, draw(st.sampled_from(BODY_KINDS)), name


def console_example(console: Console, tally: Tally, request: Request) -> None:
    route, http_method, pairs, kind, name = request
    console.replenish()
    cookie = console.scene.cookie(console.admin.id)
    if name == OWN and route in FORGEABLE:
        # Its twin first, the victim's ids on the subject's page (IDOR): nothing of theirs
        # changes, as every example checks below.
        forged = [(n, fill(console, route, n, v, VICTIM, cookie)) for n, v in pairs]
        send(console.scene.rig.http(), path_of(console, route, VICTIM), forged, http_method, kind,
             cookie)  # fmt: skip
        assert console.scene.victim_rows() == console.scene.victim_before, (route, forged)
        tally.add(f"{route} forged")
    sent = [(n, fill(console, route, n, v, name, cookie)) for n, v in pairs]
    path = path_of(console, route, name)
    before = console.everything()
    response = send(console.scene.rig.http(), path, sent, http_method, kind, cookie)
    tally.add(f"status {response.status_code}")
    tally.add(f"{route} {response.status_code}")
    if console.everything() != before:
        tally.add(f"{route} changed")
    # IDOR: whatever the subject's page was sent, the victim's rows are as they were.
    assert console.scene.victim_rows() == console.scene.victim_before, (route, path, sent)
    if route.startswith("policy"):
        send(console.scene.rig.http(), "/admin/policy/reset", [], "POST", "form",
             console.scene.cookie(console.admin.id))  # fmt: skip


def test_console_forms_and_pages(console: Console) -> None:
    tally = Tally()
    for route in ROUTES:  # each route its share of the examples
        strategies = {"request": console_requests(route)}
        run_given(console_example, EXAMPLES_PER_ROUTE[console.database], strategies, console, tally)
    for route in MUST_CHANGE:
        assert tally[f"{route} changed"] > 0, route
    # Every action that takes an id of the user's was sent the victim's, with working fields.
    for route in FORGEABLE:
        assert tally[f"{route} forged"] > 0, route
    assert tally["status 200"] > 0, tally.counts


# -- CSRF: a missing or wrong token is refused and changes nothing --------------------------------
POST_ROUTES = sorted(route for route, (methods, _, _) in ROUTES.items() if "POST" in methods)
#: Forms that change something at once when sent with their token, in this order (disabling the
#: subject last: a disabled user gets no login link).
TAKEN_WITH_THE_TOKEN = ("session revoke", "link revoke", "login link", "user new", "client new",
                        "groups", "members add", "api tokens", "disable")  # fmt: skip


CSRF_ATTEMPTS = {
    "route": st.sampled_from(POST_ROUTES),
    "how": st.sampled_from(("missing", "fuzzed", "other browser", "wrong first", "header")),
    "fuzzed": st.lists(st.tuples(st.just("csrf_token"), values()), min_size=1, max_size=2),
}


def csrf_example(
    console: Console, tally: Tally, route: str, how: str, fuzzed: list[tuple[str, str]]
) -> None:
    console.replenish()
    browser, token = console.scene.csrf_browser(console.admin.id)
    _, other_token = console.scene.csrf_browser(console.admin.id)
    tokens = {
        "missing": [],
        "fuzzed": fuzzed,
        "other browser": [("csrf_token", other_token)],
        "wrong first": [fuzzed[0], ("csrf_token", token)],
        "header": [],
    }[how]
    headers = {"X-CSRFToken": header_value(fuzzed[0][1])} if how == "header" else {}
    cookie = console.scene.cookie(console.admin.id)
    pairs = [(n, fill(console, route, n, v, OWN, cookie)) for n, v in ROUTES[route][2]]
    before = console.everything()
    response = send(browser, path_of(console, route, OWN), [*pairs, *tokens], "POST",
                    headers=headers)  # fmt: skip
    assert csrf_refused(response), (route, how, response.status_code, response.text[:300])
    assert console.everything() == before, (route, how)
    assert console.scene.victim_rows() == console.scene.victim_before
    tally.add(route)


def test_console_forms_refuse_a_missing_or_wrong_csrf_token(console: Console) -> None:
    console.app.config["WTF_CSRF_ENABLED"] = True
    try:
        tally = Tally()
        run_given(csrf_example, CSRF_EXAMPLES[console.database], CSRF_ATTEMPTS, console, tally)
        assert len(tally.counts) >= len(POST_ROUTES) // 3, tally.counts
        # Not vacuous: with its real token, the same form is taken.
        changed = set()
        for route in TAKEN_WITH_THE_TOKEN:
            console.replenish()
            browser, token = console.scene.csrf_browser(console.admin.id)
            cookie = console.scene.cookie(console.admin.id)
            pairs = [(n, fill(console, route, n, v, OWN, cookie)) for n, v in ROUTES[route][2]]
            before = console.everything()
            sent = send(browser, path_of(console, route, OWN), [*pairs, ("csrf_token", token)],
                        "POST")  # fmt: skip
            assert "This form expired" not in sent.text, route
            if console.everything() != before:
                changed.add(route)
        assert changed == set(TAKEN_WITH_THE_TOKEN), changed
    finally:
        console.app.config["WTF_CSRF_ENABLED"] = False

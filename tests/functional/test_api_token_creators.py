"""An admin API token ends with its creator's authority (docs/api.md, Tokens; docs/security.md,
"Admin API"), on SQLite and PostgreSQL: revoked when the admin who made it in the console is
disabled, demoted or deleted from the console or the API, refused when its creator left another
way, never made for a creator being demoted; a token made on the command line stays."""

from __future__ import annotations

import contextlib
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, select, text, update
from werkzeug.test import TestResponse

from idp.checkpoints import CHECKPOINT_DIR_ENV
from idp.models import ApiToken, AuditEvent, User
from idp.services.api_tokens import CREATING_CHECKPOINT, CREATOR_HELD_CHECKPOINT
from idp.services.token_creators import WHY
from tests.functional.test_api import Api, issue, problem
from tests.support.admin import ConsoleBrowser, passkey_browser
from tests.support.checkpoints import Checkpoints, in_thread, wait_until
from tests.support.factories import change, rows
from tests.support.writers import waits_for_a_lock

TOKEN = re.compile(r"idp_[A-Za-z0-9_-]{43}")
REASONS = {"disable": "creator_disabled", "demote": "creator_demoted", "delete": "creator_deleted"}


def console_token(admin: ConsoleBrowser, name: str) -> str:
    created = admin.post("/admin/api-tokens", {"name": name, "expires_in": "90",
                                               "scopes": ["users:read"]})  # fmt: skip
    assert created.status_code == 200, created.text
    secret = TOKEN.search(created.text)
    assert secret is not None
    return secret.group(0)


def listed_status(admin: ConsoleBrowser, name: str) -> str:
    """The status cell of the token's row in the console's list."""
    page = admin.browser.get("/admin/api-tokens")
    assert page.status_code == 200
    row = re.search(rf'<tr data-token="{re.escape(name)}">(.*?)</tr>', page.text, re.S)
    assert row is not None, page.text
    cell = re.search(r'class="token-status"[^>]*>(.*?)</td>', row.group(1), re.S)
    assert cell is not None
    return cell.group(1).strip()


def act(action: str, user: User | ConsoleBrowser, actor: Api | ConsoleBrowser) -> None:
    """Disable, demote or delete ``user`` from the console (``actor`` an admin's browser) or the
    API (``actor`` an operator's token)."""
    user_id = user.user.id if isinstance(user, ConsoleBrowser) else user.id
    response: TestResponse
    if isinstance(actor, Api):
        path = f"/users/{user_id}"
        if action == "demote":
            response = actor.call("PATCH", path, {"admin": False})
        elif action == "delete":
            response = actor.call("DELETE", path)
        else:
            response = actor.call("POST", f"{path}/{action}")
        assert response.status_code in (200, 204), response.text
    else:
        form = {"confirm": "ada@example.com"} if action == "delete" else {}
        response = actor.post(f"/admin/users/{user_id}/{action}", form)
        assert response.status_code == 303, response.text


@pytest.mark.parametrize("action", ["disable", "demote", "delete"])
@pytest.mark.parametrize("surface", ["console", "api"])
def test_a_token_is_revoked_when_its_creator_is_disabled_demoted_or_deleted(
    storage_app: Flask, surface: str, action: str
) -> None:
    root = passkey_browser(storage_app, "root@example.com")
    ada = passkey_browser(storage_app, "ada@example.com")
    adas = Api(storage_app, console_token(ada, "ada-ci"))
    assert adas.call("GET", "/users").status_code == 200
    operators = Api(storage_app, issue(storage_app, "admins:write", name="ops"))
    act(action, ada, root if surface == "console" else operators)
    problem(adas.call("GET", "/users"), 401, "invalid-token")
    # A token made on the command line has no creator to lose: it keeps working.
    assert operators.call("GET", "/users").status_code == 200
    reason = REASONS[action]
    [token] = rows(storage_app, ApiToken, ApiToken.name == "ada-ci")
    assert token.revoked_at is not None
    assert token.revoked_reason == reason
    actor = root.user.id if surface == "console" else "api-token:ops"
    revoked = rows(storage_app, AuditEvent, AuditEvent.kind == "api_token.revoked")
    assert [
        (e.actor_id, e.subject_id, e.details["token"], e.details["reason"], e.details["via"])
        for e in revoked
    ] == [(actor, ada.user.id, "ada-ci", reason, surface)]
    assert listed_status(root, "ada-ci") == f"Revoked: {WHY[reason]}"
    creator = "a deleted user" if action == "delete" else "ada@example.com"
    assert (
        f'<span class="muted token-creator">by {creator}</span>'
        in root.browser.get("/admin/api-tokens").text
    )
    if action == "demote":  # their own activity page says so, beside the demotion
        activity = ada.browser.get("/account/activity").text
        assert "An admin API token you created was revoked" in activity
    # Enabled or promoted again, the admin gets none of it back: the revocation is for good.
    if action == "disable":
        act("enable", ada, root if surface == "console" else operators)
    elif action == "demote":
        change(storage_app, update(User).where(User.id == ada.user.id).values(is_admin=True))
    problem(adas.call("GET", "/users"), 401, "invalid-token")


@pytest.mark.parametrize(
    ("left", "reason"),
    [({"disabled_at": "now"}, "creator_disabled"), ({"is_admin": False}, "creator_demoted"),
     ({}, "creator_deleted")],
)  # fmt: skip
def test_a_token_whose_creator_left_without_revoking_it_is_refused(
    storage_app: Flask, left: dict[str, object], reason: str
) -> None:
    """A node still on the previous version (a rolling upgrade) disables, demotes or deletes the
    creator without revoking the token: authentication checks the creator itself."""
    from idp.models.base import utcnow

    root = passkey_browser(storage_app, "root@example.com")
    ada = passkey_browser(storage_app, "ada@example.com")
    adas = Api(storage_app, console_token(ada, "ada-ci"))
    assert adas.call("GET", "/users").status_code == 200
    if left:
        values = {k: (utcnow() if v == "now" else v) for k, v in left.items()}
        change(storage_app, update(User).where(User.id == ada.user.id).values(**values))
    else:  # its creator's row gone (a deleted user's id is never reused)
        change(storage_app, update(ApiToken).values(created_by="gone" + ada.user.id[4:]))
    problem(adas.call("GET", "/users"), 401, "invalid-token")
    failed = rows(storage_app, AuditEvent, AuditEvent.kind == "api.authentication_failed")
    assert [(e.details["reason"], e.details["token"]) for e in failed] == [(reason, "ada-ci")]
    assert listed_status(root, "ada-ci") == f"Inactive: {WHY[reason]}"
    # Revocable for good, should the creator be made an admin again.
    assert root.post("/admin/api-tokens/ada-ci/revoke").status_code == 303
    assert listed_status(root, "ada-ci") == "Revoked"


def test_a_token_made_on_the_command_line_outlives_every_admin(storage_app: Flask) -> None:
    root = passkey_browser(storage_app, "root@example.com")
    operators = Api(storage_app, issue(storage_app, "admins:write", name="ops"))
    [token] = rows(storage_app, ApiToken)
    assert token.created_by is None
    assert listed_status(root, "ops") == "Active"
    change(storage_app, update(User).values(is_admin=False))
    assert operators.call("GET", "/users").status_code == 200


def test_only_an_active_admin_creates_a_token(storage_app: Flask) -> None:
    """The console's guard lets only admins in; the service checks again, holding the row."""
    from idp.extensions import db
    from idp.services.api_tokens import ApiTokenError, ApiTokenService

    ada = passkey_browser(storage_app, "ada@example.com", admin=False)
    with storage_app.app_context():
        service = ApiTokenService(db.session(), storage_app.extensions["idp"].api_token_hasher,
                                  actor_id=ada.user.id)  # fmt: skip
        with pytest.raises(ApiTokenError, match="only an active admin"):
            service.create("ada-ci", ["users:read"])
        db.session.rollback()
    assert rows(storage_app, ApiToken) == []


def test_a_token_created_as_its_creator_is_demoted_is_never_made(
    storage_app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console's request passed its guard (an admin then) and is held where the token is about
    to be made; the demotion commits meanwhile. The creation reads the creator anew, holding
    its row, and refuses: no token outlives its creator's authority, even one made in between.
    (Held the other way, the demotion waits for the token's commit and revokes it.)"""
    passkey_browser(storage_app, "root@example.com")
    ada = passkey_browser(storage_app, "ada@example.com")
    ada.csrf("/admin/api-tokens")
    operators = Api(storage_app, issue(storage_app, "admins:write", name="ops"))
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    checkpoints.open_all(CREATING_CHECKPOINT)
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(checkpoints.directory))
    with ThreadPoolExecutor(1) as pool:
        with checkpoints.holding(CREATING_CHECKPOINT):
            creating = pool.submit(ada.post, "/admin/api-tokens", {
                "name": "ada-ci", "expires_in": "90", "scopes": ["users:read"]})  # fmt: skip
            wait_until(lambda: checkpoints.arrivals(CREATING_CHECKPOINT) == 1, "guard passed")
            act("demote", ada, operators)
        created = creating.result()
    assert created.status_code == 400, created.text
    assert "only an active admin" in created.text
    assert [t.name for t in rows(storage_app, ApiToken)] == ["ops"]


def test_a_demotion_racing_a_tokens_creation_waits_for_it_and_revokes_it(
    storage_app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: the creation holds its creator's row, found an admin, and is held there;
    the demotion waits for that row (PostgreSQL's row lock, SQLite's write lock), then sees the
    committed token and revokes it with the others."""
    passkey_browser(storage_app, "root@example.com")
    ada = passkey_browser(storage_app, "ada@example.com")
    ada.csrf("/admin/api-tokens")
    operators = Api(storage_app, issue(storage_app, "admins:write", name="ops"))
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    checkpoints.open_all(CREATOR_HELD_CHECKPOINT)
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(checkpoints.directory))
    outcome: dict[str, object] = {}
    form = {"name": "ada-ci", "expires_in": "90", "scopes": ["users:read"]}
    with checkpoints.holding(CREATOR_HELD_CHECKPOINT):
        creating = in_thread(outcome, "create", lambda: ada.post("/admin/api-tokens", form))
        wait_until(lambda: checkpoints.arrivals(CREATOR_HELD_CHECKPOINT) == 1, "creator held")
        path = f"/users/{ada.user.id}"
        demoting = in_thread(
            outcome, "demote", lambda: operators.call("PATCH", path, {"admin": False})
        )
        wait_until(lambda: waits_for_a_lock(storage_app, demoting), "the demotion waits")
    for thread in (creating, demoting):
        thread.join(60)
        assert not thread.is_alive()
    assert "create error" not in outcome, outcome
    assert "demote error" not in outcome, outcome
    created, demoted = outcome["create"], outcome["demote"]
    assert isinstance(created, TestResponse)
    assert isinstance(demoted, TestResponse)
    assert created.status_code == 200, created.text
    assert demoted.status_code == 200, demoted.text
    secret = TOKEN.search(created.text)
    assert secret is not None
    problem(Api(storage_app, secret.group(0)).call("GET", "/users"), 401, "invalid-token")
    [token] = rows(storage_app, ApiToken, ApiToken.name == "ada-ci")
    assert token.revoked_reason == "creator_demoted"


def test_demoting_on_the_command_line_revokes_the_tokens_the_admin_created(tmp_path: Path) -> None:
    """The third surface: ``idp users demote`` (and disable, delete: the same UserAdmin) revokes
    them as the console and the API do, audited ``via: cli``; ``idp api-tokens list`` says why."""
    from tests.functional.test_cli import Idp

    idp = Idp(tmp_path)
    idp.ok("init")
    for email in ("root@example.com", "ada@example.com"):
        idp.ok("users", "create", email, "--admin")
    idp.ok("api-tokens", "create", "--name", "ops", "--scope", "users:read")
    with idp.session() as session:
        ada = session.scalars(select(User).where(User.email == "ada@example.com")).one()
        session.add(ApiToken(name="ada-ci", token_hash="0" * 64, scopes=["users:read"],
                             created_by=ada.id))  # fmt: skip
        session.commit()
        ada_id = ada.id
    idp.ok("users", "demote", "ada@example.com")
    listed = {t["name"]: t for t in idp.json("api-tokens", "list")}
    assert (listed["ada-ci"]["status"], listed["ada-ci"]["reason"]) == (
        "revoked",
        "creator_demoted",
    )
    assert listed["ada-ci"]["created_by"] == "ada@example.com"
    assert (listed["ops"]["status"], listed["ops"]["created_by"]) == ("active", None)
    assert "revoked (its creator is no longer an admin)" in idp.ok("api-tokens", "list").output
    with idp.session() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.kind == "api_token.revoked"))
        assert (event.actor_id, event.subject_id, event.details) == (
            "cli",
            ada_id,
            {"token": "ada-ci", "reason": "creator_demoted", "via": "cli"},
        )


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_upgrade_revokes_the_tokens_of_admins_already_gone(
    tmp_path: Path, database: str
) -> None:
    """Tokens made before revision 0016 by admins since disabled, demoted or deleted are revoked
    by it, with the reason; an active admin's and the command line's stay."""
    from alembic import command as alembic

    from idp.database import alembic_config
    from tests.conftest import throwaway_postgres_database

    with contextlib.ExitStack() as stack:
        if database == "sqlite":
            url = f"sqlite:///{tmp_path / 'idp.db'}"
        else:
            url = stack.enter_context(throwaway_postgres_database())
        alembic.upgrade(alembic_config(url), "0015")
        engine = create_engine(url)
        stack.callback(engine.dispose)
        users = {"active": (True, None), "disabled": (True, "2026-01-01"), "demoted": (False, None)}
        tokens = {"active": "u-active", "disabled": "u-disabled", "demoted": "u-demoted",
                  "deleted": "u-deleted", "cli": "cli", "none": None}  # fmt: skip
        with engine.begin() as connection:
            for name, (admin, disabled) in users.items():
                connection.execute(
                    text("INSERT INTO users (id, email, email_verified, name, webauthn_user_handle,"
                         " is_admin, passkey_prompt_disabled, disabled_at, created_at) VALUES (:id,"
                         " :email, false, '', :id, :admin, false, :disabled, '2026-01-01')"),
                    {"id": f"u-{name}", "email": f"{name}@example.com", "admin": admin,
                     "disabled": disabled},
                )  # fmt: skip
            for name, creator in tokens.items():
                connection.execute(
                    text("INSERT INTO api_tokens (id, name, token_hash, scopes, created_by,"
                         " created_at) VALUES (:name, :name, :name, '[]', :creator, '2026-01-01')"),
                    {"name": name, "creator": creator},
                )  # fmt: skip
        alembic.upgrade(alembic_config(url), "head")
        with engine.connect() as connection:
            found = dict(
                connection.execute(text("SELECT name, revoked_reason FROM api_tokens")).all()
            )
            revoked = dict(
                connection.execute(
                    text("SELECT name, revoked_at IS NOT NULL FROM api_tokens")
                ).all()
            )
    assert found == {"active": None, "disabled": "creator_disabled", "demoted": "creator_demoted",
                     "deleted": "creator_deleted", "cli": None, "none": None}  # fmt: skip
    assert {name for name, gone in revoked.items() if gone} == {"disabled", "demoted", "deleted"}

"""``/api/v1/users``: accounts and rescue links, through ``idp.services.user_admin`` as the console
and the ``idp users`` commands do (the last active admin stays, refusals are audited)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import g, url_for
from sqlalchemy import select

from idp import checkpoints
from idp.api import schemas
from idp.api.core import actor, not_found, operation, require_scope
from idp.composition import clock, runtime, services
from idp.extensions import db
from idp.models import User
from idp.services.api_tokens import ADMINS_SCOPE
from idp.services.pages import keyset_page
from idp.services.user_admin import IssuedLink, UserAdmin, UserAdminError
from idp.services.user_descriptions import describe_user
from idp.services.users import normalise_email
from idp.web import url_for_secret

TAG = "users"
#: Who the invite email says invited the user (as ``idp users invite`` says).
INVITER = "An administrator"
#: Where a change to a user waits, its scope decided and the user's row held, before it writes
#: (tests only: idp.checkpoints).
ACTING_CHECKPOINT = "api.users.acting"


def _service() -> UserAdmin:
    return services().user_admin(actor(), "api")


def _user(user_id: str, *, locked: bool = False) -> User:
    found = _service().get(user_id, locked=locked)
    if found is None:
        raise not_found("user with this id")
    return found


def _out(user: User) -> dict[str, Any]:
    return schemas.UserOut.model_validate(describe_user(user)).model_dump(mode="json")


def _link(issued: IssuedLink) -> schemas.IssuedLinkOut:
    return schemas.IssuedLinkOut(
        id=issued.id, url=issued.url, expires_at=issued.link.expires_at.isoformat()
    )


def _admin_needs_scope(user: User, why: str) -> None:
    """403 unless the token may act on admins (``ADMINS_SCOPE``) when ``user`` is one: a token
    that could change, disable or take over an admin could give itself every scope."""
    if user.is_admin:
        require_scope(ADMINS_SCOPE, why)


def _user_to_change(user_id: str, why: str, *, promotion: bool = False) -> User:
    """The user, read anew and held (PostgreSQL's row lock, SQLite's write lock) from before the
    admin check to the change's commit: a promotion committed first is seen here (403 without
    ``ADMINS_SCOPE``), one after waits for the change. Read unheld, the check saw a member and
    the change was written on the admin a racing promotion had just made: a ``users:write``
    token disabling, renaming or deleting an admin (docs/api.md).

    A token that may act on admins has no check to outrun, and reads the row unheld as before:
    holding it, then the active admins' rows (a disable, demotion or deletion of an admin:
    ``UserAdmin._locking_admins``) would take locks in another order than a second such change
    running at once, a deadlock on PostgreSQL. A promotion holds it too, whatever the token: it
    waits for a change in flight and finds a deleted user gone (404, not the 500 of an UPDATE of
    no row), and a ``users:write`` change arriving while it is in flight waits for it and is
    refused (403) on the admin it made. It takes no admin's row after this one (``promote`` has
    no last-admin count), so its lock orders nothing against ``_locking_admins``: no deadlock."""
    user = _user(user_id, locked=promotion or ADMINS_SCOPE not in g.api_scopes)
    _admin_needs_scope(user, why)
    return user


def _act(user: User, action: str, change: Callable[[UserAdmin], None]) -> None:
    """Run one action on a user and commit it; a refusal is rolled back, then audited (as the
    console's refusals are: "who tried to remove the last admin" has an answer), then raised."""
    service = _service()
    checkpoints.reached(ACTING_CHECKPOINT)
    try:
        change(service)
    except UserAdminError as error:
        db.session.rollback()
        service.record_refusal(action, user, error)
        db.session.commit()
        raise
    db.session.commit()


@operation("GET", "/users", summary="List users (filter by exact email)", scope="users:read",
           tag=TAG, query=schemas.UserListQuery, response=schemas.UserList)  # fmt: skip
def list_users(query: schemas.UserListQuery) -> Any:
    statement = select(User)
    if query.email is not None:
        statement = statement.where(User.email == normalise_email(query.email))
    page = keyset_page(db.session(), statement, User.id, cursor=query.cursor, limit=query.limit)
    items = [schemas.UserOut.model_validate(describe_user(u)) for u in page.items]
    return schemas.UserList(items=items, next_cursor=page.next_cursor).model_dump(mode="json")


@operation("POST", "/users", summary="Create a user, and by default invite them",
           scope="users:write", tag=TAG, on_admins=ADMINS_SCOPE, body=schemas.UserCreate,
           response=schemas.UserCreated, status=201,
           refusals=("conflict", "invalid-value"), creates=("user_id", "id"))  # fmt: skip
def create_user(body: schemas.UserCreate) -> Any:
    if body.admin:
        require_scope(ADMINS_SCOPE, "Making an admin")
    service = _service()
    invite = None
    if body.invite:
        user, issued = service.invite(
            body.email, name=body.name, admin=body.admin, ttl=body.invite_ttl_seconds,
            now=clock().now(), url_for_secret=url_for_secret, inviter=INVITER,
            mailed_only=body.invite_mailed_only,
        )  # fmt: skip
        invite = _link(issued)
    else:
        user = service.create(body.email, name=body.name, admin=body.admin)
    db.session.commit()
    out = schemas.UserCreated.model_validate(describe_user(user) | {"invite": invite})
    location = url_for("api.get_user", user_id=user.id)
    return out.model_dump(mode="json"), 201, {"Location": location}


@operation("GET", "/users/<user_id>", summary="One user", scope="users:read", tag=TAG,
           response=schemas.UserOut)  # fmt: skip
def get_user(user_id: str) -> Any:
    return _out(_user(user_id))


@operation("PATCH", "/users/<user_id>", summary="Rename a user, or make or unmake an admin",
           scope="users:write", tag=TAG, on_admins=ADMINS_SCOPE, body=schemas.UserPatch,
           response=schemas.UserOut,
           refusals=("last-admin", "invalid-value"))  # fmt: skip
def patch_user(user_id: str, body: schemas.UserPatch) -> Any:
    user = _user_to_change(user_id, "Changing an admin", promotion=body.admin is True)
    if body.admin:
        require_scope(ADMINS_SCOPE, "Making an admin")

    def change(service: UserAdmin) -> None:
        if body.name is not None:
            service.rename(user, body.name)
        if body.admin is not None and body.admin != user.is_admin:
            if body.admin:
                service.promote(user, clock().now())
            else:
                service.demote(user, clock().now())

    _act(user, "promote" if body.admin else "demote" if body.admin is False else "rename", change)
    return _out(user)


@operation("DELETE", "/users/<user_id>", summary="Delete a user", scope="users:write",
           tag=TAG, on_admins=ADMINS_SCOPE, status=204,
           refusals=("last-admin", "invalid-value"))  # fmt: skip
def delete_user(user_id: str) -> Any:
    user = _user_to_change(user_id, "Deleting an admin")
    _act(user, "delete", lambda service: service.delete(user, clock().now()))
    return "", 204


@operation("POST", "/users/<user_id>/disable",
           summary="Disable: sessions end, tokens and links are revoked now",
           scope="users:write", tag=TAG, on_admins=ADMINS_SCOPE,
           response=schemas.UserOut,
           refusals=("last-admin", "invalid-value"))  # fmt: skip
def disable_user(user_id: str) -> Any:
    user = _user_to_change(user_id, "Disabling an admin")
    _act(user, "disable", lambda service: service.disable(user, clock().now()))
    return _out(user)


@operation("POST", "/users/<user_id>/enable", summary="Enable a disabled user",
           scope="users:write", tag=TAG, on_admins=ADMINS_SCOPE,
           response=schemas.UserOut,
           refusals=("invalid-value",))  # fmt: skip
def enable_user(user_id: str) -> Any:
    user = _user_to_change(user_id, "Enabling an admin")
    _act(user, "enable", lambda service: service.enable(user, clock().now()))
    return _out(user)


@operation("POST", "/users/<user_id>/login-links",
           summary="A one-time rescue link, emailed and in this response only",
           scope="login-links:write", tag=TAG, on_admins=ADMINS_SCOPE,
           body=schemas.LoginLinkCreate, body_required=False, response=schemas.IssuedLinkOut,
           status=201,
           refusals=("invalid-value",))  # fmt: skip
def create_login_link(user_id: str, body: schemas.LoginLinkCreate) -> Any:
    # The user's row is held from before the admin check below to the link's commit (PostgreSQL's
    # row lock, SQLite's write lock): a promotion committed before it is seen here; one after it
    # waits for the link and ends it with the others. Unheld, a link inserted as the promotion
    # ended the links it could see (READ COMMITTED) outlived it: an admin's rescue from a token
    # that may not make admins (docs/api.md, login-links:write).
    user = _user(user_id, locked=True)
    # The link signs its holder in as the admin (a new passkey, then the console): only a token
    # that could make an admin may rescue one, or login-links:write would be every scope there
    # is (docs/api.md).
    _admin_needs_scope(user, "A rescue link for an admin")
    ttl = body.ttl_seconds or runtime().settings.login_link_ttl
    issued = _service().send_login_link(
        user, ttl=ttl, now=clock().now(), url_for_secret=url_for_secret
    )
    db.session.commit()
    return _link(issued).model_dump(mode="json"), 201

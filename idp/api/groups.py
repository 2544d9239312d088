"""``/api/v1/groups``: groups and their members, through ``idp.services.groups`` as the console
and the ``idp groups`` commands do (access follows membership: removing a member revokes their
grants to the clients they may no longer use)."""

from __future__ import annotations

from typing import Any

from flask import url_for
from sqlalchemy import select

from idp.api import schemas
from idp.api.core import actor, not_found, operation
from idp.composition import services
from idp.extensions import db
from idp.models import Group, GroupMember, User
from idp.services.groups import GroupService, describe_group
from idp.services.pages import keyset_page
from idp.services.user_descriptions import describe_user

TAG = "groups"


def _service() -> GroupService:
    return services().groups_as(actor(), "api")


def _group(name: str) -> Group:
    found = _service().get(name)
    if found is None:
        raise not_found("group with this name")
    return found


def _out(group: Group) -> dict[str, Any]:
    return schemas.GroupOut.model_validate(describe_group(group)).model_dump(mode="json")


@operation("GET", "/groups", summary="List groups", scope="groups:read", tag=TAG,
           query=schemas.ListQuery, response=schemas.GroupList)  # fmt: skip
def list_groups(query: schemas.ListQuery) -> Any:
    page = keyset_page(db.session(), select(Group), Group.name, cursor=query.cursor,
                       limit=query.limit)  # fmt: skip
    items = [schemas.GroupOut.model_validate(describe_group(g)) for g in page.items]
    return schemas.GroupList(items=items, next_cursor=page.next_cursor).model_dump(mode="json")


@operation("POST", "/groups", summary="Create a group", scope="groups:write", tag=TAG,
           body=schemas.GroupCreate, response=schemas.GroupOut, status=201,
           refusals=("conflict", "invalid-value"), creates=("name", "name"))  # fmt: skip
def create_group(body: schemas.GroupCreate) -> Any:
    group = _service().create(body.name, body.display_name, body.description)
    db.session.commit()
    return _out(group), 201, {"Location": url_for("api.get_group", name=group.name)}


@operation("GET", "/groups/<name>", summary="One group", scope="groups:read", tag=TAG,
           response=schemas.GroupOut)  # fmt: skip
def get_group(name: str) -> Any:
    return _out(_group(name))


@operation("PATCH", "/groups/<name>", summary="Rename a group or change its texts",
           scope="groups:write", tag=TAG, body=schemas.GroupPatch,
           response=schemas.GroupOut,
           refusals=("conflict", "invalid-value"))  # fmt: skip
def patch_group(name: str, body: schemas.GroupPatch) -> Any:
    group = _group(name)
    service = _service()
    if body.name is not None:
        service.rename(group, body.name)
    if body.display_name is not None or body.description is not None:
        service.edit(
            group,
            display_name=group.display_name if body.display_name is None else body.display_name,
            description=group.description if body.description is None else body.description,
        )
    db.session.commit()
    return _out(group)


@operation("DELETE", "/groups/<name>", summary="Delete a group (409 if it is some client's only "
           "allowed group, unless confirm=true)", scope="groups:write", tag=TAG,
           query=schemas.DeleteGroupQuery, status=204,
           refusals=("group-in-use",))  # fmt: skip
def delete_group(name: str, query: schemas.DeleteGroupQuery) -> Any:
    _service().delete(_group(name), confirmed=query.confirm)
    db.session.commit()
    return "", 204


@operation("GET", "/groups/<name>/members", summary="A group's members", scope="groups:read",
           tag=TAG, query=schemas.ListQuery, response=schemas.MemberList)  # fmt: skip
def list_group_members(name: str, query: schemas.ListQuery) -> Any:
    group = _group(name)
    statement = (
        select(User)
        .join(GroupMember, GroupMember.user_id == User.id)
        .where(GroupMember.group_id == group.id)
    )
    page = keyset_page(db.session(), statement, User.id, cursor=query.cursor, limit=query.limit)
    items = [schemas.UserOut.model_validate(describe_user(u)) for u in page.items]
    return schemas.MemberList(items=items, next_cursor=page.next_cursor).model_dump(mode="json")


@operation("POST", "/groups/<name>/members", summary="Add users (by email) to a group",
           scope="groups:write", tag=TAG, body=schemas.MembersAdd,
           response=schemas.MembersChanged,
           refusals=("invalid-value",))  # fmt: skip
def add_group_members(name: str, body: schemas.MembersAdd) -> Any:
    group = _group(name)
    service = _service()
    added = service.add_members(group, service.find_users(body.emails))
    db.session.commit()
    return schemas.MembersChanged(changed=[u.email for u in added]).model_dump(mode="json")


@operation("DELETE", "/groups/<name>/members/<user_id>",
           summary="Remove a user from a group (their grants to apps they lose are revoked)",
           scope="groups:write", tag=TAG, status=204)  # fmt: skip
def remove_group_member(name: str, user_id: str) -> Any:
    group = _group(name)
    user = db.session.get(User, user_id[:64])
    if user is None:
        raise not_found("user with this id")
    if not _service().remove_members(group, [user]):
        raise not_found("such member of this group")
    db.session.commit()
    return "", 204

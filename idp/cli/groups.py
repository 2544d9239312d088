"""``idp groups``: who belongs to a group, and which apps it opens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from idp.cli import Group
from idp.cli.common import app_context, emit

if TYPE_CHECKING:
    from idp.services.groups import GroupService


@click.group(cls=Group)
def groups() -> None:
    """Manage groups: who belongs, and which apps they open (docs/admins.md)."""


@contextmanager
def _group_service() -> Iterator[GroupService]:
    """The groups service acting as ``cli``; nothing it refused is committed (``app_context``)."""
    from idp.composition import services

    with app_context():
        yield services().groups


def _group_text(data: dict[str, Any]) -> str:
    lines = [f"{data['name']}  {data['display_name']}"]
    if data.get("description"):
        lines.append(f"  {data['description']}")
    if "members" in data:
        lines.append(f"  members: {', '.join(data['members']) or '-'}")
    if data.get("allowed_at"):
        lines.append(f"  opens: {', '.join(data['allowed_at'])}")
    return "\n".join(lines)


@groups.command("create")
@click.argument("name")
@click.option("--display-name", default="", help="Shown in the console and the portal.")
@click.option("--description", default="", help="What the group is for, for admins.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def groups_create(name: str, display_name: str, description: str, as_json: bool) -> None:
    """Create a group. NAME: lowercase letters, digits, '-', '_', '.'; at most 64."""
    from idp.extensions import db
    from idp.services.groups import describe_group

    with _group_service() as service:
        group = service.create(name, display_name, description)
        db.session.commit()
        emit(describe_group(group, []), as_json, lambda d: f"created group {d['name']}")


@groups.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def groups_list(as_json: bool) -> None:
    """Every group with its member count."""
    from idp.services.groups import describe_group

    with _group_service() as service:
        rows = [describe_group(g) | {"member_count": n} for g, n in service.list_with_counts()]
        emit(rows, as_json, lambda r: "\n".join(
            f"{g['name']}  {g['member_count']} member(s)  {g['display_name']}" for g in r
        ))  # fmt: skip


@groups.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def groups_show(name: str, as_json: bool) -> None:
    """One group: its members and the clients it opens."""
    from idp.services.groups import describe_group

    with _group_service() as service:
        group = service.require(name)
        data = describe_group(group, service.members(group)) | {
            "allowed_at": [c.client_id for c in service.clients_of(group)]
        }
        emit(data, as_json, _group_text)


@groups.command("rename")
@click.argument("old")
@click.argument("new")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def groups_rename(old: str, new: str, as_json: bool) -> None:
    """Rename a group (apps see the new name in the groups claim at the next sign-in)."""
    from idp.extensions import db
    from idp.services.groups import describe_group

    with _group_service() as service:
        group = service.require(old)
        service.rename(group, new)
        db.session.commit()
        emit(describe_group(group), as_json, lambda d: f"renamed group {old} to {d['name']}")


@groups.command("delete")
@click.argument("name")
@click.option(
    "--yes",
    is_flag=True,
    help="Also when it is some client's only allowed group (that client then admits no one).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def groups_delete(name: str, yes: bool, as_json: bool) -> None:
    """Delete a group; its members lose the access it gave them."""
    from idp.extensions import db

    with _group_service() as service:
        revoked = service.delete(service.require(name), confirmed=yes)
        db.session.commit()
        emit({"name": name, "deleted": True, "revoked_grants": revoked}, as_json,
              lambda d: f"deleted group {d['name']}")  # fmt: skip


def _membership_change(name: str, emails: tuple[str, ...], as_json: bool, add: bool) -> None:
    from idp.extensions import db

    with _group_service() as service:
        group = service.require(name)
        users = service.find_users(list(emails))
        changed = service.add_members(group, users) if add else service.remove_members(group, users)
        db.session.commit()
        key = "added" if add else "removed"
        data = {"group": group.name, key: [u.email for u in changed],
                "unchanged": [u.email for u in users if u not in changed]}  # fmt: skip
        emit(data, as_json, lambda d: f"{key} {', '.join(d[key]) or 'no one'}" + (
            f" ({', '.join(d['unchanged'])} unchanged)" if d["unchanged"] else ""
        ))  # fmt: skip


@groups.command("add")
@click.argument("name")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def groups_add(name: str, emails: tuple[str, ...], as_json: bool) -> None:
    """Add users to a group (an unknown address changes nothing)."""
    _membership_change(name, emails, as_json, add=True)


@groups.command("remove")
@click.argument("name")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def groups_remove(name: str, emails: tuple[str, ...], as_json: bool) -> None:
    """Remove users from a group; their grants to apps they may no longer use are revoked."""
    _membership_change(name, emails, as_json, add=False)

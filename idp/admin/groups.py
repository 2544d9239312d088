"""Admin console: groups, their members, and each client's allowed groups and claim maps.

Thin: every rule lives in ``idp.services.groups``, which the ``idp groups`` commands share; a
refused change is rolled back and its message shown on the page it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from idp.admin.blueprint import bp, client_version, listed
from idp.composition import runtime, services
from idp.extensions import db
from idp.models import Client, Group
from idp.services import client_access as access_pages
from idp.services.claims import client_claims
from idp.services.clients import StaleClientError
from idp.services.group_access import allowed_to_use
from idp.services.group_fields import ClaimMapEntry, GroupError, parse_claim_map
from idp.services.groups import GroupInUseError, GroupService


def _service() -> GroupService:
    return services().groups_as(g.admin.id, "console")


def _group_or_404(name: str) -> Group:
    group = _service().get(name)
    if group is None:
        abort(404, description="There is no group with this name.")
    return group


def _client_or_404(client_id: str) -> Client:
    client = db.session.get(Client, client_id[:64])
    if client is None:
        abort(404, description="There is no client app with this id.")
    return client


def _refused(error: GroupError, endpoint: str, **values: Any) -> Response:
    db.session.rollback()
    flash(str(error), "error")
    return redirect(url_for(endpoint, **values))


@dataclass(frozen=True)
class ClientAccess:
    allowed: list[Group]
    claim_maps: list[ClaimMapEntry]


def client_access(client: Client) -> ClientAccess:
    """For the client's page: its allowed groups and claim maps."""
    service = services().groups
    return ClientAccess(
        allowed=service.allowed_groups(client.client_id),
        claim_maps=service.claim_maps(client.client_id),
    )


# -- groups ---------------------------------------------------------------------------------------
@bp.get("/groups")
def groups() -> Any:
    """Every group with its member count, and the form for a new one."""
    return render_template("admin/groups.html", groups=listed(_service().page_with_counts))


@bp.post("/groups")
def group_create() -> Any:
    try:
        group = _service().create(
            request.form.get("name", ""),
            request.form.get("display_name", ""),
            request.form.get("description", ""),
        )
        db.session.commit()
    except GroupError as error:
        return _refused(error, "admin.groups")
    flash(f"Created the group {group.name}.", "info")
    return redirect(url_for("admin.group", name=group.name))


@bp.get("/groups/<name>")
def group(name: str) -> Any:
    """A group: its members (add, remove), the client apps it opens, rename and delete."""
    found = _group_or_404(name)
    service = _service()
    return render_template(
        "admin/group.html",
        group=found,
        members=listed(lambda cursor: service.members_page(found, cursor)),
        clients=service.clients_of(found),
    )


@bp.post("/groups/<name>/rename")
def group_rename(name: str) -> Any:
    found = _group_or_404(name)
    try:
        _service().rename(found, request.form.get("new_name", ""))
        _service().edit(
            found,
            display_name=request.form.get("display_name", found.display_name),
            description=request.form.get("description", found.description),
        )
        db.session.commit()
    except GroupError as error:
        return _refused(error, "admin.group", name=name)
    flash("Saved.", "info")
    return redirect(url_for("admin.group", name=found.name))


@bp.post("/groups/<name>/members")
def group_members_add(name: str) -> Any:
    found = _group_or_404(name)
    service = _service()
    try:
        emails = request.form.get("emails", "").replace(",", " ").split()
        added = service.add_members(found, service.find_users(emails))
        db.session.commit()
    except GroupError as error:
        return _refused(error, "admin.group", name=name)
    flash(f"Added {', '.join(u.email for u in added) or 'no one new'}.", "info")
    return redirect(url_for("admin.group", name=name))


@bp.post("/groups/<name>/members/remove")
def group_members_remove(name: str) -> Any:
    found = _group_or_404(name)
    service = _service()
    try:
        removed = service.remove_members(found, service.find_users([request.form.get("email", "")]))
        db.session.commit()
    except GroupError as error:
        return _refused(error, "admin.group", name=name)
    flash(f"Removed {', '.join(u.email for u in removed) or 'no one'}.", "info")
    return redirect(url_for("admin.group", name=name))


@bp.route("/groups/<name>/delete", methods=["GET", "POST"])
def group_delete(name: str) -> Any:
    """Delete, after a confirmation page that names the client apps the group alone opens."""
    found = _group_or_404(name)
    service = _service()
    sole = service.sole_allowed_at(found)
    # HEAD and GET only show the page: a state change needs the POST (and its CSRF token).
    if request.method != "POST":
        return render_template(
            "admin/group_delete.html", group=found, sole=sole,
            member_count=service.member_count(found),
        )  # fmt: skip
    try:
        service.delete(found, confirmed=request.form.get("confirm_sole") == "1")
        db.session.commit()
    except GroupInUseError as error:
        return _refused(error, "admin.group_delete", name=name)
    flash(f"Deleted the group {name}.", "info")
    return redirect(url_for("admin.groups"))


# -- a client's access and claim maps -------------------------------------------------------------
#: Said when the access page was opened before another change to the client (or has no version).
STALE_ACCESS = (
    "Nothing was saved: someone changed this app since this page was opened. These are its "
    "allowed groups and claim maps now; make your change again."
)


def _access_page(client: Client, error: str | None = None, status: int = 200) -> Any:
    """The page as the client stands, with its version (the hidden field the save holds to)."""
    service, session = _service(), db.session()
    others, more = access_pages.other_groups(session, client.client_id)
    return render_template(
        "admin/client_access.html",
        client=client,
        allowed=listed(lambda at: access_pages.allowed_page(session, client.client_id, at)),
        others=others,
        more_groups=more,
        claim_maps="\n".join(str(m) for m in service.claim_maps(client.client_id)),
        error=error,
    ), status


@bp.route("/clients/<client_id>/access", methods=["GET", "POST"], endpoint="client_access")
def client_access_edit(client_id: str) -> Any:
    """Allowed groups (none: everyone) and claim maps, one ``CLAIM:GROUP=VALUE`` per line."""
    client = _client_or_404(client_id)
    if request.method != "POST":
        return _access_page(client)
    form, version = request.form, client_version()
    try:
        # The page's boxes, and the name typed for a group past those it shows (empty if none).
        chosen = [name for name in form.getlist("allowed_groups") if name.strip()]
        everyone = form.get("access") == "everyone"
        allowed = [] if everyone else chosen
        # The allowed groups this page of them showed: those on its other pages stay allowed.
        shown = form.getlist("shown_groups") if form.get("paged") and not everyone else None
        if form.get("access") == "groups" and not allowed and shown is None:
            raise GroupError("choose at least one group, or let everyone sign in")
        lines = [x.strip() for x in form.get("claim_maps", "").splitlines()]
        if version is None:  # a page without its version: as stale as one from an old version
            raise StaleClientError(client_id)
        _service().set_access(client, allowed, [parse_claim_map(x) for x in lines if x],
                              expected_version=version, shown=shown)  # fmt: skip
        db.session.commit()
    except GroupError as error:
        return _refused(error, "admin.client_access", client_id=client_id)
    except StaleClientError:
        # The page saves the whole set as it showed it (RFC 9110 13.1.1): from an older version
        # it would put back a group another admin took away, so it saves nothing.
        db.session.rollback()
        return _access_page(_client_or_404(client_id), STALE_ACCESS, 409)
    flash("Access and claim maps saved.", "info")
    return redirect(url_for("admin.client", client_id=client_id))


@bp.get("/clients/<client_id>/claims")
def client_claims_preview(client_id: str) -> Any:
    """What a chosen user would receive at this client with every scope it is allowed."""
    client = _client_or_404(client_id)
    email = request.args.get("email", "").strip()
    preview: dict[str, Any] | None = None
    error = None
    refused_access = False
    if email:
        service = _service()
        try:
            (user,) = service.find_users([email])
        except GroupError as refused:
            error = str(refused)
        else:
            # What the user would receive: nothing at all outside the allowed groups (the sign-in
            # is refused with access_denied, docs/admins.md), not what the claim maps would say.
            refused_access = not allowed_to_use(db.session(), user.id, client)
            if not refused_access:
                scope = " ".join(client.scopes)
                # The sub as this client knows the user (OIDC Core 8.1: pairwise or their id).
                subject = runtime().subjects.of(db.session(), client, user.id)
                preview = client_claims(db.session(), user, client.client_id, scope,
                                        subject=subject)  # fmt: skip
    return render_template(
        "admin/client_claims.html", client=client, email=email, preview=preview, error=error,
        refused_access=refused_access,
    )  # fmt: skip

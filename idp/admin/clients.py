"""Admin console: the client apps (relying parties) pages.

Thin: the form is read into ``ClientFields`` and every rule lives in ``idp.services.clients``,
which the ``idp clients`` commands share. A new secret is rendered straight into the POST's
response (``no-store``) and never kept anywhere it could be shown again.
"""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from idp.admin.blueprint import bp, client_version, listed
from idp.admin.groups import client_access
from idp.composition import request_context, runtime, services
from idp.extensions import db
from idp.models import Client
from idp.models.clients import KIND_NATIVE, KINDS, SUBJECT_PUBLIC, SUBJECT_TYPES
from idp.services.backchannel_logout import recent_failures
from idp.services.client_fields import (
    AUTH_METHODS,
    DEFAULT_SCOPES,
    GRANT_TYPES,
    KIND_LABELS,
    SUPPORTED_SCOPES,
    ClientFields,
    ClientRegistrationError,
    fields_of,
)
from idp.services.clients import Actor, ClientService, StaleClientError
from idp.services.pages import CONSOLE_PAGE, keyset_page
from idp.services.signing_keys import SUPPORTED_ALGS
from idp.services.subjects import sector_of
from idp.web import confirmed

MAX_JWKS_LENGTH = 64 * 1024
#: The overlap choices the rotation form offers, in seconds.
OVERLAP_CHOICES = ((0, "None: the old secret stops now"), (3600, "1 hour"), (86400, "24 hours"),
                   (7 * 86400, "7 days"))  # fmt: skip


def _service() -> ClientService:
    return services().clients


def _actor() -> Actor:
    return Actor(user_id=g.admin.id, via="console", context=request_context())


def _overlap_choices(default: int) -> list[tuple[int, str]]:
    choices = list(OVERLAP_CHOICES)
    if default not in dict(choices):
        choices.append((default, f"{default} seconds (the configured default)"))
    return sorted(choices)


def _client_or_404(client_id: str) -> Client:
    client = _service().get(client_id)
    if client is None:
        abort(404, description="There is no client app with this id.")
    return client


def _lines(text: str) -> list[str]:
    # A textarea's lines end in CR LF (HTML's form submission): str.splitlines also breaks at
    # U+0085, U+2028 and U+2029, which would cut a URI in two instead of letting the validator
    # refuse the character (idp.services.client_fields).
    return [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]


def _fields_from(form: MultiDict[str, str]) -> ClientFields:
    """The form as the service's input. A JWKS that is not JSON is refused here: it is the only
    field that needs parsing before the service can judge it."""
    jwks_text = form.get("jwks", "").strip()
    jwks: Any = None
    if jwks_text:
        if len(jwks_text) > MAX_JWKS_LENGTH:
            raise ClientRegistrationError("the JWKS is longer than 64 KB")
        try:
            # The application's parser: too deep a nesting is a ValueError, not a crash.
            jwks = current_app.json.loads(jwks_text)
        except ValueError:
            raise ClientRegistrationError("the JWKS is not valid JSON") from None
        if not isinstance(jwks, dict):
            raise ClientRegistrationError("the JWKS must be a JSON object with a 'keys' list")
    return ClientFields(
        name=form.get("name", ""),
        kind=form.get("kind", ""),
        redirect_uris=_lines(form.get("redirect_uris", "")),
        post_logout_redirect_uris=_lines(form.get("post_logout_redirect_uris", "")),
        auth_method=form.get("token_endpoint_auth_method") or None,
        first_party=form.get("first_party") == "1",
        id_token_alg=form.get("id_token_signed_response_alg", ""),
        scopes=form.getlist("scopes"),
        grant_types=form.getlist("grant_types"),
        jwks=jwks,
        logo_uri=form.get("logo_uri"),
        tos_uri=form.get("tos_uri"),
        policy_uri=form.get("policy_uri"),
        backchannel_logout_uri=form.get("backchannel_logout_uri"),
        backchannel_logout_session_required=form.get("backchannel_logout_session_required") == "1",
        require_pushed_authorization_requests=(
            form.get("require_pushed_authorization_requests") == "1"
        ),
        dpop_bound_access_tokens=form.get("dpop_bound_access_tokens") == "1",
        subject_type=form.get("subject_type") or SUBJECT_PUBLIC,
        sector_identifier=form.get("sector_identifier"),
    )


def _form_page(
    fields: ClientFields,
    client: Client | None,
    error: str | None = None,
    *,
    version: int | None = None,
    status: int | None = None,
) -> Any:
    """``version``: the registration the form was read from (an edit's hidden field, which
    ``_save_client`` holds the save to); the client's current one unless given."""
    page = render_template(
        "admin/client_form.html",
        fields=fields,
        client=client,
        version=version if version is not None or client is None else client.version,
        error=error,
        kinds=KINDS,
        kind_labels=KIND_LABELS,
        auth_methods=AUTH_METHODS,
        grant_types=GRANT_TYPES,
        # Every scope the client holds is a box of the form, a mapped claim's own (``roles``,
        # which the API and the command line set) included: the form saves what it shows, and
        # a scope it left out was taken from the client by an edit of anything else.
        scopes=[*SUPPORTED_SCOPES, *(s for s in fields.scopes or () if s not in SUPPORTED_SCOPES)],
        algs=SUPPORTED_ALGS,
        subject_types=SUBJECT_TYPES,
    )
    return page, status or (400 if error else 200)


def _secret_page(client: Client, secret: str, reason: str) -> Any:
    return render_template("admin/client_secret.html", client=client, secret=secret, reason=reason)


@bp.get("/clients")
def clients() -> Any:
    """The client apps, a page at a time: name, client id, kind, status."""
    # By name, then id (names repeat): a keyset page, as the admin API's list (idp.services.pages).
    key = (Client.name, Client.client_id)
    page = listed(lambda cursor: keyset_page(db.session(), select(Client), key, cursor=cursor,
                                             limit=CONSOLE_PAGE))  # fmt: skip
    return render_template("admin/clients.html", clients=page, kind_labels=KIND_LABELS)


@bp.get("/clients/new")
def client_new() -> Any:
    """The form for a new client app."""
    blank = ClientFields(
        name="",
        redirect_uris=[],
        scopes=list(DEFAULT_SCOPES),
        grant_types=["authorization_code", "refresh_token"],
    )
    return _form_page(blank, None)


@bp.post("/clients/new")
def client_create() -> Any:
    """Register a client app; its secret (if it has one) is shown once, on this response."""
    try:
        fields = _fields_from(request.form)
        new = _service().create_from(fields, actor=_actor())
    except ClientRegistrationError as error:
        db.session.rollback()
        return _form_page(_fields_or_blank(request.form), None, str(error))
    db.session.commit()
    if new.client_secret:
        return _secret_page(new.client, new.client_secret, "created")
    flash(f"{new.client.name} is registered.", "info")
    return redirect(url_for("admin.client", client_id=new.client.client_id))


def _fields_or_blank(form: MultiDict[str, str]) -> ClientFields:
    """What the admin typed, to show the form again after an error (the JWKS as entered)."""
    try:
        return _fields_from(form)
    except ClientRegistrationError:
        return _fields_from(MultiDict([(k, v) for k, v in form.items(multi=True) if k != "jwks"]))


@bp.get("/clients/<client_id>")
def client(client_id: str) -> Any:
    """One client app: its settings, its secret's state, and how to connect an application."""
    found = _client_or_404(client_id)
    settings = runtime().settings
    return render_template(
        "admin/client.html",
        client=found,
        kind_labels=KIND_LABELS,
        issuer=settings.issuer,
        discovery_url=settings.endpoint("/.well-known/openid-configuration"),
        overlap_choices=_overlap_choices(settings.client_secret_rotation_overlap),
        default_overlap=settings.client_secret_rotation_overlap,
        native=found.kind == KIND_NATIVE,
        access=client_access(found),
        logout_failures=recent_failures(db.session(), found.client_id),
        sector=sector_of(found),
    )


@bp.route("/clients/<client_id>/edit", methods=["GET", "POST"])
def client_edit(client_id: str) -> Any:
    """Change a client app's settings."""
    found = _client_or_404(client_id)
    if request.method == "POST":
        return _save_client(found, client_id)
    return _form_page(fields_of(found), found)  # GET and HEAD: the form, nothing saved


#: Said when the form was opened before another change to the client (or carries no version).
STALE_FORM = (
    "someone changed this app since this form was opened, so nothing was saved: these are its "
    "settings now; make your change again"
)


def _save_client(found: Client, client_id: str) -> Any:
    # The form saves every setting as it showed them: it applies only to the version it was read
    # from (the admin API's If-Match, RFC 9110 13.1.1), so a form opened before another admin's
    # change (a redirect URI removed, a grant taken away) never silently puts the old value back.
    version = client_version()
    try:
        if version is None:
            raise StaleClientError(client_id)
        secret = _service().update(
            found, _fields_from(request.form), actor=_actor(), expected_version=version,
            confirm_subject_change=request.form.get("confirm_subject_change") == "1",
        )  # fmt: skip
    except ClientRegistrationError as error:
        db.session.rollback()
        return _form_page(_fields_or_blank(request.form), _client_or_404(client_id), str(error),
                          version=version)  # fmt: skip
    except StaleClientError:
        db.session.rollback()
        current = _client_or_404(client_id)
        return _form_page(fields_of(current), current, STALE_FORM, status=409)
    db.session.commit()
    if secret:
        return _secret_page(found, secret, "changed")
    flash("Changes saved.", "info")
    return redirect(url_for("admin.client", client_id=found.client_id))


@bp.post("/clients/<client_id>/rotate-secret")
def client_rotate_secret(client_id: str) -> Any:
    """A new secret, shown once; the old one keeps working for the chosen overlap."""
    found = _client_or_404(client_id)
    raw = request.form.get("overlap", "")
    # ASCII digits only: str.isdigit() is also true of "²", which int() refuses.
    overlap = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 8 else -1
    try:
        secret = _service().rotate_secret(found, overlap=overlap, actor=_actor())
    except ClientRegistrationError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("admin.client", client_id=client_id))
    db.session.commit()
    return _secret_page(found, secret, "rotated")


@bp.post("/clients/<client_id>/disable")
def client_disable(client_id: str) -> Any:
    """Stop a client app: no sign-ins, no tokens, its access tokens revoked."""
    found = _client_or_404(client_id)
    _service().disable(found, actor=_actor())
    db.session.commit()
    flash(f"{found.name} is disabled: it can no longer sign anyone in or get tokens.", "info")
    return redirect(url_for("admin.client", client_id=client_id))


@bp.post("/clients/<client_id>/enable")
def client_enable(client_id: str) -> Any:
    """Let a disabled client app sign users in again."""
    found = _client_or_404(client_id)
    _service().enable(found, actor=_actor())
    db.session.commit()
    flash(f"{found.name} is enabled again.", "info")
    return redirect(url_for("admin.client", client_id=client_id))


@bp.route("/clients/<client_id>/delete", methods=["GET", "POST"])
def client_delete(client_id: str) -> Any:
    """Confirm, then delete a client app and everything issued to it."""
    found = _client_or_404(client_id)
    if confirmed():
        return _delete_client(found)
    # GET and HEAD ask first, and so does a POST without the page's confirm field: only the
    # confirmation page's button deletes (idp.web.confirmed).
    return render_template("admin/client_delete.html", client=found)


def _delete_client(found: Client) -> Any:
    name = found.name
    _service().delete(found, actor=_actor())
    db.session.commit()
    flash(f"{name} is deleted, with every grant and token issued to it.", "info")
    return redirect(url_for("admin.clients"))

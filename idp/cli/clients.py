"""``idp clients``: relying-party applications. The console's pages and these commands share
``idp.services.clients``: the rules live there."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from idp.cli import Group
from idp.cli.client_options import client_options
from idp.cli.common import app_context, emit, fail

if TYPE_CHECKING:
    from idp.models import Client
    from idp.services.clients import Actor, ClientService


@click.group(cls=Group)
def clients() -> None:
    """Manage relying-party applications."""


def _client_service() -> ClientService:
    from idp.composition import services

    # Called inside the command's application context (``app_context``), whose session it uses.
    return services().clients


def _cli_actor() -> Actor:
    from idp.services.audit import CLI_ACTOR
    from idp.services.clients import Actor

    return Actor(user_id=CLI_ACTOR, via="cli")


def _read_jwks(jwks_file: Path | None) -> dict[str, Any] | None:
    if jwks_file is None:
        return None
    try:
        jwks = json.loads(jwks_file.read_text())
    except (ValueError, RecursionError):
        fail(f"{jwks_file} is not JSON")
    if not isinstance(jwks, dict):
        fail(f"{jwks_file} must hold a JSON object with a 'keys' list")
    return jwks


@clients.command("create")
@client_options(create=True)
def clients_create(
    name: str,
    kind: str | None,
    redirect_uris: tuple[str, ...],
    post_logout_uris: tuple[str, ...],
    auth_method: str | None,
    first_party: bool,
    id_token_alg: str | None,
    scopes: tuple[str, ...],
    grant_types: tuple[str, ...],
    jwks_file: Path | None,
    logo_uri: str | None,
    tos_uri: str | None,
    policy_uri: str | None,
    allowed_groups: tuple[str, ...],
    allow_everyone: bool,
    claim_maps: tuple[str, ...],
    as_json: bool,
    public: bool,
    backchannel_logout_uri: str | None,
    backchannel_logout_session_required: bool,
    require_par: bool,
    require_dpop: bool,
    subject_type: str | None,
    sector_identifier: str | None,
) -> None:
    """Register a client; its secret is shown once."""
    from idp.extensions import db
    from idp.services.client_fields import ClientFields

    if public and kind not in (None, "spa", "native"):
        fail("--public contradicts --kind web")
    fields = ClientFields(
        name=name,
        kind=kind or ("spa" if public else "web"),
        redirect_uris=list(redirect_uris),
        post_logout_redirect_uris=list(post_logout_uris),
        auth_method=auth_method,
        first_party=first_party,
        id_token_alg=id_token_alg or "RS256",
        scopes=list(scopes) or None,
        grant_types=list(grant_types) or None,
        jwks=_read_jwks(jwks_file),
        logo_uri=logo_uri,
        tos_uri=tos_uri,
        policy_uri=policy_uri,
        backchannel_logout_uri=backchannel_logout_uri,
        backchannel_logout_session_required=backchannel_logout_session_required,
        require_pushed_authorization_requests=require_par,
        dpop_bound_access_tokens=require_dpop,
        subject_type=subject_type or "public",
        sector_identifier=sector_identifier,
    )
    with app_context():
        new = _client_service().create_from(fields, actor=_cli_actor())
        db.session.flush()
        _apply_group_options(new.client, allowed_groups, allow_everyone, claim_maps, False)
        db.session.commit()
        data = _describe_client(new.client) | {"client_secret": new.client_secret}
        emit(data, as_json, _client_text)


def _apply_group_options(
    client: Client,
    allowed_groups: tuple[str, ...],
    allow_everyone: bool,
    claim_maps: tuple[str, ...],
    clear_claim_maps: bool,
) -> None:
    """``--allowed-group``/``--allow-everyone`` and ``--claim-map``: through the groups service,
    in the same transaction as the rest of the change (an error changes nothing)."""
    from idp.composition import services
    from idp.services.group_fields import GroupError, parse_claim_map

    service = services().groups
    if allow_everyone and allowed_groups:
        raise GroupError("--allow-everyone contradicts --allowed-group")
    if allow_everyone or allowed_groups:
        service.set_allowed_groups(client, list(allowed_groups))
    if claim_maps or clear_claim_maps:
        service.set_claim_maps(client, [parse_claim_map(m) for m in claim_maps])


def _describe_client(client: Client) -> dict[str, Any]:
    from idp.composition import services
    from idp.services.clients import describe

    service = services().groups
    return describe(client) | {
        "allowed_groups": (
            [g.name for g in service.allowed_groups(client.client_id)]
            if client.restricted_to_groups
            else None
        ),
        "claim_maps": [str(m) for m in service.claim_maps(client.client_id)],
    }


def _client_text(data: dict[str, Any]) -> str:
    lines = [f"{k}: {v}" for k, v in data.items() if k != "client_secret"]
    if data.get("client_secret"):
        lines.append(f"client_secret: {data['client_secret']}  (shown once: store it now)")
    return "\n".join(lines)


@clients.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def clients_list(as_json: bool) -> None:
    """List clients: client id, kind, status, name."""
    from idp.services.clients import describe

    with app_context():
        rows = [describe(c) for c in _client_service().list()]
        emit(
            rows,
            as_json,
            lambda r: "\n".join(
                f"{c['client_id']}  {c['kind']:6}  {c['status']:8}  {c['name']}" for c in r
            ),
        )


def _load_client(client_id: str) -> Client:
    from idp.extensions import db
    from idp.models import Client

    client = db.session.get(Client, client_id) if len(client_id) <= 64 else None
    if client is None:
        fail(f"no client {client_id}")
    return client


@clients.command("show")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def clients_show(client_id: str, as_json: bool) -> None:
    """Show one client (never its secret)."""
    with app_context():
        emit(_describe_client(_load_client(client_id)), as_json, _client_text)


@clients.command("edit")
@click.argument("client_id")
@client_options(create=False)
def clients_edit(
    client_id: str,
    name: str | None,
    kind: str | None,
    redirect_uris: tuple[str, ...],
    post_logout_uris: tuple[str, ...],
    auth_method: str | None,
    first_party: bool | None,
    id_token_alg: str | None,
    scopes: tuple[str, ...],
    grant_types: tuple[str, ...],
    jwks_file: Path | None,
    logo_uri: str | None,
    tos_uri: str | None,
    policy_uri: str | None,
    allowed_groups: tuple[str, ...],
    allow_everyone: bool,
    claim_maps: tuple[str, ...],
    as_json: bool,
    clear_post_logout: bool,
    clear_claim_maps: bool,
    backchannel_logout_uri: str | None,
    backchannel_logout_session_required: bool | None,
    require_par: bool | None,
    require_dpop: bool | None,
    subject_type: str | None,
    sector_identifier: str | None,
    confirm_subject_change: bool,
) -> None:
    """Change a client; options not given stay as they are (an empty --logo-uri '' clears it).
    A new secret is printed once if the change needs one."""
    import dataclasses

    from idp.extensions import db
    from idp.services.client_fields import fields_of

    changes: dict[str, Any] = {
        key: value
        for key, value in {
            "name": name,
            "kind": kind,
            "auth_method": auth_method,
            "first_party": first_party,
            "id_token_alg": id_token_alg,
            "jwks": _read_jwks(jwks_file),
            "logo_uri": logo_uri,
            "tos_uri": tos_uri,
            "policy_uri": policy_uri,
            "backchannel_logout_uri": backchannel_logout_uri,
            "backchannel_logout_session_required": backchannel_logout_session_required,
            "require_pushed_authorization_requests": require_par,
            "dpop_bound_access_tokens": require_dpop,
            "subject_type": subject_type,
            "sector_identifier": sector_identifier,
        }.items()
        if value is not None
    }
    lists = {"redirect_uris": redirect_uris, "post_logout_redirect_uris": post_logout_uris,
             "scopes": scopes, "grant_types": grant_types}  # fmt: skip
    for key, values in lists.items():
        if values:
            changes[key] = list(values)
    if clear_post_logout:
        changes["post_logout_redirect_uris"] = []
    with app_context():
        client = _load_client(client_id)
        secret = None
        if changes or not (allowed_groups or allow_everyone or claim_maps or clear_claim_maps):
            fields = dataclasses.replace(fields_of(client), **changes)
            # Only onto the version read (RFC 9110 13.1.1): ``fields`` copies that version.
            secret = _client_service().update(client, fields, actor=_cli_actor(),
                expected_version=client.version,
                confirm_subject_change=confirm_subject_change)  # fmt: skip
        _apply_group_options(client, allowed_groups, allow_everyone, claim_maps, clear_claim_maps)
        db.session.commit()
        emit(_describe_client(client) | {"client_secret": secret}, as_json, _client_text)


def _client_switch(
    client_id: str, as_json: bool, act: Callable[[ClientService, Client], None], done: str
) -> None:
    from idp.extensions import db
    from idp.services.clients import describe

    with app_context():
        client = _load_client(client_id)
        act(_client_service(), client)
        db.session.commit()
        emit(describe(client), as_json, lambda d: f"{done} client {d['client_id']}")


@clients.command("disable")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def clients_disable(client_id: str, as_json: bool) -> None:
    """Stop a client: no sign-ins, no tokens, and its access tokens are revoked now."""
    _client_switch(client_id, as_json, lambda s, c: s.disable(c, actor=_cli_actor()), "disabled")


@clients.command("enable")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def clients_enable(client_id: str, as_json: bool) -> None:
    """Let a disabled client sign users in again."""
    _client_switch(client_id, as_json, lambda s, c: s.enable(c, actor=_cli_actor()), "enabled")


@clients.command("rotate-secret")
@click.argument("client_id")
@click.option(
    "--overlap",
    type=int,
    help="Seconds the old secret keeps working (default: client_secret_rotation_overlap; "
    "0: it stops at once).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def clients_rotate_secret(client_id: str, overlap: int | None, as_json: bool) -> None:
    """Give a client a new secret (shown once); the old one works on for the overlap."""
    from idp.extensions import db

    with app_context() as app:
        settings = app.extensions["idp"].settings
        client = _load_client(client_id)
        chosen = settings.client_secret_rotation_overlap if overlap is None else overlap
        secret = _client_service().rotate_secret(client, overlap=chosen, actor=_cli_actor())
        db.session.commit()
        expires = client.previous_secret_expires_at
        data = {
            "client_id": client_id,
            "client_secret": secret,
            "previous_secret_expires_at": expires.isoformat() if expires else None,
        }
        emit(data, as_json, _client_text)


@clients.command("delete")
@click.argument("client_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def clients_delete(client_id: str, yes: bool, as_json: bool) -> None:
    """Delete a client and everything issued to it (asks first, as the console does)."""
    from idp.extensions import db

    with app_context():
        found = _load_client(client_id)
        if not yes:
            click.confirm(f"Delete client {client_id} and every grant, consent and token?",
                          abort=True)  # fmt: skip
        _client_service().delete(found, actor=_cli_actor())
        db.session.commit()
        emit({"client_id": client_id, "deleted": True}, as_json,
              lambda d: f"deleted client {d['client_id']}")  # fmt: skip

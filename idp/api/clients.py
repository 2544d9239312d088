"""``/api/v1/clients``: relying parties, through ``idp.services.clients`` as the console does."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from flask import request, url_for
from sqlalchemy import select

from idp.api import schemas
from idp.api.core import actor, not_found, operation
from idp.api.openapi import ENTITY_TAGS
from idp.api.problems import Problem
from idp.composition import request_context, runtime, services
from idp.extensions import db
from idp.models import Client
from idp.services.audit import RequestContext
from idp.services.client_fields import ClientFields, fields_of
from idp.services.clients import Actor, ClientService, describe
from idp.services.pages import keyset_page

TAG = "clients"


def _service() -> ClientService:
    return services().clients


def _actor() -> Actor:
    context: RequestContext = request_context()
    return Actor(user_id=actor(), via="api", context=context)


def _client(client_id: str) -> Client:
    found = _service().get(client_id)
    if found is None:
        raise not_found("client with this id")
    return found


def etag(client: Client) -> str:
    """A strong entity tag of the client's version (RFC 9110 8.8.3)."""
    return f'"v{client.version}"'


def _out(client: Client, status: int = 200, **extra: Any) -> Any:
    model = schemas.ClientWithSecret if "client_secret" in extra else schemas.ClientOut
    body = model.model_validate(describe(client) | extra).model_dump(mode="json")
    return body, status, {"ETag": etag(client)}


def _expected_version(client: Client) -> int:
    """RFC 9110 13.1.1: the change applies only to the version the caller read. Without
    If-Match the change is refused (RFC 6585 3, 428): a blind write could undo another's."""
    header = request.headers.get("If-Match")
    # "*" matches any version (RFC 9110 13.1.1): as blind a write as no If-Match at all.
    if header is None or header.strip() == "*":
        raise Problem("precondition-required", "Send the ETag of the client in If-Match.")
    # A value that is no list of entity-tags is a malformed request (400), as the document
    # declares the header (idp.api.openapi ENTITY_TAGS), not a version that changed (412).
    if re.fullmatch(ENTITY_TAGS, header.strip()) is None:
        raise Problem("malformed-request", 'If-Match must be a list of entity-tags, e.g. "v2".')
    # A list of entity-tags, compared strongly: a weak tag (W/"v1") never matches.
    if etag(client) not in (tag.strip() for tag in header.split(",")):
        raise Problem("precondition-failed", "The client changed since it was read.")
    return client.version


@operation("GET", "/clients", summary="List clients", scope="clients:read", tag=TAG,
           query=schemas.ListQuery, response=schemas.ClientList)  # fmt: skip
def list_clients(query: schemas.ListQuery) -> Any:
    page = keyset_page(db.session(), select(Client), Client.client_id, cursor=query.cursor,
                       limit=query.limit)  # fmt: skip
    items = [schemas.ClientOut.model_validate(describe(c)) for c in page.items]
    return schemas.ClientList(items=items, next_cursor=page.next_cursor).model_dump(mode="json")


@operation("POST", "/clients", summary="Register a client (its secret is in this response only)",
           scope="clients:write", tag=TAG, body=schemas.ClientCreate,
           response=schemas.ClientWithSecret, status=201,
           refusals=("invalid-value",), creates=("client_id", "client_id"))  # fmt: skip
def create_client(body: schemas.ClientCreate) -> Any:
    fields = ClientFields(
        name=body.name,
        kind=body.kind,
        redirect_uris=body.redirect_uris,
        post_logout_redirect_uris=body.post_logout_redirect_uris,
        auth_method=body.token_endpoint_auth_method,
        first_party=body.first_party,
        id_token_alg=body.id_token_signed_response_alg,
        scopes=body.scopes,
        grant_types=body.grant_types,
        jwks=body.jwks,
        logo_uri=body.logo_uri,
        tos_uri=body.tos_uri,
        policy_uri=body.policy_uri,
        backchannel_logout_uri=body.backchannel_logout_uri,
        backchannel_logout_session_required=body.backchannel_logout_session_required,
        require_pushed_authorization_requests=body.require_pushed_authorization_requests,
        dpop_bound_access_tokens=body.dpop_bound_access_tokens,
        subject_type=body.subject_type,
        sector_identifier=body.sector_identifier,
    )
    new = _service().create_from(fields, actor=_actor())
    db.session.commit()
    body_, status, headers = _out(new.client, 201, client_secret=new.client_secret)
    headers["Location"] = url_for("api.get_client", client_id=new.client.client_id)
    return body_, status, headers


@operation("GET", "/clients/<client_id>", summary="One client (never its secret)",
           scope="clients:read", tag=TAG, response=schemas.ClientOut)  # fmt: skip
def get_client(client_id: str) -> Any:
    return _out(_client(client_id))


#: ClientPatch's members as ClientFields' names.
_PATCH_FIELDS = {
    "token_endpoint_auth_method": "auth_method",
    "id_token_signed_response_alg": "id_token_alg",
}


@operation("PATCH", "/clients/<client_id>", summary="Change a client (needs If-Match)",
           scope="clients:write", tag=TAG, body=schemas.ClientPatch,
           response=schemas.ClientWithSecret, if_match=True,
           refusals=("invalid-value", "subject-change"))  # fmt: skip
def patch_client(client_id: str, body: schemas.ClientPatch) -> Any:
    found = _client(client_id)
    expected = _expected_version(found)
    given = body.model_dump(exclude_unset=True)
    if given.get("backchannel_logout_session_required", False) is None:
        given.pop("backchannel_logout_session_required")  # null: leave it as it is
    confirmed = bool(given.pop("confirm_subject_change", False))
    changes = {_PATCH_FIELDS.get(name, name): value for name, value in given.items()}
    fields = dataclasses.replace(fields_of(found), **changes)
    secret = _service().update(found, fields, actor=_actor(), expected_version=expected,
                               confirm_subject_change=confirmed)  # fmt: skip
    db.session.commit()
    # A client that newly authenticates with a secret gets one, shown here once.
    return _out(found, client_secret=secret) if secret else _out(found)


@operation("DELETE", "/clients/<client_id>", summary="Delete a client and all it was issued",
           scope="clients:write", tag=TAG, status=204,
           refusals=("precondition-failed",))  # fmt: skip
def delete_client(client_id: str) -> Any:
    found = _client(client_id)
    # Optional here; "*" (it exists, which the lookup above found) asks nothing more.
    if request.headers.get("If-Match", "*").strip() != "*":
        _expected_version(found)
    _service().delete(found, actor=_actor())
    db.session.commit()
    return "", 204


@operation("POST", "/clients/<client_id>/rotate-secret",
           summary="A new secret (in this response only); the old one works for the overlap",
           scope="clients:write", tag=TAG, body=schemas.RotateSecret, body_required=False,
           response=schemas.ClientSecret,
           refusals=("invalid-value",))  # fmt: skip
def rotate_client_secret(client_id: str, body: schemas.RotateSecret) -> Any:
    found = _client(client_id)
    overlap = body.overlap_seconds
    if overlap is None:
        overlap = runtime().settings.client_secret_rotation_overlap
    secret = _service().rotate_secret(found, overlap=overlap, actor=_actor())
    db.session.commit()
    out = schemas.ClientSecret(
        client_id=found.client_id,
        client_secret=secret,
        previous_secret_expires_at=(
            found.previous_secret_expires_at.isoformat() if found.previous_secret_expires_at
            else None
        ),
    )  # fmt: skip
    return out.model_dump(mode="json"), 200, {"ETag": etag(found)}

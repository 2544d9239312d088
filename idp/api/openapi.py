"""The OpenAPI 3.1 document of the API, built from the operations' own records and models (the
ones that validate requests), so that it describes exactly the routes the API serves."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydantic import BaseModel

from idp.api import schemas
from idp.api.core import OPERATIONS, Operation, operation
from idp.api.problems import MEDIA_TYPE, TYPES
from idp.services.api_tokens import SCOPES

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
_PATH_ARGUMENT = re.compile(r"<(?:[a-z_]+:)?([a-z_]+)>")
#: No text idp takes holds a NUL (PostgreSQL text cannot): one in a JSON body is malformed JSON
#: (idp.json_provider), in a path or a query a malformed request (idp.web.form_request), both
#: 400. JSON Schema's pattern is an ECMA-262 regular expression (2020-12 validation 6.3.3).
NO_NUL = "^[^\\u0000]*$"


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path template (``<client_id>`` to ``{client_id}``)."""
    return _PATH_ARGUMENT.sub(r"{\1}", rule)


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], mode: str) -> dict[str, str]:
        found = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
        if mode == "validation":
            _refuse_nul(found)
        self.schemas.update(found.pop("$defs", {}))
        self.schemas[model.__name__] = found
        return {"$ref": REF.format(model=model.__name__)}


#: Any JSON value without a NUL in its text: what a free-form member (a client's ``jwks``) takes.
ANY_JSON = "AnyJSON"
_ANY_JSON_SCHEMA = {
    "description": "Any JSON value, with no NUL character in a string or a member's name",
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": ["number", "boolean", "null"]},
        {"type": "array", "items": {"$ref": REF.format(model=ANY_JSON)}},
        {"type": "object", "propertyNames": {"pattern": NO_NUL},
         "additionalProperties": {"$ref": REF.format(model=ANY_JSON)}},
    ],
}  # fmt: skip


def _refuse_nul(schema: Any) -> None:
    """Say so (``NO_NUL``) of every string a request schema takes that no enum names, and of
    every string inside a free-form object (``ANY_JSON``)."""
    if isinstance(schema, dict):
        if schema.get("type") == "string" and "enum" not in schema:
            schema.setdefault("pattern", NO_NUL)
        if schema.get("type") == "object" and schema.get("additionalProperties") is True:
            schema["propertyNames"] = {"pattern": NO_NUL}
            schema["additionalProperties"] = {"$ref": REF.format(model=ANY_JSON)}
        for value in schema.values():
            _refuse_nul(value)
    elif isinstance(schema, list):
        for value in schema:
            _refuse_nul(value)


def _parameters(op: Operation) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "string", "pattern": NO_NUL}}
        for name in _PATH_ARGUMENT.findall(op.rule)
    ]  # fmt: skip
    if op.query is not None:
        properties = op.query.model_json_schema()["properties"]
        _refuse_nul(properties)
        for name, field in op.query.model_fields.items():
            found.append({"name": name, "in": "query", "required": field.is_required(),
                          "schema": properties[name]})  # fmt: skip
    if op.if_match:
        found.append({"name": "If-Match", "in": "header", "required": True,
                      "description": "The ETag of the resource as read (RFC 9110 13.1.1); "
                                     "`*` is refused (428): it would be a blind write",
                      "schema": {"type": "string", "pattern": ENTITY_TAGS}})  # fmt: skip
    return found


#: RFC 9110 13.1.1: ``If-Match`` is ``*`` or a list of entity-tags (8.8.3: an optional ``W/``
#: and a quoted string of ``etagc``); idp takes the list only (idp.api.clients).
ENTITY_TAGS = r'^(W/)?"[!#-~]*"(, ?(W/)?"[!#-~]*")*$'

#: What any operation may answer: a NUL in the path or the query (idp.web.form_request), a body
#: over the limit (read before anything, a GET's too), and idp's own faults.
_ANY_OPERATION = ("malformed-request", "payload-too-large", "server-error", "unavailable")
_WITH_TOKEN = ("authentication-required", "invalid-token", "insufficient-scope",
               "too-many-requests")  # fmt: skip
_WITH_BODY = ("malformed-json", "unsupported-media-type", "invalid-body")


def problems_of(op: Operation) -> list[str]:
    """The problem types ``op`` may answer (idp.api.problems), each status declared in the
    document with the types it stands for, and no other: the statuses are exact (as the
    schemas are), not a ``default`` that would declare every status there is."""
    found = list(_ANY_OPERATION)
    if op.scope is not None:
        found.extend(_WITH_TOKEN)
    if _PATH_ARGUMENT.search(op.rule):
        found.append("not-found")
    if op.query is not None:
        found.append("invalid-query")
    if op.body is not None:
        found.extend(_WITH_BODY)
    if op.if_match:
        found.extend(("precondition-required", "precondition-failed"))
    found.extend(slug for slug in op.refusals if slug not in found)
    return found


def _problems(op: Operation) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for slug in problems_of(op):
        by_status.setdefault(TYPES[slug].status, []).append(slug)
    return {
        str(status): {
            "description": "RFC 9457 problem details: " + ", ".join(slugs),
            "content": {MEDIA_TYPE: {"schema": {"$ref": REF.format(model="Problem")}}},
        }
        for status, slugs in sorted(by_status.items())
    }


def _links(op: Operation) -> dict[str, Any]:
    """From the answer of an operation that creates a resource to each operation on it: what
    reads, changes or deletes it next takes its id (and its ETag, for an If-Match)."""
    if op.creates is None:
        return {}
    parameter, member = op.creates
    resource = f"{openapi_path(op.rule)}/{{{parameter}}}"
    found: dict[str, Any] = {}
    for other in OPERATIONS:
        path = openapi_path(other.rule)
        if path != resource and not path.startswith(resource + "/"):
            continue
        values = {parameter: f"$response.body#/{member}"}
        if other.if_match:
            values["header.If-Match"] = "$response.header.ETag"
        name = other.endpoint.removeprefix("api.")
        found[name] = {"operationId": name, "parameters": values}
    return found


def _operation(op: Operation, components: _Components) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "Success"}
    if op.response is not None:
        success["content"] = {
            "application/json": {"schema": components.ref(op.response, "serialization")}
        }
    links = _links(op)
    if links:
        success["links"] = links
    responses: dict[str, Any] = {str(op.status): success} | _problems(op)
    found: dict[str, Any] = {
        "operationId": op.endpoint.removeprefix("api."),
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": _parameters(op),
        "responses": responses,
    }
    if op.scope is None:
        found["security"] = []
    else:
        found["x-required-scope"] = op.scope
        found["description"] = f"Needs a token with the `{op.scope}` scope."
        if op.on_admins:
            found["description"] += f" On an admin, or to make one, also `{op.on_admins}`."
    if op.body is not None:
        found["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": components.ref(op.body, "validation")}},
        }
    return found


@cache
def document() -> dict[str, Any]:
    components = _Components()
    components.ref(schemas.Problem, "serialization")
    components.schemas[ANY_JSON] = _ANY_JSON_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(openapi_path(op.rule), {})[op.method.lower()] = _operation(op, components)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "idp admin API",
            "version": "1",
            "description": (
                "Manage idp as code (docs/api.md). Bearer tokens with scopes: "
                + ", ".join(SCOPES)
                + "; a write scope implies its read scope. Errors are RFC 9457 problem details "
                "with these types: " + ", ".join(t.uri for t in TYPES.values()) + "."
            ),
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "idp_..."}
            },
        },
    }


@operation("GET", "/openapi.json", summary="This API's OpenAPI 3.1 document", scope=None,
           tag="meta")  # fmt: skip
def openapi_document() -> Any:
    return document()

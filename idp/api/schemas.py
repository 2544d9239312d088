"""The API's request and response models: they validate requests, shape responses, and are the
OpenAPI document's schemas (JSON Schema 2020-12, as OpenAPI 3.1 uses).

Requests forbid unknown members and are validated strictly (no "5" for 5). They check shape and
size only; every rule about what a value may be stays in the services, which the console and the
CLI share.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from idp.models.clients import KINDS, SUBJECT_TYPES
from idp.services.client_fields import AUTH_METHODS, MAX_ROTATION_OVERLAP, MAX_URI_LENGTH, MAX_URIS
from idp.services.group_fields import MAX_MEMBERS_AT_ONCE
from idp.services.pages import DEFAULT_LIMIT, MAX_LIMIT
from idp.services.user_admin import MAX_LINK_TTL, MIN_LINK_TTL


def _whole_number(value: Any) -> Any:
    """433.0 as 433: JSON has one number type (RFC 8259 6), and JSON Schema's integer, which the
    document says, is any number with a zero fractional part (2020-12 core 4.2.1), so the strict
    validation below must not refuse it. A fraction, a string or a boolean is still refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: Applied after an integer member's bounds, so that the document keeps them as JSON Schema's
#: minimum and maximum.
WHOLE_NUMBER = BeforeValidator(_whole_number)
Uri = Annotated[str, Field(max_length=MAX_URI_LENGTH)]
Uris = Annotated[list[Uri], Field(max_length=MAX_URIS)]
Kind = Literal[KINDS]  # type: ignore[valid-type]
SubjectType = Annotated[
    Literal[SUBJECT_TYPES],  # type: ignore[valid-type]
    Field(description="OIDC Core 8: public (the default) or pairwise (a sub per sector)"),
]
SectorIdentifier = Annotated[
    str | None,
    Field(max_length=253, description="a pairwise client's sector host (OIDC Core 8.1); "
          "null: its redirect URIs' host, required when they span several hosts"),
]  # fmt: skip
AuthMethod = Literal[AUTH_METHODS]  # type: ignore[valid-type]
Scope = Annotated[str, Field(max_length=64)]
GrantTypes = Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=5)]


# ``defer_build``: a model's validator and serializer are built at its first use, not when this
# module is imported. Every ``idp`` process imports it (create_app registers the API), and most
# (the CLI's commands, a worker that never serves the API) never validate a request here: building
# the 31 models up front cost each of them about 1 % of its start.
class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


# -- lists -----------------------------------------------------------------------------------------
class ListQuery(Request):
    cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT


class UserListQuery(ListQuery):
    email: Annotated[str | None, Field(max_length=320, description="exact address")] = None


#: A time of the audit filter: RFC 3339's date-time (2020-12 validation 7.3.1) is what the document
#: promises to take; idp.services.audit.parse_time takes the rest of ISO 8601's extended times too.
_TIME = Field(min_length=1, json_schema_extra={"format": "date-time"})


class AuditQuery(ListQuery):
    since: Annotated[str | None, Field(description="ISO 8601; UTC without a zone"), _TIME] = None
    until: Annotated[str | None, Field(description="ISO 8601, exclusive"), _TIME] = None
    actor: Annotated[
        str | None,
        Field(max_length=64, description="a user id, cli, or api-token:<name>"),
    ] = None
    event: Annotated[
        str | None, Field(max_length=64, description="an event kind; a trailing * is a prefix")
    ] = None
    outcome: Literal["success", "failure"] | None = None
    user: Annotated[
        str | None, Field(max_length=320, description="email of the actor or subject")
    ] = None
    client: Annotated[str | None, Field(max_length=64)] = None


class DeleteGroupQuery(Request):
    confirm: Annotated[
        bool, Field(description="delete even when it is some client's only allowed group")
    ] = False


# -- clients ---------------------------------------------------------------------------------------
class ClientCreate(Request):
    name: Annotated[str, Field(max_length=200)]
    redirect_uris: Uris
    kind: Kind = "web"
    post_logout_redirect_uris: Uris = []
    token_endpoint_auth_method: AuthMethod | None = None
    first_party: bool = False
    id_token_signed_response_alg: Annotated[str, Field(max_length=10)] = "RS256"
    scopes: Annotated[list[Scope], Field(max_length=50)] | None = None
    grant_types: (
        Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=5)] | None
    ) = None
    jwks: dict[str, Any] | None = None
    logo_uri: Uri | None = None
    tos_uri: Uri | None = None
    policy_uri: Uri | None = None
    backchannel_logout_uri: Annotated[
        Uri | None, Field(description="OpenID Connect Back-Channel Logout 1.0 section 2.2")
    ] = None
    backchannel_logout_session_required: bool = False
    require_pushed_authorization_requests: Annotated[
        bool, Field(description="RFC 9126 6: authorization requests only through POST /par")
    ] = False
    dpop_bound_access_tokens: Annotated[
        bool, Field(description="RFC 9449 5.2: every token request with a DPoP proof")
    ] = False
    subject_type: SubjectType = "public"
    sector_identifier: SectorIdentifier = None


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


#: A member a PATCH may leave out but not set to null: the client has no value without it
#: (``Field``'s default is not validated, an explicit null is: 422, docs/api.md). The document
#: shows it as optional, without the null default its type does not allow.
_NOT_NULL = Field(default=None, json_schema_extra=_no_default)


class ClientPatch(Request):
    """Only the members given change; the rest keep their values. Null clears a member that may
    be empty (the URIs of the consent page, ``jwks``, back-channel logout) or restores its
    default (``scopes``, ``grant_types``, ``token_endpoint_auth_method``)."""

    name: Annotated[str, Field(max_length=200), _NOT_NULL]
    redirect_uris: Annotated[Uris, _NOT_NULL]
    kind: Annotated[Kind, _NOT_NULL]
    post_logout_redirect_uris: Annotated[Uris, _NOT_NULL]
    token_endpoint_auth_method: AuthMethod | None = None
    first_party: Annotated[bool, _NOT_NULL]
    id_token_signed_response_alg: Annotated[str, Field(max_length=10), _NOT_NULL]
    scopes: Annotated[list[Scope], Field(max_length=50)] | None = None
    grant_types: (
        Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=5)] | None
    ) = None
    jwks: dict[str, Any] | None = None
    logo_uri: Uri | None = None
    tos_uri: Uri | None = None
    policy_uri: Uri | None = None
    backchannel_logout_uri: Uri | None = None
    backchannel_logout_session_required: bool | None = None
    require_pushed_authorization_requests: Annotated[bool, _NOT_NULL]
    dpop_bound_access_tokens: Annotated[bool, _NOT_NULL]
    subject_type: Annotated[SubjectType, _NOT_NULL]
    sector_identifier: SectorIdentifier = None
    confirm_subject_change: Annotated[
        bool,
        Field(description="required to change subject_type or the sector (the redirect URIs' "
              "host included): every user of the client gets another sub"),
    ] = False  # fmt: skip


class RotateSecret(Request):
    overlap_seconds: Annotated[
        Annotated[int, Field(ge=0, le=MAX_ROTATION_OVERLAP), WHOLE_NUMBER] | None,
        Field(description="default: the configured overlap"),
    ] = None


class ClientOut(Response):
    client_id: str
    name: str
    kind: str
    public: bool
    status: Literal["active", "disabled"]
    token_endpoint_auth_method: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    scopes: list[str]
    grant_types: list[str]
    id_token_signed_response_alg: str
    first_party: bool
    logo_uri: str | None
    tos_uri: str | None
    policy_uri: str | None
    previous_secret_expires_at: str | None
    disabled_at: str | None
    created_at: str | None
    updated_at: str | None
    backchannel_logout_uri: str | None
    backchannel_logout_session_required: bool
    require_pushed_authorization_requests: bool
    dpop_bound_access_tokens: bool
    subject_type: str
    sector_identifier: str | None


class ClientWithSecret(ClientOut):
    client_secret: Annotated[
        str | None, Field(description="shown once; null for clients without a secret")
    ]


class ClientSecret(Response):
    client_id: str
    client_secret: str
    previous_secret_expires_at: str | None


class ClientList(Response):
    items: list[ClientOut]
    next_cursor: str | None


# -- users -----------------------------------------------------------------------------------------
class UserCreate(Request):
    email: Annotated[str, Field(max_length=320)]
    name: Annotated[str, Field(max_length=200)] = ""
    admin: bool = False
    invite: Annotated[
        bool,
        Field(description="true: send a one-time invite (name, then a passkey); false: no way "
                          "in until a login link"),
    ] = True  # fmt: skip
    invite_ttl_seconds: Annotated[int, Field(ge=MIN_LINK_TTL, le=MAX_LINK_TTL), WHOLE_NUMBER] = (
        MAX_LINK_TTL
    )
    invite_mailed_only: Annotated[
        bool,
        Field(description="true: the invite is only emailed (its url is null here), and "
                          "accepting it verifies the address; false: its url is in this answer "
                          "too, and the user confirms the address later (email_verified false)"),
    ] = False  # fmt: skip


class UserPatch(Request):
    name: Annotated[str, Field(max_length=200)] | None = None
    admin: bool | None = None


class LoginLinkCreate(Request):
    ttl_seconds: Annotated[
        Annotated[int, Field(ge=MIN_LINK_TTL, le=MAX_LINK_TTL), WHOLE_NUMBER] | None,
        Field(description="default: the configured lifetime"),
    ] = None


class UserOut(Response):
    id: str
    sub: str
    email: str
    name: str
    admin: bool
    disabled: bool
    disabled_at: str | None
    created_at: str | None


class IssuedLinkOut(Response):
    id: str
    url: Annotated[
        str | None,
        Field(
            description="one use; shown once; null for an invite only emailed (invite_mailed_only)"
        ),
    ]
    expires_at: str


class UserCreated(UserOut):
    invite: IssuedLinkOut | None


class UserList(Response):
    items: list[UserOut]
    next_cursor: str | None


# -- groups ----------------------------------------------------------------------------------------
GroupName = Annotated[str, Field(max_length=64)]


class GroupCreate(Request):
    name: GroupName
    display_name: Annotated[str, Field(max_length=200)] = ""
    description: Annotated[str, Field(max_length=1000)] = ""


class GroupPatch(Request):
    name: GroupName | None = None
    display_name: Annotated[str, Field(max_length=200)] | None = None
    description: Annotated[str, Field(max_length=1000)] | None = None


class GroupOut(Response):
    name: str
    display_name: str
    description: str
    created_at: str | None


class GroupList(Response):
    items: list[GroupOut]
    next_cursor: str | None


class MembersAdd(Request):
    emails: Annotated[
        list[Annotated[str, Field(max_length=320)]],
        Field(min_length=1, max_length=MAX_MEMBERS_AT_ONCE),
    ]


class MembersChanged(Response):
    changed: Annotated[list[str], Field(description="the emails added (or removed) by this call")]


class MemberList(Response):
    items: list[UserOut]
    next_cursor: str | None


# -- audit -----------------------------------------------------------------------------------------
class AuditEventOut(Response):
    id: int
    at: str
    kind: str
    outcome: str
    actor_id: str | None
    actor_email: str | None
    subject_id: str | None
    subject_email: str | None
    client_id: str | None
    ip_address: str
    user_agent: str
    browser: str
    details: dict[str, Any]


class AuditList(Response):
    items: list[AuditEventOut]
    next_cursor: str | None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow", defer_build=True)
    type: str
    title: str
    status: int
    detail: str | None = None

"""Registering relying parties, changing them, and checking their credentials.

One service for the admin console and the ``idp clients`` commands: every rule about what a client
may be lives here, and every change is written to the audit log with who made it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from idp import checkpoints
from idp.clock import SYSTEM_CLOCK, Clock
from idp.errors import StaleVersionError
from idp.models import AccessToken, Client
from idp.models.base import random_id
from idp.models.clients import KIND_SPA, KIND_WEB, PUBLIC_KINDS
from idp.services import audit
from idp.services.audit import RequestContext
from idp.services.client_fields import (
    MAX_ROTATION_OVERLAP,
    SECRET_AUTH_METHODS,
    ClientFields,
    ClientRegistrationError,
    apply_fields,
    fields_of,
    on_loopback,
)
from idp.services.crypto import KeyedHasher, new_secret
from idp.services.group_access import lock_access_changes
from idp.services.pending_authorizations import withdraw_pushed
from idp.services.subjects import subject_key


@dataclass(frozen=True)
class _Subjects:
    """A client's subject settings as ``fields`` would make them (idp.services.subjects)."""

    client_id: str
    fields: ClientFields

    @property
    def subject_type(self) -> str:
        return self.fields.subject_type

    @property
    def sector_identifier(self) -> str | None:
        return self.fields.sector_identifier

    @property
    def redirect_uris(self) -> list[str]:
        return self.fields.redirect_uris


@dataclass(frozen=True)
class _StoredSubjects:
    """A client's subject settings as its stored row holds them (idp.services.subjects)."""

    client_id: str
    subject_type: str
    sector_identifier: str | None
    redirect_uris: list[str]


def _stored_subjects(db: Session, client: Client) -> tuple[str, str | None]:
    """The stored registration's ``subject_key``, read past this session's copy of ``client``."""
    row = db.execute(
        select(Client.subject_type, Client.sector_identifier, Client.redirect_uris).where(
            Client.client_id == client.client_id
        )
    ).one()
    return subject_key(_StoredSubjects(client.client_id, row.subject_type,
                                       row.sector_identifier, list(row.redirect_uris)))  # fmt: skip


class SubjectChangeUnconfirmedError(ClientRegistrationError):
    """The change would give every user of the client another ``sub`` and was not confirmed."""


class StaleClientError(StaleVersionError):
    """The client changed since the version the caller read (another change won)."""

    def __init__(self, client_id: str) -> None:
        super().__init__(f"client {client_id} changed since it was read")
        self.client_id = client_id


#: Where an update from an expected version is held, in tests, before it claims that version, and
#: where any update is held after claiming it, before it commits (idp.checkpoints).
CLAIMING_CHECKPOINT = "client-version-claiming"
VERSION_CHECKPOINT = "client-version-claimed"


def claim_version(db: Session, client: Client, expected: int | None = None) -> None:
    """A new version for the client, in one conditional UPDATE: with ``expected``, only from
    that version, so that of two changes made from one version only the first applies (the other
    finds no row and raises ``StaleClientError``; its transaction is rolled back). Every change
    of the client takes one: its settings here, its allowed groups and claim maps
    (idp.services.groups), so the version (the API's ETag, the console forms' hidden field)
    covers all of it. The row stays locked until the transaction ends (PostgreSQL's row lock,
    SQLite's write lock), so nothing else changes it in between. The lock of access changes
    comes first (``lock_access_changes``), always in that order."""
    where = [Client.client_id == client.client_id]
    if expected is not None:
        checkpoints.reached(CLAIMING_CHECKPOINT)
        where.append(Client.version == expected)
    lock_access_changes(db)
    version = db.scalar(
        update(Client)
        .where(*where)
        .values(version=Client.version + 1)
        .returning(Client.version)
        .execution_options(synchronize_session=False)
    )
    if version is None:
        raise StaleClientError(client.client_id)
    set_committed_value(client, "version", version)
    checkpoints.reached(VERSION_CHECKPOINT)


def check_version(db: Session, client: Client, expected: int | None) -> None:
    """``StaleClientError`` unless the stored client is still at ``expected`` (None: any): the
    precondition of a change that turned out to change nothing, which claims no version (RFC
    9110 13.1.1: If-Match is evaluated whatever the method then does)."""
    if expected is None:
        return
    stored = db.scalar(select(Client.version).where(Client.client_id == client.client_id))
    if stored != expected:
        raise StaleClientError(client.client_id)


@dataclass(frozen=True)
class NewClient:
    client: Client
    #: Shown once at creation and never again; None for public and private_key_jwt clients.
    client_secret: str | None


@dataclass(frozen=True)
class Actor:
    """Who changes a client, for the audit log: an admin's user id, or None for the command line."""

    user_id: str | None = None
    via: str = "cli"
    context: RequestContext = field(default_factory=RequestContext)


class ClientService:
    def __init__(
        self,
        db: Session,
        secret_hasher: KeyedHasher,
        *,
        issuer: str = "",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db = db
        self.secret_hasher = secret_hasher
        #: The time of a change made without an explicit ``now``.
        self.clock = clock
        #: An issuer on loopback is a development setup: http back-channel logout URIs on
        #: loopback are accepted then (``validate_backchannel_logout_uri``).
        self.development = on_loopback(issuer)

    def _audit(self, event: str, client_id: str, actor: Actor | None, **details: Any) -> None:
        actor = actor or Actor()
        audit.record(
            self.db,
            event,
            actor_id=actor.user_id,
            client_id=client_id,
            context=actor.context,
            via=actor.via,
            **details,
        )

    def create(
        self,
        *,
        name: str,
        redirect_uris: list[str],
        post_logout_redirect_uris: list[str] | None = None,
        kind: str | None = None,
        public: bool = False,
        auth_method: str | None = None,
        first_party: bool = False,
        id_token_alg: str = "RS256",
        scopes: list[str] | None = None,
        grant_types: list[str] | None = None,
        jwks: dict[str, Any] | None = None,
        logo_uri: str | None = None,
        tos_uri: str | None = None,
        policy_uri: str | None = None,
        backchannel_logout_uri: str | None = None,
        backchannel_logout_session_required: bool = False,
        require_pushed_authorization_requests: bool = False,
        dpop_bound_access_tokens: bool = False,
        subject_type: str = "public",
        sector_identifier: str | None = None,
        actor: Actor | None = None,
    ) -> NewClient:
        """Register a client. ``public=True`` without a kind means a single-page app."""
        fields = ClientFields(
            name=name,
            kind=kind or (KIND_SPA if public else KIND_WEB),
            redirect_uris=list(redirect_uris),
            post_logout_redirect_uris=list(post_logout_redirect_uris or []),
            auth_method=auth_method,
            first_party=first_party,
            id_token_alg=id_token_alg,
            scopes=scopes,
            grant_types=grant_types,
            jwks=jwks,
            logo_uri=logo_uri,
            tos_uri=tos_uri,
            policy_uri=policy_uri,
            backchannel_logout_uri=backchannel_logout_uri,
            backchannel_logout_session_required=backchannel_logout_session_required,
            require_pushed_authorization_requests=require_pushed_authorization_requests,
            dpop_bound_access_tokens=dpop_bound_access_tokens,
            subject_type=subject_type,
            sector_identifier=sector_identifier,
        )
        return self.create_from(fields, actor=actor)

    def create_from(self, fields: ClientFields, *, actor: Actor | None = None) -> NewClient:
        fields = fields.validated(development=self.development)
        secret = new_secret(32) if fields.auth_method in SECRET_AUTH_METHODS else None
        client = Client(
            client_id=random_id(18),
            secret_hash=self.secret_hasher.hash(secret) if secret else None,
            created_at=self.clock.now(),
        )
        apply_fields(client, fields)
        self.db.add(client)
        self._audit("client.created", client.client_id, actor, client_kind=client.kind)
        return NewClient(client=client, client_secret=secret)

    def update(
        self,
        client: Client,
        fields: ClientFields,
        *,
        actor: Actor | None = None,
        expected_version: int | None = None,
        confirm_subject_change: bool = False,
    ) -> str | None:
        """Change a client's settings. Returns a new secret (shown once) when the change moves
        the client to a secret-based auth method it had no secret for; None otherwise.
        ``expected_version``: apply only to that version (the admin API's If-Match).
        ``confirm_subject_change``: the admin knows the change gives every user another ``sub``
        at this client (its subject type or its sector changes; refused without it)."""
        if (fields.kind in PUBLIC_KINDS) != client.is_public:
            # A public client's users never saw it authenticate; a confidential one's secret
            # would have to vanish or appear. Either is a different registration.
            raise ClientRegistrationError(
                "a client cannot change between confidential and public: register a new one"
            )
        fields = fields.validated(development=self.development)
        subjects_before = subject_key(client)
        subjects_after = subject_key(_Subjects(client.client_id, fields))
        if subjects_before != subjects_after and not confirm_subject_change:
            # OIDC Core 8: a client's users are its ``sub`` values; new ones make every user a
            # stranger to the client (its accounts, its sessions by ``sub``). Never by accident,
            # whether the client has grants today or not: its own database keeps the old values.
            raise SubjectChangeUnconfirmedError(
                "this change gives every user of the client another subject identifier (sub): "
                "confirm the subject change to make it"
            )
        before = fields_of(client)
        changed = sorted(
            f.name
            for f in dataclasses.fields(ClientFields)
            if getattr(before, f.name) != getattr(fields, f.name)
        )
        if not changed and self._secret_as_it_should_be(client):
            # Nothing to change: no new version (the ETag and every node's cached copy stay
            # good) and no ``client.updated`` event of no change (as a group's edit of nothing).
            check_version(self.db, client, expected_version)
            return None
        claim_version(self.db, client, expected_version)
        # Decided again on the registration as stored, now that its row is locked: ``client``
        # may be a copy read before another admin's confirmed change (a caller that applies to
        # no version), whose old redirect URIs would change every ``sub`` back.
        subjects_before = _stored_subjects(self.db, client)
        if subjects_before != subjects_after and not confirm_subject_change:
            raise SubjectChangeUnconfirmedError(
                "another change of the client's subject identifiers was made meanwhile: "
                "read the client again, and confirm the subject change to undo it"
            )
        new_secret_value = None
        if fields.auth_method in SECRET_AUTH_METHODS:
            if client.secret_hash is None:
                new_secret_value = new_secret(32)
                client.secret_hash = self.secret_hasher.hash(new_secret_value)
        else:
            # Leaving secret authentication: no secret may keep working.
            client.secret_hash = None
            client.previous_secret_hash = None
            client.previous_secret_expires_at = None
        # Pushes go with what authenticated them, as at a rotation that stops a secret (RFC 9126 2).
        credentials = {"auth_method", "jwks"} & set(changed)
        withdrawn = withdraw_pushed(self.db, client.client_id) if credentials else 0
        apply_fields(client, fields)
        client.updated_at = self.clock.now()
        # OWASP ASVS 4.0 7.1.3: each changed setting's old and new value (as ``policy.changed``
        # records them): a redirect URI added is where codes go (RFC 6749 10.6), a JWKS key
        # swapped who may sign in as the client (RFC 7523 3). None of these is a secret.
        changes = {
            name: {"old": getattr(before, name), "new": getattr(fields, name)} for name in changed
        }
        extra = {"pushed_requests_withdrawn": withdrawn} if withdrawn else {}
        self._audit("client.updated", client.client_id, actor, changed=changed, changes=changes,
                    **extra)  # fmt: skip
        if subjects_before != subjects_after:
            self._audit(
                "client.subjects_changed", client.client_id, actor,
                old={"subject_type": subjects_before[0], "sector": subjects_before[1]},
                new={"subject_type": subjects_after[0], "sector": subjects_after[1]},
            )  # fmt: skip
        return new_secret_value

    @staticmethod
    def _secret_as_it_should_be(client: Client) -> bool:
        """What ``update`` would leave of the secrets for the client's own auth method: one for a
        secret method, none at all otherwise."""
        if client.token_endpoint_auth_method in SECRET_AUTH_METHODS:
            return client.secret_hash is not None
        return client.secret_hash is None and client.previous_secret_hash is None

    def get(self, client_id: str) -> Client | None:
        if not client_id or len(client_id) > 64:
            return None
        return self.db.get(Client, client_id)

    def list(self) -> list[Client]:
        return list(self.db.scalars(select(Client).order_by(Client.created_at, Client.name)))

    def rotate_secret(
        self,
        client: Client,
        *,
        overlap: int = 0,
        now: datetime | None = None,
        actor: Actor | None = None,
    ) -> str:
        """A new secret, shown once. The current one keeps working for ``overlap`` seconds so
        that the relying party can be redeployed without an outage (0: it stops at once); a
        secret from an earlier rotation stops now."""
        if client.token_endpoint_auth_method not in SECRET_AUTH_METHODS:
            raise ClientRegistrationError("this client does not authenticate with a secret")
        if not 0 <= overlap <= MAX_ROTATION_OVERLAP:
            raise ClientRegistrationError(
                f"the overlap must be between 0 and {MAX_ROTATION_OVERLAP} seconds (30 days)"
            )
        now = now or self.clock.now()
        claim_version(self.db, client)
        # A secret that stops now (this one without an overlap, an earlier rotation's still in
        # its overlap) takes back the pushes it may have authenticated (RFC 9126 2).
        stops = not overlap or (client.previous_secret_expires_at or now) > now
        withdrawn = withdraw_pushed(self.db, client.client_id) if stops else 0
        secret = new_secret(32)
        if overlap and client.secret_hash:
            client.previous_secret_hash = client.secret_hash
            client.previous_secret_expires_at = now + timedelta(seconds=overlap)
        else:
            client.previous_secret_hash = None
            client.previous_secret_expires_at = None
        client.secret_hash = self.secret_hasher.hash(secret)
        client.updated_at = now
        self._audit("client.secret_rotated", client.client_id, actor, overlap_seconds=overlap,
                    pushed_requests_withdrawn=withdrawn)  # fmt: skip
        return secret

    def disable(
        self, client: Client, *, now: datetime | None = None, actor: Actor | None = None
    ) -> None:
        """No authorization and no tokens for a disabled client (``query_client`` returns nothing),
        and its access tokens stop now: it must not read users' data until they expire."""
        if client.disabled_at is not None:
            return
        now = now or self.clock.now()
        claim_version(self.db, client)
        client.disabled_at = now
        self.db.execute(
            update(AccessToken)
            .where(AccessToken.client_id == client.client_id, AccessToken.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        self._audit("client.disabled", client.client_id, actor)

    def enable(self, client: Client, *, actor: Actor | None = None) -> None:
        if client.disabled_at is None:
            return
        claim_version(self.db, client)
        client.disabled_at = None
        self._audit("client.enabled", client.client_id, actor)

    def delete(self, client: Client, *, actor: Actor | None = None) -> None:
        """The client and everything issued to it: grants, codes, refresh tokens and consents
        cascade; client credentials access tokens belong to no grant, so they go explicitly."""
        self._audit("client.deleted", client.client_id, actor, name=client.name)
        self.db.execute(
            delete(AccessToken)
            .where(AccessToken.client_id == client.client_id)
            .execution_options(synchronize_session=False)
        )
        self.db.delete(client)


def describe(client: Client) -> dict[str, Any]:
    """A client as the CLI and admin console show it (never a secret or its hash)."""
    return {
        "client_id": client.client_id,
        "name": client.name,
        "kind": client.kind,
        "public": client.is_public,
        "status": "active" if client.disabled_at is None else "disabled",
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "scopes": client.scopes,
        "grant_types": client.grant_types,
        "id_token_signed_response_alg": client.id_token_signed_response_alg,
        "first_party": client.first_party,
        "logo_uri": client.logo_uri,
        "tos_uri": client.tos_uri,
        "policy_uri": client.policy_uri,
        "backchannel_logout_uri": client.backchannel_logout_uri,
        "backchannel_logout_session_required": client.backchannel_logout_session_required,
        "require_pushed_authorization_requests": client.require_pushed_authorization_requests,
        "dpop_bound_access_tokens": client.dpop_bound_access_tokens,
        "subject_type": client.subject_type,
        "sector_identifier": client.sector_identifier,
        "previous_secret_expires_at": (
            client.previous_secret_expires_at.isoformat()
            if client.previous_secret_expires_at
            else None
        ),
        "disabled_at": client.disabled_at.isoformat() if client.disabled_at else None,
        "created_at": client.created_at.isoformat() if client.created_at else None,
        "updated_at": client.updated_at.isoformat() if client.updated_at else None,
    }

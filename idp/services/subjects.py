"""Subject identifiers (OIDC Core 8): the ``sub`` a client knows a user by.

A public client gets the user's id, the same for every client. A pairwise client gets a value of
its sector only (OIDC Core 8.1), so that clients of different sectors cannot correlate a user:
HMAC-SHA-256, under the installation's secret (held in the database, the same on every node and
across restarts, never derived from the secret key, whose rotation must not change a ``sub``), of
the sector identifier and the user's id, in base64url. Without the secret no one can compute it,
nor tell two sectors' values for one user apart from two users'.

The sector identifier (OIDC Core 8.1) is the host of the client's redirect URIs when they share
one; a host an admin names instead (``Client.sector_identifier``, which OIDC Core 8.1 asks for
as a ``sector_identifier_uri`` when the redirect URIs span several hosts: idp has no dynamic
registration, and the admin who registers every client is the authority the URI's fetch would
stand in for; docs/admins.md); or, for a client without such a host (the device grant or client
credentials alone, a native app's private-use scheme or loopback redirects, which many unrelated
apps share), the client's own sector, ``client:<client_id>``, which no host name can equal.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import threading
from datetime import datetime
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import InstrumentedAttribute, Session, scoped_session

from idp.errors import DomainError
from idp.models import Grant, InstallationSecret
from idp.models.clients import SUBJECT_PAIRWISE
from idp.services.host_names import ascii_host

#: The ``installation_secrets`` row that keys the pairwise values.
SECRET_NAME = "pairwise-subjects"


class SubjectClient(Protocol):
    """What the ``sub`` of a client depends on: a ``Client`` (the token side's cached copy too)."""

    @property
    def client_id(self) -> str: ...
    @property
    def subject_type(self) -> str: ...
    @property
    def sector_identifier(self) -> str | None: ...
    @property
    def redirect_uris(self) -> list[str]: ...


class Issued(NamedTuple):
    """A grant's ``sub`` and ``sid`` as its client was given them (``Grant.issued_sub``,
    ``Grant.issued_sid``); ``sid`` is None for a grant outside a browser session."""

    sub: str
    sid: str | None


class SeveralHostsError(DomainError):
    """The redirect URIs span several hosts, and no sector host was named (OIDC Core 8.1)."""


def sector_host(redirect_uris: list[str], *, strict: bool = True) -> str | None:
    """OIDC Core 8.1: the host of the redirect URIs, when they have one host another client
    could share, in its one form (idp.services.host_names.ascii_host: one host is one sector
    however it is written, and it is the host a browser is redirected to); None when none has
    (no redirect URI, private-use schemes, loopback: hosts many unrelated apps use alike).
    Raises ``SeveralHostsError`` when they name more than one, or one and a loopback or
    private-use URI besides: the admin names the sector then; ``UnencodableHostError``
    (idp.services.host_names) for a host ``ascii_host`` refuses (``strict``)."""
    hosts: set[str] = set()
    unshared = False
    for uri in redirect_uris:
        try:
            parts = urlsplit(uri)
        except ValueError:
            unshared = True
            continue
        host = parts.hostname or ""
        if parts.scheme in ("http", "https") and host and not _is_loopback(host.lower()):
            hosts.add(ascii_host(host, strict=strict))
        else:
            unshared = True
    if len(hosts) > 1 or (hosts and unshared):
        raise SeveralHostsError(", ".join(sorted(hosts)))
    return next(iter(hosts), None)


def sector_of(client: SubjectClient) -> str:
    """The sector identifier a pairwise client's ``sub`` is computed for (module docstring)."""
    if client.sector_identifier:
        return client.sector_identifier
    try:
        host = sector_host(list(client.redirect_uris), strict=False)
    except SeveralHostsError:
        # Never registered so (idp.services.client_fields refuses it): the client's own sector
        # rather than one of its hosts', whose clients would otherwise share its users' subs.
        host = None
    return host or f"client:{client.client_id}"


def subject_key(client: SubjectClient) -> tuple[str, str | None]:
    """What decides every user's ``sub`` at this client: a change of it changes them all."""
    if client.subject_type != SUBJECT_PAIRWISE:
        return ("public", None)
    return (SUBJECT_PAIRWISE, sector_of(client))


def pairwise_subject(secret: bytes, sector: str, user_id: str) -> str:
    """OIDC Core 8.1: a keyed hash of the sector identifier and the local account id. The NUL
    between them occurs in neither (host names and ``client:`` ids; user ids are random text),
    so no other pair hashes the same input. 43 characters, within the 255 ASCII that OIDC Core
    2 allows a ``sub``."""
    message = sector.encode() + b"\x00" + user_id.encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class SubjectIdentifiers:
    """The ``sub`` each client knows a user by, for every surface that sends or reads one: the
    ID token, userinfo, access tokens, introspection, logout tokens and the id_token_hint.
    One per application (idp.composition.Container): the secret is read from the database once
    per process (it never changes) and kept."""

    def __init__(self) -> None:
        self._secret: bytes | None = None
        self._lock = threading.Lock()

    def of(self, db: Session | scoped_session[Any], client: SubjectClient, user_id: str) -> str:
        """``user_id``'s ``sub`` at ``client``. ``db`` may be a scoped session: a Session is
        opened only for the first pairwise client this process serves."""
        if client.subject_type != SUBJECT_PAIRWISE:
            return user_id
        return pairwise_subject(self.secret(db), sector_of(client), user_id)

    def session_id_of(
        self, db: Session | scoped_session[Any], client: SubjectClient, sid: str
    ) -> str:
        """The ``sid`` (OpenID Connect Back-Channel Logout 1.0 section 2.1) ``client`` knows a
        session by: a pairwise client's is its sector's own too, so that the one session of a
        browser does not name the user alike to clients of different sectors, which would
        correlate them while it lasts. The same in the ID token and the logout token."""
        if client.subject_type != SUBJECT_PAIRWISE:
            return sid
        return pairwise_subject(self.secret(db), "sid:" + sector_of(client), sid)

    def issued(
        self, db: Session | scoped_session[Any], client: SubjectClient, user_id: str,
        sid: str | None,
    ) -> Issued:  # fmt: skip
        """The ``sub`` and ``sid`` a token response of ``client`` names ``user_id`` and browser
        session ``sid`` by (``of``, ``session_id_of``), as its grant records them."""
        return Issued(
            self.of(db, client, user_id),
            self.session_id_of(db, client, sid) if sid is not None else None,
        )

    def names(
        self, db: Session | scoped_session[Any], client: SubjectClient, user_id: str,
        hinted: object,
    ) -> bool:  # fmt: skip
        """Whether an id_token_hint's ``sub`` (OIDC Core 3.1.2.1; RP-Initiated Logout 1.0 2)
        names ``user_id`` at ``client``: the ``sub`` the client knows them by now, or one an ID
        token of the client's gave them before a change of its subject type or sector, as the
        user's own grants at the client recorded it (``Grant.issued_sub``): the relying party
        holds that ID token, idp's signed statement about this user. Read only when the hint is
        not the ``sub`` of now; a grant pruned since names no one."""
        if hinted == self.of(db, client, user_id):
            return True
        if not isinstance(hinted, str):
            return False
        return _recorded_by_a_grant(db, client, Grant.user_id == user_id, Grant.issued_sub, hinted)

    def names_session(
        self, db: Session | scoped_session[Any], client: SubjectClient, sid: str,
        hinted: object,
    ) -> bool:  # fmt: skip
        """Whether an id_token_hint's ``sid`` (RP-Initiated Logout 1.0 section 2) names the
        session ``sid`` at ``client``: the ``sid`` the client's ID tokens of that session carry
        (``session_id_of``), or one an ID token of the client's gave it before a change of its
        subject type or sector, as the client's grants in that session recorded it
        (``Grant.issued_sid``), as ``names`` reads a ``sub``."""
        if not isinstance(hinted, str):
            return False
        if hinted == self.session_id_of(db, client, sid):
            return True
        return _recorded_by_a_grant(db, client, Grant.sid == sid, Grant.issued_sid, hinted)

    def secret(self, db: Session | scoped_session[Any]) -> bytes:
        if self._secret is None:
            with self._lock:
                if self._secret is None:
                    self._secret = _read_secret(db)
        return self._secret


def _read_secret(db: Session | scoped_session[Any]) -> bytes:
    named = InstallationSecret.name == SECRET_NAME
    value = db.scalar(select(InstallationSecret.value).where(named))
    if value is None:
        raise LookupError("no pairwise subject secret in the database: run `idp init`")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def ensure_secret(db: Session, now: datetime) -> None:
    """Make the installation's secret unless it exists (migration 0018 makes it; a database made
    from the models, the tests', gets it here). ``ON CONFLICT DO NOTHING``: two nodes starting at
    once keep the first one's, and both read that."""
    value = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    row = {"name": SECRET_NAME, "value": value, "created_at": now}
    dialect = db.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    db.execute(insert(InstallationSecret).values(**row).on_conflict_do_nothing())


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _recorded_by_a_grant(
    db: Session | scoped_session[Any], client: SubjectClient, whose: ColumnElement[bool],
    issued: InstrumentedAttribute[str | None], hinted: str,
) -> bool:  # fmt: skip
    """Whether one of ``client``'s grants that ``whose`` picks recorded ``hinted`` as the value
    its ID token carried in ``issued`` (``Grant.issued_sub``, ``Grant.issued_sid``)."""
    earlier = (
        select(Grant.id)
        .where(Grant.client_id == client.client_id, whose)
        .where(issued == hinted)
        .limit(1)
    )
    return db.scalar(earlier) is not None

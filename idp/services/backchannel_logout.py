"""OpenID Connect Back-Channel Logout 1.0: telling relying parties, server to server, that a
session at idp ended (docs/integrating.md, "Back-channel logout").

- ``announce`` queues one outbox row (idp.services.outbox, channel ``http``) per client the
  ended session logged in to (not one told already, ``ANNOUNCED_REVOCATIONS``, nor one holding
  only a code never exchanged) that registered a ``backchannel_logout_uri``, in the
  transaction that ends the session: a rollback announces nothing, and the row is claimed and
  delivered once, after the commit, whichever node runs the delivery.
- ``BackchannelSender`` delivers a row: it signs a fresh logout token (section 2.4) for the
  client and POSTs it (section 2.5) to the URI registered now, the host's lookup, the connection
  and the answer within one deadline, and no redirect followed; the outbox runs the POSTs to
  different relying parties in parallel. A failure stays queued for the outbox's retries and
  shows on the client's console page.

The token names the user and the session by the ``sub`` and ``sid`` the client was given, as its
grants recorded them from its ID tokens (``Grant.issued_sub``, ``Grant.issued_sid``), not by
the client's subject type and sector now: section 2.6 has the relying party find its session by
the values its ID token carried, and a change of the client's subjects since (docs/admins.md)
would otherwise name values it never saw, a logout that ends nothing. A client given other
values in the same session (an authorization before the change, one after) gets a token for
each pair: it may keep a session on either. A grant older than migration 0019 records none:
its token is computed from the client's settings at delivery, as before.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from time import monotonic
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

from joserfc import jwt
from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from idp.clock import SYSTEM_CLOCK, Clock
from idp.models import AuthorizationCode, Client, DeviceAuthorization, Grant, OutboxMessage
from idp.services.client_fields import (
    ClientRegistrationError,
    on_loopback,
    validate_backchannel_logout_uri,
)
from idp.services.crypto import new_secret
from idp.services.deadlines import conversation_deadline
from idp.services.host_names import UnencodableHostError, ascii_host
from idp.services.notifications import tls_context
from idp.services.outbound_addresses import (
    ForbiddenAddressError,
    LookupTimeoutError,
    TooManyLookupsError,
    addresses_of,
    vetted_address,
)
from idp.services.outbox import DeliveryError, Pending, UndeliverableError
from idp.services.signing_keys import KeyStore
from idp.services.subjects import Issued, SubjectIdentifiers

KIND = "backchannel_logout"
CHANNEL = "http"
#: Section 2.4: the ``events`` member that makes a JWT a logout token.
EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: Section 2.4: "explicitly typed" logout tokens (RFC 8725 3.11), so that no other JWT of ours
#: (an ID token, an access token) can be replayed as one.
LOGOUT_TOKEN_TYP = "logout+jwt"
#: Seconds a logout token is valid: it is signed at each attempt, so it only has to outlive one
#: POST (section 2.4 leaves ``exp`` to the OP; "a few minutes at most" is its advice).
LOGOUT_TOKEN_TTL = 120
#: Seconds to open the connection (TCP and TLS), and to wait for each read of the answer; the
#: whole delivery, the host's lookup included, ends after both, so that a relying party
#: trickling its answer byte by byte, or whose name server never answers, holds the delivery no
#: longer (docs/integrating.md).
CONNECT_TIMEOUT = 3
READ_TIMEOUT = 5
#: Bytes of the relying party's answer read at most (section 2.8: only the status matters).
MAX_ANSWER = 4096


#: What ``announce_access_ended`` reads of each revoked grant: the callers' ``RETURNING``.
REVOKED_GRANT = (Grant.client_id, Grant.sid, Grant.user_id, Grant.issued_sub, Grant.issued_sid)

#: Why a grant was revoked when the user (or an admin) disconnected its app
#: (idp.services.portal.disconnect_app), and when its user lost access to its client
#: (idp.services.group_access): both revocations tell the client then
#: (``announce_access_ended``), so a session's end does not tell it again for that grant.
DISCONNECTED = "disconnected_by_user"
GROUP_ACCESS_REVOKED = "group_access_removed"
ANNOUNCED_REVOCATIONS = (DISCONNECTED, GROUP_ACCESS_REVOKED)


def announce(db: Session, sid: str, user_id: str, now: datetime) -> int:
    """Queue a logout announcement for every client the session ``sid`` logged in to (its
    grants carry the session's ``sid``, as its ID tokens do) that has a back-channel logout
    URI, one per ``sub`` and ``sid`` the client was given in it (the module's docstring);
    returns how many were queued.

    Back-Channel Logout 1.0 2.7: the OP tells "the RPs that the session had logged in to" (2.5:
    each RP with a session of the user). Not a grant whose code or device approval was never
    redeemed (still unspent: ``GrantService.end_session_grants`` has just expired it): its client
    holds no ID token of the session, so no session of its own to end. Nor a grant revoked
    earlier for a reason that told its client then (``ANNOUNCED_REVOCATIONS``): its session of
    the user ended at that token, and a second one for the same ``sid`` told a disconnected app
    again at the session's end. A grant the client obtained since (the user came back to the
    app in the same session) is announced as any other."""
    codes, devices = AuthorizationCode, DeviceAuthorization
    given = db.execute(
        select(Grant.client_id, Grant.issued_sub, Grant.issued_sid)
        .join(Client, Client.client_id == Grant.client_id)
        .where(
            Grant.sid == sid,
            Client.backchannel_logout_uri.is_not(None),
            or_(Grant.revoked_reason.is_(None),
                Grant.revoked_reason.not_in(ANNOUNCED_REVOCATIONS)),
            ~exists().where(codes.grant_id == Grant.id, codes.consumed_at.is_(None)),
            ~exists().where(devices.grant_id == Grant.id, devices.consumed_at.is_(None)),
        )
        .distinct()
    ).all()  # fmt: skip
    announced = sorted({(c, sub, issued_sid) for c, sub, issued_sid in given}, key=_in_order)
    for client_id, issued_sub, issued_sid in announced:
        _queue(db, client_id, sid, user_id, now, _issued(issued_sub, issued_sid))
    return len(announced)


def announce_access_ended(
    db: Session, revoked: Iterable[Sequence[str | None]], now: datetime
) -> int:
    """Queue a logout token to each client whose grants were just revoked while their sessions
    may stand (the user disconnected the app, or left the groups that open it): ``revoked`` holds
    each grant's ``REVOKED_GRANT`` (client, ``sid``, user, and the ``sub`` and ``sid`` the
    client was given). One token per client, session the client received tokens in (the
    ``sid`` of its ID tokens) and values it was given there (the module's docstring), to
    clients with a back-channel logout URI; returns how many were queued.

    The client's own session of the user rests on an ID token of that ``sid``: without a token
    it lives on at the relying party for as long as it keeps sessions, though the user, or an
    admin, has just ended its access (Back-Channel Logout 1.0 2.7: the relying party ends the
    sessions the token names). The session at idp, and every other client's, goes on."""
    wanted = sorted({tuple(row) for row in revoked if row[1] is not None}, key=_in_order)
    if not wanted:
        return 0
    listening = set(
        db.scalars(
            select(Client.client_id).where(
                Client.client_id.in_(sorted({str(row[0]) for row in wanted})),
                Client.backchannel_logout_uri.is_not(None),
            )
        )
    )
    queued = 0
    for client_id, sid, user_id, issued_sub, issued_sid in wanted:
        if client_id in listening:
            _queue(db, str(client_id), str(sid), str(user_id), now,
                   _issued(issued_sub, issued_sid))  # fmt: skip
            queued += 1
    return queued


def _in_order(row: tuple[str | None, ...]) -> tuple[str, ...]:
    """Rows by their values, a missing one first: the rows are queued in one order each time."""
    return tuple(value or "" for value in row)


def _issued(sub: str | None, sid: str | None) -> Issued | None:
    return Issued(sub, sid) if sub is not None and sid is not None else None


def _queue(
    db: Session, client_id: str, sid: str, user_id: str, now: datetime, issued: Issued | None
) -> None:
    """One outbox row: a logout token for ``client_id`` naming ``sid`` and ``user_id``, signed
    and sent at delivery (``BackchannelSender``); by ``issued``, the values the client was
    given, when its grant recorded them."""
    details = {"sid": sid, "sub": user_id}
    if issued is not None:
        details |= {"issued_sub": issued.sub, "issued_sid": str(issued.sid)}
    db.add(
        OutboxMessage(
            user_id=user_id, recipient=client_id, kind=KIND, channel=CHANNEL, subject="",
            body="", details=details, created_at=now, attempts=0, next_attempt_at=now,
        )
    )  # fmt: skip


def logout_token_claims(
    *, issuer: str, client_id: str, sid: str, sub: str, now: datetime
) -> dict[str, Any]:
    """Section 2.4: ``iss``, ``aud``, ``iat``, ``exp``, ``jti``, ``events``; ``sid`` and ``sub``
    (idp always knows both, and section 2.4 allows both: ``sid`` for relying parties that keep
    sessions per OP session, ``sub`` for those that log out the user). Never a ``nonce``: section
    2.4 prohibits it, so that a logout token can never pass as an ID token. ``iat`` and ``exp``
    count from ``now``, the application's clock (idp.clock), as the ID token's do."""
    issued_at = int(now.timestamp())
    return {
        "iss": issuer,
        "aud": client_id,
        "iat": issued_at,
        "exp": issued_at + LOGOUT_TOKEN_TTL,
        "jti": new_secret(16),
        "events": {EVENT: {}},
        "sid": sid,
        "sub": sub,
    }


def mint_logout_token(
    db: Session,
    keys: KeyStore,
    issuer: str,
    client: Client,
    details: dict[str, Any],
    now: datetime,
) -> str:
    """A logout token for ``client``, signed as its ID tokens are (section 2.4: "signed ... in
    the same way as ID Tokens"): the client's ``id_token_signed_response_alg`` and idp's current
    key of that algorithm."""
    alg = client.id_token_signed_response_alg
    key = keys.signing_key(db, alg)
    claims = logout_token_claims(
        issuer=issuer, client_id=client.client_id, sid=str(details["sid"]),
        sub=str(details["sub"]), now=now,
    )  # fmt: skip
    header = {"alg": alg, "typ": LOGOUT_TOKEN_TYP, "kid": key.kid}
    return jwt.encode(header, claims, key.private_key, algorithms=[alg])


def post_logout_token(uri: str, token: str, *, development: bool) -> None:
    """Section 2.5: POST ``logout_token`` as a form. Raises ``DeliveryError`` unless the relying
    party answers 200 (section 2.8), or 204, which section 2.8 says to accept as well. A redirect
    is a failure, never followed: the token goes to the registered URI only. The host is looked
    up once, within the delivery's deadline, and the connection goes to what the lookup found;
    unless ``development`` (the issuer on loopback), to its first address after every one was
    checked (idp.services.outbound_addresses)."""
    parts = urlsplit(uri)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        # The A-labels a browser would go to (IDNA 2008): given a Unicode name, http.client and
        # the resolver encode it by IDNA 2003, which sends faß.example's token to fass.example.
        host = ascii_host(parts.hostname or "")
    except UnencodableHostError:
        raise UndeliverableError("the back-channel logout URI's host has no ASCII form") from None
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            host, parts.port, timeout=CONNECT_TIMEOUT, context=tls_context()
        )
    elif parts.scheme == "http":
        connection = http.client.HTTPConnection(host, parts.port, timeout=CONNECT_TIMEOUT)
    else:
        raise UndeliverableError("the back-channel logout URI is not http(s)")
    body = urlencode({"logout_token": token})
    limit = CONNECT_TIMEOUT + READ_TIMEOUT
    ends_at = monotonic() + limit
    # A socket's timeout bounds each read, not the answer (idp.services.deadlines).
    with conversation_deadline(limit, lambda: connection.sock) as cut:
        try:
            # First, and bounded by the whole deadline: the timer cuts a socket, and there is
            # none while the resolver is asked, whose own timeout is far longer.
            if development:
                addresses = addresses_of(host, connection.port, limit)
            else:
                addresses = [vetted_address(host, connection.port, limit)]
            _connect_only_to(connection, addresses, ends_at)
            connection.connect()
            if connection.sock is not None:
                connection.sock.settimeout(READ_TIMEOUT)
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            connection.request("POST", target, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read(MAX_ANSWER)
            status = answer.status
        except ForbiddenAddressError as error:
            raise DeliveryError(f"refused: {error}, where no relying party is") from None
        except LookupTimeoutError:
            raise DeliveryError(f"the host did not resolve within {limit} seconds") from None
        except TooManyLookupsError:
            # Abandoned lookups hold their threads: none is added past the bound, and the
            # delivery is kept for a retry like any failure (idp.services.outbound_addresses).
            raise DeliveryError("too many host lookups outstanding; not looked up") from None
        except (OSError, http.client.HTTPException, UnicodeError) as error:
            # UnicodeError: a host name the resolver cannot encode (an empty or overlong label).
            if cut.is_set():
                raise DeliveryError(f"no answer within {limit} seconds") from None
            raise DeliveryError(
                f"could not reach the relying party: {type(error).__name__}"
            ) from None
        finally:
            connection.close()
    if cut.is_set():
        raise DeliveryError(f"no answer within {limit} seconds")
    if status not in (200, 204):
        raise DeliveryError(f"the relying party answered HTTP {status}")


def _connect_only_to(
    connection: http.client.HTTPConnection, addresses: list[str], ends_at: float
) -> None:
    """Have ``connection`` open its socket to the first of ``addresses`` that accepts it (as
    ``socket.create_connection`` tries a name's), those looked up within the deadline (the one
    ``vetted_address`` checked), rather than resolving its host again: that lookup would have no
    bound, and a DNS answer that changed in between, to loopback say, would be followed. TLS
    still verifies the certificate for the host's name (``HTTPSConnection`` wraps the socket
    with ``server_hostname`` its host).

    The attempts share one deadline, the connection's timeout and at most what is left of the
    delivery's (``ends_at``, on ``monotonic``): the deadline's timer cuts a socket, and there is
    none until one connects, so each address tried with the whole timeout (development's
    several addresses for a name, ``::1`` and ``127.0.0.1``) held the delivery that many times
    as long."""

    def create_connection(
        target: tuple[str, int], timeout: Any = None, source_address: Any = None
    ) -> socket.socket:
        seconds = timeout if isinstance(timeout, int | float) else CONNECT_TIMEOUT
        connect_by = min(ends_at, monotonic() + seconds)
        refused: OSError = OSError("no address to connect to")
        for address in addresses:
            left = connect_by - monotonic()
            if left <= 0:
                raise TimeoutError(f"no connection within {seconds:g} seconds")
            try:
                return socket.create_connection((address, target[1]), left, source_address)
            except OSError as error:
                refused = error
        raise refused

    connection._create_connection = create_connection  # type: ignore[attr-defined]


class BackchannelSender:
    """The outbox's ``http`` channel (idp.services.outbox.Channel)."""

    name: ClassVar[str] = CHANNEL
    #: Each relying party is its own recipient: one that is down holds up no other.
    stop_after_failure: ClassVar[bool] = False

    def __init__(
        self, db: Session, keys: KeyStore, issuer: str, clock: Clock = SYSTEM_CLOCK,
        subjects: SubjectIdentifiers | None = None,
    ) -> None:  # fmt: skip
        self.db = db
        self.keys = keys
        self.issuer = issuer
        self.clock = clock
        self.subjects = subjects or SubjectIdentifiers()

    def send(self, message: Pending) -> None:
        self.prepare(message)()

    def prepare(self, message: Pending) -> Callable[[], None]:
        """The client's URI checked again and a fresh logout token signed, with ``self.db`` on
        the calling thread; returns the POST, which uses no session: the outbox runs it on a
        thread of its own, in parallel with other relying parties' (idp.services.outbox)."""
        client = self.db.get(Client, message.recipient)
        uri = client.backchannel_logout_uri if client is not None else None
        if client is None or not uri:
            self.db.commit()
            raise UndeliverableError("the client no longer has a back-channel logout URI")
        try:
            # Checked again at each delivery: a plain-http loopback URI registered during
            # development is never used once the issuer is a real one (section 2.2).
            validate_backchannel_logout_uri(uri, development=on_loopback(self.issuer))
        except ClientRegistrationError:
            self.db.commit()
            raise UndeliverableError("the back-channel logout URI is not allowed here") from None
        # Section 2.4: the ``sub`` and ``sid`` of the client's ID tokens, pairwise for a
        # pairwise client (OIDC Core 8.1): as its grant recorded them (the module's docstring),
        # else, for a grant older than that record, computed now from the ids the row keeps.
        kept = message.details
        details = {
            "sub": kept.get("issued_sub") or self.subjects.of(self.db, client, str(kept["sub"])),
            "sid": kept.get("issued_sid")
            or self.subjects.session_id_of(self.db, client, str(kept["sid"])),
        }
        token = mint_logout_token(self.db, self.keys, self.issuer, client, details,
                                  self.clock.now())  # fmt: skip
        self.db.commit()  # no transaction stays open while the relying party answers
        development = on_loopback(self.issuer)
        return lambda: post_logout_token(uri, token, development=development)


def recent_failures(db: Session, client_id: str, limit: int = 5) -> list[OutboxMessage]:
    """The client's latest failed deliveries, newest first, for its console page (a failure
    that a later retry delivered shows as delivered)."""
    return list(
        db.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.channel == CHANNEL,
                OutboxMessage.recipient == client_id,
                OutboxMessage.last_failure_at.is_not(None),
            )
            .order_by(OutboxMessage.last_failure_at.desc(), OutboxMessage.id.desc())
            .limit(limit)
        )
    )

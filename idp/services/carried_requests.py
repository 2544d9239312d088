"""A new authorization request carried by its own sign-in page, and stored only when a sign-in
comes back with it (docs/architecture.md, "A passkey sign-in, step by step").

The authorization endpoint answers a request that needs the user with the sign-in page itself
(OIDC Core 3.1.2.3). The page carries the validated request, signed, in the field that its forms
and its passkey answer send back (``request``), so showing the page writes nothing: no row, no
write transaction, and no storage for anyone who only loads ``/authorize`` (a crawler, a
prefetch, a flood from one address), as its signed passkey challenge already needs none
(idp.services.challenges.ChallengeSigner). The browser learns nothing it did not have: every
parameter came in its own request. A pushed request (RFC 9126) is never carried: its parameters
stay off the browser, stored as before.

The request is stored when a sign-in brings it back (idp.services.pending_authorizations):

- the sign-in that issues its code inserts its row already spent (``spend``): one statement
  where a stored request's spend is one UPDATE;
- a request that must wait (for the second step after a password, the consent page, a page of
  idp's) is inserted live, under the id it carried, and goes on as any stored request.

Spent once all the same (a code per request): the row's id travels with the request, and a second
answer with the same page inserts nothing and finds the row spent. The row is kept
``KEPT_PAST_EXPIRY`` past the request's expiry (idp.services.retention), and a request stamped
ahead of the reading clock is refused (idp.clock ``stamped_ahead``): a carried request is never
taken while its row may have been pruned.

A carried request is ``<payload>.<tag>``: the payload is the base64url of its JSON (id, client,
parameters, creation in microseconds, expiry in seconds), and the tag 128 bits of an HMAC-SHA256
under a key derived from the deployment's secret key, so nobody else can make or change one.
A stored id (``random_id``) has no dot.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from idp.clock import stamped_ahead
from idp.models.base import random_id
from idp.services.crypto import PageSigner

#: The longest carried request read: the parameters are capped at the authorization endpoint
#: (idp.oidc.checks: about 4 KB at most), and the HMAC runs over nothing longer.
MAX_CARRIED_LENGTH = 16_384


@dataclass(frozen=True)
class CarriedRequest:
    """A carried request as its signature vouches for it; not yet stored, nor known unspent."""

    id: str
    client_id: str
    params: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    #: What the page sends back: this request, signed.
    carried: str


class RequestSigner(PageSigner):
    """Carries authorization requests in their sign-in pages (module docstring)."""

    PURPOSE = "idp carried authorization requests"

    def carry(
        self, client_id: str, params: dict[str, Any], now: datetime, ttl: int
    ) -> CarriedRequest:
        """A new request of ``client_id``, alive for ``ttl`` seconds, under a new id."""
        pending_id = random_id()
        expiry = int(now.timestamp()) + ttl
        created = int(now.timestamp() * 1_000_000)
        # Microseconds: the request's start is compared with a session's (prompt=login, max_age:
        # idp.oidc.interaction), so it is kept as exactly as a stored row keeps it.
        body = json.dumps({"i": pending_id, "c": client_id, "p": params, "t": created,
                           "e": expiry}, separators=(",", ":"))  # fmt: skip
        payload = base64.urlsafe_b64encode(body.encode()).rstrip(b"=").decode()
        carried = f"{payload}.{self.tag_of(payload)}"
        return CarriedRequest(id=pending_id, client_id=client_id, params=params,
                              created_at=_from_microseconds(created),
                              expires_at=datetime.fromtimestamp(expiry, UTC),
                              carried=carried)  # fmt: skip

    def read(self, carried: str, now: datetime) -> CarriedRequest | None:
        """The request ``carried`` holds when this deployment signed it and it has not expired;
        None for anything else (a stored id, a forged or changed one, an expired one)."""
        if len(carried) > MAX_CARRIED_LENGTH:
            return None
        payload, _, tag = carried.rpartition(".")
        if not payload or not carried.isascii():
            return None
        # As bytes: compare_digest refuses str with characters outside ASCII (anyone's input).
        if not hmac.compare_digest(tag.encode(), self.tag_of(payload).encode()):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            request = CarriedRequest(id=body["i"], client_id=body["c"], params=body["p"],
                                     created_at=_from_microseconds(body["t"]),
                                     expires_at=datetime.fromtimestamp(body["e"], UTC),
                                     carried=carried)  # fmt: skip
        except (binascii.Error, ValueError, KeyError, TypeError, OverflowError):
            return None  # signed by this deployment, so only a format of another version
        if request.expires_at <= now or stamped_ahead(request.created_at, now):
            return None
        return request


def is_carried(value: str) -> bool:
    """Whether a sign-in page's ``request`` is a carried request (a stored id has no dot)."""
    return "." in value


def _from_microseconds(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)

"""The way back to the relying party after a confirmed RP-initiated logout (OpenID Connect
RP-Initiated Logout 1.0 sections 3 and 6).

A logout request whose ``id_token_hint`` names someone other than the user signed in here is
answered with a confirmation page (section 6). The confirmation is posted without the hint, and
section 3 forbids redirecting without one unless the OP "has other means of confirming the
legitimacy of the post-logout redirection target". This is that means: the page carries a value
sealed under the deployment's secret that says idp itself validated this ``post_logout_redirect_
uri`` as registered for this client on a request with a valid hint, for this browser session,
within the confirmation page's lifetime. It names nothing the requester can change, and is
honoured only on the confirmed, CSRF-checked post of idp's own page (idp.oidc.token_views), so it
never signs anyone out by itself. The URI is checked against the client's registration again
when the seal is used (a URI removed meanwhile is no way back)."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeTimedSerializer

from idp.models import Client
from idp.models.clients import KIND_NATIVE
from idp.services.client_fields import ClientRegistrationError, validate_redirect_uri
from idp.services.crypto import derive_key

_PURPOSE = "idp rp-initiated logout return"


def _serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(derive_key(secret_key, _PURPOSE), salt=_PURPOSE)


def seal_return(secret_key: str, client_id: str, uri: str, session_hash: str) -> str:
    """The confirmation page's proof that ``uri`` was validated for ``client_id`` with a valid
    hint, bound to the browser session the page was shown to."""
    return _serializer(secret_key).dumps([client_id, uri, session_hash])


def return_vouched(
    secret_key: str, sealed: object, client_id: str, uri: str, session_hash: str, max_age: int
) -> bool:
    """Whether ``sealed`` is such a proof for exactly this client, URI and session, at most
    ``max_age`` seconds old."""
    if not isinstance(sealed, str) or not sealed:
        return False
    try:
        opened = _serializer(secret_key).loads(sealed, max_age=max_age)
    except BadSignature:  # SignatureExpired included
        return False
    return bool(opened == [client_id, uri, session_hash])


def app_link(client: Client | None) -> str | None:
    """The signed-out page's "Back to the app" address, when no redirect was made (none asked
    for, or none legitimate): RP-Initiated Logout 1.0 section 3 lets the OP offer the relying
    party's post-logout address, and only one the admin registered is safe to offer. ``client``
    is the registration as stored now, read afresh (None when disabled, deleted or unknown): the
    ``client_id`` of the query names it, and a cached copy still named a client since disabled,
    or an address since unregistered, on another node. The first registered address the
    registration's rules accept today (idp.services.client_fields.validate_redirect_uri: https,
    loopback http, a native app's private-use scheme), so that one stored before a rule (a
    ``javascript:`` address, plain http elsewhere) is never a link; nothing of the request is."""
    if client is None or client.disabled_at is not None:
        return None
    for uri in client.post_logout_redirect_uris or ():
        try:
            validate_redirect_uri(uri, native=client.kind == KIND_NATIVE, what="post-logout URI")
        except ClientRegistrationError:
            continue
        return uri
    return None

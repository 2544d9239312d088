"""The client at the authorization endpoint (``/authorize``, the consent page, the sign-in pages,
and the checks of a pushed request, RFC 9126 2): the registration as stored now, read once per
request."""

from __future__ import annotations

from flask import g, has_request_context

from idp.composition import clock, runtime
from idp.extensions import db
from idp.models import Client
from idp.services.client_cache import load_client


def query_client(client_id: str) -> Client | None:
    """The client at the authorization endpoint, read from the database; None when disabled."""
    client = registered_client(client_id)
    if client is None or client.disabled_at is not None:
        return None
    return client


def registered_client(client_id: str) -> Client | None:
    """``query_client``, a disabled client included."""
    if not client_id or len(client_id) > 64:
        return None
    # Looked up once per request: SQLAlchemy's identity map holds objects weakly, so the
    # authorization endpoint's second lookup (its checks, then the interaction) read the row
    # again. Never across requests: a disabled client or a new secret counts at once.
    loaded: dict[str, Client] = g.setdefault("idp_clients", {}) if has_request_context() else {}
    # A Core SELECT and a Client of no session (idp.services.client_cache.load_client): nothing
    # at the authorization endpoint changes a registration through it. A thin read while the
    # request has no Session: a new authorization request then opens none at all.
    client = loaded.get(client_id)
    if client is None:
        reads = runtime().reads
        thin = reads if reads is not None and not db.session.registry.has() else None
        client = load_client(db.session, client_id, thin)
    if client is not None:
        read_with_request(client)
    return client


def read_with_request(client: Client) -> None:
    """``client``, read in this request (with the pending request it belongs to, say), is what
    ``query_client`` answers for it until the request ends."""
    # Client secrets are keyed hashes; the model checks them with the runtime's hasher, and the
    # overlap of a rotated secret against the application's clock.
    client.secret_hasher = runtime().client_secrets
    client.clock = clock()
    if has_request_context():
        g.setdefault("idp_clients", {})[client.client_id] = client

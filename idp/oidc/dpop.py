"""DPoP (RFC 9449) at the token, PAR and UserInfo endpoints: the proof a request carries, checked
(idp.services.dpop) and recorded as used, and the answers that refuse one.

A proof is recorded (``spend_proof``) only once the request has shown who sends it: at the token
and PAR endpoints after its client authenticated (idp.oidc.server
``IdpAuthorizationServer.authenticate_client``), at UserInfo once its access token is found live
and bound to the proof's key; a public client, whose client_id authenticates nobody, spends the
address's budget of anonymous writes first (docs/operations.md, "Storage budgets"). Each record
is still committed before the request's own work (RFC 9449 11.1).

A request without a ``DPoP`` header never reaches this module: the views look the header up in
the WSGI environment (one dictionary lookup) and go on as before (docs/performance.md: the bearer
paths send no statement more).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from authlib.oauth2 import OAuth2Error
from flask import Request

from idp import checkpoints
from idp.composition import clock, runtime, services
from idp.extensions import db
from idp.oidc.errors import BudgetSpentError
from idp.services.anonymous import DPOP_PROOFS_WINDOW
from idp.services.dpop import (
    DPOP_ALGS,
    DPoPNonceError,
    DPoPProof,
    DPoPProofError,
    check_proof,
    new_nonce,
    remember_proof,
)
from idp.session_statements import statements_of
from idp.web.answers import Answer

#: The WSGI name of the ``DPoP`` request header (RFC 9449 4.1).
DPOP_HEADER = "HTTP_DPOP"
#: Where parallel requests carrying one proof are held in tests, all checked (and their clients
#: authenticated), none recorded yet (tests/functional/test_dpop_races.py): the INSERT alone
#: decides which one passes.
PROOF_CHECKPOINT = "dpop.proof_checked"
#: RFC 9449 7.1: the ``algs`` parameter of a DPoP challenge.
ALGS = " ".join(DPOP_ALGS)


@lru_cache(maxsize=4)
def _nonce_key_of(secret_key: str) -> bytes:
    # A key of its own for the nonces' MAC, derived from the deployment's secret (the same on
    # every node, so that each accepts the others' nonces).
    return hashlib.sha256(b"idp DPoP nonce\0" + secret_key.encode()).digest()


def nonce_key() -> bytes | None:
    """The key of the server nonces (RFC 9449 8) when the deployment requires them
    (``dpop_nonces``), else None."""
    settings = runtime().settings
    return _nonce_key_of(settings.secret_key) if settings.dpop_nonces else None


def with_nonce(answer: Answer) -> Answer:
    """RFC 9449 8.2: a fresh nonce for the client's next proof, on an answer to a DPoP request
    when the deployment requires nonces; readable by a page's script (CORS)."""
    key = nonce_key()
    if key is not None:
        answer.headers.append(("DPoP-Nonce", new_nonce(key, runtime().clock.now())))
        answer.headers.append(("Access-Control-Expose-Headers", "DPoP-Nonce"))
    return answer


def checked_proof(current: Request, path: str, access_token: str | None = None) -> DPoPProof:
    """The request's proof for idp's endpoint at ``path`` (its URL as discovery names it: RFC 9449
    4.3 item 9 compares with the URI the client sent to), checked, not yet recorded as used
    (``spend_proof``). Raises ``DPoPProofError``."""
    rt = runtime()
    return check_proof(
        current.environ.get(DPOP_HEADER, ""), method=current.method,
        url=rt.settings.endpoint(path), now=rt.clock.now(), access_token=access_token,
        nonce_key=nonce_key(),
    )  # fmt: skip


class ProofBudgetSpentError(BudgetSpentError):
    """docs/operations.md, "Storage budgets": this address recorded its share of DPoP proofs for
    public clients (each proof is a row until its window ends). RFC 6585 4: 429."""

    description = "Too many DPoP requests from this network. Try again in a few minutes."


def spend_proof(proof: DPoPProof, *, anonymous: bool) -> None:
    """Record ``proof`` as used, committed at once, before the request's own work: a proof is
    spent whether or not the request then succeeds, and a replay on another node finds it (RFC
    9449 11.1). ``anonymous`` (a public client's request): the address's budget is spent first.
    Raises ``ProofBudgetSpentError``, or ``DPoPProofError`` for a proof used before."""
    if anonymous:
        now = clock().now()
        if not services().storage_budgets.dpop_proof(services().context.ip_address, now):
            raise ProofBudgetSpentError("dpop_proof", DPOP_PROOFS_WINDOW, now)
    checkpoints.reached(PROOF_CHECKPOINT)
    if not _recorded(proof):
        raise DPoPProofError("The DPoP proof was used before.")


def _recorded(proof: DPoPProof) -> bool:
    reads = runtime().reads
    assert reads is not None, "create_app sets the thin reads"
    if not (db.session.registry.has() and db.session().in_transaction()):
        return remember_proof(reads.write_alone, reads.dialect_name, proof)
    # The request's Session has a transaction already (a private_key_jwt assertion's jti is
    # recorded in it, RFC 7523 3): the record goes in it and both are committed now. On SQLite
    # a write of its own would wait for the write turn this transaction may hold
    # (idp.sqlite_writers). What the request loaded stays loaded.
    session = db.session()
    recorded = remember_proof(statements_of(session).write, reads.dialect_name, proof)
    expire, session.expire_on_commit = session.expire_on_commit, False
    try:
        session.commit()
    finally:
        session.expire_on_commit = expire
    return recorded


class DPoPProofRequiredError(OAuth2Error):
    """RFC 9449 5.2: a client registered with ``dpop_bound_access_tokens`` sent no proof."""

    error = "invalid_dpop_proof"
    status_code = 400
    description = "This client must send a DPoP proof with every token request."


class DPoPProofUsedError(OAuth2Error):
    """RFC 9449 5 and 11.1: the token or PAR request's proof was used before."""

    error = "invalid_dpop_proof"
    status_code = 400


def token_side_proof(proof: DPoPProof, client: Any) -> str:
    """The key thumbprint of ``proof``, the proof of a token or PAR request whose ``client`` has
    just authenticated, now spent (``spend_proof``; a public client's against the address's
    budget): what the request issues is then bound to that key. Raises an ``OAuth2Error``."""
    try:
        spend_proof(proof, anonymous=client.is_public)
    except DPoPProofError as error:
        raise DPoPProofUsedError(description=str(error)) from None
    return proof.jkt


def token_refusal(error: DPoPProofError) -> Answer:
    """RFC 9449 5: the token endpoint's refusal of a proof, RFC 6749 5.2's JSON error; for a
    missing or stale nonce, ``use_dpop_nonce`` with the nonce to use (RFC 9449 8)."""
    return with_nonce(Answer.json(
        400, {"error": _error_code(error), "error_description": str(error)},
        ("Cache-Control", "no-store"), ("Pragma", "no-cache"),
    ))  # fmt: skip


def resource_refusal(status: int, error: str, description: str) -> Answer:
    """RFC 9449 7.1: a protected resource's refusal of a DPoP request (or of a DPoP-bound token
    presented as a bearer token), with the DPoP challenge and the algorithms idp accepts."""
    challenge = f'DPoP algs="{ALGS}", error="{error}", error_description="{description}"'
    return Answer.json(
        status, {"error": error, "error_description": description},
        ("WWW-Authenticate", challenge), ("Cache-Control", "no-store"),
    )  # fmt: skip


def resource_proof_refusal(error: DPoPProofError) -> Answer:
    """RFC 9449 7.1 and 9: a protected resource's refusal of a proof (``use_dpop_nonce`` for a
    missing or stale nonce, with the nonce to use)."""
    return resource_refusal(401, _error_code(error), str(error))


def _error_code(error: DPoPProofError) -> str:
    """RFC 9449 8 and 9: a missing or stale nonce is ``use_dpop_nonce``, any other refusal of a
    proof ``invalid_dpop_proof``."""
    return "use_dpop_nonce" if isinstance(error, DPoPNonceError) else "invalid_dpop_proof"

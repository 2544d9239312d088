"""DPoP (RFC 9449) at the token endpoint and the UserInfo endpoint: the proof a request carries,
checked (idp.services.dpop) and recorded as used, and the answers that refuse one.

A request without a ``DPoP`` header never reaches this module: the views look the header up in
the WSGI environment (one dictionary lookup) and go on as before (docs/performance.md: the bearer
paths send no statement more).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from authlib.oauth2 import OAuth2Error
from flask import Request

from idp import checkpoints
from idp.composition import runtime
from idp.services.dpop import (
    DPOP_ALGS,
    DPoPNonceError,
    DPoPProof,
    DPoPProofError,
    check_proof,
    new_nonce,
    remember_proof,
)
from idp.web.answers import Answer

#: The WSGI name of the ``DPoP`` request header (RFC 9449 4.1).
DPOP_HEADER = "HTTP_DPOP"
#: Where parallel requests carrying one proof are held in tests, all checked, none recorded yet
#: (tests/functional/test_dpop_races.py): the INSERT alone decides which one passes.
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
    4.3 item 9 compares with the URI the client sent to), checked and recorded as used. Raises
    ``DPoPProofError``."""
    rt = runtime()
    proof = check_proof(
        current.environ.get(DPOP_HEADER, ""), method=current.method,
        url=rt.settings.endpoint(path), now=rt.clock.now(), access_token=access_token,
        nonce_key=nonce_key(),
    )  # fmt: skip
    checkpoints.reached(PROOF_CHECKPOINT)
    reads = rt.reads
    assert reads is not None, "create_app sets the thin reads"
    # Committed at once, before the request's own work: a proof is spent whether or not the
    # request then succeeds (RFC 9449 11.1), and a replay on another node finds it.
    if not remember_proof(reads.write_alone, reads.dialect_name, proof):
        raise DPoPProofError("The DPoP proof was used before.")
    return proof


class DPoPProofRequiredError(OAuth2Error):
    """RFC 9449 5.2: a client registered with ``dpop_bound_access_tokens`` sent no proof."""

    error = "invalid_dpop_proof"
    status_code = 400
    description = "This client must send a DPoP proof with every token request."


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

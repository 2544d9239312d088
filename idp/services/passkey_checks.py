"""The checks py_webauthn leaves to idp on a credential it is handed: its size and shape, the
client data's ``crossOrigin`` and ``topOrigin`` (WebAuthn L3 5.8.1), and a stable reason code for
each failure py_webauthn reports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidJSONStructure,
    InvalidRegistrationResponse,
    WebAuthnException,
)

from idp.models import Passkey

MAX_CREDENTIAL_JSON = 64 * 1024


class PasskeyError(Exception):
    """A ceremony failed. ``reason`` (and the library's ``detail``) are for the audit log; users
    see a calm, generic message."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def parse_credential(credential_json: str, parser: Any) -> Any:
    if not credential_json or len(credential_json) > MAX_CREDENTIAL_JSON:
        raise PasskeyError("malformed_credential")
    try:
        return parser(credential_json)
    except (InvalidJSONStructure, InvalidRegistrationResponse, InvalidAuthenticationResponse,
            ValueError, TypeError, KeyError) as error:  # fmt: skip
        raise PasskeyError("malformed_credential") from error


def check_client_data(client_data_json: bytes) -> dict[str, Any]:
    """WebAuthn L3 5.8.1 CollectedClientData: a ceremony inside a cross-origin iframe reports
    ``crossOrigin: true`` (and ``topOrigin``); idp is never framed, so both are refused. The
    parsed client data (py_webauthn checks its type, challenge and origin)."""
    try:
        data = json.loads(client_data_json)
    except (ValueError, UnicodeDecodeError) as error:
        raise PasskeyError("malformed_client_data") from error
    if not isinstance(data, dict):
        raise PasskeyError("malformed_client_data")
    if data.get("crossOrigin") is True:
        raise PasskeyError("cross_origin")
    if "topOrigin" in data:
        raise PasskeyError("top_origin")
    return data


def check_owner(
    identified: str | None, owner_id: str, user_handle: bytes | None, owner_handle: str
) -> None:
    """WebAuthn L3 7.2 steps 5 and 6, for a credential owned by ``owner_id``.

    ``identified``: the user the ceremony's options were for (the second step after a correct
    password), whose passkeys ``allowCredentials`` listed; step 5: "verify that credential.id
    identifies one of the public key credentials listed in options.allowCredentials", else the
    second step would sign in whoever owns the passkey, not the user who typed the password.
    Step 6: for an identified user the user handle is checked "if response.userHandle is
    present"; a discoverable sign-in (nobody identified) needs it, the handle of the owner."""
    if identified is not None and owner_id != identified:
        raise PasskeyError("credential_not_allowed")
    if not user_handle:
        if identified is None:
            raise PasskeyError("user_handle_missing")
    elif bytes_to_base64url(user_handle) != owner_handle:
        raise PasskeyError("user_handle_mismatch")


def forgettable_after_refusal(db: Session, credential: Any) -> str | None:
    """The id of a refused registration's credential that may be named to the browser as unknown
    (WebAuthn L3 5.1.10 ``signalUnknownCredential``), or None: the authenticator made it and idp
    stored nothing, so the credential manager would offer it in vain. Never one whose id is
    registered (7.1: "not yet registered for any user"), whatever the refusal's reason: that id
    signs someone in, and a credential manager that forgot it would cost its owner a working
    passkey. The uniqueness check comes late in the ceremony, so an answer posted again after
    it was stored (a resent request) is refused earlier, its challenge spent, and is not "a
    credential idp does not know"; nor is a copy of a registered id refused for another reason."""
    sent = credential.get("id") if isinstance(credential, dict) else None
    if not isinstance(sent, str) or not sent or len(sent) > MAX_CREDENTIAL_JSON:
        return None
    try:
        # As the sign-in looks it up: by the canonical base64url of the bytes.
        credential_id = bytes_to_base64url(base64url_to_bytes(sent))
    except (ValueError, TypeError):
        return None
    found = db.scalar(select(Passkey.credential_id).where(Passkey.credential_id == credential_id))
    return None if found is not None else sent


def failure_reason(error: Exception) -> str:
    """A stable reason code from py_webauthn's message (it has one exception per ceremony)."""
    text = str(error).lower()
    for needle, reason in (
        ("backed up", "backup_flags_invalid"),
        # An attestation chain that ends at none of the configured roots (idp.services.attestation).
        ("certificate chain", "attestation_not_trusted"),
        # WebAuthn L3 7.1 step 20: an fmt of no supported format (before "type", which it holds).
        ("unsupported attestation type", "attestation_format_unsupported"),
        ("origin", "origin_not_allowed"),
        ("challenge", "challenge_mismatch"),
        ("verified", "user_not_verified"),
        ("present", "user_not_present"),
        ("rp id", "rp_id_mismatch"),
        ("signature", "bad_signature"),
        ("type", "wrong_ceremony_type"),
        ("algorithm", "algorithm_not_allowed"),
    ):
        if needle in text:
            return reason
    return "verification_failed"


#: What py_webauthn's attestation parsers raise, outside its exception family, on a structure
#: they do not know: a ``tpm`` pubArea or certInfo whose type or algorithm is not in its tables
#: (KeyError), a certificate field read by position (IndexError, AttributeError), and the like.
UNPARSED = (KeyError, IndexError, AttributeError, TypeError, ValueError)


@contextmanager
def registration_refusals() -> Iterator[None]:
    """py_webauthn's ``verify_registration_response`` inside: whatever it raises on what the
    client sent is a PasskeyError. Not only InvalidRegistrationResponse: it raises
    InvalidBackupFlags (WebAuthn L3 7.1 "if the BE bit is not set, verify that the BS bit is not
    set") outside that family, and its parsers of attestation statements (8.3 ``tpm`` above all)
    raise ``UNPARSED`` errors; uncaught, each was a 500 that rolled back the spent challenge and
    the audit."""
    try:
        yield
    except WebAuthnException as error:
        raise PasskeyError(failure_reason(error), str(error)) from error
    except UNPARSED as error:
        raise PasskeyError("malformed_attestation", repr(error)[:200]) from error

"""The request options of a passkey sign-in (WebAuthn L3 5.5), and those the sign-in page
carries under a challenge that waits nowhere: built from the Relying Party, the policy and a
signer alone, so that showing the page opens no database session (idp.composition
``Services.sign_in_page_options``; docs/architecture.md, a passkey sign-in step by step)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from secrets import token_bytes
from typing import Any

from webauthn import generate_authentication_options, options_to_json
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.structs import (
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    UserVerificationRequirement,
)

from idp.models import Passkey
from idp.services.attestation import load_roots
from idp.services.challenges import CHALLENGE_TTL, ChallengeSigner
from idp.services.crypto import token_hash
from idp.services.sign_in_policy import SignInPolicy
from idp.settings import Settings

REGISTRATION = "registration"
#: WebAuthn L3 5.1.3: a create() with mediation "conditional" (its answer has UP and UV clear).
CONDITIONAL_REGISTRATION = "conditional_reg"
AUTHENTICATION = "authentication"
CHALLENGE_BYTES = 32  # 256 bits; WebAuthn L3 13.4.3 asks for at least 16


@dataclass(frozen=True)
class RelyingParty:
    rp_id: str
    rp_name: str
    origins: tuple[str, ...]
    #: The attestation roots registrations must chain to (idp.services.attestation); () none.
    attestation_roots: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, settings: Settings, now: datetime) -> RelyingParty:
        """idp as its settings name it at ``now``; a roots file that cannot be used stops the
        start (idp.services.attestation ``load_roots``)."""
        roots = load_roots(settings.webauthn_attestation_roots, now)
        return cls(settings.rp_id, settings.webauthn_rp_name, settings.origins, roots)


@dataclass(frozen=True)
class Ceremony:
    """Options to hand to ``navigator.credentials`` and the id to send back with the result."""

    challenge_id: str
    options: dict[str, Any]


def request_options(
    rp: RelyingParty, policy: SignInPolicy, raw: bytes, allow: list[Any]
) -> dict[str, Any]:
    """PublicKeyCredentialRequestOptions (WebAuthn L3 5.5) for the challenge ``raw``."""
    options = generate_authentication_options(
        rp_id=rp.rp_id,
        challenge=raw,
        timeout=int(CHALLENGE_TTL.total_seconds() * 1000),
        allow_credentials=allow,
        user_verification=UserVerificationRequirement(policy.user_verification),
    )
    found: dict[str, Any] = json.loads(options_to_json(options))
    return found


def page_options(
    signer: ChallengeSigner, rp: RelyingParty, policy: SignInPolicy, binding: str, now: datetime
) -> Ceremony:
    """The sign-in page's own options (conditional mediation starts on load): those of
    ``PasskeyService.authentication_options`` under a challenge that waits nowhere
    (idp.services.challenges ``ChallengeSigner``), so that showing the page reads and stores
    nothing; the answer that verifies spends it (``PasskeyService.authenticate``)."""
    raw = token_bytes(CHALLENGE_BYTES)
    issued = signer.issue(kind=AUTHENTICATION, challenge=bytes_to_base64url(raw),
                          binding_hash=token_hash(binding), now=now,
                          expires_at=now + CHALLENGE_TTL)  # fmt: skip
    return Ceremony(challenge_id=issued.id, options=request_options(rp, policy, raw, []))


def descriptor(passkey: Passkey) -> PublicKeyCredentialDescriptor:
    """A stored passkey as ``allowCredentials`` / ``excludeCredentials`` name it (WebAuthn L3
    5.8.3), its transports those idp knows."""
    transports = []
    for value in passkey.transports:
        try:
            transports.append(AuthenticatorTransport(value))
        except ValueError:
            continue
    return PublicKeyCredentialDescriptor(
        id=base64url_to_bytes(passkey.credential_id), transports=transports or None
    )

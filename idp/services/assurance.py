"""Authentication strength: amr values (RFC 8176) and the acr values idp defines.

The acr values are ordered; a request asking for one is satisfied by a session at that level or
above (OIDC Core 3.1.2.1 acr_values, 5.5.1.1).
"""

from __future__ import annotations

ACR_PASSWORD = "urn:idp:acr:password"  # one knowledge factor
ACR_MFA = "urn:idp:acr:mfa"  # two factors, not phishing-resistant (password + TOTP)
# OpenID EAP ACR Values 1.0: "phr" phishing-resistant, "phrh" also hardware-protected.
ACR_PHISHING_RESISTANT = "phr"
ACR_PHISHING_RESISTANT_HARDWARE = "phrh"

ACR_LEVELS = {
    ACR_PASSWORD: 1,
    ACR_MFA: 2,
    ACR_PHISHING_RESISTANT: 3,
    ACR_PHISHING_RESISTANT_HARDWARE: 4,
}
ACR_VALUES_SUPPORTED = list(ACR_LEVELS)


def acr_for_amr(amr: list[str]) -> str:
    """The acr a sign-in with these methods earns. A passkey counts as phishing-resistant
    multi-factor only with user verification (amr ``user``, WebAuthn L3 6.1 UV flag): without
    it the assertion proves possession alone (NIST SP 800-63B-4 multi-factor cryptographic
    authenticators), one factor, which earns neither ``phr``/``phrh`` nor ``mfa``."""
    user_verified = "user" in amr
    if "hwk" in amr and user_verified:
        return ACR_PHISHING_RESISTANT_HARDWARE
    if "swk" in amr and user_verified:
        return ACR_PHISHING_RESISTANT
    if "mfa" in amr:
        return ACR_MFA
    return ACR_PASSWORD


def requested_acr_level(acr_values: str | None) -> int:
    """The lowest level that satisfies the request: any listed value we support will do."""
    levels = [ACR_LEVELS[v] for v in (acr_values or "").split() if v in ACR_LEVELS]
    return min(levels) if levels else 0


def satisfies(session_acr: str, acr_values: str | None) -> bool:
    return ACR_LEVELS.get(session_acr, 0) >= requested_acr_level(acr_values)

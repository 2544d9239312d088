"""The deployment's sign-in policy (issue 6, policy): what every sign-in path asks of users.

Defaults come from the settings (config file and ``IDP_*``); the admin console's policy page can
override them at run time. Services read the policy through ``load_policy`` only, so that every
node applies the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from idp.settings import Settings


@dataclass(frozen=True)
class SignInPolicy:
    #: False: passwordless-only deployment (passkeys, login links; no password sign-in or set-up).
    passwords_allowed: bool
    #: Self-service sign-up (off by default): the email is proven first, then a passkey.
    signup_enabled: bool


def load_policy(db: Session, settings: Settings) -> SignInPolicy:
    """The policy in force for this request."""
    return SignInPolicy(
        passwords_allowed=settings.passwords_allowed,
        signup_enabled=settings.signup_enabled,
    )

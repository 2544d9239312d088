"""SQLAlchemy models, one module per aggregate."""

from idp.models.api_tokens import ApiToken
from idp.models.attempts import AttemptCounter, FactorLock
from idp.models.audit import AuditEvent
from idp.models.base import Base
from idp.models.clients import Client
from idp.models.factors import BackupCode, LoginLink, PartialLogin, TotpCredential
from idp.models.groups import ClaimMap, ClientAllowedGroup, Group, GroupMember
from idp.models.keys import InstallationSecret, SigningKey
from idp.models.maintenance import MaintenanceRun
from idp.models.oauth import (
    AccessToken,
    AuthorizationCode,
    Consent,
    DeviceAuthorization,
    Grant,
    PendingAuthorization,
    PushedAuthorizationRequest,
    RefreshToken,
    UsedClientAssertion,
    UsedDPoPProof,
)
from idp.models.outbox import OutboxMessage
from idp.models.passkeys import Passkey, WebAuthnChallenge
from idp.models.policy import PolicyOverride
from idp.models.sessions import BrowserSession
from idp.models.signup import SignupLink
from idp.models.users import EmailChangeRequest, User

__all__ = [
    "AccessToken",
    "ApiToken",
    "AttemptCounter",
    "AuditEvent",
    "AuthorizationCode",
    "BackupCode",
    "Base",
    "BrowserSession",
    "ClaimMap",
    "Client",
    "ClientAllowedGroup",
    "Consent",
    "DeviceAuthorization",
    "EmailChangeRequest",
    "FactorLock",
    "Grant",
    "Group",
    "GroupMember",
    "InstallationSecret",
    "LoginLink",
    "MaintenanceRun",
    "OutboxMessage",
    "PartialLogin",
    "Passkey",
    "PendingAuthorization",
    "PolicyOverride",
    "PushedAuthorizationRequest",
    "RefreshToken",
    "SigningKey",
    "SignupLink",
    "TotpCredential",
    "UsedClientAssertion",
    "UsedDPoPProof",
    "User",
    "WebAuthnChallenge",
]

"""The composition root: the one place that builds idp's services with their collaborators.

Two levels (docs/architecture.md):

- ``Container``: made once per application by ``create_app`` from the settings: the key store,
  the password hasher, the keyed hashers and signers, the Redis client and its circuit breaker
  (idp.redis_client), the clock, this node's caches (the sign-in policy's cached copy, the
  client registrations, the prune schedule), and the thin reads on the application's engine
  (idp.thin_reads). It lives in ``app.extensions["idp"]``; ``runtime()`` returns it.
- ``Services``: a factory made once per request (``services()``, kept on ``flask.g``) or per CLI
  command: each of its attributes builds one service from the container, the request's database
  session and the request's context. Views, the CLI and the admin API ask it for services and
  construct none themselves; services in ``idp/services/`` build their own collaborators only
  where they are private details.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet
from flask import Flask, current_app, g, has_request_context, request
from sqlalchemy.orm import Session

from idp.clock import SYSTEM_CLOCK, Clock
from idp.redis_client import redis_breaker, redis_client
from idp.services.anonymous import AnonymousRejections, StorageBudgets
from idp.services.api_tokens import ApiTokenService
from idp.services.audit import RequestContext
from idp.services.backchannel_logout import BackchannelSender
from idp.services.backup_codes import BackupCodeService
from idp.services.carried_requests import RequestSigner
from idp.services.challenges import (
    ChallengeSigner,
    ChallengeStore,
    DatabaseChallenges,
    RedisChallenges,
    SignedChallenges,
)
from idp.services.client_cache import ClientCache, LiveClock
from idp.services.clients import ClientService
from idp.services.crypto import KeyedHasher, derive_key, fernet_for
from idp.services.dependencies import CircuitBreaker
from idp.services.device import DeviceFlowService
from idp.services.grants import GrantService
from idp.services.groups import Actor, GroupService
from idp.services.login_links import LoginLinkService
from idp.services.method_removal import MethodRemoval
from idp.services.notifications import Mailer, Notifier
from idp.services.outbox import Channel
from idp.services.partial_logins import PartialLogins
from idp.services.passkey_options import Ceremony, RelyingParty, page_options
from idp.services.passkeys import PasskeyService
from idp.services.passwords import PasswordService
from idp.services.pending_authorizations import PendingAuthorizations
from idp.services.rate_limits import (
    AddressBudget,
    AttemptLimiter,
    CounterStore,
    DatabaseCounters,
    FactorLocks,
    WindowBudget,
)
from idp.services.redis_counters import RedisCounters
from idp.services.retention import PruneSchedule, RetentionPolicy
from idp.services.sessions import SessionService
from idp.services.sign_in import SignInService
from idp.services.sign_in_policy import PolicyCache, SignInPolicy, load_policy
from idp.services.signing_keys import KeyStore
from idp.services.signup import Joining
from idp.services.subjects import SubjectIdentifiers
from idp.services.totp import TotpService
from idp.services.user_admin import UserAdmin
from idp.services.users import EmailChanges, UserService, normalise_email
from idp.settings import Settings
from idp.thin_reads import ThinReads


@dataclass
class Container:
    """What one application builds once from its settings and shares across requests."""

    settings: Settings
    keys: KeyStore
    passwords: PasswordService
    client_secrets: KeyedHasher
    #: Keyed hashes for backup codes and for rate-limit keys derived from emails.
    backup_code_hasher: KeyedHasher
    attempt_key_hasher: KeyedHasher
    #: Keyed hashes of device-flow user codes (RFC 8628 5.1: too short for a plain hash).
    user_code_hasher: KeyedHasher
    #: Keyed hashes of admin API tokens (idp.services.api_tokens).
    api_token_hasher: KeyedHasher
    totp_fernet: Fernet
    #: Sign what the sign-in page carries: its WebAuthn challenges (idp.services.challenges) and
    #: its authorization request (idp.services.carried_requests).
    challenge_signer: ChallengeSigner | None = None
    request_signer: RequestSigner | None = None
    redis: Any = None
    #: This process's memory of Redis's last failure (idp.redis_client): refusals without a wait.
    redis_breaker: CircuitBreaker = field(default_factory=redis_breaker)
    #: THE clock: views and the session loader read the time through it (idp.clock).
    clock: Clock = SYSTEM_CLOCK
    #: This node's cached copy of the sign-in policy (trusted for ``policy_cache_ttl``).
    policy_cache: PolicyCache = field(init=False)
    #: idp as the WebAuthn Relying Party (WebAuthn L3 5.4.2: its ID, name and origins).
    relying_party: RelyingParty = field(init=False)
    #: When this node tries opportunistic pruning next (idp.services.retention).
    prune_schedule: PruneSchedule = field(init=False)
    #: This process's copies of client registrations (trusted for ``client_cache_ttl``).
    client_cache: ClientCache = field(init=False)
    #: Single-statement reads outside the ORM (idp.thin_reads), set by ``create_app``.
    reads: ThinReads | None = None
    #: The ``sub`` each client knows a user by (OIDC Core 8), its secret read once per process.
    subjects: SubjectIdentifiers = field(default_factory=SubjectIdentifiers)

    def __post_init__(self) -> None:
        self.policy_cache = PolicyCache(self.settings.policy_cache_ttl)
        self.relying_party = RelyingParty.of(self.settings, self.clock.now())
        self.client_cache = ClientCache(
            self.settings.client_cache_ttl, self.client_secrets, LiveClock(lambda: self.clock)
        )
        self.prune_schedule = PruneSchedule(self.settings.prune_interval)

    @classmethod
    def build(cls, settings: Settings) -> Container:
        key_encryption = fernet_for(settings.secret_key, "idp signing keys at rest")
        longest_token = max(settings.access_token_ttl, settings.id_token_ttl)
        return cls(
            settings=settings,
            keys=KeyStore(
                encrypt=key_encryption.encrypt,
                decrypt=key_encryption.decrypt,
                cache_ttl=settings.key_cache_ttl,
                max_token_lifetime=longest_token,
            ),
            passwords=PasswordService(
                memory_kib=settings.argon2_memory_kib,
                time_cost=settings.argon2_time_cost,
                parallelism=settings.argon2_parallelism,
                hashes_at_once=settings.argon2_hashes_at_once,
            ),
            client_secrets=KeyedHasher(derive_key(settings.secret_key, "idp client secrets")),
            backup_code_hasher=KeyedHasher(derive_key(settings.secret_key, "idp backup codes")),
            attempt_key_hasher=KeyedHasher(derive_key(settings.secret_key, "idp attempt keys")),
            user_code_hasher=KeyedHasher(derive_key(settings.secret_key, "idp device user codes")),
            api_token_hasher=KeyedHasher(derive_key(settings.secret_key, "idp api tokens")),
            totp_fernet=fernet_for(settings.secret_key, "idp totp secrets at rest"),
            challenge_signer=ChallengeSigner(settings.secret_key),
            request_signer=RequestSigner(settings.secret_key),
            redis=redis_client(settings.redis_url),
        )

    def email_key(self, email: str) -> str:
        """A rate-limit subject for an email, known account or not (no enumeration)."""
        return self.address_key(normalise_email(email))

    def address_key(self, normalised: str) -> str:
        """``email_key`` of an address already normalised (``normalise_email``): the sign-in
        normalises what was typed once, for the counter and for the account's look-up."""
        return self.attempt_key_hasher.hash(normalised)[:32]


class Services:
    """Builds idp's services for one request or one CLI command.

    Each attribute builds a new service (they hold no state beyond the database session), so a
    view may ask for one as often as it likes. ``db`` returns the current database session;
    ``context`` is who acts, for the audit log. The sign-in policy is loaded once and kept
    until ``policy_changed``."""

    def __init__(
        self,
        container: Container,
        db: Callable[[], Session],
        context: RequestContext | None = None,
    ) -> None:
        self.container = container
        self._db = db
        self.context = context if context is not None else RequestContext()
        self._policy: SignInPolicy | None = None

    @property
    def settings(self) -> Settings:
        return self.container.settings

    # -- the sign-in policy ------------------------------------------------------------------------
    @property
    def policy(self) -> SignInPolicy:
        """The sign-in policy in force: the settings, then the admins' stored overrides."""
        if self._policy is None:  # a fresh cached copy opens no Session
            cache = self.container.policy_cache
            self._policy = cache.fresh() or load_policy(self._db(), self.settings, cache)
        return self._policy

    def policy_changed(self) -> None:
        """After this node stored a policy change: apply it here at once (others within a TTL)."""
        self.container.policy_cache.invalidate()
        self._policy = None

    # -- short-lived state: Redis when configured, else the database -------------------------------
    @property
    def challenges(self) -> ChallengeStore:
        """WebAuthn challenges in Redis when configured (short-lived state), else the database."""
        redis = self.container.redis
        if redis is not None:
            return RedisChallenges(redis, self.container.redis_breaker)
        return DatabaseChallenges(self._db())

    @property
    def counters(self) -> CounterStore:
        """Counters in Redis when configured (shared by every node), else in the database."""
        redis = self.container.redis
        if redis is not None:
            return RedisCounters(redis, self.container.redis_breaker)
        return DatabaseCounters(self._db(), alone=self.container.reads)

    # -- budgets and limits ------------------------------------------------------------------------
    @property
    def limiter(self) -> AttemptLimiter:
        """Failure counters of sign-in attempts, in the counter store every node shares."""
        return AttemptLimiter(
            self.counters, FactorLocks(self._db()), lock_after=self.policy.lockout_threshold
        )

    @property
    def storage_budgets(self) -> StorageBudgets:
        """The per-address budgets of anonymous writes (docs/operations.md, "Storage
        budgets"), in the counter store every node shares."""
        return StorageBudgets(self.counters, self.settings.anonymous_requests_per_address)

    @property
    def storage_budgets_with_rows(self) -> StorageBudgets:
        """``storage_budgets``, a database count committed by the caller with its row."""
        rows = self.container.redis is None
        store = DatabaseCounters(self._db(), commit=False) if rows else self.counters
        return StorageBudgets(store, self.settings.anonymous_requests_per_address)

    @property
    def signup_budget(self) -> AddressBudget:
        """Sign-up requests per client address: 10 in each hour (a fixed window), shared by
        every node."""
        return AddressBudget(self.counters, limit=10, window=timedelta(hours=1))

    @property
    def failed_api_auth_budget(self) -> WindowBudget:
        """Failed admin API token authentications per client address (idp.services.api_tokens),
        in the counter store every node shares."""
        from idp.services.api_tokens import FAILED_AUTH_LIMIT, FAILED_AUTH_WINDOW

        return WindowBudget(self.counters, FAILED_AUTH_LIMIT, FAILED_AUTH_WINDOW)

    # -- sign-in -----------------------------------------------------------------------------------
    @property
    def sessions(self) -> SessionService:
        policy = self.policy
        return SessionService(
            self._db(),
            idle_ttl=policy.session_idle_ttl,
            absolute_ttl=policy.session_absolute_ttl,
            restricted_ttl=self.settings.restricted_session_ttl,
        )

    def sign_in_page_options(self, binding: str, now: datetime) -> Ceremony:
        """The sign-in page's passkey options (idp.services.passkey_options): no Session."""
        signer = self.container.challenge_signer
        assert signer is not None, "Container.build gives every app its challenge signer"
        return page_options(signer, self.container.relying_party, self.policy, binding, now)

    @property
    def passkeys(self) -> PasskeyService:
        challenges, signer = self.challenges, self.container.challenge_signer
        return PasskeyService(
            self._db(), self.container.relying_party, self.policy, challenges=challenges,
            rejections=AnonymousRejections(self._db(), self.storage_budgets),
            signed=SignedChallenges(signer, challenges) if signer else None,
            notifier=self.notifier,
        )  # fmt: skip

    @property
    def totp(self) -> TotpService:
        return TotpService(self._db(), self.container.totp_fernet, self.settings.webauthn_rp_name)

    @property
    def backup_codes(self) -> BackupCodeService:
        return BackupCodeService(self._db(), self.container.backup_code_hasher)

    @property
    def sign_in(self) -> SignInService:
        container = self.container
        return SignInService(
            self._db(), passwords=container.passwords, limiter=self.limiter,
            address_key=container.address_key, totp=self.totp, backup_codes=self.backup_codes,
            notifier=self.notifier, policy=self.policy, reads=container.reads,
        )  # fmt: skip

    @property
    def partial_logins(self) -> PartialLogins:
        """Correct passwords waiting for their second step."""
        return PartialLogins(self._db, self.container.reads)

    @property
    def method_removal(self) -> MethodRemoval:
        """The rules that keep a way in: never the last one, and admins keep a passkey."""
        return MethodRemoval(self._db(), self.policy)

    @property
    def pending_authorizations(self) -> PendingAuthorizations:
        """Authorization requests waiting for a sign-in or a consent, and the consents given."""
        return PendingAuthorizations(self._db())

    @property
    def login_links(self) -> LoginLinkService:
        return LoginLinkService(self._db(), AnonymousRejections(self._db(), self.storage_budgets))

    # -- accounts ----------------------------------------------------------------------------------
    @property
    def users(self) -> UserService:
        return UserService(self._db(), self.container.passwords)

    @property
    def email_changes(self) -> EmailChanges:
        return EmailChanges(self._db())

    @property
    def joining(self) -> Joining:
        """Invites and self-service sign-up (idp.services.signup)."""
        rejections = AnonymousRejections(self._db(), self.storage_budgets)
        return Joining(self._db(), self.container.passwords, self.notifier, rejections=rejections,
                       allow_local_domains=not self.settings.production)  # fmt: skip

    def user_admin(self, actor_id: str, via: str) -> UserAdmin:
        """What admins decide about users, acting as ``actor_id`` (an admin's id, or an API
        token's actor) through ``via`` (``console``, ``api``, ``cli``: every audit row names
        it): the console, the admin API and the CLI share it."""
        return UserAdmin(
            self._db(),
            passwords=self.container.passwords,
            notifier=self.notifier,
            backup_codes=self.backup_codes,
            totp=self.totp,
            actor_id=actor_id,
            via=via,
            context=self.context,
            allow_local_domains=not self.settings.production,
        )

    # -- OAuth and OpenID Connect ------------------------------------------------------------------
    @property
    def grants(self) -> GrantService:
        return GrantService(self._db(), self.container.subjects)

    @property
    def device_flow(self) -> DeviceFlowService:
        """The device authorization grant's service (RFC 8628), its user codes counted by the
        attempt limiter."""
        return DeviceFlowService(self._db(), self.container.user_code_hasher, self.limiter)

    @property
    def clients(self) -> ClientService:
        """Client registrations as the console, the admin API and the CLI change them: the
        issuer decides which back-channel logout URIs development allows."""
        return ClientService(self._db(), self.container.client_secrets, issuer=self.settings.issuer,
                             clock=self.container.clock)  # fmt: skip

    @property
    def groups(self) -> GroupService:
        """Groups, read (or changed by the command line)."""
        return GroupService(self._db(), clock=self.container.clock)

    def groups_as(self, user_id: str | None, via: str) -> GroupService:
        """Groups as an admin changes them through ``via`` (``console``, ``api``): the audit log
        names them."""
        return GroupService(self._db(), Actor(user_id=user_id, via=via, context=self.context),
                            clock=self.container.clock)  # fmt: skip

    def api_tokens(self, actor_id: str | None) -> ApiTokenService:
        """Admin API tokens, managed by ``actor_id`` (an admin's id, ``cli``; None: the API
        authenticating a token)."""
        return ApiTokenService(self._db(), self.container.api_token_hasher, actor_id=actor_id,
                               context=self.context, clock=self.container.clock)  # fmt: skip

    # -- messages and housekeeping -----------------------------------------------------------------
    @property
    def notifier(self) -> Notifier:
        settings = self.settings
        return Notifier(self._db(), settings.smtp_url, settings.smtp_sender,
                        clock=self.container.clock)  # fmt: skip

    @property
    def mailer(self) -> Mailer | None:
        """The SMTP sender, or None when messages stay in the outbox."""
        settings = self.settings
        if not settings.smtp_url:
            return None
        return Mailer(settings.smtp_url, settings.smtp_sender, settings.smtp_ca_file)

    def outbox_channels(self) -> list[Channel]:
        """The outbox channels this node delivers through: back-channel logout always, mail
        when an SMTP server is configured (idp.services.outbox)."""
        sender = self.mailer
        logout = BackchannelSender(self._db(), self.container.keys, self.settings.issuer,
                                   self.container.clock, self.container.subjects)  # fmt: skip
        return [logout] if sender is None else [logout, sender]

    def retention(self, now: datetime) -> RetentionPolicy:
        """What a prune at ``now`` deletes: the settings' retention, the policy's idle TTL."""
        settings = self.settings
        return RetentionPolicy(now=now, audit_retention_days=settings.audit_retention_days,
                               session_idle_ttl=self.policy.session_idle_ttl,
                               refresh_token_ttl=settings.refresh_token_ttl)  # fmt: skip


# -- the web's accessors -------------------------------------------------------------------------
def container(app: Flask | None = None) -> Container:
    """The application's container (``create_app`` made it)."""
    # Not ``current_app.extensions``: each attribute read through the proxy finds it again.
    value = (app or current_app._get_current_object()).extensions["idp"]  # type: ignore[attr-defined]
    assert isinstance(value, Container)
    return value


def runtime() -> Container:
    """The current application's container: its settings, keys, hashers and caches."""
    return container()


def clock() -> Clock:
    """The current application's clock: the time a view decides with, which a test freezes and
    moves by setting this one object (tests/support/clock.py)."""
    return container().clock


def request_context() -> RequestContext:
    """Who is acting, for the audit log: the client's address and user agent."""
    return RequestContext.of(request.environ)


def services() -> Services:
    """This request's (or application context's) service factory, made once and kept on ``g``."""
    if "idp_services" not in g:
        from idp.extensions import db

        context = request_context() if has_request_context() else RequestContext()
        g.idp_services = Services(container(), db.session, context)
    built: Services = g.idp_services
    return built

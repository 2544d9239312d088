"""Typed settings: defaults < TOML file named by IDP_CONFIG < IDP_* environment variables.

Settings are validated once at start so that a misconfigured deployment refuses to run instead of
failing at the first sign-in.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: Plain SMTP, TLS from the start (RFC 8314 3.3), or STARTTLS (RFC 3207); both TLS forms verify.
SMTP_SCHEMES = ("smtp", "smtps", "smtp+starttls")
#: What the Redis client accepts: plain, TLS, or a Unix socket.
REDIS_SCHEMES = ("redis", "rediss", "unix")
#: The databases idp runs on, by SQLAlchemy driver name (after ``postgres://`` and
#: ``postgresql://`` become psycopg 3, the one PostgreSQL driver idp ships).
DATABASE_DRIVERS = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")
#: The development secret, published with the source: it derives the keys that sign email-change
#: tokens and encrypt TOTP secrets and signing keys, so anyone can forge or decrypt with it.
#: Accepted only for a development start on a loopback issuer (``refuse_development_secret``).
DEVELOPMENT_SECRET_KEY = "development-secret-key-do-not-use-in-production"


class SettingsError(ValueError):
    """A setting is missing, malformed or unsafe; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    """Every setting idp reads. docs/configuration.md documents each one."""

    issuer: str = "http://localhost:5000"
    secret_key: str = DEVELOPMENT_SECRET_KEY
    production: bool = False
    instance_path: str = "instance"
    database_url: str = ""  # empty: SQLite under instance_path
    redis_url: str = ""

    webauthn_rp_id: str = ""  # empty: the issuer's host
    webauthn_rp_name: str = "idp"
    webauthn_origins: tuple[str, ...] = ()  # empty: the issuer's origin

    code_ttl: int = 60  # seconds; RFC 9700 4.2 asks for short-lived codes
    access_token_ttl: int = 600
    id_token_ttl: int = 3600
    refresh_token_ttl: int = 30 * 24 * 3600
    pending_request_ttl: int = 1800
    #: Device authorization grant (RFC 8628): how long a device code and its user code live, and
    #: the seconds a device waits between polls (RFC 8628 3.2 ``expires_in`` and ``interval``).
    device_code_ttl: int = 600
    device_poll_interval: int = 5
    #: Pushed authorization requests (RFC 9126): how long a request_uri may wait for its
    #: ``/authorize`` (RFC 9126 2.2 ``expires_in``: short, the browser is sent there at once).
    par_request_ttl: int = 60
    #: Pushes (RFC 9126 2) each confidential client may make per minute: 10 to 1,000,000.
    par_requests_per_client: int = 600
    #: RFC 9126 5 ``require_pushed_authorization_requests``: every client must push its
    #: authorization requests (``POST /par``); off, only clients registered to require it.
    require_pushed_authorization_requests: bool = False
    #: RFC 9449 8: every DPoP proof must carry a nonce idp gave (``DPoP-Nonce``), so that a proof
    #: cannot be made ahead of time; off, proofs are bounded by their ``iat`` alone.
    dpop_nonces: bool = False
    session_idle_ttl: int = 14 * 24 * 3600
    session_absolute_ttl: int = 30 * 24 * 3600
    #: Restricted sessions (login link, invite, sign-up confirmation, backup-code recovery) end
    #: this long after they start, whatever the session lifetimes: 5 to 30 minutes.
    restricted_session_ttl: int = 15 * 60
    key_cache_ttl: int = 5  # seconds a node trusts its cached signing keys
    #: Seconds a node trusts its cached copy of a client registration at the token side
    #: (idp.services.client_cache): a change counts at once in the process that made it, in
    #: every other process and node within this time. 0 reads the client on every request.
    client_cache_ttl: int = 5
    #: Seconds after a refresh token's rotation during which presenting it again, while its
    #: successor is unused, is a retry of a lost answer rather than a replay (0: never).
    refresh_token_retry_grace: int = 5
    #: Also accept a client assertion whose ``aud`` is the token or device authorization
    #: endpoint URL, as RFC 7523 first allowed, while clients migrate to the issuer identifier
    #: that draft-ietf-oauth-rfc7523bis 4 requires as the sole audience (idp.services.
    #: client_assertions). Off: only the issuer.
    client_assertion_endpoint_audiences: bool = False

    #: "all" (default, RFC 9700 2.1.1 recommends PKCE for every client) or "public".
    pkce_required_for: str = "all"
    #: Pending authorization requests and passkey options (WebAuthn challenges) each client
    #: address may open per 15 minutes (docs/operations.md, "Storage budgets"); raise it when many
    #: people share one address, such as an office behind one NAT. 10 to 1,000,000.
    anonymous_requests_per_address: int = 120
    #: Argon2id parameters (OWASP Password Storage Cheat Sheet: m=19 MiB, t=2, p=1).
    argon2_memory_kib: int = 19456
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    #: Argon2id computations one worker process runs at once; more wait their turn
    #: (idp.services.passwords). Several 19 MiB hashes sharing a core evict each other's
    #: memory from its caches and each costs more CPU (docs/performance.md); with one worker per
    #: core (``idp serve --production``), 1 keeps one hash per core. 1 to 64.
    argon2_hashes_at_once: int = 1

    #: One-time login links: 15 minutes by default, at most a day.
    login_link_ttl: int = 900
    #: After `rotate-secret`, how long a client's old secret keeps working (0: not at all).
    client_secret_rotation_overlap: int = 24 * 3600
    #: Ask users who sign in with a password alone to add a second factor before continuing.
    require_second_factor: bool = False
    #: The road to passkeys: offer a passkey after a password sign-in, snoozed for this long.
    passkey_prompt: bool = True
    passkey_prompt_snooze_days: int = 14
    #: Notifications: smtp://user:pass@host:port (or smtps://, smtp+starttls://); empty keeps
    #: messages in the outbox table and the log.
    smtp_url: str = ""
    smtp_sender: str = "idp@localhost"
    #: A PEM file of CA certificates trusted for the SMTP server beside the system store (which
    #: honours SSL_CERT_FILE and SSL_CERT_DIR): for a relay with a certificate from a private CA.
    smtp_ca_file: str = ""
    #: The first admin's address on an empty install (development default: admin@localhost).
    admin_email: str = ""
    #: Sign-in policy defaults (idp.services.sign_in_policy); the admin console may override them.
    passwords_allowed: bool = True
    signup_enabled: bool = False
    #: Observability (docs/operations.md): the bearer token that opens /metrics (empty: /metrics
    #: answers 404), and the level of the JSON log lines on stderr.
    metrics_token: str = ""
    log_level: str = "INFO"
    #: "json", "text", or "auto": text lines for ``idp serve`` in development (no
    #: ``--production``, ``production`` off), JSON lines everywhere else.
    log_format: str = "auto"
    #: Admins sign in with a passkey only: no password sign-in, and their last passkey stays.
    admin_passkey_required: bool = False
    #: WebAuthn L3 5.4.4 / 5.8.6: "required" (default) or "preferred".
    webauthn_user_verification: str = "required"
    #: WebAuthn L3 5.4.7 attestation conveyance: "none", "indirect", "direct" or "enterprise".
    webauthn_attestation: str = "none"
    #: Authenticator models (AAGUIDs) allowed to register a passkey; empty allows any.
    webauthn_aaguid_allow_list: tuple[str, ...] = ()
    #: PEM file of the attestation roots a registration must chain to; empty: none checked.
    webauthn_attestation_roots: str = ""
    #: Consecutive failures per account and factor before that factor locks (<= 100).
    lockout_threshold: int = 100
    #: Seconds a node trusts its cached copy of the policy overrides stored in the database.
    policy_cache_ttl: int = 5
    #: Audit events older than this many days are pruned; 0 keeps them forever.
    audit_retention_days: int = 365
    #: Seconds between opportunistic prunes of expired rows (idp.services.retention); 0: never
    #: (then run ``idp prune`` from cron).
    prune_interval: int = 600
    #: Reverse proxies in front of idp whose X-Forwarded-For / X-Forwarded-Proto to believe
    #: (0: none, the default: a client could otherwise pick its own address and dodge the
    #: per-address limits). Behind one load balancer, 1.
    trusted_proxies: int = 0
    #: /readyz also fails while Redis does not answer. Off by default: without Redis only the
    #: sign-ins that need its counters stop (docs/operations.md, "When a dependency fails"),
    #: while refresh, userinfo, discovery and JWKS go on; a balancer that took every node out
    #: would turn that into a total outage.
    readiness_requires_redis: bool = False
    #: With an https issuer every response carries HSTS (RFC 6797); this adds includeSubDomains,
    #: which binds every subdomain of the issuer's host to https as well.
    hsts_include_subdomains: bool = False

    #: Where the console's references to the documentation point: the address of the
    #: repository's docs/ directory for the installed version (e.g. a tagged tree on the forge,
    #: or an internal copy). Empty: the console names the file (docs/admins.md) without a link.
    docs_url: str = ""

    extra: dict[str, Any] = field(default_factory=dict)

    # -- derived values -------------------------------------------------------------------------
    @property
    def issuer_host(self) -> str:
        return urlsplit(self.issuer).hostname or ""

    @property
    def rp_id(self) -> str:
        return self.webauthn_rp_id or self.issuer_host

    @property
    def origins(self) -> tuple[str, ...]:
        if self.webauthn_origins:
            return self.webauthn_origins
        # As a browser serializes it in clientDataJSON (WebAuthn L3 7.1 step 9, 7.2 step 13).
        parts, default = urlsplit(self.issuer), {"http": 80, "https": 443}
        port = "" if parts.port in (None, default.get(parts.scheme)) else f":{parts.port}"
        return (f"{parts.scheme}://{parts.hostname}{port}",)

    @property
    def secure_transport(self) -> bool:
        """Cookies get ``Secure`` and the ``__Host-`` prefix when the issuer uses https."""
        return urlsplit(self.issuer).scheme == "https"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return _normalise_database_url(self.database_url)
        return f"sqlite:///{Path(self.instance_path).resolve() / 'idp.db'}"

    def resolved_log_format(self, *, development: bool) -> str:
        """``json`` or ``text``: ``auto`` is text only for a development server."""
        if self.log_format != "auto":
            return self.log_format
        return "text" if development and not self.production else "json"

    @property
    def prints_mail(self) -> bool:
        """Without SMTP, a development server (text log lines: a person reads its terminal)
        prints each message, links included, once its transaction has committed. Never in
        production, whose output goes to a log store (docs/operations.md, "Logs")."""
        return not self.smtp_url and not self.production and self.log_format == "text"

    def endpoint(self, path: str) -> str:
        return self.issuer.rstrip("/") + path

    def refuse_development_secret(self, *, production_server: bool) -> None:
        """docs/configuration.md, ``secret_key``: the published development key is refused
        whenever idp could be reached by anyone but its developer: with ``production = true``,
        with ``idp serve --production`` (``production_server``), and for any issuer whose host is
        not loopback (an https issuer is a deployment, whatever ``production`` says)."""
        if self.secret_key != DEVELOPMENT_SECRET_KEY:
            return
        if self.production or production_server:
            why = "a production start"
        elif not is_loopback_host(self.issuer_host):
            why = f"the non-loopback issuer {self.issuer!r}"
        else:
            return
        raise SettingsError(
            f"refusing the development secret key for {why}: it is published with the source, "
            "so it would let anyone forge email-change tokens and decrypt TOTP secrets and "
            "signing keys. Set IDP_SECRET_KEY (or secret_key in the IDP_CONFIG file) to at least "
            "32 random bytes, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )

    def validate(self) -> None:
        """Refuse settings that would make an unsafe or broken provider. The checks that need the
        services' own rules (lifetime bounds, the sign-in policy, the admin's address) are made
        by the app factory, ``idp.load_checked_settings``: this module imports nothing from idp,
        so that everything else may import it."""
        parts = urlsplit(self.issuer)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"issuer must be an absolute http(s) URL, got {self.issuer!r}")
        if parts.query or parts.fragment or "?" in self.issuer or "#" in self.issuer:
            # OIDC Discovery 3: the issuer has no query or fragment component (an empty one
            # counts: RPs compare the issuer as an exact string).
            raise SettingsError("issuer must not have a query or fragment")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise SettingsError(
                "issuer must use https (http is allowed only for localhost during development)"
            )
        self.refuse_development_secret(production_server=False)
        # The example configuration's placeholder is published as the development key is, and
        # refused where that one is: in production and for any issuer but loopback.
        example = self.secret_key.lower().startswith("change-me")
        if example and (self.production or not is_loopback_host(self.issuer_host)):
            raise SettingsError(
                "refusing the example secret key (it is published with the source) for "
                f"{'a production start' if self.production else repr(self.issuer)}"
            )
        if len(self.secret_key) < 32:
            raise SettingsError("secret_key must be at least 32 characters long")
        host = self.issuer_host
        rp_id = self.rp_id
        # WebAuthn L3 5.1.3 / HTML "is a registrable domain suffix of": the RP ID must be the
        # origin's host or a registrable suffix of it.
        # A top-level label alone ("com") is a public suffix, never registrable: browsers would
        # refuse every ceremony, so refuse it here (a full public-suffix check is not made).
        suffix_ok = host.endswith("." + rp_id) and "." in rp_id
        if not (host == rp_id or suffix_ok):
            raise SettingsError(
                f"webauthn_rp_id {rp_id!r} must be the issuer host {host!r} or a suffix of it"
            )
        if _is_ip_address(rp_id):
            raise SettingsError("webauthn_rp_id cannot be an IP address: serve idp as localhost")
        if self.pkce_required_for not in ("all", "public"):
            raise SettingsError("pkce_required_for must be 'all' or 'public'")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError("log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        if self.docs_url and urlsplit(self.docs_url).scheme not in ("http", "https"):
            raise SettingsError("docs_url must be an http(s) URL (or empty)")
        if self.log_format not in ("auto", "json", "text"):
            raise SettingsError("log_format must be auto, json or text")
        if self.metrics_token != self.metrics_token.strip() or not self.metrics_token.isprintable():
            # No scraper can send it: a header value has no surrounding whitespace and no control
            # character (RFC 9110 5.5), so every scrape would be refused. A newline from the file
            # the token was read from is the usual cause.
            raise SettingsError(
                "metrics_token must not start or end with whitespace nor hold control characters "
                "(a trailing newline from the file it was read from?)"
            )
        if self.metrics_token and len(self.metrics_token) < 32:
            # A guessable scrape token would open the metrics (counts of sign-ins per outcome).
            raise SettingsError("metrics_token must be at least 32 characters long (or empty)")
        if not 10 <= self.anonymous_requests_per_address <= 1_000_000:
            raise SettingsError("anonymous_requests_per_address must be 10 to 1000000")
        if not 10 <= self.par_requests_per_client <= 1_000_000:
            raise SettingsError("par_requests_per_client must be 10 to 1000000")
        if not 1 <= self.argon2_hashes_at_once <= 64:
            raise SettingsError("argon2_hashes_at_once must be 1 to 64")
        if self.trusted_proxies < 0:
            raise SettingsError("trusted_proxies must not be negative")
        self._validate_database()
        self._validate_redis()
        if self.smtp_url and urlsplit(self.smtp_url).scheme not in SMTP_SCHEMES:
            raise SettingsError("smtp_url must start with smtp://, smtps:// or smtp+starttls://")
        if self.smtp_ca_file and not os.path.isfile(self.smtp_ca_file):
            raise SettingsError(f"smtp_ca_file {self.smtp_ca_file!r} is not a readable file")

    def _validate_database(self) -> None:
        """A ``database_url`` SQLAlchemy can parse, for a database and driver idp runs on: else the
        app factory fails with SQLAlchemy's traceback. The messages never quote the URL, whose
        password SQLAlchemy's own parse errors may hold."""
        if not self.database_url:
            return
        # Imported here: ``idp --help`` reads this module and imports no SQLAlchemy.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            driver = make_url(self.sqlalchemy_url).drivername
        except (ArgumentError, ValueError):  # no scheme, a port that is not a number, ...
            raise SettingsError(
                "database_url is not a database URL: postgresql://user:password@host:port/name "
                "or sqlite:////absolute/path/idp.db (percent-encode @ : / in the password)"
            ) from None
        if driver not in DATABASE_DRIVERS:
            raise SettingsError(
                f"database_url names {driver!r}: idp runs on PostgreSQL (postgresql://, with "
                "psycopg 3) or SQLite (sqlite://)"
            )

    def _validate_redis(self) -> None:
        """A Redis URL the client can use, and a readiness that asks for Redis only with one:
        else ``/readyz`` would say ready without having asked anything (docs/operations.md,
        "Probes")."""
        if self.readiness_requires_redis and not self.redis_url:
            raise SettingsError(
                "readiness_requires_redis is set but redis_url is empty: set IDP_REDIS_URL, or "
                "leave readiness_requires_redis off"
            )
        if not self.redis_url:
            return
        parts = urlsplit(self.redis_url)
        try:
            parts.port  # noqa: B018 (parsing it is the check: "redis://host:x" has none)
        except ValueError:
            raise SettingsError("redis_url has a port that is not a number") from None
        if parts.scheme not in REDIS_SCHEMES:
            raise SettingsError("redis_url must start with redis://, rediss:// or unix://")


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    return _is_ip_address(host) and ipaddress.ip_address(host).is_loopback


def _normalise_database_url(url: str) -> str:
    # psycopg 3 is the PostgreSQL driver; accept the common spellings.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


_FIELDS = {f.name: f for f in fields(Settings) if f.name != "extra"}


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELDS[name].type
    if kind == "bool" and isinstance(value, str):
        # A misspelled boolean must not silently mean False (IDP_PRODUCTION=ture: checks off).
        word = value.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if kind == "int" and not isinstance(value, int):
        return int(value)
    if kind.startswith("tuple") and isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if kind.startswith("tuple") and isinstance(value, list | tuple):
        return tuple(value)
    if kind.startswith("tuple") or (kind == "str" and not isinstance(value, str)):
        raise ValueError(f"{name} must be a {'list' if kind.startswith('tuple') else 'string'}")
    return value


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``[webauthn] rp_id`` in TOML becomes ``webauthn_rp_id``; ``[tokens]`` and ``[sessions]``
    tables are grouping only and add no prefix."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            table_prefix = "" if key in ("tokens", "sessions", "passwords") else f"{key}_"
            flat.update(_flatten(value, prefix + table_prefix))
        else:
            flat[prefix + key] = value
    return flat


def _given_values(env: Mapping[str, str]) -> dict[str, Any]:
    """The values the IDP_CONFIG file and the IDP_* environment give, environment last."""
    values: dict[str, Any] = {}
    config_file = env.get("IDP_CONFIG")
    if config_file:
        try:
            with open(config_file, "rb") as handle:
                values.update(_flatten(tomllib.load(handle)))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise SettingsError(f"cannot read IDP_CONFIG file {config_file!r}: {error}") from error
    for name in _FIELDS:
        env_name = "IDP_" + name.upper()
        if env_name in env:
            values[name] = env[env_name]
    return values


def given_settings(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The names of the settings someone set (in the IDP_CONFIG file or the environment), as
    opposed to those left at their defaults."""
    return frozenset(_given_values(os.environ if environ is None else environ))


def load_settings(
    overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Build settings from the layered sources and validate them."""
    values = _given_values(os.environ if environ is None else environ)
    values.update(overrides or {})
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise SettingsError(f"unknown settings: {', '.join(unknown)}")
    try:
        settings = Settings(**{name: _coerce(name, value) for name, value in values.items()})
    except (TypeError, ValueError) as error:
        raise SettingsError(f"invalid setting: {error}") from error
    settings.validate()
    return settings

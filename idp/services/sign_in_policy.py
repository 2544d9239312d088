"""The deployment's sign-in policy: what every sign-in path asks of users.

Defaults come from the settings (config file and ``IDP_*``); the admin console's policy page (and
``idp policy set``) store overrides in the database, one row per overridden field, which every
node reads. Services read the policy through ``load_policy`` only, so that every node applies the
same rules; a node may cache it for ``policy_cache_ttl`` seconds (5 by default, like the signing
keys' ``key_cache_ttl``), so a change reaches every node within that time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from idp.errors import DomainError
from idp.services.lifetimes import check_session_lifetimes, parse_lifetime
from idp.settings import Settings

if TYPE_CHECKING:
    from idp.services.audit import RequestContext

log = logging.getLogger(__name__)

#: WebAuthn L3 5.8.6 UserVerificationRequirement values we accept. "discouraged" is not offered:
#: a passkey without user verification would be a single factor, below what docs/security.md
#: promises.
USER_VERIFICATION_CHOICES = ("required", "preferred")
#: WebAuthn L3 5.4.7 AttestationConveyancePreference.
ATTESTATION_CHOICES = ("none", "indirect", "direct", "enterprise")
#: at most 100 consecutive failures per account and factor.
MAX_LOCKOUT_THRESHOLD = 100


class PolicyError(DomainError):
    """A policy value is out of range or malformed; the message names the field and the rule."""


class StalePolicyError(PolicyError):
    """The policy in force is no longer the one the change was read from (``policy_version``)."""


#: The configured defaults are written once, in ``idp.settings.Settings``; a policy built from
#: two fields (``SignInPolicy(passwords_allowed=..., signup_enabled=...)``) takes the rest there.
_DEFAULTS = Settings()


@dataclass(frozen=True)
class SignInPolicy:
    #: False: passwordless-only deployment (passkeys, login links; no password sign-in or set-up).
    passwords_allowed: bool
    #: Self-service sign-up (off by default): the email is proven first, then a passkey.
    signup_enabled: bool
    #: Admins sign in with a passkey only (no password sign-in) and cannot remove their last one.
    admin_passkey_required: bool = _DEFAULTS.admin_passkey_required
    #: Offer a passkey after a password-only sign-in, and how long "not now" silences it.
    passkey_prompt: bool = _DEFAULTS.passkey_prompt
    passkey_prompt_snooze_days: int = _DEFAULTS.passkey_prompt_snooze_days
    #: WebAuthn user verification: "required" (UV flag must be set) or "preferred".
    user_verification: str = _DEFAULTS.webauthn_user_verification
    #: WebAuthn attestation conveyance asked for at registration.
    attestation: str = _DEFAULTS.webauthn_attestation
    #: AAGUIDs (authenticator models) allowed to register; empty: any.
    aaguid_allow_list: tuple[str, ...] = _DEFAULTS.webauthn_aaguid_allow_list
    #: Browser-session lifetimes, seconds.
    session_idle_ttl: int = _DEFAULTS.session_idle_ttl
    session_absolute_ttl: int = _DEFAULTS.session_absolute_ttl
    #: Consecutive failures per account and factor before that factor locks (1 to 100).
    lockout_threshold: int = _DEFAULTS.lockout_threshold

    @property
    def user_verification_required(self) -> bool:
        return self.user_verification == "required"

    def password_signs_in(self, is_admin: bool) -> bool:
        """Whether a password may sign this account in at all: passwords are allowed, and the
        account is not an admin's where admins sign in with a passkey only
        (``admin_passkey_required``, docs/configuration.md). Every place that lets a password
        open a session, or counts one as a way in, asks this."""
        return self.passwords_allowed and not (is_admin and self.admin_passkey_required)

    def allows_authenticator(self, aaguid: str) -> bool:
        return not self.aaguid_allow_list or aaguid.lower() in self.aaguid_allow_list

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly values (lists for tuples), for the audit log and ``--json``."""
        return {name: _jsonable(value) for name, value in asdict(self).items()}


# -- fields: what each one is, how it is read from text, and its rule --------------------------


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _integer(low: int, high: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("must be a whole number")
        try:
            number = value if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
        if number < low or (high is not None and number > high):
            raise ValueError(f"must be between {low} and {high}" if high else "must be positive")
        return number

    return parse


def _lifetime(name: str) -> Callable[[Any], int]:
    """The settings' own parser and bounds (idp.services.lifetimes), so that the console and
    ``idp policy set`` accept exactly what the configuration file accepts."""

    def parse(value: Any) -> int:
        try:
            return parse_lifetime(name, value)
        except ValueError as error:
            # The field name comes first in PolicyError's message already.
            raise ValueError(str(error).removeprefix(f"{name} ")) from None

    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        word = str(value).strip().lower()
        if word not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return word

    return parse


def _aaguids(value: Any) -> tuple[str, ...]:
    """AAGUIDs, one per line or comma-separated (text) or a list; stored canonical, lower case."""
    items = value.replace(",", "\n").splitlines() if isinstance(value, str) else list(value)
    found: list[str] = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        try:
            canonical = str(uuid.UUID(item))
        except ValueError:
            raise ValueError(f"{item[:40]!r} is not an AAGUID (a UUID)") from None
        if canonical not in found:
            found.append(canonical)
    return tuple(found)


@dataclass(frozen=True)
class PolicyField:
    name: str
    #: The ``Settings`` attribute holding the configured default.
    setting: str
    label: str
    parse: Callable[[Any], Any]
    help: str = ""


FIELDS: tuple[PolicyField, ...] = (
    PolicyField("passwords_allowed", "passwords_allowed", "Passwords allowed", _boolean,
                "Off: passwordless only. Nobody signs in with a password or sets one."),
    PolicyField("signup_enabled", "signup_enabled", "Self-service sign-up", _boolean,
                "Anyone who proves an email address may create an account."),
    PolicyField("admin_passkey_required", "admin_passkey_required",
                "Passkey required for admins", _boolean,
                "Admins never sign in with a password and cannot remove their last passkey."),
    PolicyField("passkey_prompt", "passkey_prompt", "Passkey prompts", _boolean,
                "After a password sign-in, offer to create a passkey."),
    PolicyField("passkey_prompt_snooze_days", "passkey_prompt_snooze_days",
                "Prompt snooze (days)", _lifetime("passkey_prompt_snooze_days"),
                "How long \u201cnot now\u201d silences the passkey prompt."),
    PolicyField("user_verification", "webauthn_user_verification", "User verification",
                _choice(USER_VERIFICATION_CHOICES),
                "Required: every passkey ceremony must verify the user (PIN, biometrics)."),
    PolicyField("attestation", "webauthn_attestation", "Attestation", _choice(ATTESTATION_CHOICES),
                "What the authenticator is asked to tell about itself at registration."),
    PolicyField("aaguid_allow_list", "webauthn_aaguid_allow_list", "Allowed authenticators",
                _aaguids, "AAGUIDs allowed to register a passkey, one per line; empty: any."),
    PolicyField("session_idle_ttl", "session_idle_ttl", "Session idle lifetime (seconds)",
                _lifetime("session_idle_ttl"),
                "A session ends after this long without use (at most the absolute lifetime)."),
    PolicyField("session_absolute_ttl", "session_absolute_ttl",
                "Session absolute lifetime (seconds)", _lifetime("session_absolute_ttl"),
                "A session ends this long after sign-in, however active (at most a year)."),
    PolicyField("lockout_threshold", "lockout_threshold", "Lockout threshold",
                _integer(1, MAX_LOCKOUT_THRESHOLD),
                "Consecutive failures of one factor before it locks for the account (1 to 100)."),
)  # fmt: skip
FIELDS_BY_NAME: dict[str, PolicyField] = {f.name: f for f in FIELDS}
assert set(FIELDS_BY_NAME) == {f.name for f in fields(SignInPolicy)}


def parse_value(name: str, value: Any) -> Any:
    """The validated value of one field, from text (a form, the CLI) or a stored JSON value."""
    field = FIELDS_BY_NAME.get(name)
    if field is None:
        raise PolicyError(f"unknown policy setting {name!r}")
    try:
        return field.parse(value)
    except (ValueError, TypeError) as error:
        raise PolicyError(f"{name} {error}") from None


def _check_together(values: Mapping[str, Any]) -> None:
    """The rules between fields: a session's idle lifetime is at most its absolute one."""
    try:
        check_session_lifetimes(values["session_idle_ttl"], values["session_absolute_ttl"])
    except ValueError as error:
        raise PolicyError(str(error)) from None


def policy_from_settings(settings: Settings) -> SignInPolicy:
    """The configured defaults, validated (``idp.load_checked_settings`` calls this at start)."""
    values = {f.name: parse_value(f.name, getattr(settings, f.setting)) for f in FIELDS}
    _check_together(values)
    return SignInPolicy(**values)


def _stored(db: Session) -> dict[str, Any]:
    from idp.models.policy import PolicyOverride

    rows = db.execute(select(PolicyOverride.name, PolicyOverride.value))
    return {str(name): value for name, value in rows}


def _read(db: Session, settings: Settings) -> SignInPolicy:
    values = asdict(policy_from_settings(settings))
    for name, raw in _stored(db).items():
        try:
            values[name] = parse_value(name, raw)
        except PolicyError as error:
            # A row written by another version, or edited by hand: the configured default stays.
            log.warning("ignoring stored policy override: %s", error)
    if values["session_idle_ttl"] > values["session_absolute_ttl"]:
        # Each value is in range but not together (rows edited by hand, or an absolute lifetime
        # configured below a stored idle one): the shorter one rules, as the session loader
        # would apply it anyway.
        log.warning("stored session_idle_ttl exceeds session_absolute_ttl: using %s for both",
                    values["session_absolute_ttl"])  # fmt: skip
        values["session_idle_ttl"] = values["session_absolute_ttl"]
    return SignInPolicy(**values)


class PolicyCache:
    """One node's copy of the policy, trusted for ``ttl`` seconds (0: read every time)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._value: SignInPolicy | None = None
        self._read_at = 0.0

    def fresh(self) -> SignInPolicy | None:
        """The copy while it is trusted, else None."""
        with self._lock:
            if self._value is not None and self.clock() - self._read_at < self.ttl:
                return self._value
        return None

    def get(self, db: Session, settings: Settings) -> SignInPolicy:
        kept = self.fresh()
        if kept is not None:
            return kept
        value = _read(db, settings)
        with self._lock:
            self._value, self._read_at = value, self.clock()
        return value

    def invalidate(self) -> None:
        with self._lock:
            self._value = None


def load_policy(db: Session, settings: Settings, cache: PolicyCache | None = None) -> SignInPolicy:
    """The policy in force for this request: the settings, then the stored overrides."""
    if cache is not None:
        return cache.get(db, settings)
    return _read(db, settings)


def overridden_fields(db: Session) -> set[str]:
    return set(_stored(db)) & set(FIELDS_BY_NAME)


def policy_version(policy: SignInPolicy) -> str:
    """A fingerprint of the policy's values: what a form that saves every field was read from."""
    text = json.dumps(policy.as_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def change_policy(
    db: Session,
    settings: Settings,
    changes: Mapping[str, Any],
    *,
    actor_id: str | None,
    context: RequestContext | None,
    now: datetime,
    via: str = "admin_console",
    expected_version: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Validate and store changes; audit them with old and new values. Every value is checked
    before anything is written, so a bad field leaves the policy as it was. A value equal to the
    configured default removes the override (the config file rules that field again).
    ``expected_version``: only while the policy in force is still that one (``policy_version``;
    else ``StalePolicyError``): the console's form sends every field, and one read before
    another admin's change would otherwise undo it, unseen (RFC 9110 13.1.1, the lost update)."""
    from idp.models.policy import PolicyOverride
    from idp.services import audit

    parsed = {name: parse_value(name, value) for name, value in changes.items()}
    in_force = _read(db, settings)
    if expected_version is not None and policy_version(in_force) != expected_version:
        raise StalePolicyError("the policy changed since this page was opened")
    current = asdict(in_force)
    _check_together({**current, **parsed})
    defaults = asdict(policy_from_settings(settings))
    overridden = overridden_fields(db)
    changed: dict[str, dict[str, Any]] = {}
    for name, new in parsed.items():
        if new == defaults[name]:
            if name in overridden:
                db.execute(delete(PolicyOverride).where(PolicyOverride.name == name))
        else:
            _upsert(db, name, _jsonable(new), actor_id, now)
        if new != current[name]:
            changed[name] = {"old": _jsonable(current[name]), "new": _jsonable(new)}
    if changed:
        audit.record(db, "policy.changed", actor_id=actor_id, context=context, changes=changed,
                     via=via)  # fmt: skip
    return changed


def reset_policy(
    db: Session,
    settings: Settings,
    *,
    actor_id: str | None,
    context: RequestContext | None,
    now: datetime,
    via: str = "admin_console",
) -> dict[str, dict[str, Any]]:
    """Drop every override: the configured defaults rule again (audited like any change)."""
    defaults = asdict(policy_from_settings(settings))
    return change_policy(db, settings, defaults, actor_id=actor_id, context=context, now=now,
                         via=via)  # fmt: skip


def _upsert(db: Session, name: str, value: Any, actor_id: str | None, now: datetime) -> None:
    from idp.models.policy import PolicyOverride

    # One statement, so two admins saving at once cannot both insert the same row.
    dialect = db.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    row = {"value": value, "updated_at": now, "updated_by": actor_id}
    db.execute(
        insert(PolicyOverride)
        .values(name=name, **row)
        .on_conflict_do_update(index_elements=[PolicyOverride.name], set_=row)
    )


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value

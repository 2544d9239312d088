"""Settings: layering, TOML tables, and the start-up checks that refuse an unsafe deployment."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import pytest

from idp import load_checked_settings
from idp.services.lifetimes import LIFETIMES
from idp.settings import DEVELOPMENT_SECRET_KEY, Settings, SettingsError, load_settings

SECRET = "a-test-secret-key-that-is-long-enough-0123"


def settings_from(**overrides: Any) -> Settings:
    """Settings from overrides alone: no file, no environment."""
    return load_checked_settings(overrides, environ={})


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "idp.toml"
    path.write_text(text)
    return str(path)


# -- layering -------------------------------------------------------------------------------------
def test_defaults_apply_without_file_or_environment() -> None:
    settings = settings_from()
    assert settings.issuer == "http://localhost:5000"
    assert settings.secret_key == DEVELOPMENT_SECRET_KEY
    assert settings.production is False
    assert settings.code_ttl == 60


def test_config_file_overrides_defaults(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'issuer = "http://localhost:6000"\naccess_token_ttl = 300\n')
    settings = load_settings(environ={"IDP_CONFIG": config})
    assert settings.issuer == "http://localhost:6000"
    assert settings.access_token_ttl == 300
    assert settings.id_token_ttl == 3600  # untouched: still the default


def test_environment_overrides_config_file(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'issuer = "http://localhost:6000"\naccess_token_ttl = 300\n')
    settings = load_settings(
        environ={"IDP_CONFIG": config, "IDP_ACCESS_TOKEN_TTL": "120"},
    )
    assert settings.access_token_ttl == 120
    assert settings.issuer == "http://localhost:6000"  # the file still wins over the default


def test_explicit_overrides_win_over_environment() -> None:
    settings = load_settings({"code_ttl": 30}, environ={"IDP_CODE_TTL": "90"})
    assert settings.code_ttl == 30


def test_environment_values_are_coerced_to_the_setting_types() -> None:
    settings = load_settings(
        environ={
            "IDP_PRODUCTION": "false",
            "IDP_CODE_TTL": "45",
            "IDP_WEBAUTHN_ORIGINS": "http://localhost:5000, http://localhost:5001",
        }
    )
    assert settings.production is False
    assert settings.code_ttl == 45
    assert settings.webauthn_origins == ("http://localhost:5000", "http://localhost:5001")


def test_misspelled_boolean_is_refused_not_read_as_false() -> None:
    # IDP_PRODUCTION=ture silently meaning "development" would switch off the production checks.
    with pytest.raises(SettingsError, match="production"):
        load_settings(environ={"IDP_PRODUCTION": "ture", "IDP_SECRET_KEY": SECRET})


def test_non_numeric_integer_is_refused() -> None:
    with pytest.raises(SettingsError, match="invalid setting"):
        load_settings(environ={"IDP_CODE_TTL": "soon"})


def test_wrong_type_in_config_file_is_refused_with_a_settings_error(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "secret_key = 12345\n")
    with pytest.raises(SettingsError, match="secret_key"):
        load_settings(environ={"IDP_CONFIG": config})


def test_unreadable_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read IDP_CONFIG"):
        load_settings(environ={"IDP_CONFIG": str(tmp_path / "missing.toml")})


def test_malformed_toml_is_refused(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "issuer = \n")
    with pytest.raises(SettingsError, match="cannot read IDP_CONFIG"):
        load_settings(environ={"IDP_CONFIG": config})


def test_nested_toml_tables_map_to_prefixed_settings(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path,
        'issuer = "https://id.example.com"\n'
        f'secret_key = "{SECRET}"\n'
        "[webauthn]\n"
        'rp_id = "example.com"\n'
        'rp_name = "Example"\n'
        'origins = ["https://id.example.com"]\n'
        "[tokens]\n"
        "code_ttl = 30\n"
        "[sessions]\n"
        "session_idle_ttl = 100\n"
        "[passwords]\n"
        "argon2_time_cost = 3\n",
    )
    settings = load_settings(environ={"IDP_CONFIG": config})
    assert settings.webauthn_rp_id == "example.com"
    assert settings.webauthn_rp_name == "Example"
    assert settings.webauthn_origins == ("https://id.example.com",)
    assert settings.code_ttl == 30  # [tokens] only groups: no prefix
    assert settings.session_idle_ttl == 100
    assert settings.argon2_time_cost == 3


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(SettingsError, match="unknown settings: isser"):
        settings_from(isser="https://id.example.com")


def test_unknown_key_in_config_file_is_refused(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "[webauthn]\nrpid = 'example.com'\n")
    with pytest.raises(SettingsError, match="webauthn_rpid"):
        load_settings(environ={"IDP_CONFIG": config})


# -- secrets --------------------------------------------------------------------------------------
def test_production_start_with_development_secret_is_refused() -> None:
    with pytest.raises(SettingsError) as raised:
        settings_from(production=True)
    message = str(raised.value)
    assert "development secret key" in message
    assert "IDP_SECRET_KEY" in message  # says how to fix it


def test_development_secret_is_accepted_outside_production() -> None:
    assert settings_from().secret_key == DEVELOPMENT_SECRET_KEY


@pytest.mark.parametrize("issuer", ["https://id.example.com", "https://localhost.example.com"])
def test_development_secret_is_refused_for_a_non_loopback_issuer(issuer: str) -> None:
    with pytest.raises(SettingsError, match="development secret key for the non-loopback issuer"):
        settings_from(issuer=issuer)


@pytest.mark.parametrize("issuer", ["https://localhost:8443", "http://localhost:5000"])
def test_development_secret_is_accepted_for_a_loopback_development_issuer(issuer: str) -> None:
    assert settings_from(issuer=issuer).secret_key == DEVELOPMENT_SECRET_KEY


def test_production_start_with_example_secret_is_refused() -> None:
    with pytest.raises(SettingsError, match="example secret key"):
        settings_from(production=True, secret_key="change-me: 64 random bytes, base64")


def test_the_example_secret_is_refused_for_a_non_loopback_issuer_without_production() -> None:
    """Published as the development key is: refused where that one is, production or not."""
    example = "change-me: 64 random bytes, base64"
    with pytest.raises(SettingsError, match="example secret key"):
        settings_from(issuer="https://id.example.com", secret_key=example)
    assert settings_from(issuer="http://localhost:5000", secret_key=example).secret_key == example


def test_production_start_with_a_real_secret_is_accepted() -> None:
    assert settings_from(production=True, secret_key=SECRET).production is True


@pytest.mark.parametrize("length", [0, 8, 31])
def test_short_secret_is_refused(length: int) -> None:
    with pytest.raises(SettingsError, match="at least 32 characters"):
        settings_from(secret_key="s" * length)


def test_secret_of_32_characters_is_accepted() -> None:
    assert len(settings_from(secret_key="s" * 32).secret_key) == 32


# -- WebAuthn RP ID -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("issuer", "rp_id"),
    [
        ("https://id.example.com", ""),  # defaults to the issuer host
        ("https://id.example.com", "id.example.com"),
        ("https://id.example.com", "example.com"),  # a registrable suffix
        ("https://a.b.example.com", "example.com"),
        ("http://localhost:5000", "localhost"),
    ],
)
def test_rp_id_equal_to_issuer_host_or_its_suffix_is_accepted(issuer: str, rp_id: str) -> None:
    settings = settings_from(issuer=issuer, webauthn_rp_id=rp_id, secret_key=SECRET)
    assert settings.rp_id == (rp_id or "id.example.com")


@pytest.mark.parametrize(
    "rp_id",
    [
        "example.org",  # another domain
        "ample.com",  # a string suffix, not at a label boundary
        "other.id.example.com",  # a subdomain of the host, not a suffix of it
        "com",  # a top-level domain is never registrable
    ],
)
def test_rp_id_not_a_registrable_suffix_of_the_issuer_host_is_refused(rp_id: str) -> None:
    with pytest.raises(SettingsError, match="webauthn_rp_id"):
        settings_from(issuer="https://id.example.com", webauthn_rp_id=rp_id, secret_key=SECRET)


@pytest.mark.parametrize("issuer", ["http://127.0.0.1:5000", "http://[::1]:5000"])
def test_ip_address_rp_id_is_refused(issuer: str) -> None:
    with pytest.raises(SettingsError, match="cannot be an IP address"):
        settings_from(issuer=issuer)


def test_origins_default_to_the_issuer_origin() -> None:
    settings = settings_from(issuer="https://id.example.com/tenant", secret_key=SECRET)
    assert settings.origins == ("https://id.example.com",)


@pytest.mark.parametrize(
    ("issuer", "origin"),
    [
        ("https://IdP.Example.com", "https://idp.example.com"),
        ("https://id.example.com:443/tenant", "https://id.example.com"),
        ("https://id.example.com:8443", "https://id.example.com:8443"),
        ("http://LOCALHOST:80", "http://localhost"),
        ("http://localhost:5000", "http://localhost:5000"),
    ],
)
def test_the_issuers_origin_is_serialized_as_a_browser_sends_it(issuer: str, origin: str) -> None:
    """WebAuthn L3 7.1 step 9 / 7.2 step 13 compare clientDataJSON's origin, which a browser
    serializes with the host in lower case and no default port: the origin derived from an
    issuer written otherwise matched no ceremony."""
    assert settings_from(issuer=issuer, secret_key=SECRET).origins == (origin,)


# -- issuer ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "issuer", ["http://localhost", "http://localhost:8080", "http://id.localhost:5000"]
)
def test_http_issuer_is_allowed_for_localhost(issuer: str) -> None:
    assert settings_from(issuer=issuer).issuer == issuer


@pytest.mark.parametrize(
    "issuer", ["http://id.example.com", "http://localhost.example.com", "http://10.0.0.1"]
)
def test_http_issuer_is_refused_for_other_hosts(issuer: str) -> None:
    with pytest.raises(SettingsError, match="https"):
        settings_from(issuer=issuer)


@pytest.mark.parametrize(
    "issuer",
    ["https://id.example.com/?tenant=1", "https://id.example.com/#top", "https://id.example.com?"],
)
def test_issuer_with_query_or_fragment_is_refused(issuer: str) -> None:
    with pytest.raises(SettingsError, match="query or fragment"):
        settings_from(issuer=issuer)


@pytest.mark.parametrize("issuer", ["id.example.com", "ftp://id.example.com", "https://", ""])
def test_issuer_that_is_not_an_absolute_http_url_is_refused(issuer: str) -> None:
    with pytest.raises(SettingsError, match="absolute http"):
        settings_from(issuer=issuer)


def test_https_issuer_enables_secure_transport() -> None:
    assert settings_from(issuer="https://id.example.com", secret_key=SECRET).secure_transport
    assert settings_from(issuer="http://localhost").secure_transport is False


# -- lifetimes and policy -------------------------------------------------------------------------
def test_code_ttl_above_600_seconds_is_refused() -> None:
    with pytest.raises(SettingsError, match="code_ttl must be between 1 and 600 seconds"):
        settings_from(code_ttl=601)


def test_code_ttl_of_600_seconds_is_accepted() -> None:
    assert settings_from(code_ttl=600).code_ttl == 600


@pytest.mark.parametrize(
    "name",
    [
        "code_ttl",
        "access_token_ttl",
        "id_token_ttl",
        "refresh_token_ttl",
        "pending_request_ttl",
        "session_idle_ttl",
        "session_absolute_ttl",
    ],
)
def test_non_positive_token_lifetime_is_refused(name: str) -> None:
    with pytest.raises(SettingsError, match=f"{name} must be between 1 and"):
        settings_from(**{name: 0})


def test_every_lifetime_setting_has_bounds() -> None:
    """A new ``*_ttl`` (or days, interval, overlap, grace) setting must get its bounds too."""
    suffixes = ("_ttl", "_days", "_interval", "_overlap", "_grace")
    lifetimes = {name for name in Settings.__dataclass_fields__ if name.endswith(suffixes)}
    assert lifetimes == set(LIFETIMES)


@pytest.mark.parametrize("name", sorted(LIFETIMES))
def test_every_lifetime_has_an_upper_bound(name: str) -> None:
    """Issue: ``session_idle_ttl = 100000000000000`` overflowed every session's arithmetic.
    (Idle and absolute move together, so that idle <= absolute holds at the bound.)"""
    bound = LIFETIMES[name]
    together = ("session_idle_ttl", "session_absolute_ttl")
    at_bound = dict.fromkeys(together, bound.high) if name in together else {name: bound.high}
    assert getattr(settings_from(**at_bound), name) == bound.high
    beyond = {**at_bound, name: bound.high + 1}
    with pytest.raises(SettingsError, match=f"{name} must be between {bound.low} and"):
        settings_from(**beyond)
    with pytest.raises(SettingsError, match=name):
        settings_from(**{name: "100000000000000"})


def test_session_lifetimes_are_at_most_a_year() -> None:
    assert LIFETIMES["session_absolute_ttl"].high <= 365 * 24 * 3600
    assert LIFETIMES["session_idle_ttl"].high <= LIFETIMES["session_absolute_ttl"].high


def test_an_idle_lifetime_longer_than_the_absolute_one_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"session_idle_ttl \(7200\) must not exceed"):
        settings_from(session_idle_ttl=7200, session_absolute_ttl=3600)
    assert settings_from(session_idle_ttl=3600, session_absolute_ttl=3600).session_idle_ttl == 3600


def test_unknown_pkce_policy_is_refused() -> None:
    with pytest.raises(SettingsError, match="pkce_required_for"):
        settings_from(pkce_required_for="none")


# -- database URL ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://idp:pw@db:5432/idp", "postgresql+psycopg://idp:pw@db:5432/idp"),
        ("postgresql://idp@db/idp", "postgresql+psycopg://idp@db/idp"),
        ("postgresql+psycopg://idp@db/idp", "postgresql+psycopg://idp@db/idp"),
        ("sqlite:////var/lib/idp/idp.db", "sqlite:////var/lib/idp/idp.db"),
    ],
)
def test_database_url_is_normalised_to_the_psycopg_driver(given: str, expected: str) -> None:
    assert settings_from(database_url=given).sqlalchemy_url == expected


def test_empty_database_url_means_sqlite_under_the_instance_path(tmp_path: Path) -> None:
    settings = settings_from(instance_path=str(tmp_path))
    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path.resolve() / 'idp.db'}"


@pytest.mark.parametrize(
    "url",
    [
        "idp:hunter2@db:5432/idp",  # no scheme
        "postgresql://idp:hunter2@db:x/idp",  # a port that is not a number
        "postgresql://idp:hunter2@[::1/idp",  # an unclosed IPv6 literal
        "postgresq://idp:hunter2@db/idp",  # a misspelled scheme: no such dialect
        "mysql://idp:hunter2@db/idp",  # a database idp does not run on
        "postgresql+psycopg2://idp:hunter2@db/idp",  # a driver idp does not ship
    ],
)
def test_a_database_url_idp_cannot_use_is_refused_at_start_naming_the_setting(url: str) -> None:
    """Refused with a message naming ``database_url``, not SQLAlchemy's traceback from deep in the
    app factory; and the message never holds the URL's password."""
    with pytest.raises(SettingsError, match="database_url") as refused:
        settings_from(database_url=url)
    assert "hunter2" not in "".join(traceback.format_exception(refused.value))


# -- the shipped production example ---------------------------------------------------------------
EXAMPLE = Path(__file__).parents[2] / "config" / "production.example.toml"


def test_production_example_loads_once_a_real_secret_is_given() -> None:
    settings = load_settings(environ={"IDP_CONFIG": str(EXAMPLE), "IDP_SECRET_KEY": SECRET})
    assert settings.production is True
    assert settings.issuer == "https://id.example.com"
    assert settings.rp_id == "example.com"
    assert settings.sqlalchemy_url.startswith("postgresql+psycopg://")


def test_production_example_with_its_placeholder_secret_is_refused() -> None:
    with pytest.raises(SettingsError, match="example secret key"):
        load_settings(environ={"IDP_CONFIG": str(EXAMPLE)})


# -- mail -----------------------------------------------------------------------------------------
def test_smtp_url_must_use_a_known_scheme() -> None:
    with pytest.raises(SettingsError, match="smtp_url"):
        settings_from(smtp_url="smtpx://relay.example.com")
    assert settings_from(smtp_url="smtp+starttls://relay.example.com").smtp_url


def test_smtp_ca_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="smtp_ca_file"):
        settings_from(smtp_ca_file=str(tmp_path / "missing.pem"))
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert settings_from(smtp_ca_file=str(ca)).smtp_ca_file == str(ca)


def test_admin_email_is_one_address_and_local_domains_only_in_development() -> None:
    assert settings_from(admin_email="admin@localhost").admin_email == "admin@localhost"
    with pytest.raises(SettingsError, match="admin_email"):
        settings_from(production=True, secret_key=SECRET, admin_email="admin@localhost")
    with pytest.raises(SettingsError, match="admin_email"):
        settings_from(admin_email='"root" <root@example.com>')


# -- password hashing -----------------------------------------------------------------------------
@pytest.mark.parametrize("hashes", [0, -1, 65])
def test_argon2_hashes_at_once_outside_1_to_64_is_refused(hashes: int) -> None:
    with pytest.raises(SettingsError, match="argon2_hashes_at_once"):
        settings_from(argon2_hashes_at_once=hashes)


def test_the_password_service_runs_as_many_hashes_at_once_as_configured() -> None:
    from idp.composition import Container

    passwords = Container.build(settings_from(argon2_hashes_at_once=3)).passwords
    assert passwords._hashing._threads()._max_workers == 3


def test_readiness_that_requires_redis_without_a_redis_url_is_refused_at_start() -> None:
    """``readiness_requires_redis`` asks ``/readyz`` to fail while Redis does not answer; with no
    ``redis_url`` there is nothing to ask, and the probe would say ready unchecked."""
    with pytest.raises(SettingsError, match=r"readiness_requires_redis.*redis_url"):
        settings_from(readiness_requires_redis=True)
    assert settings_from(readiness_requires_redis=True, redis_url="redis://localhost:6379/0")


@pytest.mark.parametrize(
    "url", ["localhost:6379", "http://localhost:6379", "redis://localhost:x/0"]
)
def test_a_redis_url_redis_cannot_use_is_refused_at_start_naming_the_setting(url: str) -> None:
    """Refused with a message naming ``redis_url``, not the Redis client's ``ValueError`` (a
    traceback at start, or worse, at the first sign-in that needs the counters)."""
    with pytest.raises(SettingsError, match="redis_url"):
        settings_from(redis_url=url)


@pytest.mark.parametrize("token", ["a" * 40 + "\n", " " + "a" * 40, "a" * 20 + "\x00" + "a" * 20])
def test_a_metrics_token_no_scraper_can_send_is_refused_at_start(token: str) -> None:
    """A header value carries no leading or trailing whitespace and no control character (RFC
    9110 5.5): a token read from a file with its newline would be accepted, then refuse every
    scrape with 401."""
    with pytest.raises(SettingsError, match="metrics_token"):
        settings_from(metrics_token=token)

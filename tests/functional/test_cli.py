"""The ``idp`` command, run as an operator runs it: environment variables in, text or JSON out."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, event, inspect, select, text, update
from sqlalchemy.orm import Session

from idp import create_app
from idp.cli import main
from idp.composition import Container
from idp.database import alembic_config, newest_revision, schema_revision, upgrade
from idp.models import (
    ApiToken,
    AuditEvent,
    Base,
    Client,
    FactorLock,
    LoginLink,
    Passkey,
    SigningKey,
    User,
)
from idp.services import user_directory
from idp.services.attestation import root_fingerprint
from idp.services.crypto import token_hash
from idp.settings import DEVELOPMENT_SECRET_KEY, SettingsError, load_settings
from tests.conftest import FAST_ARGON2, TEST_SECRET, throwaway_postgres_database
from tests.functional.test_invites import accept
from tests.support.attestation_ca import root_ca
from tests.support.redis_server import private_redis
from tests.support.smtp import smtp_server

ISSUER = "http://localhost:5000"
PASSWORD = "correct horse battery staple"
REDIRECT_URI = "https://rp.example/callback"


class Idp:
    """One deployment's environment, and the CLI run against it."""

    def __init__(self, instance: Path) -> None:
        self.instance = instance
        self.database = instance / "idp.db"
        self.env = {
            "IDP_CONFIG": "",  # no configuration file: only what is set here
            "IDP_DATABASE_URL": f"sqlite:///{self.database}",
            "IDP_INSTANCE_PATH": str(instance),
            "IDP_ISSUER": ISSUER,
            "IDP_SECRET_KEY": TEST_SECRET,
            **{f"IDP_{name.upper()}": str(value) for name, value in FAST_ARGON2.items()},
        }

    def run(self, *args: str, input: str | None = None) -> Result:
        return CliRunner(env=self.env).invoke(main, list(args), input=input)

    def ok(self, *args: str, input: str | None = None) -> Result:
        result = self.run(*args, input=input)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str, input: str | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", input=input).stdout)

    def session(self) -> Session:
        return Session(create_engine(self.env["IDP_DATABASE_URL"]))

    def runtime(self) -> Container:
        overrides = {
            "database_url": self.env["IDP_DATABASE_URL"],
            "instance_path": str(self.instance),
        }
        return Container.build(load_settings(overrides, environ=self.env))

    def create_client(self, *extra: str) -> dict[str, Any]:
        created: dict[str, Any] = self.json(
            "clients", "create", "--name", "Wiki", "--redirect-uri", REDIRECT_URI, *extra
        )
        return created


@pytest.fixture(scope="module")
def initialised_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`idp init` once per module (key generation is slow); each test gets a copy."""
    idp = Idp(tmp_path_factory.mktemp("template"))
    idp.ok("init")
    # The first admin that init makes has its own tests; the others start with no user.
    with sqlite3.connect(idp.database) as db:
        for table in ("login_links", "audit_events", "users"):
            db.execute(f"DELETE FROM {table}")  # noqa: S608 (fixed table names)
    return idp.database


@pytest.fixture
def idp(tmp_path: Path, initialised_database: Path) -> Idp:
    deployment = Idp(tmp_path)
    # SQLite's backup API copies a consistent snapshot, the write-ahead log included.
    with (
        sqlite3.connect(initialised_database) as source,
        sqlite3.connect(deployment.database) as copy,
    ):
        source.backup(copy)
    return deployment


# -- init -----------------------------------------------------------------------------------------
def test_init_creates_the_schema_and_a_key_per_alg(tmp_path: Path) -> None:
    idp = Idp(tmp_path)
    result = idp.ok("init")
    for alg in ("RS256", "ES256", "EdDSA"):
        assert f"created signing key {alg}" in result.output
    with idp.session() as db:
        assert {"users", "clients", "signing_keys", "alembic_version"} <= set(
            inspect(db.get_bind()).get_table_names()
        )
        assert sorted(db.scalars(select(SigningKey.alg))) == ["ES256", "EdDSA", "RS256"]


def test_init_prints_the_discovery_url_and_a_first_admin_link(tmp_path: Path) -> None:
    idp = Idp(tmp_path)
    output = idp.ok("init").output
    assert f"Discovery: {ISSUER}/.well-known/openid-configuration" in output
    assert "Created admin@localhost" in output
    assert f"{ISSUER}/login/link/" in output
    with idp.session() as db:
        admin = db.scalars(select(User).where(User.is_admin.is_(True))).one()
        # No default password: the link, then a passkey, is the only way in.
        assert admin.email == "admin@localhost"
        assert admin.password_hash is None


def test_init_makes_its_directory_and_database_its_owners_alone(tmp_path: Path) -> None:
    """CWE-732: the database holds live secrets (the outbox keeps unsent invite links when no
    mail server is set): under the usual umask (022) another local account could read it."""
    idp = Idp(tmp_path / "instance")  # made by idp itself
    previous = os.umask(0o022)
    try:
        idp.ok("init")
        idp.ok("users", "invite", "boss@example.com", "--admin")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(idp.instance.stat().st_mode) == 0o700
    for made in idp.instance.glob("idp.db*"):  # the database, its -wal and -shm
        assert stat.S_IMODE(made.stat().st_mode) == 0o600, made


def test_a_printed_link_says_until_when_as_the_pages_do(idp: Idp) -> None:
    """The terminal gives a link's end as the pages and ``idp serve`` do (to the minute, UTC),
    not as an ISO timestamp with microseconds; ``--json`` keeps ISO 8601 for scripts."""
    until = re.compile(r"\(one use, valid until \d{4}-\d\d-\d\d \d\d:\d\d UTC\)$")
    invite = idp.ok("users", "invite", "someone@example.com").output.strip()
    assert until.search(invite), invite
    link = idp.ok("login-link", "someone@example.com").output.strip()
    assert until.search(link), link
    assert "+00:00" in idp.json("login-link", "someone@example.com")["expires_at"]


def test_init_refuses_a_newer_schema_in_one_line(idp: Idp) -> None:
    """docs/operations.md, "Upgrades and migrations": an older idp against a newer database
    stops with the reason and what to do, not Alembic's traceback."""
    with sqlite3.connect(idp.database) as db:
        db.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    result = idp.run("init")
    assert result.exit_code == 1
    assert "made or upgraded by a newer idp" in result.output
    assert "Traceback" not in result.output


def test_a_schema_at_the_newest_revision_is_not_handed_to_alembic(
    idp: Idp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """idp.database ``upgrade``: every start reads the schema's revision in one query and loads
    Alembic (and every migration) only when there is something to do."""
    import alembic.command

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("Alembic was started for a schema already at the newest revision")

    monkeypatch.setattr(alembic.command, "upgrade", refuse)
    idp.ok("init")


def test_a_schema_one_migration_behind_is_upgraded_at_the_next_start(idp: Idp) -> None:
    from alembic import command

    url = f"sqlite:///{idp.database}"
    command.downgrade(alembic_config(url), "-1")
    behind = schema_revision(url)
    assert behind is not None
    assert behind < newest_revision()
    idp.ok("init")
    assert schema_revision(url) == newest_revision()


def test_init_takes_the_first_admins_email(tmp_path: Path) -> None:
    output = Idp(tmp_path).ok("init", "--admin-email", "Root@Example.com").output
    assert "Created root@example.com" in output


def test_a_start_keeps_the_first_admin_link_while_it_is_live(idp: Idp) -> None:
    """`idp init` then `idp serve`: the link the first printed must still work."""
    first = _printed_link(idp.ok("init").output)
    again = idp.ok("init").output
    assert "/login/link/" not in again
    assert "printed earlier" in again
    with idp.session() as db:
        links = list(db.scalars(select(LoginLink)))
        assert len(links) == 1
        assert links[0].revoked_at is None
        # The printed link is the live one (only its hash is stored).
        assert links[0].id_hash == token_hash(first.rsplit("/", 1)[1])
        assert len(db.scalars(select(User)).all()) == 1


def test_a_start_after_the_first_admin_link_expired_prints_a_new_one(idp: Idp) -> None:
    first = _printed_link(idp.ok("init").output)
    with idp.session() as db:
        db.execute(update(LoginLink).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        db.commit()
    second = _printed_link(idp.ok("init").output)
    assert second != first


def test_a_production_start_without_an_admin_email_creates_no_account(tmp_path: Path) -> None:
    idp = Idp(tmp_path)
    idp.env["IDP_PRODUCTION"] = "true"
    output = idp.ok("init").output
    assert "No admin yet" in output
    assert "IDP_ADMIN_EMAIL" in output
    with idp.session() as db:
        assert db.scalars(select(User)).all() == []


def _printed_link(output: str) -> str:
    return next(word for word in output.split() if "/login/link/" in word)


def test_init_again_changes_nothing(idp: Idp) -> None:
    with idp.session() as db:
        before = set(db.scalars(select(SigningKey.kid)))
    output = idp.ok("init").output
    assert "created signing key" not in output
    with idp.session() as db:
        assert set(db.scalars(select(SigningKey.kid))) == before


def test_init_stops_handing_out_links_once_an_admin_has_a_passkey(idp: Idp) -> None:
    idp.ok("init")
    with idp.session() as db:
        admin = db.scalars(select(User)).one()
        db.add(Passkey(credential_id="cred", user_id=admin.id, public_key=b"k", sign_count=0,
                       aaguid="00000000-0000-0000-0000-000000000000", name="Key"))  # fmt: skip
        db.commit()
    output = idp.ok("init").output
    assert "/login/link/" not in output
    assert "No admin" not in output


def test_bad_configuration_is_reported_without_a_traceback(idp: Idp) -> None:
    idp.env["IDP_ISSUER"] = "http://id.example.com"
    result = idp.run("init")
    assert result.exit_code != 0
    assert "configuration: issuer must use https" in result.output
    assert "Traceback" not in result.output


# -- users ----------------------------------------------------------------------------------------
# -- the development secret key (docs/configuration.md, secret_key) --------------------------------
@contextmanager
def _listening_port() -> Iterator[int]:
    """A port something already listens on. ``idp serve`` refuses it (``refuse_a_taken_port``),
    so a serve that got past the secret-key check exits with that message instead of serving."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def _serve_without_a_secret(tmp_path: Path, issuer: str, *flags: str) -> Result:
    env = {
        "IDP_CONFIG": "",
        "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}",
        "IDP_INSTANCE_PATH": str(tmp_path),
        "IDP_ISSUER": issuer,
        "IDP_SECRET_KEY": None,  # unset: the development key applies
        "IDP_PRODUCTION": None,
    }
    with _listening_port() as port:
        return CliRunner(env=env).invoke(main, ["serve", "--port", str(port), *flags])


@pytest.mark.parametrize("issuer", ["https://id.example.com", "https://id.example.com:8443/idp"])
def test_serve_refuses_the_development_secret_for_a_non_loopback_issuer(
    tmp_path: Path, issuer: str
) -> None:
    """An https issuer is a deployment: without IDP_SECRET_KEY it does not start, with a message
    that says what to set, and it creates nothing."""
    result = _serve_without_a_secret(tmp_path, issuer)
    assert result.exit_code != 0
    assert "development secret key" in result.output
    assert "IDP_SECRET_KEY" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "idp.db").exists()


def test_serve_production_refuses_the_development_secret_on_a_loopback_issuer(
    tmp_path: Path,
) -> None:
    result = _serve_without_a_secret(tmp_path, "http://localhost:5000", "--production")
    assert result.exit_code != 0
    assert "refusing the development secret key for a production start" in result.output
    assert not (tmp_path / "idp.db").exists()


def test_serve_accepts_the_development_secret_for_a_loopback_development_start(
    tmp_path: Path,
) -> None:
    """``make run``: a loopback issuer, no --production, no IDP_SECRET_KEY. It gets past every
    check (the database is prepared) and stops only at the port the test holds."""
    result = _serve_without_a_secret(tmp_path, "http://localhost:5000")
    assert "already in use" in result.output, result.output
    assert "secret key" not in result.output
    assert (tmp_path / "idp.db").exists()


def test_a_taken_port_says_how_to_serve_another(tmp_path: Path) -> None:
    """README's `make run` on a machine where port 5000 is taken: the refusal names the way out
    (`make run PORT=...`, `idp serve --port ...`), not only the problem."""
    result = _serve_without_a_secret(tmp_path, "http://localhost:5000")
    assert result.exit_code != 0
    assert "is already in use" in result.output, result.output
    assert "`make run PORT=8080`" in result.output
    assert "`idp serve --port 8080`" in result.output


def test_app_creation_refuses_the_development_secret_for_a_non_loopback_issuer() -> None:
    with pytest.raises(SettingsError, match=r"development secret key .*IDP_SECRET_KEY"):
        create_app(
            {"issuer": "https://id.example.com", "secret_key": DEVELOPMENT_SECRET_KEY,
             "database_url": "sqlite://"}
        )  # fmt: skip


def test_users_create_reads_the_password_from_stdin(idp: Idp) -> None:
    created = idp.json(
        "users", "create", "Ada@Example.com", "--name", "Ada", "--password-stdin",
        input=PASSWORD + "\n",
    )  # fmt: skip
    assert created["email"] == "ada@example.com"
    assert created["sub"] == created["id"]
    assert created["admin"] is False
    with idp.session() as db:
        user = db.get(User, created["id"])
        assert user is not None
        assert user.password_hash is not None
        assert user.password_hash.startswith("$argon2id$")
        assert idp.runtime().passwords.verify(user.password_hash, PASSWORD).ok


def test_users_create_admin(idp: Idp) -> None:
    created = idp.json("users", "create", "root@example.com", "--admin")
    assert created["admin"] is True


def test_duplicate_user_is_refused(idp: Idp) -> None:
    idp.ok("users", "create", "ada@example.com")
    result = idp.run("users", "create", "ADA@example.com")
    assert result.exit_code != 0
    assert "already exists" in result.output


def test_user_with_a_short_password_is_refused(idp: Idp) -> None:
    result = idp.run("users", "create", "ada@example.com", "--password-stdin", input="short\n")
    assert result.exit_code != 0
    assert "at least 8 characters" in result.output
    with idp.session() as db:
        assert db.scalar(select(User.id)) is None


def test_user_with_an_invalid_email_is_refused(idp: Idp) -> None:
    result = idp.run("users", "create", "not-an-email")
    assert result.exit_code != 0
    assert "not an email address" in result.output


# -- clients --------------------------------------------------------------------------------------
def test_clients_create_shows_the_secret_once(idp: Idp) -> None:
    created = idp.create_client()
    secret = created["client_secret"]
    assert len(secret) >= 43
    assert created["redirect_uris"] == [REDIRECT_URI]
    assert created["token_endpoint_auth_method"] == "client_secret_basic"
    with idp.session() as db:
        client = db.get(Client, created["client_id"])
        assert client is not None
        assert client.secret_hash != secret
        assert idp.runtime().client_secrets.verify(client.secret_hash, secret)


def test_clients_create_and_edit_allow_the_device_grant(idp: Idp) -> None:
    device = "urn:ietf:params:oauth:grant-type:device_code"
    # A device-only client (RFC 8628) has no redirect URI.
    tv = idp.json("clients", "create", "--name", "TV", "--public", "--grant-type", device)
    assert tv["grant_types"] == [device]
    assert tv["redirect_uris"] == []
    # The code flow still needs one.
    refused = idp.run("clients", "create", "--name", "Wiki", "--grant-type", "authorization_code")
    assert refused.exit_code != 0
    assert "redirect URI" in refused.output
    wiki = idp.create_client()
    edited = idp.json("clients", "edit", wiki["client_id"], "--grant-type", "authorization_code",
                      "--grant-type", device)  # fmt: skip
    assert edited["grant_types"] == ["authorization_code", device]


def test_clients_edit_refuses_to_overwrite_a_change_made_after_its_read(
    idp: Idp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/security.md: `clients edit` copies every setting it is not given from the client as
    it read it, so it applies only onto that version (RFC 9110 13.1.1): another admin's change
    committed between its read and its write makes it fail in one line, changing nothing."""
    import idp.cli.clients as cli_clients

    created = idp.create_client()
    read_client = cli_clients._load_client

    def read_then_another_admin_renames(client_id: str) -> Client:
        client = read_client(client_id)
        with idp.session() as other, other.begin():
            other.execute(
                update(Client)
                .where(Client.client_id == client_id)
                .values(name="Renamed meanwhile", version=Client.version + 1)
            )
        return client

    monkeypatch.setattr(cli_clients, "_load_client", read_then_another_admin_renames)
    result = idp.run("clients", "edit", created["client_id"], "--logo-uri", "https://rp.example/l")
    assert_refused_in_one_line(result, created["client_id"], "changed since", "nothing was changed")
    monkeypatch.undo()
    shown = idp.json("clients", "show", created["client_id"])
    assert (shown["name"], shown["logo_uri"]) == ("Renamed meanwhile", None)


def test_clients_create_text_output_warns_the_secret_is_shown_once(idp: Idp) -> None:
    output = idp.ok("clients", "create", "--name", "Wiki", "--redirect-uri", REDIRECT_URI).output
    assert "shown once" in output
    assert "client_id: " in output


def test_clients_show_never_shows_the_secret(idp: Idp) -> None:
    created = idp.create_client()
    for extra in ((), ("--json",)):
        output = idp.ok("clients", "show", created["client_id"], *extra).output
        assert created["client_id"] in output
        assert created["client_secret"] not in output
        assert "client_secret:" not in output
        assert '"client_secret"' not in output
        assert "secret_hash" not in output


def test_clients_list_json(idp: Idp) -> None:
    first = idp.create_client()
    second = idp.create_client("--public")
    listed = idp.json("clients", "list")
    assert [c["client_id"] for c in listed] == [first["client_id"], second["client_id"]]
    assert listed[1]["public"] is True
    assert listed[1]["token_endpoint_auth_method"] == "none"
    assert all("client_secret" not in c and "secret_hash" not in c for c in listed)


def test_public_client_gets_no_secret(idp: Idp) -> None:
    created = idp.create_client("--public")
    assert created["client_secret"] is None


def test_clients_rotate_secret_replaces_the_old_one(idp: Idp) -> None:
    created = idp.create_client()
    rotated = idp.json("clients", "rotate-secret", created["client_id"])
    assert rotated["client_id"] == created["client_id"]
    assert rotated["client_secret"] != created["client_secret"]
    hasher = idp.runtime().client_secrets
    with idp.session() as db:
        client = db.get(Client, created["client_id"])
        assert client is not None
        assert hasher.verify(client.secret_hash, rotated["client_secret"])
        assert not hasher.verify(client.secret_hash, created["client_secret"])


def test_rotate_secret_of_a_public_client_is_refused(idp: Idp) -> None:
    created = idp.create_client("--public")
    result = idp.run("clients", "rotate-secret", created["client_id"])
    assert result.exit_code != 0
    assert "does not authenticate with a secret" in result.output


def test_clients_delete(idp: Idp) -> None:
    created = idp.create_client()
    # Asked first, as the console and `idp users delete` ask: no answer, or "n", deletes nothing.
    for answer in (None, "n\n"):
        refused = idp.run("clients", "delete", created["client_id"], input=answer)
        assert refused.exit_code != 0
        assert "Aborted" in refused.output
        assert (
            idp.json("clients", "show", created["client_id"])["client_id"] == created["client_id"]
        )
    asked = idp.ok("clients", "delete", created["client_id"], input="y\n")
    assert created["client_id"] in asked.output
    result = idp.run("clients", "show", created["client_id"])
    assert result.exit_code != 0
    assert f"no client {created['client_id']}" in result.output
    assert idp.json("clients", "list") == []


def test_unknown_client_is_reported(idp: Idp) -> None:
    for command in ("show", "rotate-secret", "delete"):
        result = idp.run("clients", command, "no-such-client")
        assert result.exit_code != 0
        assert "no client no-such-client" in result.output


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://rp.example/callback", "must use https"),
        ("https://rp.example/callback#frag", "must not contain a fragment"),
        ("https://*.rp.example/callback", "must not contain a wildcard"),
        ("/callback", "must be absolute"),
    ],
)
def test_invalid_redirect_uri_is_refused_with_a_clear_message(
    idp: Idp, uri: str, message: str
) -> None:
    result = idp.run("clients", "create", "--name", "Wiki", "--redirect-uri", uri)
    assert result.exit_code != 0
    assert message in result.output
    assert uri in result.output
    assert "Traceback" not in result.output
    assert idp.json("clients", "list") == []


# -- keys -----------------------------------------------------------------------------------------
def test_keys_list_json(idp: Idp) -> None:
    rows = idp.json("keys", "list")
    assert sorted(r["alg"] for r in rows) == ["ES256", "EdDSA", "RS256"]
    assert all(r["active"] and r["unpublish_after"] is None for r in rows)
    # The first keys sign at once: nothing was published before them.
    assert all(r["signing"] and r["signs_from"] is None for r in rows)


def test_keys_rotate_leaves_the_old_keys_published(idp: Idp) -> None:
    old = {r["kid"] for r in idp.json("keys", "list")}
    with idp.session() as session:  # keys in use for a day, not made a moment ago by init
        session.execute(update(SigningKey).values(created_at=datetime.now(UTC) - timedelta(days=1)))
        session.commit()
    rows = idp.json("keys", "rotate")
    active = {r["kid"] for r in rows if r["active"]}
    retired = [r for r in rows if not r["active"]]
    assert len(rows) == 6
    assert len(active) == 3
    assert not active & old
    assert {r["kid"] for r in retired} == old
    assert all(r["unpublish_after"] for r in retired)
    # Published first, signing two key cache windows later; the retired keys sign until then
    # (idp.services.signing_keys, ``publish_first``), and the listing says which signs.
    assert not any(r["signing"] for r in rows if r["active"])
    assert all(r["signs_from"] for r in rows if r["active"])
    assert all(r["signing"] for r in retired)
    listed = idp.ok("keys", "list").output
    assert listed.count("published, signs from") == 3
    assert listed.count("retired, still signing") == 3
    # What relying parties see: the new keys and the old ones, until their tokens expire.
    overrides = {
        "database_url": idp.env["IDP_DATABASE_URL"],
        "instance_path": str(idp.instance),
        "issuer": ISSUER,
        "secret_key": TEST_SECRET,
    }
    jwks = create_app(overrides).test_client().get("/jwks").get_json()
    assert {key["kid"] for key in jwks["keys"]} == active | old


# -- migrations -----------------------------------------------------------------------------------
def schema_differences(url: str) -> list[Any]:
    """What Alembic's autogenerate would still add: the migrated schema versus the models."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
            assert context.get_current_revision() == head
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_migrations_match_the_models_on_sqlite(idp: Idp) -> None:
    assert schema_differences(idp.env["IDP_DATABASE_URL"]) == []


def test_migrations_match_the_models_on_postgresql() -> None:
    # A database of its own: the shared test database's schema comes from create_all.
    with throwaway_postgres_database() as url:
        upgrade(url)
        assert schema_differences(url) == []


def test_a_command_leaves_no_database_connection_open_when_it_ends(tmp_path: Path) -> None:
    """A command run inside another process (a test's CliRunner, an operator's script) closes
    its connections when it ends, not when that process exits: PostgreSQL sees none left."""
    with throwaway_postgres_database() as url:
        env = {"IDP_DATABASE_URL": url, "IDP_INSTANCE_PATH": str(tmp_path),
               "IDP_ISSUER": "http://localhost:5000", "IDP_SECRET_KEY": "a" * 40}  # fmt: skip
        runner = CliRunner(env=env)
        for command in (["init"], ["users", "create", "ada@example.com"], ["users", "list"]):
            assert runner.invoke(main, command).exit_code == 0, command
        name = url.rsplit("/", 1)[1]
        watcher = create_engine(url.rsplit("/", 1)[0] + "/test")
        with watcher.connect() as connection:
            left = connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"), {"name": name}
            ).scalar_one()
        watcher.dispose()
        assert left == 0


@contextmanager
def statements_sent() -> Iterator[list[str]]:
    """Every statement any engine sends while the block runs (the command makes its own),
    without SQLite's OFFSET of 0."""
    found: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        # SQLite's dialect writes every LIMIT as "LIMIT ? OFFSET ?": an OFFSET of 0 skips no row.
        if statement.rstrip().endswith("LIMIT ? OFFSET ?") and parameters[-1] == 0:
            statement = statement.rstrip().removesuffix(" OFFSET ?")
        found.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield found
    finally:
        event.remove(Engine, "before_cursor_execute", record)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_users_list_reads_every_user_by_email_in_keyset_batches(
    idp: Idp, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/security.md: ``idp users list`` prints every matching user by email then id, read
    in batches from the last key of the batch before (``(email, id) > ...``), never by OFFSET
    nor with a count of them all; each user once, on SQLite and PostgreSQL."""
    monkeypatch.setattr(user_directory, "LIST_BATCH", 10)
    with contextlib.ExitStack() as stack:
        if database == "postgresql":
            url = stack.enter_context(throwaway_postgres_database())
            upgrade(url)
            idp.env["IDP_DATABASE_URL"] = url
        emails = [f"u{(i * 11) % 36:02d}@example.com" for i in range(36)]
        with idp.session() as db:
            db.add_all(User(email=email, name="Searched" if i % 2 else "") for i, email
                       in enumerate(emails))  # fmt: skip
            db.commit()
        with statements_sent() as statements:
            listed = idp.json("users", "list")
        assert [u["email"] for u in listed] == sorted(emails)
        reads = [s for s in statements if "FROM users" in s]
        # Four batches of ten (the last one empty of a next), each from the batch before's key.
        assert len(reads) == 4, reads
        assert sum("(users.email, users.id) >" in s for s in reads) == 3, reads
        assert not [s for s in statements if "OFFSET" in s.upper() or "COUNT(" in s.upper()]
        text_output = idp.ok("users", "list").output.splitlines()
        assert [line.split()[0] for line in text_output] == sorted(emails)
        # A search is kept from batch to batch: the odd ones are named "Searched".
        found = idp.json("users", "list", "--search", "searched")
        assert [u["email"] for u in found] == sorted(emails[1::2])
        assert idp.ok("users", "list", "--search", "nobody").output == "no users\n"
        assert idp.json("users", "list", "--search", "nobody") == []


def test_a_node_with_another_secret_key_refuses_to_start(tmp_path: Path) -> None:
    """Signing keys are encrypted with a key derived from the secret key: a node configured with
    another secret cannot sign, so it must say so at start instead of failing at /jwks."""
    database = f"sqlite:///{tmp_path / 'idp.db'}"
    first = {"IDP_DATABASE_URL": database, "IDP_INSTANCE_PATH": str(tmp_path),
             "IDP_ISSUER": "http://localhost:5000", "IDP_SECRET_KEY": "a" * 40}  # fmt: skip
    runner = CliRunner()
    assert runner.invoke(main, ["init"], env=first).exit_code == 0
    second = first | {"IDP_SECRET_KEY": "b" * 40}
    result = runner.invoke(main, ["init"], env=second)
    assert result.exit_code != 0
    assert "same IDP_SECRET_KEY" in result.output


def test_clients_create_and_edit_set_the_back_channel_logout_uri(idp: Idp) -> None:
    """OpenID Connect Back-Channel Logout 1.0 section 2.2, from the command line; an http URI is
    refused off loopback, and ``''`` removes the URI."""
    created = idp.json(
        "clients", "create", "--name", "Wiki", "--redirect-uri", REDIRECT_URI,
        "--backchannel-logout-uri", "https://rp.example/backchannel",
        "--backchannel-logout-session-required",
    )  # fmt: skip
    assert created["backchannel_logout_uri"] == "https://rp.example/backchannel"
    assert created["backchannel_logout_session_required"] is True
    client_id = created["client_id"]
    refused = idp.run(
        "clients", "edit", client_id, "--backchannel-logout-uri", "http://rp.example/logout"
    )
    assert refused.exit_code != 0
    assert "must use https" in refused.output
    edited = idp.json(
        "clients", "edit", client_id, "--not-backchannel-logout-session-required",
        "--backchannel-logout-uri", "http://127.0.0.1:9000/logout",  # the issuer is on loopback
    )  # fmt: skip
    assert edited["backchannel_logout_uri"] == "http://127.0.0.1:9000/logout"
    assert edited["backchannel_logout_session_required"] is False
    cleared = idp.json("clients", "edit", client_id, "--backchannel-logout-uri", "")
    assert cleared["backchannel_logout_uri"] is None


def test_clients_create_and_edit_set_require_par(idp: Idp) -> None:
    """RFC 9126 6 ``require_pushed_authorization_requests`` from the command line (docs/admins.md,
    "Pushed authorization requests"): set on create, cleared and set again by edit, and left as
    it is by an edit that does not name it."""
    created = idp.json(
        "clients", "create", "--name", "Bank", "--redirect-uri", REDIRECT_URI, "--require-par"
    )
    assert created["require_pushed_authorization_requests"] is True
    client_id = created["client_id"]
    edited = idp.json("clients", "edit", client_id, "--not-require-par")
    assert edited["require_pushed_authorization_requests"] is False
    assert (
        idp.json("clients", "edit", client_id, "--require-par")[
            "require_pushed_authorization_requests"
        ]
        is True
    )
    renamed = idp.json("clients", "edit", client_id, "--name", "Bank 2")
    assert renamed["require_pushed_authorization_requests"] is True


def test_clients_create_and_edit_set_require_dpop(idp: Idp) -> None:
    """RFC 9449 5.2 ``dpop_bound_access_tokens`` from the command line: set on create, cleared
    by edit, and left as it is by an edit that does not name it."""
    created = idp.json(
        "clients", "create", "--name", "Bank", "--redirect-uri", REDIRECT_URI, "--require-dpop"
    )
    assert created["dpop_bound_access_tokens"] is True
    client_id = created["client_id"]
    renamed = idp.json("clients", "edit", client_id, "--name", "Bank 2")
    assert renamed["dpop_bound_access_tokens"] is True
    edited = idp.json("clients", "edit", client_id, "--not-require-dpop")
    assert edited["dpop_bound_access_tokens"] is False


def test_api_tokens_create_list_revoke(idp: Idp) -> None:
    created = idp.json("api-tokens", "create", "--name", "ci", "--scope", "clients:write",
                       "--expires-in", "30")  # fmt: skip
    assert re.fullmatch(r"idp_[A-Za-z0-9_-]{43}", created["token"])
    assert created["scopes"] == ["clients:write"]
    assert created["expires_at"]
    listed = idp.json("api-tokens", "list")
    assert [t["name"] for t in listed] == ["ci"]
    assert created["token"] not in json.dumps(listed)
    refused = idp.run("api-tokens", "create", "--name", "x", "--scope", "root")
    assert refused.exit_code != 0
    assert "unknown scope" in refused.output
    assert idp.json("api-tokens", "revoke", "ci")["status"] == "revoked"


def test_api_tokens_made_and_revoked_on_the_command_line_are_audited_as_cli(idp: Idp) -> None:
    """docs/admins.md: "Actions from the command line are audited as coming from `cli`": a token
    made or revoked on the host too, not by nobody; it still has no creating admin."""
    idp.ok("api-tokens", "create", "--name", "ci", "--scope", "audit:read")
    idp.ok("api-tokens", "revoke", "ci")
    with idp.session() as db:
        events = db.scalars(select(AuditEvent).where(AuditEvent.kind.like("api_token.%"))).all()
        assert sorted((e.kind, e.actor_id) for e in events) == [
            ("api_token.created", "cli"), ("api_token.revoked", "cli")
        ]  # fmt: skip
        assert db.scalars(select(ApiToken.created_by)).all() == [None]


def test_unlocking_a_user_and_rotating_keys_from_the_command_line_are_audited(idp: Idp) -> None:
    """docs/admins.md: "Actions from the command line are audited as coming from `cli`"."""
    idp.ok("users", "create", "ada@example.com", "--name", "Ada")
    idp.ok("users", "unlock", "ada@example.com")
    rotated = {r["kid"] for r in idp.json("keys", "rotate") if r["active"]}
    with idp.session() as db:
        rows = {e.kind: e for e in db.scalars(select(AuditEvent))}
        ada = db.scalars(select(User).where(User.email == "ada@example.com")).one()
    unlocked = rows["admin.user_unlocked"]
    assert (unlocked.actor_id, unlocked.subject_id, unlocked.details["via"]) == (
        "cli",
        ada.id,
        "cli",
    )
    assert set(rows["keys.rotated"].details["kids"]) == rotated


#: Commands an operator runs against a deployment's database (each reads or writes it).
DATABASE_COMMANDS = (
    ["users", "list"], ["clients", "list"], ["keys", "list"], ["keys", "rotate"],
    ["audit", "export"], ["outbox"], ["prune"], ["policy", "show"], ["groups", "list"],
    ["api-tokens", "list"], ["login-link", "list", "ada@example.com"],
)  # fmt: skip


def assert_refused_in_one_line(result: Result, *expected: str) -> None:
    """Exit status 1 with the reason on one line (Click's ``Error: ...``), not a traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.output  # a ClickException, not a crash
    assert "Traceback" not in result.output
    for text_ in expected:
        assert text_ in result.output, result.output


def test_a_command_on_a_database_not_initialised_says_to_run_init(tmp_path: Path) -> None:
    """docs/operations.md, "Upgrades and migrations": a database with no schema, or an older one
    than this idp's, is a one-line refusal naming `idp init`, for every command but init itself."""
    empty = Idp(tmp_path / "empty")
    empty.instance.mkdir()
    for command in DATABASE_COMMANDS:
        assert_refused_in_one_line(empty.run(*command), "idp init")
    older = Idp(tmp_path / "older")
    older.instance.mkdir()
    from alembic import command as alembic

    alembic.upgrade(alembic_config(older.env["IDP_DATABASE_URL"]), "0012")  # no api_tokens
    assert_refused_in_one_line(older.run("api-tokens", "list"), "older", "idp init")
    older.ok("init")  # what the message says to do
    older.ok("api-tokens", "list")


def test_a_command_against_an_unreachable_database_is_a_one_line_error(tmp_path: Path) -> None:
    """A stopped or unreachable PostgreSQL is named as such, without its password, and the
    command ends with status 1 instead of a driver's traceback (init and serve included)."""
    with socket.socket() as probe:  # a port nothing listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    idp = Idp(tmp_path)
    idp.env["IDP_DATABASE_URL"] = f"postgresql+psycopg://idp:s3cret-pw@127.0.0.1:{port}/idp"
    for command in (["init"], ["serve", "--port", "0"], *DATABASE_COMMANDS):
        result = idp.run(*command)
        assert_refused_in_one_line(result, "database is unavailable")
        assert "s3cret-pw" not in result.output


def test_unlocking_a_user_while_redis_is_down_is_a_one_line_error_that_changes_nothing(
    idp: Idp,
) -> None:
    """``idp users unlock`` resets the attempt counters, in Redis when configured: with Redis
    down the command ends with status 1 and one line naming Redis (not a traceback), and the
    lock it was to lift stays, with nothing audited; with Redis back it works."""
    user = idp.json("users", "create", "locked@example.com")
    with idp.session() as db:
        key = f"otp:{user['id']}"
        db.add(FactorLock(key=key, locked_at=datetime.now(UTC)))
        db.commit()
    with socket.socket() as probe:  # a port nothing listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    idp.env["IDP_REDIS_URL"] = f"redis://:redis-pw@127.0.0.1:{port}/0"
    result = idp.run("users", "unlock", "locked@example.com")
    assert_refused_in_one_line(result, "Redis is unavailable (ConnectionError)", "nothing was")
    assert "redis-pw" not in result.output
    with idp.session() as db:
        assert db.get(FactorLock, key) is not None
        audited = select(AuditEvent).where(AuditEvent.kind == "admin.user_unlocked")
        assert db.scalars(audited).all() == []
    with private_redis(idp.instance / "redis") as redis_server:
        idp.env["IDP_REDIS_URL"] = redis_server.url
        idp.ok("users", "unlock", "locked@example.com")
    with idp.session() as db:
        assert db.get(FactorLock, key) is None


def test_users_show_says_which_passkeys_the_configured_roots_verified(idp: Idp) -> None:
    """docs/admins.md, "Verified attestation": ``idp users show`` names each passkey's recorded
    root and what the roots configured now say of it (verified, not verified, another root)."""
    vendor, other = root_ca("Example Vendor Root"), root_ca("Other Vendor Root")
    roots = idp.instance / "roots.pem"
    roots.write_bytes(vendor.pem)
    idp.env["IDP_WEBAUTHN_ATTESTATION_ROOTS"] = str(roots)
    user = idp.json("users", "create", "ada@example.com")
    recorded = {"old": None, "vendor": root_fingerprint(vendor.certificate),
                "other": root_fingerprint(other.certificate)}  # fmt: skip
    with idp.session() as db:
        for name, root in recorded.items():
            db.add(Passkey(credential_id=name, user_id=user["id"], public_key=b"k", sign_count=0,
                           name=name, attestation_root=root))  # fmt: skip
        db.commit()
    shown = idp.json("users", "show", "ada@example.com")["passkeys"]
    said = {p["credential_id"]: (p["attestation"], p["attestation_root"]) for p in shown}
    assert said == {"old": ("not_verified", None),
                    "vendor": ("verified", recorded["vendor"]),
                    "other": ("other_root", recorded["other"])}  # fmt: skip
    assert "attestation other root" in idp.ok("users", "show", "ada@example.com").output


def test_users_list_finds_the_users_with_a_passkey_the_roots_did_not_verify(idp: Idp) -> None:
    """``idp users list --unverified-passkeys``: the users to ask for a new passkey, those with
    one registered without roots or under a root no longer configured, not those whose passkeys
    the roots configured now verified, nor those without passkeys."""
    vendor, other = root_ca("Example Vendor Root"), root_ca("Other Vendor Root")
    roots = idp.instance / "roots.pem"
    roots.write_bytes(vendor.pem)
    idp.env["IDP_WEBAUTHN_ATTESTATION_ROOTS"] = str(roots)
    recorded = {"old@example.com": [None], "verified@example.com": [vendor],
                "moved@example.com": [vendor, other], "none@example.com": []}  # fmt: skip
    with idp.session() as db:
        for email, passkeys in recorded.items():
            user = idp.json("users", "create", email)
            for number, root in enumerate(passkeys):
                fingerprint = root and root_fingerprint(root.certificate)
                db.add(Passkey(credential_id=f"{email}-{number}", user_id=user["id"],
                               public_key=b"k", sign_count=0, name=f"Key {number}",
                               attestation_root=fingerprint))  # fmt: skip
        db.commit()
    listed = idp.json("users", "list", "--unverified-passkeys")
    assert {u["email"] for u in listed} == {"old@example.com", "moved@example.com"}
    assert len(idp.json("users", "list")) == len(recorded)


def _accepted_invite_verifies(idp: Idp, secret: str, email: str) -> bool:
    """Accept the invite in a browser against the deployment; whether the address is then
    verified (OIDC Core 5.1 ``email_verified``)."""
    app = create_app({"issuer": ISSUER, "secret_key": TEST_SECRET, **FAST_ARGON2,
                      "database_url": idp.env["IDP_DATABASE_URL"],
                      "instance_path": str(idp.instance)})  # fmt: skip
    assert accept(app.test_client(), secret)[0] == 302
    with idp.session() as db:
        return db.scalars(select(User.email_verified).where(User.email == email)).one()


def test_with_a_mail_server_the_cli_only_emails_an_invite_and_its_use_verifies_the_address(
    idp: Idp,
) -> None:
    """``idp users invite`` printed every invite's link, so an account the CLI invited always
    started unverified (a link handed out proves nothing about the mailbox). With a mail server
    the invite goes by email alone (``invite-mailed``) unless ``--print-url`` asks for the link,
    and accepting the mailed one verifies the address."""
    with smtp_server() as server:
        idp.env["IDP_SMTP_URL"] = server.url()
        output = idp.ok("users", "invite", "grace@example.com").output
        assert "emailed an invite to grace@example.com" in output
        assert "/invite/" not in output
        [mailed] = server.handler.bodies()
        printed = idp.ok("users", "invite", "ada@example.com", "--print-url").output
        assert len(server.handler.messages) == 2  # the printed invite is emailed too
    match = re.search(r"/invite/([A-Za-z0-9_-]+)", mailed)
    assert match, mailed
    with idp.session() as db:
        purposes = dict(db.execute(select(User.email, LoginLink.purpose).join(LoginLink)).all())
    assert purposes == {"grace@example.com": "invite-mailed", "ada@example.com": "invite"}
    assert _accepted_invite_verifies(idp, match.group(1), "grace@example.com") is True
    handed = re.search(r"/invite/([A-Za-z0-9_-]+)", printed)
    assert handed, printed
    assert _accepted_invite_verifies(idp, handed.group(1), "ada@example.com") is False


def test_without_a_mail_server_the_cli_prints_the_invite_and_refuses_email_only(idp: Idp) -> None:
    """No ``smtp_url``: an invite only emailed would wait in the outbox, seen by no one, so
    ``--email-only`` is refused (no account made); the default prints the link, as before."""
    refused = idp.run("users", "invite", "grace@example.com", "--email-only")
    assert refused.exit_code == 1
    assert "no mail server is configured (smtp_url)" in refused.output
    with idp.session() as db:
        assert db.scalars(select(User.email)).all() == []
    assert "/invite/" in idp.ok("users", "invite", "grace@example.com").output

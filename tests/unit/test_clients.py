"""Client registration: redirect URI rules, secrets stored as keyed hashes, auth methods."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from idp.models import Base, Client
from idp.services.clients import ClientRegistrationError, ClientService, validate_redirect_uri
from idp.services.crypto import KeyedHasher

HASHER = KeyedHasher(b"k" * 32)
REDIRECT = "https://rp.example/callback"
CLIENT_JWKS = {
    "keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]
}


@pytest.fixture
def db() -> Iterator[Session]:
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


@pytest.fixture
def clients(db: Session) -> ClientService:
    return ClientService(db, HASHER)


# -- redirect URIs --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "uri",
    [
        "https://rp.example/callback",
        "https://rp.example:8443/cb?tenant=a",
        "http://localhost/cb",
        "http://localhost:3000/cb",
        "http://127.0.0.1:8080/cb",
        "http://[::1]:8080/cb",
    ],
)
def test_redirect_uri_is_accepted(uri: str) -> None:
    validate_redirect_uri(uri)
    validate_redirect_uri(uri, native=True)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://example.com/cb", "https"),
        ("http://localhost.example.com/cb", "https"),
        ("http://10.0.0.1/cb", "https"),
        ("https://rp.example/cb#fragment", "fragment"),
        ("https://rp.example/cb#", "fragment"),
        ("https://*.rp.example/cb", "wildcard"),
        ("https://rp.example/*", "wildcard"),
        ("/callback", "absolute"),
        ("rp.example/callback", "absolute"),
        ("https:///callback", "absolute"),
        ("", "absolute"),
        ("javascript:alert(1)", "not allowed"),
        ("data:text/html,<script>alert(1)</script>", "not allowed"),
        ("file:///etc/passwd", "not allowed"),
        ("ftp://rp.example/cb", "https"),
    ],
)
def test_redirect_uri_is_refused(uri: str, reason: str) -> None:
    for native in (False, True):
        with pytest.raises(ClientRegistrationError, match=reason):
            validate_redirect_uri(uri, native=native)


def test_private_use_scheme_is_accepted_for_native_apps_only() -> None:
    # RFC 8252 7.1: reverse-domain private-use schemes belong to native (public) clients.
    validate_redirect_uri("com.example.app:/cb", native=True)
    with pytest.raises(ClientRegistrationError, match="https"):
        validate_redirect_uri("com.example.app:/cb", native=False)


def test_private_use_scheme_without_a_domain_is_refused() -> None:
    # RFC 8252 7.1: the scheme is a reverse domain name the app's owner controls.
    with pytest.raises(ClientRegistrationError):
        validate_redirect_uri("myapp:/cb", native=True)


# -- creation -------------------------------------------------------------------------------------
def test_confidential_client_gets_a_high_entropy_secret(clients: ClientService) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT])
    assert new.client_secret is not None
    assert len(new.client_secret) >= 43  # 256 bits, base64url
    assert new.client.token_endpoint_auth_method == "client_secret_basic"
    assert new.client.is_public is False


def test_client_secret_is_stored_only_as_a_keyed_hash(db: Session, clients: ClientService) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT])
    db.commit()
    secret = new.client_secret
    assert secret is not None
    stored = db.get(Client, new.client.client_id)
    assert stored is not None
    assert stored.secret_hash is not None
    assert stored.secret_hash != secret
    assert secret not in stored.secret_hash
    assert HASHER.verify(stored.secret_hash, secret) is True
    assert HASHER.verify(stored.secret_hash, secret + "x") is False
    # Without the server key the stored hash is useless (a leaked database is not enough).
    assert KeyedHasher(b"o" * 32).verify(stored.secret_hash, secret) is False


def test_client_checks_its_secret_with_the_runtime_hasher(clients: ClientService) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT])
    assert new.client_secret is not None
    assert new.client.check_client_secret(new.client_secret) is False  # no hasher attached
    new.client.secret_hasher = HASHER
    assert new.client.check_client_secret(new.client_secret) is True
    assert new.client.check_client_secret("guess") is False


def test_each_client_gets_its_own_id_and_secret(clients: ClientService) -> None:
    first = clients.create(name="A", redirect_uris=[REDIRECT])
    second = clients.create(name="B", redirect_uris=[REDIRECT])
    assert first.client.client_id != second.client.client_id
    assert first.client_secret != second.client_secret


def test_client_secret_post_also_gets_a_secret(clients: ClientService) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT], auth_method="client_secret_post")
    assert new.client_secret is not None


def test_public_client_has_no_secret_and_uses_method_none(clients: ClientService) -> None:
    new = clients.create(name="SPA", redirect_uris=[REDIRECT], public=True)
    assert new.client_secret is None
    assert new.client.secret_hash is None
    assert new.client.token_endpoint_auth_method == "none"
    assert "client_credentials" not in new.client.grant_types


def test_native_client_may_register_a_private_use_scheme(clients: ClientService) -> None:
    new = clients.create(name="App", redirect_uris=["com.example.app:/cb"], kind="native")
    assert new.client.redirect_uris == ["com.example.app:/cb"]
    assert new.client.is_public is True


def test_single_page_app_may_not_register_a_private_use_scheme(clients: ClientService) -> None:
    # RFC 8252 7.1: private-use schemes are how native apps receive redirects; a browser app
    # has no use for one.
    with pytest.raises(ClientRegistrationError, match="https"):
        clients.create(name="SPA", redirect_uris=["com.example.app:/cb"], kind="spa")


def test_confidential_client_may_not_register_a_private_use_scheme(
    clients: ClientService,
) -> None:
    with pytest.raises(ClientRegistrationError, match="https"):
        clients.create(name="RP", redirect_uris=["com.example.app:/cb"])


def test_invalid_post_logout_redirect_uri_is_refused(clients: ClientService) -> None:
    with pytest.raises(ClientRegistrationError, match="https"):
        clients.create(
            name="RP", redirect_uris=[REDIRECT], post_logout_redirect_uris=["http://rp.example/"]
        )


def test_private_key_jwt_requires_the_client_jwks(clients: ClientService) -> None:
    with pytest.raises(ClientRegistrationError, match="JWKS"):
        clients.create(name="RP", redirect_uris=[REDIRECT], auth_method="private_key_jwt")
    with pytest.raises(ClientRegistrationError, match="JWKS"):
        clients.create(
            name="RP", redirect_uris=[REDIRECT], auth_method="private_key_jwt", jwks={"keys": []}
        )


def test_private_key_jwt_client_has_no_secret(clients: ClientService) -> None:
    new = clients.create(
        name="RP", redirect_uris=[REDIRECT], auth_method="private_key_jwt", jwks=CLIENT_JWKS
    )
    assert new.client_secret is None
    assert new.client.secret_hash is None
    assert new.client.jwks == CLIENT_JWKS


def test_public_client_cannot_use_client_credentials(clients: ClientService) -> None:
    with pytest.raises(ClientRegistrationError, match="client_credentials"):
        clients.create(
            name="SPA",
            redirect_uris=[REDIRECT],
            public=True,
            grant_types=["authorization_code", "client_credentials"],
        )


@pytest.mark.parametrize(
    ("public", "method"),
    [(False, "none"), (True, "client_secret_basic"), (True, "private_key_jwt")],
)
def test_auth_method_none_is_for_public_clients_only(
    clients: ClientService, public: bool, method: str
) -> None:
    with pytest.raises(ClientRegistrationError, match="public clients"):
        clients.create(
            name="RP", redirect_uris=[REDIRECT], public=public, auth_method=method, jwks=CLIENT_JWKS
        )


def test_unknown_auth_method_is_refused(clients: ClientService) -> None:
    with pytest.raises(ClientRegistrationError, match="unknown token endpoint auth method"):
        clients.create(name="RP", redirect_uris=[REDIRECT], auth_method="client_secret_jwt")


def test_unsupported_id_token_alg_is_refused(clients: ClientService) -> None:
    with pytest.raises(ClientRegistrationError, match="ID token alg"):
        clients.create(name="RP", redirect_uris=[REDIRECT], id_token_alg="none")


@pytest.mark.parametrize("name", ["", "   "])
def test_client_without_a_name_is_refused(clients: ClientService, name: str) -> None:
    with pytest.raises(ClientRegistrationError, match="name"):
        clients.create(name=name, redirect_uris=[REDIRECT])


def test_client_without_redirect_uris_is_refused(clients: ClientService) -> None:
    with pytest.raises(ClientRegistrationError, match="redirect URI"):
        clients.create(name="RP", redirect_uris=[])


# -- secret rotation ------------------------------------------------------------------------------
def test_rotate_secret_invalidates_the_old_secret(db: Session, clients: ClientService) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT])
    db.commit()
    old_secret = new.client_secret
    assert old_secret is not None
    rotated = clients.rotate_secret(new.client)
    db.commit()
    assert rotated != old_secret
    assert len(rotated) >= 43
    assert HASHER.verify(new.client.secret_hash, rotated) is True
    assert HASHER.verify(new.client.secret_hash, old_secret) is False


def test_rotate_secret_is_refused_for_a_public_client(clients: ClientService) -> None:
    new = clients.create(name="SPA", redirect_uris=[REDIRECT], public=True)
    with pytest.raises(ClientRegistrationError, match="does not authenticate with a secret"):
        clients.rotate_secret(new.client)
    assert new.client.secret_hash is None


def test_client_lookup_ignores_absurd_ids(clients: ClientService) -> None:
    assert clients.get("") is None
    assert clients.get("x" * 65) is None

"""Client registration: redirect URI rules, secrets stored as keyed hashes, auth methods."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.clock import FrozenClock
from idp.models import AccessToken, AuditEvent, Client
from idp.services.audit import RequestContext
from idp.services.client_fields import (
    ClientFields,
    ClientRegistrationError,
    fields_of,
    validate_redirect_uri,
)
from idp.services.clients import Actor, ClientService
from idp.services.crypto import KeyedHasher

HASHER = KeyedHasher(b"k" * 32)
REDIRECT = "https://rp.example/callback"
CLIENT_JWKS = {
    "keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]
}


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
        # RFC 9110 4.2.2: no empty host, whatever the port or the credentials around it.
        ("https://:443/callback", "absolute"),
        ("http://:8080/callback", "absolute"),
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


def test_rotation_with_an_overlap_keeps_the_old_secret_until_it_ends(
    db: Session, clients: ClientService
) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT])
    old = new.client_secret
    assert old is not None
    now = datetime.now(UTC)
    rotated = clients.rotate_secret(new.client, overlap=3600, now=now)
    client = new.client
    client.secret_hasher = HASHER
    assert client.previous_secret_expires_at == now + timedelta(hours=1)
    assert client.check_client_secret(rotated) is True
    assert client.check_client_secret(old) is True
    client.clock = FrozenClock(now + timedelta(hours=1))  # as query_client sets the app's clock
    assert client.check_client_secret(old) is False  # the overlap has ended
    assert client.check_client_secret(rotated) is True


def test_changes_without_an_explicit_time_take_the_service_clock(db: Session) -> None:
    clock = FrozenClock(datetime(2030, 1, 1, tzinfo=UTC))
    clients = ClientService(db, HASHER, clock=clock)
    client = clients.create(name="RP", redirect_uris=[REDIRECT]).client
    assert client.created_at == clock.now()
    clock.advance(timedelta(minutes=1))
    clients.rotate_secret(client, overlap=60)
    assert client.updated_at == clock.now()
    assert client.previous_secret_expires_at == clock.now() + timedelta(seconds=60)
    clock.advance(timedelta(minutes=1))
    clients.disable(client)
    assert client.disabled_at == clock.now()


def test_rotation_without_an_overlap_revokes_the_old_secret_at_once(
    clients: ClientService,
) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT])
    assert new.client_secret is not None
    rotated = clients.rotate_secret(new.client, overlap=0)
    new.client.secret_hasher = HASHER
    assert new.client.previous_secret_hash is None
    assert new.client.check_client_secret(new.client_secret) is False
    assert new.client.check_client_secret(rotated) is True


def test_a_second_rotation_ends_the_first_secret_at_once(clients: ClientService) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT])
    first = new.client_secret
    assert first is not None
    second = clients.rotate_secret(new.client, overlap=3600)
    third = clients.rotate_secret(new.client, overlap=3600)
    new.client.secret_hasher = HASHER
    assert new.client.check_client_secret(first) is False
    assert new.client.check_client_secret(second) is True
    assert new.client.check_client_secret(third) is True


@pytest.mark.parametrize("overlap", [-1, 30 * 24 * 3600 + 1])
def test_rotation_overlap_out_of_bounds_is_refused(clients: ClientService, overlap: int) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT])
    with pytest.raises(ClientRegistrationError, match="overlap"):
        clients.rotate_secret(new.client, overlap=overlap)


# -- kinds and loopback redirects (RFC 8252) ------------------------------------------------------
@pytest.mark.parametrize(
    ("registered", "requested"),
    [
        ("http://127.0.0.1/cb", "http://127.0.0.1:51234/cb"),
        ("http://127.0.0.1:8080/cb", "http://127.0.0.1:51234/cb"),
        ("http://[::1]/cb", "http://[::1]:61000/cb"),
        ("http://127.0.0.1/cb?x=1", "http://127.0.0.1:5000/cb?x=1"),
    ],
)
def test_native_app_loopback_redirect_may_use_any_port(
    clients: ClientService, registered: str, requested: str
) -> None:
    """RFC 8252 7.3: the authorization server MUST allow any port for loopback IP redirects."""
    native = clients.create(name="App", redirect_uris=[registered], kind="native").client
    assert native.check_redirect_uri(requested) is True
    spa = clients.create(name="SPA", redirect_uris=[registered], kind="spa").client
    web = clients.create(name="Web", redirect_uris=[registered]).client
    # Only native apps: for others the registered URI is matched exactly (RFC 9700 2.1).
    assert spa.check_redirect_uri(requested) is False
    assert web.check_redirect_uri(requested) is False


@pytest.mark.parametrize(
    "requested",
    [
        "http://127.0.0.1:5000/other",
        "http://127.0.0.1:5000/cb/",
        "http://127.0.0.1:5000/cb?x=1",
        "http://127.0.0.1:5000/cb#f",
        "http://127.0.0.1:5000/cb?",
        "https://127.0.0.1:5000/cb",
        "http://127.0.0.2:5000/cb",
        "http://[::1]:5000/cb",
        "http://localhost:5000/cb",
        "http://user@127.0.0.1:5000/cb",
        "http://127.0.0.1:99999/cb",
        "http://127.0.0.1:x/cb",
        "http://127.0.0.1.evil.example:5000/cb",
    ],
)
def test_native_app_loopback_port_variation_changes_nothing_else(
    clients: ClientService, requested: str
) -> None:
    native = clients.create(name="App", redirect_uris=["http://127.0.0.1/cb"], kind="native")
    assert native.client.check_redirect_uri(requested) is False


def test_localhost_redirect_gets_no_port_variation(clients: ClientService) -> None:
    # RFC 8252 8.3: "localhost" is NOT RECOMMENDED; only loopback IP literals vary their port.
    native = clients.create(name="App", redirect_uris=["http://localhost/cb"], kind="native")
    assert native.client.check_redirect_uri("http://localhost/cb") is True
    assert native.client.check_redirect_uri("http://localhost:5000/cb") is False


def test_https_redirect_of_a_native_app_is_matched_exactly(clients: ClientService) -> None:
    native = clients.create(name="App", redirect_uris=[REDIRECT], kind="native")
    assert native.client.check_redirect_uri("https://rp.example:8443/callback") is False


@pytest.mark.parametrize(("kind", "public"), [("web", False), ("spa", True), ("native", True)])
def test_kind_decides_whether_a_client_is_public(
    clients: ClientService, kind: str, public: bool
) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT], kind=kind)
    assert new.client.is_public is public
    assert (new.client_secret is None) is public
    assert new.client.token_endpoint_auth_method == ("none" if public else "client_secret_basic")


def test_unknown_kind_is_refused(clients: ClientService) -> None:
    with pytest.raises(ClientRegistrationError, match="kind"):
        clients.create(name="RP", redirect_uris=[REDIRECT], kind="desktop")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("scopes", ["openid", "Admin"], "unknown scope"),
        ("scopes", [], "at least one scope"),
        ("grant_types", ["password"], "unknown grant type"),
        ("grant_types", ["implicit"], "unknown grant type"),
        ("grant_types", [], "at least one grant type"),
        ("redirect_uris", ["https://rp.example/a b"], "spaces"),
        ("redirect_uris", ["https://user:pw@rp.example/cb"], "credentials"),
        ("redirect_uris", ["https://rp.example:99999/cb"], "not a valid URL"),
        ("redirect_uris", [f"https://rp.example/{i}" for i in range(21)], "at most 20"),
        ("name", "x" * 201, "longer than 200"),
    ],
)
def test_invalid_registration_is_refused_with_the_reason(
    clients: ClientService, field: str, value: Any, message: str
) -> None:
    fields: dict[str, Any] = {"name": "RP", "redirect_uris": [REDIRECT], field: value}
    with pytest.raises(ClientRegistrationError, match=message):
        clients.create(**fields)


# -- consent-page links ---------------------------------------------------------------------------
def test_consent_page_links_must_be_https(clients: ClientService) -> None:
    for name in ("logo_uri", "tos_uri", "policy_uri"):
        for bad in ("http://rp.example/x", "javascript:alert(1)", "//rp.example/x", "https://"):
            links: dict[str, Any] = {name: bad}
            with pytest.raises(ClientRegistrationError, match="https URL"):
                clients.create(name="RP", redirect_uris=[REDIRECT], **links)


def test_logo_host_must_be_a_plain_dns_name(clients: ClientService) -> None:
    # The logo's origin is written into the consent page's CSP: nothing that could end a source.
    with pytest.raises(ClientRegistrationError):
        clients.create(
            name="RP", redirect_uris=[REDIRECT], logo_uri="https://rp.example;script-src/x.png"
        )


def test_logo_origin_is_what_the_consent_page_csp_allows(clients: ClientService) -> None:
    new = clients.create(
        name="RP", redirect_uris=[REDIRECT], logo_uri="https://cdn.rp.example:8443/logo.png?v=2"
    )
    assert new.client.logo_origin == "https://cdn.rp.example:8443"
    assert clients.create(name="RP", redirect_uris=[REDIRECT]).client.logo_origin is None


def test_empty_links_are_stored_as_none(clients: ClientService) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT], logo_uri="  ", tos_uri="")
    assert new.client.logo_uri is None
    assert new.client.tos_uri is None


# -- editing --------------------------------------------------------------------------------------
def test_edit_changes_settings_and_keeps_the_secret(clients: ClientService) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT])
    before = new.client.secret_hash
    changed = dataclasses.replace(
        fields_of(new.client), name="Wiki", redirect_uris=[REDIRECT, "https://rp.example/2"]
    )
    assert clients.update(new.client, changed) is None
    assert new.client.name == "Wiki"
    assert new.client.redirect_uris == [REDIRECT, "https://rp.example/2"]
    assert new.client.secret_hash == before


def test_edit_refuses_to_turn_a_web_app_public(clients: ClientService) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT])
    public = dataclasses.replace(fields_of(new.client), kind="spa", auth_method="none")
    with pytest.raises(ClientRegistrationError, match="confidential and public"):
        clients.update(new.client, public)
    assert new.client.is_public is False


def test_edit_may_switch_between_single_page_and_native(clients: ClientService) -> None:
    new = clients.create(name="App", redirect_uris=["http://127.0.0.1/cb"], kind="spa")
    clients.update(new.client, dataclasses.replace(fields_of(new.client), kind="native"))
    assert new.client.kind == "native"
    assert new.client.check_redirect_uri("http://127.0.0.1:4000/cb") is True


def test_edit_to_private_key_jwt_drops_every_secret(clients: ClientService) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT])
    clients.rotate_secret(new.client, overlap=3600)
    to_jwt = dataclasses.replace(
        fields_of(new.client), auth_method="private_key_jwt", jwks=CLIENT_JWKS
    )
    assert clients.update(new.client, to_jwt) is None
    assert new.client.secret_hash is None
    assert new.client.previous_secret_hash is None


def test_edit_back_to_a_secret_method_issues_a_new_secret(clients: ClientService) -> None:
    new = clients.create(
        name="RP", redirect_uris=[REDIRECT], auth_method="private_key_jwt", jwks=CLIENT_JWKS
    )
    to_secret = dataclasses.replace(fields_of(new.client), auth_method="client_secret_post")
    secret = clients.update(new.client, to_secret)
    assert secret is not None
    assert HASHER.verify(new.client.secret_hash, secret) is True
    assert new.client.jwks is None


# -- disabling and the audit log -----------------------------------------------------------------
def test_disabling_revokes_the_clients_access_tokens(db: Session, clients: ClientService) -> None:
    new = clients.create(name="RP", redirect_uris=[REDIRECT])
    other = clients.create(name="Other", redirect_uris=[REDIRECT])
    now = datetime.now(UTC)
    for jti, client in (("a", new.client), ("b", other.client)):
        db.add(AccessToken(jti=jti, client_id=client.client_id, scope="openid",
                           issued_at=now, expires_at=now + timedelta(minutes=10)))  # fmt: skip
    db.commit()
    clients.disable(new.client, now=now)
    db.commit()
    assert new.client.disabled_at == now
    assert db.get(AccessToken, "a").revoked_at is not None  # type: ignore[union-attr]
    assert db.get(AccessToken, "b").revoked_at is None  # type: ignore[union-attr]
    clients.enable(new.client)
    assert new.client.disabled_at is None


def test_every_change_is_audited_with_its_actor(db: Session, clients: ClientService) -> None:
    actor = Actor(user_id="a" * 32, via="console", context=RequestContext("203.0.113.9", "UA"))
    new = clients.create(name="RP", redirect_uris=[REDIRECT], actor=actor)
    client_id = new.client.client_id
    clients.update(new.client, dataclasses.replace(fields_of(new.client), name="Wiki"), actor=actor)
    clients.rotate_secret(new.client, overlap=60, actor=actor)
    clients.disable(new.client, actor=actor)
    clients.enable(new.client, actor=actor)
    clients.delete(new.client, actor=actor)
    db.commit()
    events = list(db.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    assert [e.kind for e in events] == [
        "client.created", "client.updated", "client.secret_rotated", "client.disabled",
        "client.enabled", "client.deleted",
    ]  # fmt: skip
    assert {e.actor_id for e in events} == {"a" * 32}
    assert {e.client_id for e in events} == {client_id}
    assert {e.ip_address for e in events} == {"203.0.113.9"}
    assert events[1].details["changed"] == ["name"]
    assert events[2].details["overlap_seconds"] == 60
    assert all(e.details["via"] == "console" for e in events)


@pytest.mark.parametrize(
    ("jwks", "message"),
    [
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "RSA, EC and OKP"),
        ({"keys": [{**CLIENT_JWKS["keys"][0], "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]},
         "public keys only"),
        ({"keys": ["x"]}, "RSA, EC and OKP"),
        ({"keys": [{"kty": "RSA"}]}, "not a valid set"),
        ({"keys": [{"kty": "EC", "crv": "P-256", "x": "!!", "y": "!!"}]}, "not a valid set"),
        ([], "public JWKS"),
    ],
    ids=["symmetric", "private", "not-an-object", "rsa-without-n", "ec-junk", "list"],
)  # fmt: skip
def test_private_key_jwt_jwks_must_be_valid_public_keys(
    clients: ClientService, jwks: Any, message: str
) -> None:
    with pytest.raises(ClientRegistrationError, match=message):
        clients.create(
            name="RP", redirect_uris=[REDIRECT], auth_method="private_key_jwt", jwks=jwks
        )


def test_keyed_hash_is_hmac_sha256() -> None:
    """RFC 4231 4.3 (test case 2): the stored form of every client secret is HMAC-SHA256."""
    digest = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert KeyedHasher(b"Jefe").hash("what do ya want for nothing?") == digest


def test_allowed_scopes_longer_together_than_a_token_records_are_refused() -> None:
    """A grant and its tokens store the scope in 1,000 characters: a client allowed more could
    register but would get a server error on PostgreSQL at every sign-in and token."""
    many = [f"claim_{n:02d}_" + "x" * 50 for n in range(20)]  # 20 claim scopes, 1,259 together
    fields = ClientFields(name="Wiki", redirect_uris=[REDIRECT], scopes=["openid", *many])
    with pytest.raises(ClientRegistrationError, match="longer than 1000"):
        fields.validated()
    ClientFields(name="Wiki", redirect_uris=[REDIRECT], scopes=["openid", *many[:15]]).validated()

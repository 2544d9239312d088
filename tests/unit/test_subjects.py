"""Subject identifiers (OIDC Core 8, 8.1): the pairwise value's derivation, the sector a client
belongs to, the installation's secret, and the admin's rules for a client's subject type."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp.models import AuditEvent, Client, InstallationSecret
from idp.services.client_fields import ClientFields, ClientRegistrationError, fields_of
from idp.services.clients import ClientService, SubjectChangeUnconfirmedError
from idp.services.crypto import KeyedHasher
from idp.services.host_names import UnencodableHostError, ascii_host
from idp.services.subjects import (
    SECRET_NAME,
    SeveralHostsError,
    SubjectIdentifiers,
    ensure_secret,
    pairwise_subject,
    sector_host,
    sector_of,
    subject_key,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = b"s" * 32
USER = "u" * 32


@pytest.fixture
def clients(db: Session) -> ClientService:
    return ClientService(db, KeyedHasher(b"k" * 32))


def client_of(**columns: object) -> Client:
    values: dict[str, object] = {
        "client_id": "c1", "subject_type": "pairwise", "sector_identifier": None,
        "redirect_uris": ["https://app.example/cb"],
    }  # fmt: skip
    values.update(columns)
    return Client(**values)


# -- the derivation -------------------------------------------------------------------------------
def test_the_pairwise_value_is_hmac_sha256_of_the_sector_and_the_user_in_base64url() -> None:
    expected = hmac.new(SECRET, b"app.example\x00" + USER.encode(), hashlib.sha256).digest()
    value = pairwise_subject(SECRET, "app.example", USER)
    assert value == base64.urlsafe_b64encode(expected).rstrip(b"=").decode()
    assert len(value) == 43  # OIDC Core 2: at most 255 ASCII characters
    assert "=" not in value


def test_the_pairwise_value_differs_by_sector_user_and_secret_and_is_stable() -> None:
    value = pairwise_subject(SECRET, "a.example", USER)
    assert pairwise_subject(SECRET, "a.example", USER) == value
    assert pairwise_subject(SECRET, "b.example", USER) != value
    assert pairwise_subject(SECRET, "a.example", "v" * 32) != value
    assert pairwise_subject(b"t" * 32, "a.example", USER) != value
    assert value != USER


# -- the sector -----------------------------------------------------------------------------------
def test_the_sector_is_the_redirect_uris_one_host() -> None:
    uris = ["https://App.example/cb", "https://app.example:8443/other"]
    assert sector_host(uris) == "app.example"
    assert sector_of(client_of(redirect_uris=uris)) == "app.example"


@pytest.mark.parametrize(
    "uris",
    [
        [],
        ["http://127.0.0.1/cb", "http://localhost:3000/cb"],
        ["com.example.app:/callback"],
        ["http://[::1]:8080/cb"],
    ],
)
def test_a_client_without_a_shareable_host_has_a_sector_of_its_own(uris: list[str]) -> None:
    # Loopback and private-use redirects are used alike by unrelated apps: their users must not
    # share a sub through them.
    assert sector_host(uris) is None
    assert sector_of(client_of(client_id="tv", redirect_uris=uris)) == "client:tv"


@pytest.mark.parametrize(
    "uris",
    [
        ["https://a.example/cb", "https://b.example/cb"],
        ["https://a.example/cb", "http://localhost/cb"],
    ],
)
def test_redirect_uris_on_several_hosts_name_no_sector(uris: list[str]) -> None:
    with pytest.raises(SeveralHostsError):
        sector_host(uris)
    # Never registered so; the client's own sector rather than one of its hosts'.
    assert sector_of(client_of(redirect_uris=uris)) == "client:c1"
    assert sector_of(client_of(redirect_uris=uris, sector_identifier="corp.example")) == (
        "corp.example"
    )


@pytest.mark.parametrize(
    "uris",
    [
        ["https://app.example./cb"],
        ["https://APP.example./cb", "https://app.example/other"],
        ["https://b\u00fccher.example/cb"],
        ["https://B\u00dcCHER.example./cb", "https://xn--bcher-kva.example/cb"],
    ],
)
def test_one_host_is_one_sector_however_it_is_written(uris: list[str]) -> None:
    """RFC 1034 3.1 (a trailing dot), RFC 5890 2.3.2.1 (a U-label and its A-label): one host,
    one sector; a trailing dot or the Unicode form split the host's clients' sector in two."""
    expected = "xn--bcher-kva.example" if "cher" in uris[0].lower() else "app.example"
    assert sector_host(uris) == expected
    assert sector_of(client_of(redirect_uris=uris)) == expected


@pytest.mark.parametrize(
    "host",
    ["app.example", "a-b.c1.example", "xn--bcher-kva.example", "localhost.example", "x" * 63],
)
def test_a_plain_lowercase_ascii_host_keeps_its_sector_and_every_sub(host: str) -> None:
    """The normalisation changes no sector of a client whose hosts were already lowercase ASCII
    without a trailing dot, so no such client's users get another sub."""
    assert ascii_host(host) == host
    client = client_of(redirect_uris=[f"https://{host}/cb"])
    assert sector_of(client) == host
    assert pairwise_subject(SECRET, sector_of(client), USER) == pairwise_subject(SECRET, host, USER)
    named = client_of(sector_identifier=host, redirect_uris=["https://a.example/cb"])
    assert sector_of(named) == host


def test_an_internationalised_host_is_the_sector_of_its_idna_2008_a_labels() -> None:
    """UTS 46 non-transitional, as a browser redirects: ``fa\u00df.example`` is its own name,
    ``xn--fa-hia.example``, one sector with that A-label, and not ``fass.example`` (IDNA 2003's
    mapping, another name and another owner's sector)."""
    for uris in (["https://fa\u00df.example/cb"], ["https://FA\u00df.Example./cb"],
                 ["https://xn--fa-hia.example/cb", "https://fa\u00df.example/other"]):  # fmt: skip
        assert sector_host(uris) == "xn--fa-hia.example"
        assert sector_of(client_of(redirect_uris=uris)) == "xn--fa-hia.example"
    assert sector_of(client_of(redirect_uris=["https://fass.example/cb"])) == "fass.example"


def test_a_host_idna_refuses_is_refused_as_a_sector_and_an_older_client_keeps_its_own() -> None:
    """A name IDNA 2008 disallows is refused at registration; a client registered before (the
    IDNA 2003 rule took ``\u2603.example`` as ``xn--n3h.example``) keeps that sector and every
    user's ``sub`` at it."""
    uris = ["https://\u2603.example/cb"]
    with pytest.raises(UnencodableHostError, match="IDNA 2008"):
        sector_host(uris)
    assert sector_of(client_of(redirect_uris=uris)) == "xn--n3h.example"


def test_the_subject_key_of_a_public_client_has_no_sector() -> None:
    assert subject_key(client_of(subject_type="public")) == ("public", None)
    assert subject_key(client_of()) == ("pairwise", "app.example")


# -- the secret and the service -------------------------------------------------------------------
def test_a_public_client_gets_the_user_id_without_reading_the_secret(db: Session) -> None:
    # No secret in this database: a public client never needs it.
    assert SubjectIdentifiers().of(db, client_of(subject_type="public"), USER) == USER
    with pytest.raises(LookupError):
        SubjectIdentifiers().of(db, client_of(), USER)


def test_the_secret_is_made_once_and_every_reader_agrees(db: Session) -> None:
    ensure_secret(db, NOW)
    ensure_secret(db, NOW)  # a second node's start keeps the first one's
    db.commit()
    [row] = db.scalars(select(InstallationSecret)).all()
    assert row.name == SECRET_NAME
    secret = base64.urlsafe_b64decode(row.value + "=")
    assert len(secret) == 32
    first, second = SubjectIdentifiers(), SubjectIdentifiers()
    value = first.of(db, client_of(), USER)
    assert (
        value == second.of(db, client_of(), USER) == pairwise_subject(secret, "app.example", USER)
    )
    # Sector-mates share the value, other sectors do not.
    assert first.of(
        db, client_of(client_id="c2", redirect_uris=["https://app.example/x"]), USER
    ) == (value)
    assert first.of(db, client_of(redirect_uris=["https://other.example/cb"]), USER) != value


# -- the admin's rules ----------------------------------------------------------------------------
def fields(**changes: object) -> ClientFields:
    base = ClientFields(name="App", redirect_uris=["https://app.example/cb"])
    return dataclasses.replace(base, **changes)


def test_pairwise_redirect_uris_on_several_hosts_need_a_named_sector(
    clients: ClientService,
) -> None:
    two_hosts = ["https://a.example/cb", "https://b.example/cb"]
    with pytest.raises(ClientRegistrationError, match="several hosts"):
        clients.create_from(fields(subject_type="pairwise", redirect_uris=two_hosts))
    new = clients.create_from(
        fields(subject_type="pairwise", redirect_uris=two_hosts, sector_identifier="Corp.Example.")
    )
    assert new.client.sector_identifier == "corp.example"
    # A public client with several hosts is as before.
    assert clients.create_from(fields(redirect_uris=two_hosts)).client.subject_type == "public"


@pytest.mark.parametrize("sector", ["https://corp.example", "corp example", "*.example", "a/b"])
def test_the_sector_is_a_host_name(clients: ClientService, sector: str) -> None:
    with pytest.raises(ClientRegistrationError, match="host name"):
        clients.create_from(fields(subject_type="pairwise", sector_identifier=sector))


def test_a_named_sector_takes_the_form_of_a_redirect_uris_host(clients: ClientService) -> None:
    """The host an admin names is one sector with the same host in a redirect URI: lowercase,
    one trailing dot off, A-labels (idp.services.host_names.ascii_host); what has no one ASCII
    form, or two trailing dots, is refused."""
    two_hosts = ["https://a.example/cb", "https://b.example/cb"]
    for named, stored in (("B\u00dccher.Example.", "xn--bcher-kva.example"),
                          ("Fa\u00df.example", "xn--fa-hia.example"),
                          ("app.example.", "app.example")):  # fmt: skip
        new = clients.create_from(
            fields(subject_type="pairwise", redirect_uris=two_hosts, sector_identifier=named)
        )
        assert new.client.sector_identifier == stored
    for refused in ("\u2603.example", "app.example..", "a..b\u00fc.example"):
        with pytest.raises(ClientRegistrationError, match="host name"):
            clients.create_from(
                fields(subject_type="pairwise", redirect_uris=two_hosts, sector_identifier=refused)
            )
    with pytest.raises(ClientRegistrationError, match="IDNA 2008"):
        clients.create_from(
            fields(subject_type="pairwise", redirect_uris=["https://\u2603.example/cb"])
        )


def test_an_unknown_subject_type_is_refused(clients: ClientService) -> None:
    with pytest.raises(ClientRegistrationError, match="subject type"):
        clients.create_from(fields(subject_type="random"))


def test_a_change_of_every_users_sub_needs_a_confirmation_and_is_audited(
    db: Session, clients: ClientService
) -> None:
    client = clients.create_from(fields()).client
    db.commit()
    changes = [
        {"subject_type": "pairwise"},
        {"sector_identifier": "corp.example"},
        # Without a named sector it is the redirect URIs' host: a new host is a new sector.
        {"sector_identifier": None, "redirect_uris": ["https://new.example/cb"]},
        {"subject_type": "public"},
    ]
    for change in changes:
        wanted = dataclasses.replace(fields_of(client), **change)
        with pytest.raises(SubjectChangeUnconfirmedError):
            clients.update(client, wanted)
        clients.update(client, wanted, confirm_subject_change=True)
        db.commit()
    events = db.scalars(
        select(AuditEvent)
        .where(AuditEvent.kind == "client.subjects_changed")
        .order_by(AuditEvent.id)
    ).all()
    assert [(e.details["old"], e.details["new"]) for e in events] == [
        ({"subject_type": "public", "sector": None},
         {"subject_type": "pairwise", "sector": "app.example"}),
        ({"subject_type": "pairwise", "sector": "app.example"},
         {"subject_type": "pairwise", "sector": "corp.example"}),
        ({"subject_type": "pairwise", "sector": "corp.example"},
         {"subject_type": "pairwise", "sector": "new.example"}),
        ({"subject_type": "pairwise", "sector": "new.example"},
         {"subject_type": "public", "sector": None}),
    ]  # fmt: skip


def test_a_change_that_keeps_every_sub_needs_no_confirmation(
    db: Session, clients: ClientService
) -> None:
    client = clients.create_from(fields(subject_type="pairwise")).client
    db.commit()
    # Another path on the same host, and a new name: the same sector.
    wanted = dataclasses.replace(
        fields_of(client), name="Renamed", redirect_uris=["https://app.example/other"]
    )
    clients.update(client, wanted)
    db.commit()
    assert not db.scalars(
        select(AuditEvent).where(AuditEvent.kind == "client.subjects_changed")
    ).all()


def test_the_confirmation_is_decided_on_the_stored_registration(
    db: Session, clients: ClientService
) -> None:
    """An edit made from a copy read before another admin's confirmed change of the sector (the
    command line's, which has no version to apply to) would put the old redirect URIs back and
    change every ``sub`` again, unconfirmed and unaudited: the rule is decided on the registration
    as stored once the client's row is locked."""
    client = clients.create_from(fields(subject_type="pairwise")).client
    db.commit()
    read_before = fields_of(client)
    # The other admin's confirmed change, which this session's copy of the client does not see.
    moved = {"redirect_uris": ["https://new.example/cb"]}
    db.execute(
        update(Client).where(Client.client_id == client.client_id).values(**moved)
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    with pytest.raises(SubjectChangeUnconfirmedError):
        clients.update(client, dataclasses.replace(read_before, name="Renamed"))
    # Confirmed, it is audited as the change it makes: from the stored sector.
    clients.update(client, dataclasses.replace(read_before, name="Renamed"),
                   confirm_subject_change=True)  # fmt: skip
    [event] = db.scalars(select(AuditEvent).where(AuditEvent.kind == "client.subjects_changed"))
    assert event.details["old"] == {"subject_type": "pairwise", "sector": "new.example"}
    assert event.details["new"] == {"subject_type": "pairwise", "sector": "app.example"}

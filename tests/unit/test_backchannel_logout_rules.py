"""Back-Channel Logout 1.0 rules that need no server: which logout URIs a client may register
(section 2.2), and what a logout token holds (section 2.4)."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from idp.services import backchannel_logout, outbound_addresses
from idp.services.backchannel_logout import EVENT, logout_token_claims
from idp.services.client_fields import (
    ClientFields,
    ClientRegistrationError,
    validate_backchannel_logout_uri,
)
from idp.services.outbound_addresses import LookupTimeoutError
from idp.services.outbox import DeliveryError, UndeliverableError
from tests.support.held_resolver import held_lookups
from tests.support.logout_receiver import logout_receiver

REDIRECT = "https://rp.example/callback"


@pytest.mark.parametrize(
    "uri", ["https://rp.example/backchannel", "https://rp.example:8443/logout?tenant=a"]
)
def test_https_back_channel_logout_uri_is_accepted(uri: str) -> None:
    validate_backchannel_logout_uri(uri, development=False)


@pytest.mark.parametrize(
    ("uri", "development", "reason"),
    [
        ("https://rp.example/logout#frag", True, "fragment"),  # section 2.2
        ("http://rp.example/logout", True, "https"),  # never in clear off loopback
        ("http://127.0.0.1:8000/logout", False, "https"),  # loopback only for a loopback issuer
        ("http://localhost/logout", False, "https"),
        ("ftp://rp.example/logout", True, "https"),
        ("https://user:pw@rp.example/logout", True, "credentials"),
        ("/relative/logout", True, "absolute"),
        # RFC 1035 2.3.4: labels of 1 to 63 characters, or the resolver cannot be asked.
        ("https://rp..example/logout", True, "invalid host name"),
        (f"https://{'a' * 64}.example/logout", True, "invalid host name"),
    ],
)
def test_back_channel_logout_uri_is_refused(uri: str, development: bool, reason: str) -> None:
    with pytest.raises(ClientRegistrationError, match=reason):
        validate_backchannel_logout_uri(uri, development=development)


def test_http_loopback_back_channel_logout_uri_is_accepted_in_development_only() -> None:
    validate_backchannel_logout_uri("http://127.0.0.1:8000/logout", development=True)
    validate_backchannel_logout_uri("http://localhost:8000/logout", development=True)


def test_client_fields_check_the_back_channel_logout_uri() -> None:
    fields = ClientFields(
        name="Wiki", redirect_uris=[REDIRECT], backchannel_logout_uri="http://rp.example/logout"
    )
    with pytest.raises(ClientRegistrationError, match="back-channel logout URI must use https"):
        fields.validated(development=True)
    checked = ClientFields(
        name="Wiki",
        redirect_uris=[REDIRECT],
        backchannel_logout_uri=" https://rp.example/logout ",
        backchannel_logout_session_required=True,
    ).validated()
    assert checked.backchannel_logout_uri == "https://rp.example/logout"
    assert checked.backchannel_logout_session_required is True
    # Without a URI the flag means nothing and is not kept.
    assert (
        not ClientFields(
            name="Wiki", redirect_uris=[REDIRECT], backchannel_logout_session_required=True
        )
        .validated()
        .backchannel_logout_session_required
    )


def test_logout_token_claims_follow_section_2_4() -> None:
    now = datetime.now(UTC)
    first = logout_token_claims(issuer="https://idp.example", client_id="rp", sid="s1", sub="u1",
                                now=now)  # fmt: skip
    second = logout_token_claims(issuer="https://idp.example", client_id="rp", sid="s1", sub="u1",
                                 now=now)  # fmt: skip
    assert first["iss"] == "https://idp.example"
    assert first["aud"] == "rp"
    assert first["events"] == {EVENT: {}}
    assert first["sid"] == "s1"
    assert first["sub"] == "u1"
    assert "nonce" not in first  # section 2.4: prohibited
    assert first["iat"] == int(now.timestamp())
    assert 0 < first["exp"] - first["iat"] <= 120
    assert first["jti"] != second["jti"]


def test_an_internationalised_back_channel_logout_host_is_checked_by_idna_2008() -> None:
    validate_backchannel_logout_uri("https://fa\u00df.example/logout", development=False)
    with pytest.raises(ClientRegistrationError, match=r"invalid host name.*IDNA 2008"):
        validate_backchannel_logout_uri("https://\u2603.example/logout", development=False)


def test_a_logout_token_goes_to_the_a_labels_a_browser_would_not_idna_2003s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """http.client and the resolver encode a Unicode host by IDNA 2003: the token for
    ``fa\u00df.example`` would be sent to ``fass.example``, another name and maybe another owner.
    It is handed the A-labels instead (idp.services.host_names.ascii_host), and they are the
    name looked up (within the delivery's deadline, before the connection)."""
    connected: list[str] = []

    class Refusing:
        sock = None
        port = 443

        def __init__(self, host: str, *args: object, **kwargs: object) -> None:
            self.host = host

        def connect(self) -> None:
            connected.append(self.host)
            raise ConnectionRefusedError

        def close(self) -> None:
            pass

    monkeypatch.setattr("http.client.HTTPSConnection", Refusing)
    resolver = Resolver(monkeypatch, ["203.0.113.7"])
    with pytest.raises(DeliveryError):
        backchannel_logout.post_logout_token(
            "https://FA\u00df.example/logout", "token", development=True
        )
    assert connected == ["xn--fa-hia.example"]
    assert resolver.lookups == ["xn--fa-hia.example"]


#: Addresses no relying party has (idp.services.outbound_addresses): idp's own loopback, the
#: clouds' instance metadata, "this host", multicast, reserved.
NO_RELYING_PARTY = [
    "https://127.0.0.1/logout",
    "https://127.8.9.10:8443/logout",
    "https://[::1]/logout",
    "https://localhost/logout",
    "https://LOCALHOST./logout",
    "https://[::ffff:127.0.0.1]/logout",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fe80::1]/logout",
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://100.100.100.200/latest/meta-data/",
    "https://0.0.0.0/logout",
    "https://0.1.2.3/logout",
    "https://224.0.0.1/logout",
    "https://240.0.0.1/logout",
]


@pytest.mark.parametrize("uri", NO_RELYING_PARTY)
def test_a_back_channel_logout_uri_naming_an_address_no_relying_party_has_is_refused(
    uri: str,
) -> None:
    """Server-side request forgery (OWASP ASVS 4.0 12.6.1): whoever registers a client made a
    production idp POST to its own loopback services or the cloud's metadata service, and read
    how they answered on the client's console page. Refused at registration; a development idp
    (issuer on loopback) may still use its loopback. Private networks stay allowed: an internal
    application is a relying party like any other."""
    with pytest.raises(ClientRegistrationError, match="loopback, link-local, metadata"):
        validate_backchannel_logout_uri(uri, development=False)
    validate_backchannel_logout_uri(uri, development=True)


@pytest.mark.parametrize(
    "uri", ["https://10.1.2.3/logout", "https://192.168.0.7/logout", "https://[fd12:3456::1]/bc"]
)
def test_a_back_channel_logout_uri_on_a_private_network_is_accepted(uri: str) -> None:
    validate_backchannel_logout_uri(uri, development=False)


class Resolver:
    """``socket.getaddrinfo`` answering ``answers`` in turn (the last one for ever after), and
    ``socket.create_connection`` recording where it was asked to connect, then refusing."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []
        self.connections: list[tuple[str, int]] = []
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)
        monkeypatch.setattr(socket, "create_connection", self.create_connection)

    def getaddrinfo(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        self.lookups.append(host)
        addresses = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    def create_connection(self, address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        self.connections.append(address)
        raise ConnectionRefusedError


@pytest.mark.parametrize(
    "addresses", [["127.0.0.1"], ["169.254.169.254"], ["203.0.113.7", "127.0.0.1"]]
)
def test_a_logout_token_is_never_posted_to_a_name_resolving_where_no_relying_party_is(
    monkeypatch: pytest.MonkeyPatch, addresses: list[str]
) -> None:
    """A name passes registration whatever it resolves to: a production idp checks every address
    it resolves to at each delivery, and connects to none when one is an address no relying
    party has (the resolver would choose which one a connection takes)."""
    resolver = Resolver(monkeypatch, addresses)
    with pytest.raises(DeliveryError, match="no relying party"):
        backchannel_logout.post_logout_token(
            "https://rp.example/logout", "token", development=False
        )
    assert resolver.connections == []


def test_a_logout_token_goes_to_the_address_that_was_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name resolved to a public address when checked, and to loopback when
    resolved again to connect. The connection goes to the address checked, with no second
    lookup."""
    resolver = Resolver(monkeypatch, ["203.0.113.7"], ["127.0.0.1"])
    with pytest.raises(DeliveryError, match="could not reach"):
        backchannel_logout.post_logout_token(
            "https://rp.example:8443/logout", "token", development=False
        )
    assert resolver.lookups == ["rp.example"]
    assert resolver.connections == [("203.0.113.7", 8443)]


def test_a_host_whose_name_server_never_answers_fails_the_delivery_within_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deadline's timer cuts a socket, and there is none while the resolver is asked: a
    relying party whose name server never answers held the delivery (and every delivery after
    it) for the resolver's own timeout. The lookup gets the delivery's deadline: the delivery
    fails then, for a retry like any failure, while the resolver is still held."""
    monkeypatch.setattr(backchannel_logout, "CONNECT_TIMEOUT", 0.2)
    monkeypatch.setattr(backchannel_logout, "READ_TIMEOUT", 0.3)
    with held_lookups(monkeypatch, "rp.example") as resolver:
        with pytest.raises(DeliveryError, match=r"did not resolve within 0\.5 seconds") as failed:
            backchannel_logout.post_logout_token(
                "https://rp.example/logout", "token", development=False
            )
        assert resolver.asked.is_set()
        assert not resolver.answered.is_set()
    assert not isinstance(failed.value, UndeliverableError)


def test_past_the_bound_on_outstanding_lookups_a_delivery_fails_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lookup past its deadline is abandoned, and keeps its thread until the system's resolver
    gives up: relying parties whose name servers never answer piled up a thread per delivery.
    Past ``MAX_OUTSTANDING_LOOKUPS`` (here one, held on an event) a delivery fails at once,
    kept for a retry, and asks the resolver nothing; once the held lookup ends, its place is
    free again."""
    monkeypatch.setattr(outbound_addresses, "OUTSTANDING_LOOKUPS", threading.BoundedSemaphore(1))
    with logout_receiver() as receiver:
        with held_lookups(monkeypatch, "rp.example") as resolver:
            with pytest.raises(LookupTimeoutError):
                outbound_addresses.addresses_of("rp.example", 443, 0)  # abandoned at once
            assert resolver.asked.wait(30)
            with pytest.raises(DeliveryError, match="too many host lookups") as failed:
                backchannel_logout.post_logout_token(receiver.url("/bc"), "t", development=True)
            assert receiver.deliveries == []
            assert not isinstance(failed.value, UndeliverableError)
        for thread in threading.enumerate():
            if thread.name == outbound_addresses.LOOKUP_THREAD:
                thread.join(30)
        backchannel_logout.post_logout_token(receiver.url("/bc"), "t", development=True)
        assert receiver.tokens("/bc") == ["t"]


class SilentAddresses:
    """A clock the test moves, and ``socket.create_connection`` to addresses that never answer
    (each attempt takes its whole timeout on that clock) or refuse at once (``refusing``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, refusing: frozenset[str]) -> None:
        self.now = 1000.0
        self.refusing = refusing
        self.attempts: list[tuple[str, float]] = []
        monkeypatch.setattr(backchannel_logout, "monotonic", lambda: self.now)
        monkeypatch.setattr(socket, "create_connection", self.create_connection)

    def create_connection(self, address: tuple[str, int], timeout: float, *args: Any) -> Any:
        self.attempts.append((address[0], timeout))
        if address[0] in self.refusing:
            self.now += 0.5
            raise ConnectionRefusedError
        self.now += timeout
        raise TimeoutError("timed out")


@pytest.mark.parametrize(
    ("refusing", "lookup_takes", "attempts"),
    [
        (frozenset(), 0.0, [("203.0.113.1", 3.0)]),
        (frozenset({"203.0.113.1"}), 0.0, [("203.0.113.1", 3.0), ("203.0.113.2", 2.5)]),
        # The lookup took 6.5 of the delivery's 8 seconds: 1.5 are left to connect.
        (frozenset({"203.0.113.1"}), 6.5, [("203.0.113.1", 1.5), ("203.0.113.2", 1.0)]),
    ],
)
def test_the_connection_attempts_to_a_names_addresses_share_one_deadline(
    monkeypatch: pytest.MonkeyPatch,
    refusing: frozenset[str],
    lookup_takes: float,
    attempts: list[tuple[str, float]],
) -> None:
    """Development (the issuer on loopback) tries each address a name resolves to, as
    ``socket.create_connection`` would: each was given the whole connect timeout, and the
    delivery's deadline cuts no socket before one connects, so three silent addresses held the
    delivery three times as long. The attempts share the one timeout, within what the lookup
    left of the delivery's deadline: what one took, the next has not; none is tried once it is
    spent."""
    resolver = Resolver(monkeypatch, ["203.0.113.1", "203.0.113.2", "203.0.113.3"])
    addresses = SilentAddresses(monkeypatch, refusing)

    def slow_lookup(*args: Any, **kwargs: Any) -> list[Any]:
        addresses.now += lookup_takes
        return resolver.getaddrinfo(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    with pytest.raises(DeliveryError, match="could not reach"):
        backchannel_logout.post_logout_token("http://rp.example/bc", "t", development=True)
    assert addresses.attempts == attempts

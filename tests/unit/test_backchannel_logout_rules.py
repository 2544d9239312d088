"""Back-Channel Logout 1.0 rules that need no server: which logout URIs a client may register
(section 2.2), and what a logout token holds (section 2.4)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from idp.services import backchannel_logout
from idp.services.backchannel_logout import EVENT, logout_token_claims
from idp.services.client_fields import (
    ClientFields,
    ClientRegistrationError,
    validate_backchannel_logout_uri,
)
from idp.services.outbox import DeliveryError

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
    It is handed the A-labels instead (idp.services.host_names.ascii_host)."""
    connected: list[str] = []

    class Refusing:
        sock = None

        def __init__(self, host: str, *args: object, **kwargs: object) -> None:
            self.host = host

        def connect(self) -> None:
            connected.append(self.host)
            raise ConnectionRefusedError

        def close(self) -> None:
            pass

    monkeypatch.setattr("http.client.HTTPSConnection", Refusing)
    with pytest.raises(DeliveryError):
        backchannel_logout.post_logout_token("https://FA\u00df.example/logout", "token")
    assert connected == ["xn--fa-hia.example"]

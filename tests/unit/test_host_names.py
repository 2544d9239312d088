"""The one ASCII form of a registered host (idp.services.host_names.ascii_host): IDNA 2008 by
UTS 46 non-transitional processing, as browsers and the WHATWG URL Standard map a host, never
Python's IDNA 2003 codec."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

from idp.services.client_fields import (
    ClientRegistrationError,
    validate_backchannel_logout_uri,
    validate_redirect_uri,
)
from idp.services.host_names import UnencodableHostError, ascii_host
from idp.web.headers import a_label_location


def test_sharp_s_is_kept_as_browsers_keep_it_not_mapped_to_ss() -> None:
    """IDNA 2003 (Python's ``idna`` codec) makes ``fa\u00df.de`` ``fass.de``, another name; a
    browser redirects to ``xn--fa-hia.de``. So do the final sigma and the joiners (UTS 46
    deviation characters)."""
    assert ascii_host("fa\u00df.de") == "xn--fa-hia.de"
    assert ascii_host("fa\u00df.de") != "fa\u00df.de".encode("idna").decode()  # fass.de
    assert ascii_host("\u03c3\u03bf\u03c6\u03bf\u03c2.example") == "xn--0xaajbq.example"


@pytest.mark.parametrize(
    "host",
    [
        "B\u00fccher.example",
        "B\u00dcCHER.EXAMPLE.",
        "\uff22\u00dc\uff23\uff28\uff25\uff32.example",
        "b\u00fccher\u3002example",
        "b\u00fccher.example\u3002",
    ],
)
def test_a_mixed_case_unicode_host_is_its_lowercase_a_labels(host: str) -> None:
    """Case, full-width letters and ideographic full stops fold as UTS 46 folds them; one
    trailing dot (RFC 1034 3.1) is taken off."""
    assert ascii_host(host) == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("xn--fa-hia.de", "xn--fa-hia.de"),
        ("XN--Bcher-KVA.Example.", "xn--bcher-kva.example"),
        ("App.Example", "app.example"),
        ("a_b.example", "a_b.example"),
    ],
)
def test_an_ascii_host_or_a_label_given_directly_is_only_lowercased(
    host: str, expected: str
) -> None:
    """An A-label is the host already: the same sector as its U-label; an ASCII host keeps the
    form it always had, so no stored sector changes."""
    assert ascii_host(host) == expected
    assert ascii_host(host, strict=False) == expected


@pytest.mark.parametrize(
    "host",
    [
        "\u2603.example",
        "a_b.b\u00fccher.example",
        "-b\u00fccher.example",
        "a..b\u00fc.example",
        "a\u200db\u00fc.example",
        "x" * 64 + ".b\u00fccher.example",
    ],
)
def test_a_host_idna_refuses_is_refused_with_a_clear_message(host: str) -> None:
    """A symbol, an ASCII label outside letters, digits and hyphens beside a U-label, a
    leading hyphen, an empty label, a joiner out of context, an overlong label."""
    with pytest.raises(UnencodableHostError, match=r"not a valid internationalised host name"):
        ascii_host(host)


def test_not_strict_a_refused_host_keeps_the_a_labels_it_had() -> None:
    """What a client registered before holds: the browsers' A-labels, the IDNA 2003 rule's too
    for these, so its sector does not move."""
    assert ascii_host("\u2603.Example.", strict=False) == "xn--n3h.example"
    assert ascii_host("a_b.b\u00fccher.example", strict=False) == "a_b.xn--bcher-kva.example"


@pytest.mark.parametrize(
    "check",
    [
        validate_redirect_uri,
        lambda uri: validate_redirect_uri(uri, what="post-logout redirect URI"),
        lambda uri: validate_backchannel_logout_uri(uri, development=False),
    ],
)
def test_every_registered_uri_on_a_host_idna_refuses_is_refused(
    check: Callable[[str], None],
) -> None:
    """One rule for every URI a client registers (idp.services.client_fields): an
    internationalised host is one idp can redirect or connect to by its A-labels; one with none
    is refused with the reason, a public client's as a pairwise one's."""
    check("https://fa\u00df.example/cb")
    check("https://B\u00fccher.example:8443/cb")
    with pytest.raises(ClientRegistrationError, match=r"invalid host name.*IDNA 2008"):
        check("https://\u2603.example/cb")


@pytest.mark.parametrize(
    ("location", "sent"),
    [
        ("https://fa\u00df.example/cb?code=c", "https://xn--fa-hia.example/cb?code=c"),
        ("https://FA\u00df.example.:8443/cb", "https://xn--fa-hia.example.:8443/cb"),
        ("https://fa\u00df.example\u3002/cb", "https://xn--fa-hia.example./cb"),
        ("https://\u2603.example/cb", "https://xn--n3h.example/cb"),  # registered before
        ("https://app.example/cb?x=\u00fc", "https://app.example/cb?x=%C3%BC"),
        ("/login?next=\u00fc", "/login?next=%C3%BC"),
    ],
)
def test_a_location_names_the_a_labels_a_browser_goes_to(location: str, sent: str) -> None:
    """idp.web.headers.a_label_location before Werkzeug's IDNA 2003 (``fass.example``): the
    host only, port, path, query and trailing dot as they were."""
    response = Response(status=302, headers={"Location": location})
    a_label_location(response)
    environ = EnvironBuilder(base_url="https://idp.example").get_environ()
    assert response.get_wsgi_headers(environ)["Location"] == sent

"""``idp serve --host``: what the server listens on (idp.serving ``listening_address``). granian
takes an IP address only; a name is resolved, to its IPv4 address first, as a bind of the name
on an IPv4 socket does."""

from __future__ import annotations

import pytest

from idp.serving import listening_address


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "::", "::1", "192.0.2.7"])  # noqa: S104
def test_an_address_is_listened_on_as_given(address: str) -> None:
    assert listening_address(address) == address


def test_localhost_is_its_ipv4_address() -> None:
    # /etc/hosts names both 127.0.0.1 and ::1 localhost on Debian; the IPv4 one is taken first.
    assert listening_address("localhost") == "127.0.0.1"


def test_the_empty_host_is_every_ipv4_address() -> None:
    assert listening_address("") == "0.0.0.0"  # noqa: S104 - a comparison

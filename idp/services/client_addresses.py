"""The client address a per-address count is kept under (docs/security.md, "Attempt counters,
lockouts and sign-up limits"): every per-address budget and the sign-in failures per address
count one IPv6 host as one address, whichever of its addresses a request comes from."""

from __future__ import annotations

import ipaddress

#: An IPv6 client holds a whole /64 (RFC 4291 2.5.1, RFC 7421): it is one address for budgets.
IPV6_BUDGET_PREFIX = 64


def budget_address(address: str) -> str:
    """The key a client address is budgeted under: itself for IPv4, its /64 for IPv6 (one host
    can pick any of 2**64 addresses there)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_BUDGET_PREFIX), strict=False))
    return str(parsed)

"""The one ASCII form of a host name that a client registers (a redirect URI's host, a sector host,
a back-channel logout URI's host), the form a browser sends a redirect to and idp connects to.

An internationalised name (RFC 5890 2.3.2.1: a U-label and its A-label are one name) is mapped
and encoded by UTS 46 non-transitional processing, as browsers and the WHATWG URL Standard do
(IDNA 2008 semantics): ``faß.de`` is ``xn--fa-hia.de``, a name of its own. Python's built-in
``idna`` codec implements IDNA 2003 instead, which maps ``faß.de`` to ``fass.de``, another name
and perhaps another owner: idp never encodes a host with it, and never hands a non-ASCII host to
``http.client`` or ``socket``, which would.
"""

from __future__ import annotations

import idna

from idp.errors import DomainError


class UnencodableHostError(DomainError):
    """A host name that IDNA 2008 (UTS 46) gives no ASCII form."""


def ascii_host(host: str, *, strict: bool = True) -> str:
    """``host`` lowercase, one trailing dot taken off (RFC 1034 3.1: it names the same host),
    a non-ASCII name as its A-labels (UTS 46 non-transitional, the browsers' mapping: case,
    full-width letters and dots folded; ``ß``, ``ς`` and the joiners kept). A host that is
    already ASCII is only lowercased and loses its trailing dot, as it always did: no stored
    sector (idp.services.subjects) changes.

    A name the ``idna`` package refuses (a symbol or a character IDNA 2008 disallows, a bad
    hyphen or joiner, an empty or overlong label) raises ``UnencodableHostError`` (``strict``,
    every registration). Not strict, for what a client registered before this rule holds: the
    UTS 46 mapping and Punycode without IDNA 2008's validity checks, which is what a browser
    sends and the A-label the older IDNA 2003 rule gave such a name (``☃.example`` is
    ``xn--n3h.example``), so that client's sector does not change; a name not even that maps
    comes back as written (lowercase, non-ASCII)."""
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if host.isascii():
        return host
    try:
        encoded = idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as error:
        if strict:
            raise UnencodableHostError(
                f"{host!r} is not a valid internationalised host name (IDNA 2008, UTS 46): {error}"
            ) from None
        return _mapped_leniently(host)
    # A full-width or ideographic full stop at the end is mapped to the trailing dot.
    return encoded.removesuffix(".")


def _mapped_leniently(host: str) -> str:
    try:
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
        labels = [
            label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
            for label in mapped.removesuffix(".").split(".")
        ]
    except (idna.IDNAError, UnicodeError):
        return host
    return ".".join(labels)

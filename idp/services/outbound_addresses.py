"""Where idp itself connects to, server to server: a relying party's back-channel logout endpoint
(idp.services.backchannel_logout). An admin (or an admin API token) registers that URI, and idp
POSTs to it from inside the deployment's network; the console then shows how the endpoint
answered. Without a rule, that is a request from the idp host to anything it can reach (server-
side request forgery, OWASP ASVS 4.0 12.6.1): its own loopback services, a cloud's instance
metadata (169.254.169.254, fd00:ec2::254), and the console's "could not reach" or "answered HTTP
404" a scan of them.

A relying party is never on those: a production idp (its issuer off loopback) refuses a URI whose
host is, or resolves to, a loopback, link-local, unspecified, multicast or reserved address, at
registration for an address literal (idp.services.client_fields) and at each delivery for a name,
which then connects to the very address it checked (no second lookup a DNS answer could change
in between). Private networks (RFC 1918, RFC 4193) stay allowed: an internal application is a
relying party like any other. A development idp (on loopback) may reach its own loopback
(Back-Channel Logout 1.0 2.2: ``http`` only there, idp.services.client_fields).

The lookup itself is bounded (``addresses_of``): the resolver's own timeout (a name server that
never answers: seconds per server, per try) would otherwise hold the delivery far beyond the
deadline its conversation is given (docs/security.md, "Back-channel logout"). A lookup past its
deadline is abandoned, not ended, and keeps its thread until the resolver gives up: so are the
lookups outstanding at once in the process (``MAX_OUTSTANDING_LOOKUPS``), and past them a
delivery fails at once, kept for a retry, instead of adding a thread.
"""

from __future__ import annotations

import ipaddress
import socket
import threading

#: "This network" (RFC 791, RFC 1122 3.2.1.3): 0.0.0.0 is connected to as the local host.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
#: Instance metadata services outside the link-local ranges: AWS's over IPv6 (in the unique
#: local range, RFC 4193) and Alibaba Cloud's (in the shared address space, RFC 6598).
_METADATA = frozenset(ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200"))


#: Lookups this process has outstanding at once, those abandoned at their deadline included:
#: each holds a thread until the system's resolver gives up (its timeout and attempts, per name
#: server), so relying parties whose name servers never answer, tried again and again, would
#: otherwise pile up threads without end. Four times the conversations a delivery run holds
#: (idp.services.outbox.PARALLEL_DELIVERIES): room for a few abandoned at each.
MAX_OUTSTANDING_LOOKUPS = 16
OUTSTANDING_LOOKUPS = threading.BoundedSemaphore(MAX_OUTSTANDING_LOOKUPS)
#: The name of a lookup's thread (docs/operations.md).
LOOKUP_THREAD = "idp-outbound-lookup"


class ForbiddenAddressError(Exception):
    """A host that is, or resolves to, an address no relying party has."""


class LookupTimeoutError(TimeoutError):
    """A host whose lookup did not finish within the time it was given."""


class TooManyLookupsError(Exception):
    """No lookup started: ``MAX_OUTSTANDING_LOOKUPS`` are outstanding already."""


def never_a_relying_party(address: str) -> bool:
    """Is ``address`` (an IP address literal) one a production idp never connects to: loopback,
    link-local (169.254.169.254, the clouds' metadata service) and the other metadata addresses,
    unspecified or "this network", multicast, reserved; an IPv4-mapped IPv6 address as the IPv4
    address it is."""
    parsed = ipaddress.ip_address(address.split("%", 1)[0])  # no IPv6 zone (RFC 6874)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if isinstance(parsed, ipaddress.IPv4Address) and parsed in _THIS_NETWORK:
        return True
    return (
        parsed in _METADATA
        or parsed.is_loopback
        or parsed.is_link_local
        or parsed.is_unspecified
        or parsed.is_multicast
        or parsed.is_reserved
    )


def forbidden_literal(host: str) -> bool:
    """Is ``host`` (a URL's ``hostname``, brackets removed) an IP address literal no relying
    party has (``never_a_relying_party``)? False for a name."""
    try:
        return never_a_relying_party(host)
    except ValueError:
        return False


def addresses_of(host: str, port: int, seconds: float) -> list[str]:
    """The addresses ``host`` (its A-labels) resolves to, in the resolver's order, looked up
    within ``seconds``. Raises ``LookupTimeoutError`` when the lookup takes longer (it goes on,
    abandoned, on a daemon thread of its own until the resolver gives up: ``getaddrinfo`` cannot
    be interrupted), ``TooManyLookupsError`` at once when ``MAX_OUTSTANDING_LOOKUPS`` are
    outstanding, ``OSError`` when the host does not resolve."""
    slots = OUTSTANDING_LOOKUPS
    if not slots.acquire(blocking=False):
        raise TooManyLookupsError(f"{MAX_OUTSTANDING_LOOKUPS} host lookups are outstanding")
    answer: list[list[str] | BaseException] = []
    done = threading.Event()

    def look_up() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            answer.append([str(info[4][0]) for info in infos])
        except BaseException as error:  # handed to the waiting thread, which raises it
            answer.append(error)
        finally:
            slots.release()  # when the resolver answered, abandoned or not
            done.set()

    # A thread of its own, not a pool's: an abandoned lookup must hold no worker another
    # delivery waits for, nor the interpreter's exit (a pool's threads are joined then).
    try:
        threading.Thread(target=look_up, name=LOOKUP_THREAD, daemon=True).start()
    except BaseException:
        slots.release()
        raise
    if not done.wait(seconds):
        raise LookupTimeoutError(f"{host} did not resolve within {seconds:g} seconds")
    [found] = answer
    if isinstance(found, BaseException):
        raise found
    if not found:
        raise OSError(f"{host} has no address")
    return found


def vetted_address(host: str, port: int, seconds: float) -> str:
    """The address to connect to for ``host`` (its A-labels), resolved once within ``seconds``
    (``addresses_of``): the first of its addresses, after every one of them was checked. Raises
    ``ForbiddenAddressError`` when any is an address no relying party has (a name resolving to
    both is refused whole: which one a connection would take is the resolver's choice),
    ``LookupTimeoutError`` or ``OSError`` when it does not resolve in time."""
    found = addresses_of(host, port, seconds)
    refused = [address for address in found if never_a_relying_party(address)]
    if refused:
        raise ForbiddenAddressError(f"{host} resolves to {refused[0]}")
    return found[0]

"""Email addresses: the one parser and normaliser every entry point uses (CLI, admin console,
portal, sign-up, invites, login links, recovery).

An address is a single RFC 5322 3.4.1 ``addr-spec`` with a dot-atom local part, parsed by
``email-validator``: no display name, angle brackets, quoted local part, comment, list (comma) or
control character (CR/LF would inject headers). Deliverability (DNS) is not checked: an address is
proved by the mail it receives, and a request must not wait for DNS.

Development installs use ``admin@localhost`` (``idp init``) and tests use ``*.test`` addresses.
Those domains are special-use names (RFC 6761 6.2 "test.", 6.3 "localhost.") that
``email-validator`` refuses; they are accepted only when ``allow_local_domains`` is true, which
callers set from ``not settings.production``. A production install refuses them.
"""

from __future__ import annotations

from idp.errors import DomainError

#: RFC 5321 4.5.3.1.3: a path is at most 256 octets, so an address at most 254; the column is 320.
MAX_LENGTH = 254
#: RFC 6761 special-use names a development install may use.
LOCAL_DOMAINS = ("localhost", "test")
#: A placeholder of the same shape that ``email-validator`` accepts in its test environment
#: (RFC 6761 6.2 keeps "test." out of the global DNS), used to check a local domain's syntax.
_LOCAL_STAND_IN = "test"
INVALID_MESSAGE = "Enter an email address, like name@example.com."


class EmailAddressError(DomainError):
    """Not a single, plain email address; the message is safe to show."""

    def __init__(self, message: str = INVALID_MESSAGE) -> None:
        super().__init__(message)


def _local_domain(domain: str) -> str | None:
    """The special-use name a development domain ends with, or None."""
    lowered = domain.lower()
    for name in LOCAL_DOMAINS:
        if lowered == name or lowered.endswith("." + name):
            return name
    return None


def parse_email_address(value: str, *, allow_local_domains: bool) -> str:
    """The normalised address (lower case, IDNA/Unicode-normalised by ``email-validator``) or
    ``EmailAddressError``. Surrounding spaces are forgiven; any control character is not."""
    if not isinstance(value, str) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise EmailAddressError()
    candidate = value.strip(" ")
    if not candidate or len(candidate) > MAX_LENGTH:
        raise EmailAddressError()
    local_part, at, domain = candidate.rpartition("@")
    special = _local_domain(domain) if at else None
    checked = candidate
    if special is not None:
        if not allow_local_domains:
            raise EmailAddressError(
                "Enter an address on a public domain: this one is for development only."
            )
        # Check the local part and the domain's labels with the stand-in's suffix.
        checked = f"{local_part}@{domain[: len(domain) - len(special)]}{_LOCAL_STAND_IN}"
    # Imported at the first address parsed: its syntax tables are compiled regular expressions,
    # about 20 ms of every process's start, and most ``idp`` commands parse no address.
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(
            checked,
            check_deliverability=False,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_empty_local=False,
            test_environment=special is not None,
            globally_deliverable=special is None,
        )
    except EmailNotValidError as error:
        raise EmailAddressError() from error
    normalised = result.normalized
    if special is not None:
        normalised = f"{result.local_part}@{domain}"
    normalised = normalised.lower()
    if len(normalised) > MAX_LENGTH:
        raise EmailAddressError()
    return normalised


def normalise_email(value: str) -> str:
    """The look-up form of an address someone typed (sign-in, recovery, rate-limit keys): the
    parser's normal form when it parses, else the space-trimmed lower-case text (which no address
    stored through ``parse_email_address`` equals, so a malformed address finds nobody).

    Plain ASCII without an IDNA label (``xn--``) comes out as that same trimmed lower-case text
    either way (the parser's normal form of such an address is its lower case), so it skips the
    parser: every sign-in normalises what was typed (tests/unit/test_email_normalise.py compares
    the two)."""
    if isinstance(value, str) and value.isascii():
        plain = value.strip(" ").lower()
        if "xn--" not in plain:
            return plain
    try:
        return parse_email_address(value, allow_local_domains=True)
    except EmailAddressError:
        return value.strip(" ").lower() if isinstance(value, str) else ""

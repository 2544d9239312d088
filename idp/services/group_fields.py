"""What an admin may give a group and a claim map, and the rules of each (docs/admins.md,
"Groups"): a group's name, its texts, and a claim map's claim, group and value. Pure checks, no
database: idp.services.groups applies them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from idp.errors import DomainError
from idp.services.claim_names import CLAIM_NAME, RESERVED_CLAIMS
from idp.services.display_names import BIDI_CONTROLS

#: A group's name is a slug (lowercase letters, digits, ``-``, ``_``, ``.``; at most 64): it is
#: what relying parties match in the ``groups`` claim, so it must survive every RP's config file.
GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MAX_DISPLAY_NAME = 200
MAX_DESCRIPTION = 1000
MAX_CLAIM_VALUE = 200
#: The most users one change of members names (the console's list of addresses, the CLI's, the
#: admin API's ``emails``): one statement reads them all, and a database binds only so many
#: parameters (PostgreSQL 65,535): past that the read fails as if the database were down.
MAX_MEMBERS_AT_ONCE = 200
#: How many unknown addresses a refusal names, and how much of each: the console shows it after a
#: redirect, from the signed session cookie, which a browser drops past 4,096 bytes (RFC 6265
#: 6.1), losing the CSRF token it carries with it.
NAMED_UNKNOWN = 5
NAMED_LENGTH = 80


class GroupError(DomainError):
    """The request is invalid; the message says why and nothing was changed."""


@dataclass(frozen=True)
class ClaimMapEntry:
    """Members of ``group`` get ``value`` in the claim ``claim``."""

    claim: str
    group: str
    value: str

    def __str__(self) -> str:
        return f"{self.claim}:{self.group}={self.value}"


def shown(value: str) -> str:
    """``value`` as a refusal names it: quoted, and cut to ``NAMED_LENGTH`` characters (the
    console shows refusals from the session cookie, ``NAMED_UNKNOWN``)."""
    cut = value if len(value) <= NAMED_LENGTH else value[:NAMED_LENGTH] + "…"
    return repr(cut)


def validate_name(name: str) -> str:
    value = name.strip()
    if not GROUP_NAME.fullmatch(value):
        raise GroupError(
            f"invalid group name {shown(name)}: use 1 to 64 lowercase letters, digits, '-', '_' or "
            "'.', starting with a letter or digit"
        )
    return value


def text_field(value: str, limit: int, label: str) -> str:
    value = value.strip()
    if len(value) > limit:
        raise GroupError(f"the {label} is longer than {limit} characters")
    # Every control (Unicode general category Cc: C0, DEL and C1) and directional formatting
    # character (Unicode Standard Annex 9) is refused, as a person's name keeps none
    # (idp.services.display_names): a group's texts reach the console and, as claim values,
    # relying parties, where "\u202enimda" reads as "admin".
    if any(c in BIDI_CONTROLS or unicodedata.category(c) == "Cc" for c in value):
        raise GroupError(f"the {label} must not contain control characters")
    return value


def parse_claim_map(text: str) -> ClaimMapEntry:
    """``CLAIM:GROUP=VALUE``, as the ``--claim-map`` option and the console's lines take it."""
    head, equals, value = text.partition("=")
    claim, colon, group = head.partition(":")
    if not equals or not colon:
        raise GroupError(f"a claim map is CLAIM:GROUP=VALUE, not {shown(text)}")
    return ClaimMapEntry(claim=claim.strip(), group=group.strip(), value=value.strip())


def validate_claim_name(claim: str) -> str:
    if claim in RESERVED_CLAIMS:
        raise GroupError(
            f"the claim {shown(claim)} is a registered JWT or OpenID Connect claim (or idp's own): "
            "a map may not replace it"
        )
    if not CLAIM_NAME.fullmatch(claim):
        raise GroupError(
            f"invalid claim name {shown(claim)}: 1 to 64 lowercase letters, digits or '_', "
            "starting with a letter"
        )
    return claim


def check_member_count(addresses: list[str]) -> None:
    """One change names at most ``MAX_MEMBERS_AT_ONCE`` users (distinct addresses)."""
    if len(addresses) > MAX_MEMBERS_AT_ONCE:
        raise GroupError(f"name at most {MAX_MEMBERS_AT_ONCE} users at once")


def unknown_users(unknown: list[str]) -> GroupError:
    """The refusal naming the first few of the ``unknown`` addresses, each cut short."""
    named = ", ".join(
        a if len(a) <= NAMED_LENGTH else a[:NAMED_LENGTH] + "…" for a in unknown[:NAMED_UNKNOWN]
    )  # unquoted, as the refusal always named them
    more = len(unknown) - NAMED_UNKNOWN
    return GroupError(f"no user {named}" + (f" (and {more} more)" if more > 0 else ""))

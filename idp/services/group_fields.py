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


def validate_name(name: str) -> str:
    value = name.strip()
    if not GROUP_NAME.fullmatch(value):
        raise GroupError(
            f"invalid group name {name!r}: use 1 to 64 lowercase letters, digits, '-', '_' or "
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
        raise GroupError(f"a claim map is CLAIM:GROUP=VALUE, not {text!r}")
    return ClaimMapEntry(claim=claim.strip(), group=group.strip(), value=value.strip())


def validate_claim_name(claim: str) -> str:
    if claim in RESERVED_CLAIMS:
        raise GroupError(
            f"the claim {claim!r} is a registered JWT or OpenID Connect claim (or idp's own): "
            "a map may not replace it"
        )
    if not CLAIM_NAME.fullmatch(claim):
        raise GroupError(
            f"invalid claim name {claim!r}: 1 to 64 lowercase letters, digits or '_', starting "
            "with a letter"
        )
    return claim

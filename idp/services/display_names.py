"""Names people choose for themselves and their passkeys, as idp keeps and shows them."""

from __future__ import annotations

import unicodedata

#: Unicode's explicit directional formatting characters (Unicode Standard Annex 9, 2.1 to
#: 2.7): embeddings, overrides, isolates and the marks. In a name they reorder what follows, so
#: that a name can read as another ("\u202enimda" shows as "admin") on the admin console, the
#: activity page and in the ``name`` claim a relying party shows.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _kept(ch: str) -> bool:
    """Whether ``ch`` stays in a name. Controls (Unicode general category Cc: C0, DEL, C1) do
    not: a console, a log viewer or a relying party's terminal acts on them (ESC starts a
    sequence that recolours or rewrites the line), and RFC 8264 9.12 disallows them in
    free-form text (PRECIS FreeformClass). Those that are white space (tab, line breaks) part
    words, as a space does, and go with the white space."""
    if ch in BIDI_CONTROLS:
        return False
    return ch.isspace() or unicodedata.category(ch) != "Cc"


def display_name(text: str | None, limit: int) -> str:
    """``text`` on one line (each run of white space one space), without directional or other
    controls, at most ``limit`` characters; empty when nothing of it would be visible (only
    format characters such as zero-width spaces, or separators), as an empty field is."""
    kept = "".join(ch for ch in (text or "") if _kept(ch))
    name = " ".join(kept.split())[:limit]
    if not any(unicodedata.category(ch)[0] not in "CZ" for ch in name):
        return ""
    return name

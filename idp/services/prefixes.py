"""A prefix of a text column as a range of it (``column >= prefix AND column < bound``), which
both databases read off an index on the column, as they do not a ``LIKE`` (SQLAlchemy's
``startswith`` sends ``LIKE ? || '%' ESCAPE '/'``): SQLite only for a plain pattern and, its
LIKE ignoring ASCII case, an index in NOCASE ("The LIKE Optimization"); PostgreSQL only for a
pattern known when planning, in the "C" collation. The range is the prefix exactly, case
included on both databases, when the column compares by code point: SQLite's BINARY collation
does (memcmp of UTF-8, whose byte order is the code points', RFC 3629 1), and so does
PostgreSQL's "C" collation, which such a column is declared with (idp.models.audit)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func
from sqlalchemy.orm import InstrumentedAttribute

#: The last code point (Unicode 15.0 2.4), and the surrogates, which no stored text holds
#: (RFC 3629 3: UTF-8 has no form for them).
LAST_CODE_POINT = 0x10FFFF
SURROGATES = range(0xD800, 0xE000)


def bound_after(prefix: str) -> str | None:
    """The least text after every text that starts with ``prefix``: the prefix with its last
    character moved on by one code point ('admin.' -> 'admin/'), past the surrogates, a last
    U+10FFFF dropped first; None when there is none (an empty prefix, or all U+10FFFF)."""
    text = prefix
    while text:
        following = ord(text[-1]) + 1
        if following in SURROGATES:
            following = SURROGATES.stop
        if following <= LAST_CODE_POINT:
            return text[:-1] + chr(following)
        text = text[:-1]
    return None


def starts_with(
    column: InstrumentedAttribute[str], prefix: str, *, as_range: bool = True
) -> list[ColumnElement[bool]]:
    """The conditions that pick the rows whose ``column`` starts with ``prefix``: none for an
    empty prefix, which every text starts with. Without ``as_range``, a test of each row's
    first characters, which no index serves: for a read that walks another index and should
    keep to it."""
    if not prefix:
        return []
    if not as_range:
        return [func.substr(column, 1, len(prefix)) == prefix]
    bound = bound_after(prefix)
    if bound is None:
        return [column >= prefix]
    return [column >= prefix, column < bound]

"""Keyset pagination with opaque cursors, for the admin API's lists and the console's.

A page is read after the last key of the previous one (``WHERE key > :last ORDER BY key``), on a
unique column, so rows written or deleted meanwhile neither repeat nor shift a page the way an
OFFSET would. The cursor is that key, base64url-encoded JSON: opaque to clients (docs/api.md),
never trusted beyond being a key to compare with.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, select, tuple_, union
from sqlalchemy.orm import InstrumentedAttribute, Session

from idp.errors import DomainError

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
#: The rows of a page of the console's lists (clients, groups, a group's members, API tokens):
#: a bounded page however many there are.
CONSOLE_PAGE = 100
#: A cursor is a short key; anything longer is not one of ours.
MAX_CURSOR_LENGTH = 512

T = TypeVar("T")


class CursorError(DomainError):
    """The cursor is not one this service issued."""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    #: None on the last page.
    next_cursor: str | None
    #: The page before this one, read backwards from its first row (the console's "Newer" and
    #: "Previous" links); None on the first page. The admin API does not use it.
    previous_cursor: str | None = None


#: A cursor's key: one column's value, or a list of them for a key of several columns.
Key = str | int | list[str | int]
#: Which side of the key a cursor reads: the rows after it, or (backwards) those before it.
_SIDES = ("after", "before")


def encode_cursor(key: Key, side: str = "after") -> str:
    raw = json.dumps({side: key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(cursor: str, kinds: tuple[type[str] | type[int], ...]) -> tuple[str, list[Any]]:
    """The side and the key's values, one per column of ``kinds``."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise CursorError("the cursor is not valid")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        found = json.loads(raw)
        ((side, key),) = found.items()
    except (binascii.Error, ValueError, TypeError, KeyError, AttributeError):
        raise CursorError("the cursor is not valid") from None
    values = key if len(kinds) > 1 and isinstance(key, list) else [key]
    if side not in _SIDES or len(values) != len(kinds):
        raise CursorError("the cursor is not valid")
    for value, kind in zip(values, kinds, strict=True):
        _check(value, kind)
    return side, values


def _check(key: Any, kind: type[str] | type[int]) -> None:
    # bool is an int in Python; a key is never one. An integer key is a row id: one the
    # databases cannot hold (64-bit signed) is refused here, not by the database (a 500).
    if not isinstance(key, kind) or isinstance(key, bool):
        raise CursorError("the cursor is not valid")
    if isinstance(key, int) and not -(2**63) <= key < 2**63:
        raise CursorError("the cursor is not valid")
    if isinstance(key, str) and ("\x00" in key or not _has_utf8_form(key)):
        raise CursorError("the cursor is not valid")


def _has_utf8_form(text: str) -> bool:
    """JSON may spell a lone surrogate (RFC 8259 8.2), which has no UTF-8 form (RFC 3629 3):
    neither database can be sent it, so no key of ours is one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def keyset_page(
    db: Session,
    statement: Select[Any],
    key: InstrumentedAttribute[Any] | tuple[InstrumentedAttribute[Any], ...],
    *,
    cursor: str | None,
    limit: int,
    descending: bool = False,
    union_of: Sequence[Select[Any]] = (),
) -> Page[Any]:
    """One page of ``statement``'s rows ordered by ``key``: a unique column, or columns unique
    together (a name and then a unique id, for a list an admin reads by name). A ``before``
    cursor reads the page before its key, backwards, and gives it in the list's own order: one
    statement either way, whichever page it is.

    ``union_of``: the list's keys as a union of parts, each read in the key's order off an index
    of its own (an OR over two columns, each with an index on it then the key): the key column
    alone, a statement per part. Each part is read from the cursor for at most a page, the parts
    merged, each key once, and the page is ``statement``'s rows of the first keys; so a page
    costs a page per part, however many rows the parts hold, where the OR's rows, all of them,
    would be read and sorted for each page."""
    if not 1 <= limit <= MAX_LIMIT:
        raise CursorError(f"limit must be between 1 and {MAX_LIMIT}")
    columns = key if isinstance(key, tuple) else (key,)
    kinds = tuple(int if c.type.python_type is int else str for c in columns)
    side, last = _decode(cursor, kinds) if cursor else ("after", None)
    backwards = side == "before"
    # The direction this read walks the key: the list's own, or against it for a "before".
    down = descending != backwards
    row_key = tuple_(*columns) if len(columns) > 1 else columns[0]
    order = [c.desc() if down else c.asc() for c in columns]

    def seek(part: Select[Any]) -> Select[Any]:
        if last is not None:
            bound = tuple_(*last) if len(columns) > 1 else last[0]
            part = part.where(row_key < bound if down else row_key > bound)
        return part.order_by(*order).limit(limit + 1)

    if union_of:
        (column,) = columns
        read = _first_of_union(statement, column, map(seek, union_of), down, limit)
    else:
        read = seek(statement)
    rows = list(db.scalars(read))
    more = len(rows) > limit
    rows = rows[:limit]

    def key_of(row: Any) -> Key:
        values = [getattr(row, c.key) for c in columns]
        return values if len(columns) > 1 else values[0]

    if backwards:
        rows.reverse()
        # The page this one was read back from follows it.
        following = encode_cursor(key_of(rows[-1])) if rows else None
        before = encode_cursor(key_of(rows[0]), "before") if more else None
        return Page(items=rows, next_cursor=following, previous_cursor=before)
    before = encode_cursor(key_of(rows[0]), "before") if last is not None and rows else None
    following = encode_cursor(key_of(rows[-1])) if more else None
    return Page(items=rows, next_cursor=following, previous_cursor=before)


def _first_of_union(
    statement: Select[Any],
    column: InstrumentedAttribute[Any],
    seeks: Iterable[Select[Any]],
    down: bool,
    limit: int,
) -> Select[Any]:
    """``statement``'s rows of the first ``limit + 1`` keys of the parts' seeks, in order."""
    # A part of a compound SELECT has no LIMIT of its own on SQLite: each is a subquery.
    parts = [select(seek.subquery().c[0]) for seek in seeks]
    # UNION, not UNION ALL: a row two parts hold (a user who is both actor and subject) once.
    merged = union(*parts) if len(parts) > 1 else parts[0]
    first = merged.selected_columns[0]
    keys = merged.order_by(first.desc() if down else first.asc()).limit(limit + 1).subquery()
    read = statement.join(keys, column == keys.c[0])
    return read.order_by(column.desc() if down else column.asc())

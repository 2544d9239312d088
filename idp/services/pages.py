"""Keyset pagination with opaque cursors, for the admin API's lists.

A page is read after the last key of the previous one (``WHERE key > :last ORDER BY key``), on a
unique column, so rows written or deleted meanwhile neither repeat nor shift a page the way an
OFFSET would. The cursor is that key, base64url-encoded JSON: opaque to clients (docs/api.md),
never trusted beyond being a key to compare with.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from idp.errors import DomainError

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
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


def encode_cursor(key: str | int) -> str:
    raw = json.dumps({"after": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, kind: type[str] | type[int]) -> Any:
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise CursorError("the cursor is not valid")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)["after"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise CursorError("the cursor is not valid") from None
    # bool is an int in Python; a key is never one. An integer key is a row id: one the
    # databases cannot hold (64-bit signed) is refused here, not by the database (a 500).
    if not isinstance(key, kind) or isinstance(key, bool):
        raise CursorError("the cursor is not valid")
    if isinstance(key, int) and not -(2**63) <= key < 2**63:
        raise CursorError("the cursor is not valid")
    if isinstance(key, str) and ("\x00" in key or not _has_utf8_form(key)):
        raise CursorError("the cursor is not valid")
    return key


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
    key: InstrumentedAttribute[Any],
    *,
    cursor: str | None,
    limit: int,
    descending: bool = False,
) -> Page[Any]:
    """One page of ``statement``'s rows ordered by the unique column ``key``."""
    if not 1 <= limit <= MAX_LIMIT:
        raise CursorError(f"limit must be between 1 and {MAX_LIMIT}")
    kind: type[str] | type[int] = int if key.type.python_type is int else str
    if cursor:
        last = decode_cursor(cursor, kind)
        statement = statement.where(key < last if descending else key > last)
    order = key.desc() if descending else key.asc()
    rows = list(db.scalars(statement.order_by(order).limit(limit + 1)))
    if len(rows) <= limit:
        return Page(items=rows, next_cursor=None)
    rows = rows[:limit]
    return Page(items=rows, next_cursor=encode_cursor(getattr(rows[-1], key.key)))

"""A node's cache of client registrations for the token side (the token, revocation,
introspection, device authorization and logout endpoints Authlib runs).

Every token request names its client, and reading the registration was the largest single cost
of a client-credentials grant (docs/performance.md). Registrations change rarely; a change must
still count (a disabled client gets no tokens, a replaced secret stops, a changed redirect URI or
grant type applies). How fast:

- **At once in the process that changed it.** Every change to a client goes through a database
  session of this process (the admin console, the admin API, the CLI, ``idp.services.clients``
  and ``idp.services.groups``); the session hooks below notice any write to the ``clients``
  table, through the ORM or a Core ``UPDATE``/``DELETE``, and when that transaction commits
  every cache of the process is emptied (a process-wide generation number).
- **Within ``client_cache_ttl`` seconds (5) everywhere else**: in the other worker processes of
  the node and on the other nodes, which read the registration again once their copy is that
  old. The same window as the signing keys' and the sign-in policy's caches (``key_cache_ttl``,
  ``policy_cache_ttl``). ``0`` reads the client on every request.

The cached object is a ``Client`` that belongs to no session (transient), made from one Core
row: nothing loads or flushes through it, and nothing writes to it after it is made (Authlib
only calls the ``ClientMixin`` methods; ``secret_hasher`` and ``clock`` are set once here, the
clock being the application's, read at each call), so it is shared by every thread of the
process. An unknown client id is not cached: a client registered on another node is found at
once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, event, select
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, scoped_session

from idp.clock import Clock
from idp.models import Client
from idp.models.base import from_values
from idp.session_statements import statements_of

if TYPE_CHECKING:
    from idp.thin_reads import ThinReads

_CLIENTS = Client.__table__
_COLUMNS = [column.key for column in _CLIENTS.columns]
#: Built once and run on the session's connection: a miss costs one Core SELECT, no ORM load.
_LOAD = select(_CLIENTS).where(_CLIENTS.c.client_id == bindparam("client_id"))
#: The registration's columns as another statement selects them beside its own (``client_from``).
CLIENT_COLUMNS = tuple(column.label(f"client_{column.key}") for column in _CLIENTS.columns)


def client_from(row: Any, prefix: str = "") -> Client:
    """A ``Client`` that belongs to no session (transient), made from the columns of a Core row
    (``prefix``: ``client_`` for ``CLIENT_COLUMNS``): nothing loads or flushes through it."""
    return from_values(Client, {key: getattr(row, prefix + key) for key in _COLUMNS})


def load_client(
    db: Session | scoped_session[Any], client_id: str, reads: ThinReads | None = None
) -> Client | None:
    """The registration as stored now, by one prepared Core SELECT (no ORM load), or None. Sent
    as a thin read (idp.thin_reads) when ``reads`` is given: the caller's Session has opened no
    transaction this read would have to agree with; else in the Session's transaction, the thin
    way on its connection (idp.session_statements)."""
    if reads is not None:
        row: Any = reads.first(_LOAD, {"client_id": client_id})
    else:
        row = statements_of(db).first(_LOAD, {"client_id": client_id})
    return None if row is None else client_from(row)


_FLAG = "idp_clients_changed"

#: Bumped after every committed transaction of this process that wrote to ``clients``.
_generation = 0
_generation_lock = threading.Lock()


def generation() -> int:
    return _generation


def clients_changed() -> None:
    """Every client cache of this process forgets what it holds (a committed client change)."""
    global _generation
    with _generation_lock:
        _generation += 1


def _writes_clients(state: ORMExecuteState) -> bool:
    if not (state.is_update or state.is_delete):
        return False
    # An ORM ``update(Client)`` names an annotated copy of the table: compare names.
    table = getattr(state.statement, "table", None)
    return getattr(table, "name", None) == Client.__tablename__


@event.listens_for(Session, "do_orm_execute")
def _note_statement(state: ORMExecuteState) -> None:
    if _writes_clients(state):
        state.session.info[_FLAG] = True


@event.listens_for(Session, "after_flush")
def _note_flush(session: Session, _flush: UOWTransaction) -> None:
    for instance in (*session.new, *session.dirty, *session.deleted):
        if isinstance(instance, Client):
            session.info[_FLAG] = True
            return


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    # After the database committed, not before: a reader that loads the row before this bump is
    # reading the old registration, and the bump then discards what it cached (ClientCache.get).
    if session.info.pop(_FLAG, False):
        clients_changed()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_FLAG, None)


class LiveClock(Clock):
    """The application's clock as it is at each call (a test may replace the container's)."""

    def __init__(self, current: Callable[[], Clock]) -> None:
        self._current = current

    def now(self) -> datetime:
        return self._current().now()


class ClientCache:
    """This process's copies of client registrations, each trusted for ``ttl`` seconds."""

    def __init__(
        self,
        ttl: float,
        secret_hasher: Any,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.secret_hasher = secret_hasher
        self.clock = clock
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Client, float]] = {}
        self._generation = generation()

    def get(self, db: Session | scoped_session[Any], client_id: str) -> Client | None:
        """The registration of ``client_id`` (disabled or not), or None if there is none. ``db``
        may be a scoped session, which opens a Session only on a miss."""
        seen = generation()
        if self.ttl > 0:
            with self._lock:
                if seen != self._generation:
                    self._entries.clear()
                    self._generation = seen
                entry = self._entries.get(client_id)
            if entry is not None and self.monotonic() - entry[1] < self.ttl:
                return entry[0]
        client = load_client(db, client_id)
        if client is None:
            return None
        client.secret_hasher = self.secret_hasher
        client.clock = self.clock
        if self.ttl > 0:
            with self._lock:
                # A change committed while this row was read: it may be the old registration.
                if generation() == seen == self._generation:
                    self._entries[client_id] = (client, self.monotonic())
        return client

    def invalidate(self) -> None:
        with self._lock:
            self._entries.clear()

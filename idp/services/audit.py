"""The audit log: recording events, and reading them back filtered, page by page or exported."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, insert, literal_column, or_, select
from sqlalchemy.event import listens_for
from sqlalchemy.orm import Session, SessionTransaction

from idp import metrics
from idp.errors import DomainError
from idp.models import AuditEvent, Client, User
from idp.models.base import utcnow
from idp.services.pages import Page, keyset_page
from idp.services.prefixes import starts_with
from idp.services.user_agents import describe_user_agent
from idp.session_statements import statements_of
from idp.thin_statements import Inserts

#: The actor of an action taken with the ``idp`` command line (no user is signed in there).
CLI_ACTOR = "cli"
#: A user agent is only informational (which browser): this much is kept wherever it is stored
#: (docs/operations.md, "Storage budgets"); real ones are 100 to 200 characters.
MAX_USER_AGENT = 256


@dataclass(frozen=True)
class RequestContext:
    """Who is asking, as far as the transport tells: for audit records and sessions."""

    ip_address: str = ""
    user_agent: str = ""

    @classmethod
    def of(cls, environ: Mapping[str, Any]) -> RequestContext:
        """The context of the request a WSGI ``environ`` describes (Werkzeug's ``remote_addr``
        and ``User-Agent`` header are these two keys)."""
        # The user agent is only informational: kept short wherever it is stored.
        user_agent = environ.get("HTTP_USER_AGENT", "")[:MAX_USER_AGENT]
        return cls(ip_address=environ.get("REMOTE_ADDR") or "", user_agent=user_agent)


def record(
    db: Session,
    kind: str,
    *,
    outcome: str = "success",
    actor_id: str | None = None,
    subject_id: str | None = None,
    client_id: str | None = None,
    context: RequestContext | None = None,
    **details: Any,
) -> AuditEvent:
    context = context or RequestContext()
    event = AuditEvent(
        kind=kind,
        outcome=outcome,
        actor_id=actor_id,
        subject_id=subject_id,
        client_id=client_id,
        ip_address=context.ip_address[:64],
        user_agent=context.user_agent[:MAX_USER_AGENT],
        details=details,
    )
    db.add(event)
    # Sign-in steps are counted where they are audited: one place for every method.
    metrics.audit_event_recorded(kind, outcome, details)
    return event


def write(
    db: Session,
    kind: str,
    *,
    outcome: str = "success",
    subject_id: str | None = None,
    client_id: str | None = None,
    context: RequestContext | None = None,
    after: Sequence[Inserts] = (),
    **details: Any,
) -> None:
    """``record`` for the sign-in's hot path: the same row, in the same transaction, inserted at
    once by one prepared Core statement rather than an ORM object flushed later
    (docs/performance.md); for callers that need nothing of the row back. Rows ``hold`` kept
    for this transaction go in the same statement, before this one. ``after``: rows of other
    tables that the event is about (a code and its grant), inserted first, in the same
    statement on PostgreSQL (idp.thin_statements ``inserts_together``)."""
    row = _row(kind, outcome, subject_id, client_id, context, details)
    held: list[dict[str, Any]] | None = db.info.pop(_HELD, None)
    _insert(db, [*held, row] if held else [row], after)
    metrics.audit_event_recorded(kind, outcome, details)


def hold(
    db: Session,
    kind: str,
    *,
    outcome: str = "success",
    subject_id: str | None = None,
    client_id: str | None = None,
    context: RequestContext | None = None,
    **details: Any,
) -> None:
    """``write`` for a step that the same transaction usually audits again (a passkey sign-in
    that issues a code): the row is kept on the session and sent with that transaction's next
    ``write``, the two rows by one statement (one round trip), or else just before its commit.
    Committed with the transaction as a written row is, and dropped with it when it rolls back.
    Only for rows nothing in the transaction reads back before its commit."""
    row = _row(kind, outcome, subject_id, client_id, context, details)
    db.connection()  # the transaction the row belongs to, begun if none is yet
    db.info.setdefault(_HELD, []).append(row)
    metrics.audit_event_recorded(kind, outcome, details)


def _row(
    kind: str,
    outcome: str,
    subject_id: str | None,
    client_id: str | None,
    context: RequestContext | None,
    details: dict[str, Any],
) -> dict[str, Any]:
    context = context or RequestContext()
    return {
        "at": utcnow(), "kind": kind, "outcome": outcome, "actor_id": None,
        "subject_id": subject_id, "client_id": client_id,
        "ip_address": context.ip_address[:64],
        "user_agent": context.user_agent[:MAX_USER_AGENT], "details": details,
    }  # fmt: skip


#: The session's key for the rows ``hold`` keeps until the next ``write`` or the commit.
_HELD = "idp_audit_held"


@listens_for(Session, "before_commit")
def _send_held(session: Session) -> None:
    held = session.info.pop(_HELD, None)
    if held:
        _insert(session, held)


def _insert(db: Session, rows: list[dict[str, Any]], after: Sequence[Inserts] = ()) -> None:
    """``rows`` by one INSERT: a multi-row ``VALUES`` built once per row count, sent as the
    transaction's thin statement (idp.session_statements), for the one or two rows a request
    writes, after ``after`` (in the same statement where the database allows it); Core's
    ``executemany`` for more."""
    statements = statements_of(db)
    if len(rows) > _MOST_ROWS:
        if after:
            statements.write_together(after)
        db.connection().execute(_INSERT_EVENT, rows)
        return
    statements.write_together([*after, Inserts(_AUDIT_EVENTS, tuple(rows))])


@listens_for(Session, "after_transaction_end")
def _drop_held(session: Session, transaction: SessionTransaction) -> None:
    # A rollback or close ends the transaction its rows belonged to: they go with it.
    if transaction.parent is None:
        session.info.pop(_HELD, None)


#: Built once (``write``).
_INSERT_EVENT = insert(AuditEvent)
_AUDIT_EVENTS = AuditEvent.__table__
#: The most rows one thin multi-row INSERT takes (a request writes one or two: ``_insert``).
_MOST_ROWS = 2


# -- reading the log: one filter for the admin page, the exports and ``idp audit export`` --------

#: Cells a spreadsheet would read as a formula (OWASP CSV Injection): =, +, -, @, and the tab and
#: carriage return that some programs strip before looking.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
EXPORT_COLUMNS = (
    "id", "at", "kind", "outcome", "actor_id", "actor_email", "subject_id", "subject_email",
    "client_id", "ip_address", "user_agent", "browser", "details",
)  # fmt: skip
PAGE_SIZE = 50
EXPORT_BATCH = 500


class AuditFilterError(DomainError):
    """A filter value is malformed (a time that is not ISO 8601, say)."""


@dataclass(frozen=True)
class AuditFilter:
    """Which events: every given criterion must hold. ``user`` is an email and matches events
    where that user is the actor or the subject; ``kind`` ending in ``*`` is a prefix."""

    user: str = ""
    #: The actor exactly as recorded: a user id, ``cli`` or ``api-token:<name>``.
    actor: str = ""
    client_id: str = ""
    kind: str = ""
    outcome: str = ""
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, values: Mapping[str, str | None]) -> AuditFilter:
        """From text (query string, command line); times are ISO 8601, UTC when no zone given."""
        return cls(
            user=(values.get("user") or "").strip()[:320],
            actor=(values.get("actor") or "").strip()[:64],
            client_id=(values.get("client") or "").strip()[:64],
            kind=(values.get("kind") or "").strip()[:64],
            outcome=(values.get("outcome") or "").strip()[:16],
            since=parse_time(values.get("since")),
            until=parse_time(values.get("until")),
        )

    def as_query(self) -> dict[str, str]:
        """The filter as query parameters (for links to the next page and the exports)."""
        values = {"user": self.user, "actor": self.actor, "client": self.client_id,
                  "kind": self.kind, "outcome": self.outcome,
                  "since": self.since.isoformat() if self.since else "",
                  "until": self.until.isoformat() if self.until else ""}  # fmt: skip
        return {key: value for key, value in values.items() if value}


def parse_time(text: str | None) -> datetime | None:
    if not text or not text.strip():
        return None
    try:
        # RFC 3339 5.6: "T" and "Z" may be lower case, which fromisoformat does not take.
        value = datetime.fromisoformat(text.strip()[:40].upper())
        # A time at the calendar's edge in a zone of its own may have no UTC time inside the
        # calendar (9999-12-31T23:59:59-14:00): OverflowError, a malformed filter like any other.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise AuditFilterError(f"not an ISO 8601 time: {text[:40]!r}") from None


#: idp.models.audit ``UNUSUAL_OUTCOME``, its literal a literal here too (SQLite's rule).
_UNUSUAL_OUTCOME = AuditEvent.outcome != literal_column("'success'")


def _filtered(
    db: Session, where: AuditFilter, as_range: bool = True
) -> tuple[Select[AuditEvent], list[ColumnElement[bool]]] | None:
    """The events every criterion but the user picks, and the user's two sides (subject, actor),
    of which an event meets one (none without a user); None when the filter can match nothing."""
    statement = select(AuditEvent)
    sides: list[ColumnElement[bool]] = []
    if where.user:
        from idp.services.users import normalise_email

        user_id = db.scalar(select(User.id).where(User.email == normalise_email(where.user)))
        if user_id is None:
            return None
        sides = [AuditEvent.subject_id == user_id, AuditEvent.actor_id == user_id]
    if where.actor:
        statement = statement.where(AuditEvent.actor_id == where.actor)
    if where.client_id:
        statement = statement.where(AuditEvent.client_id == where.client_id)
    if where.kind.endswith("*"):
        # A range of the index on (kind, id), not a LIKE, which neither database reads off it.
        within = starts_with(AuditEvent.kind, where.kind[:-1], as_range=as_range)
        statement = statement.where(*within)
    elif where.kind:
        statement = statement.where(AuditEvent.kind == where.kind)
    if where.outcome:
        statement = statement.where(AuditEvent.outcome == where.outcome)
        if where.outcome != "success":
            # The partial index's condition, which the databases need to see to use it.
            statement = statement.where(_UNUSUAL_OUTCOME)
    if where.since is not None:
        statement = statement.where(AuditEvent.at >= where.since)
    if where.until is not None:
        statement = statement.where(AuditEvent.at < where.until)
    return statement, sides


def _statement(db: Session, where: AuditFilter) -> Select[AuditEvent] | None:
    """The filtered events, newest first; None when the filter can match nothing."""
    # By time: SQLite, with no statistics, would read and sort a prefix's range for each batch.
    found = _filtered(db, where, as_range=db.get_bind().dialect.name != "sqlite")
    if found is None:
        return None
    statement, sides = found
    if sides:
        statement = statement.where(or_(*sides))
    return statement.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())


@dataclass(frozen=True)
class AuditRow:
    """An event with the people it names resolved to email addresses (None: deleted user) and
    its client app to the app's name (None: no app, or a deleted one)."""

    event: AuditEvent
    actor_email: str | None
    subject_email: str | None
    client_name: str | None = None


def _with_emails(db: Session, events: Sequence[AuditEvent]) -> list[AuditRow]:
    ids = {i for e in events for i in (e.actor_id, e.subject_id) if i}
    emails: dict[str, str] = {}
    if ids:
        for user_id, email in db.execute(select(User.id, User.email).where(User.id.in_(ids))):
            emails[user_id] = email
    client_ids = {e.client_id for e in events if e.client_id}
    names: dict[str, str] = {}
    if client_ids:
        query = select(Client.client_id, Client.name).where(Client.client_id.in_(client_ids))
        names = {row.client_id: row.name for row in db.execute(query)}
    return [
        AuditRow(e, emails.get(e.actor_id or ""), emails.get(e.subject_id or ""),
                 names.get(e.client_id or ""))
        for e in events
    ]  # fmt: skip


def page_after(
    db: Session, where: AuditFilter, cursor: str | None, limit: int = PAGE_SIZE
) -> Page[AuditRow]:
    """One page of the filtered events, newest first by id, from an opaque cursor: the admin
    API's pages and the console's (idp.services.pages). A keyset on the primary key, so a page
    costs the same whichever it is, and rows written meanwhile never shift one: a range of the
    primary key's index (``id < :last``), or of the filter's index then id (kind, client, a rare
    outcome: idp.models.audit). A filter whose events lie in several such ranges, a user's (as
    subject, as actor) or a kind's prefix (each of its kinds), reads at most a page of each,
    merged (``keyset_page``'s ``union_of``), not all of them sorted (test_admin_pages.py)."""
    found = _filtered(db, where)
    if found is None:
        return Page(items=[], next_cursor=None)
    statement, sides = found
    prefix = where.kind[:-1] if where.kind.endswith("*") else ""
    if not sides and prefix:
        sides = [AuditEvent.kind == kind for kind in distinct_kinds(db, prefix)]
        if not sides:
            return Page(items=[], next_cursor=None)
    if len(sides) == 1:
        statement, sides = statement.where(sides[0]), []
    parts = [statement.with_only_columns(AuditEvent.id).where(side) for side in sides]
    page = keyset_page(db, select(AuditEvent) if parts else statement, AuditEvent.id,
                       cursor=cursor, limit=limit, descending=True, union_of=parts)  # fmt: skip
    return Page(_with_emails(db, page.items), page.next_cursor, page.previous_cursor)


def iter_rows(db: Session, where: AuditFilter, batch: int = EXPORT_BATCH) -> Iterator[AuditRow]:
    """Every filtered event, newest first, read in batches (keyset on (at, id): rows written
    while an export runs neither repeat nor shift it). The session's transaction ends after each
    batch, so a slow download holds no transaction open (an idle open transaction keeps its
    snapshot and locks, and PostgreSQL's vacuum waits for it): call it with nothing to commit."""
    statement = _statement(db, where)
    if statement is None:
        return
    last: tuple[datetime, int] | None = None
    while True:
        page = statement
        if last is not None:
            at, event_id = last
            page = page.where(
                or_(AuditEvent.at < at, and_(AuditEvent.at == at, AuditEvent.id < event_id))
            )
        events = list(db.scalars(page.limit(batch)))
        rows = _with_emails(db, events)
        for event in events:
            db.expunge(event)  # keeps its loaded values past the end of the transaction
        db.rollback()
        yield from rows
        if len(events) < batch:
            return
        last = (events[-1].at, events[-1].id)


def export_record(row: AuditRow) -> dict[str, Any]:
    """One event as exported (JSON Lines keeps these types; CSV makes text of them)."""
    event = row.event
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "kind": event.kind,
        "outcome": event.outcome,
        "actor_id": event.actor_id,
        "actor_email": row.actor_email,
        "subject_id": event.subject_id,
        "subject_email": row.subject_email,
        "client_id": event.client_id,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "browser": describe_user_agent(event.user_agent) if event.user_agent else "",
        "details": event.details or {},
    }


def neutralise_cell(value: str) -> str:
    """OWASP CSV Injection: a cell starting with a formula character gets a leading apostrophe,
    so spreadsheets show it as text instead of evaluating it."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def _csv_line(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    # QUOTE_ALL as well (OWASP): a separator or quote inside a cell never splits it.
    csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerow(
        neutralise_cell(value) for value in values
    )
    return buffer.getvalue()


def export_csv(rows: Iterable[AuditRow]) -> Iterator[str]:
    """RFC 4180 CSV, a header line then one line per event."""
    yield _csv_line(EXPORT_COLUMNS)
    for row in rows:
        record = export_record(row)
        record["details"] = json.dumps(record["details"], sort_keys=True, default=str)
        yield _csv_line("" if record[c] is None else str(record[c]) for c in EXPORT_COLUMNS)


def export_jsonl(rows: Iterable[AuditRow]) -> Iterator[str]:
    """JSON Lines: one JSON object per event and line."""
    for row in rows:
        yield json.dumps(export_record(row), default=str, ensure_ascii=False) + "\n"


EXPORTERS: dict[str, Callable[[Iterable[AuditRow]], Iterator[str]]] = {
    "csv": export_csv,
    "jsonl": export_jsonl,
}
EXPORT_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl; charset=utf-8"}


def distinct_kinds(db: Session, prefix: str = "") -> list[str]:
    """The event kinds in the log (those starting with ``prefix``), for the console's filter and
    a prefix's page, by one index seek per kind (a loose index scan: each step is the first
    kind after the last, off the index on ``kind``), not ``SELECT DISTINCT``, which reads the
    whole log or its index on every view: its cost grows with the kinds (about a hundred), not
    the rows. Read from the log rather than a list in idp: kinds are named in many modules, some
    through variables, and a log keeps an earlier version's kinds; a kind a list missed could
    not be chosen."""
    within = starts_with(AuditEvent.kind, prefix)
    first = select(AuditEvent.kind).where(*within).order_by(AuditEvent.kind).limit(1)
    kinds = select(first.scalar_subquery().label("kind")).cte("kinds", recursive=True)
    after = select(AuditEvent.kind).where(AuditEvent.kind > kinds.c.kind, *within)
    step = after.order_by(AuditEvent.kind).limit(1).scalar_subquery()
    kinds = kinds.union_all(select(step.label("kind")).where(kinds.c.kind.is_not(None)))
    return list(db.scalars(select(kinds.c.kind).where(kinds.c.kind.is_not(None))))

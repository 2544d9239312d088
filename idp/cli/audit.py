"""``idp audit``: the audit log, exported (the admin console's audit page uses the same service)."""

from __future__ import annotations

import click

from idp.cli import Group
from idp.cli.common import app_context


@click.group(cls=Group)
def audit() -> None:
    """Read the audit log."""


@audit.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="jsonl",
              show_default=True, help="CSV, or JSON Lines (one event a line).")  # fmt: skip
@click.option("--user", default="", help="Events where this email is the actor or the subject.")
@click.option("--client", default="", help="Events of this client id.")
@click.option("--kind", default="", help="Event kind, e.g. login.passkey; login.* for a prefix.")
@click.option("--outcome", default="", help="success or failure.")
@click.option("--since", default="", help="From this ISO 8601 time (UTC unless a zone is given).")
@click.option("--until", default="", help="Before this ISO 8601 time.")
def audit_export(
    fmt: str, user: str, client: str, kind: str, outcome: str, since: str, until: str
) -> None:
    """Print the filtered events, newest first, as CSV or JSON Lines on standard output."""
    from idp.extensions import db
    from idp.services import audit as audit_log
    from idp.services.audit import CLI_ACTOR

    given = {"user": user, "client": client, "kind": kind, "outcome": outcome,
             "since": since, "until": until}  # fmt: skip
    where = audit_log.AuditFilter.parse(given)
    with app_context():
        audit_log.record(db.session(), "audit.exported", actor_id=CLI_ACTOR,
                         format=fmt, filter=where.as_query(), via="cli")  # fmt: skip
        db.session.commit()
        for chunk in audit_log.EXPORTERS[fmt](audit_log.iter_rows(db.session(), where)):
            click.echo(chunk, nl=False)

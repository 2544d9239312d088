"""``idp outbox``: the messages idp wrote to users."""

from __future__ import annotations

import json
from typing import Any

import click

from idp.cli.common import app_context


@click.command()
@click.option("--follow", is_flag=True, help="Then wait for new messages and print each one.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1),
              help="How many of the newest messages to print first.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="JSON (with --follow: one object a line).")
def outbox(follow: bool, limit: int, as_json: bool) -> None:
    """The messages idp wrote to users (invites, links), oldest first.

    Their links are shown while unsent and unexpired: without an SMTP server (smtp_url) this is
    where they are."""
    import time

    from idp.extensions import db
    from idp.services.notifications import describe_message, outbox_messages, terminal_text

    def show(rows: list[dict[str, Any]]) -> None:
        if follow and as_json:
            for row in rows:  # JSON Lines: one message per line as it comes
                click.echo(json.dumps(row, default=str))
        elif as_json:
            click.echo(json.dumps(rows, indent=2, default=str))
        elif rows:
            click.echo("\n".join(terminal_text(row) for row in rows))

    with app_context():
        rows = [describe_message(m) for m in outbox_messages(db.session(), limit=limit)]
        db.session.rollback()
        show(rows)
        if not rows and not as_json and not follow:
            click.echo("The outbox is empty.")
        if not follow:
            return
        last = rows[-1]["id"] if rows else 0
        try:
            while True:
                time.sleep(1)
                found = [describe_message(m) for m in outbox_messages(db.session(), after_id=last)]
                db.session.rollback()  # each look is a fresh read
                if found:
                    show(found)
                    last = found[-1]["id"]
        except KeyboardInterrupt:
            return

"""``idp prune``: expired rows and old audit events deleted now."""

from __future__ import annotations

import click

from idp.cli.common import app_context, emit


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def prune(as_json: bool) -> None:
    """Delete what expired, and audit events older than audit_retention_days.

    Expired challenges, requests, codes, tokens, sessions, links, counters and sent messages go;
    it prints how many of each."""
    from datetime import timedelta

    from idp.composition import clock, services
    from idp.extensions import db
    from idp.services.retention import claim_run
    from idp.services.retention import prune as prune_rows

    with app_context():
        now = clock().now()
        counts = prune_rows(
            db.session(), services().retention(now), channels=services().outbox_channels()
        )
        # The nodes' opportunistic prune need not run again right after this one.
        claim_run(db.session(), now, timedelta(0))
        emit(counts, as_json,
              lambda c: "\n".join(f"{table:24} {n}" for table, n in c.items()))  # fmt: skip

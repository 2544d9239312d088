"""``idp prune``: expired rows and old audit events deleted now."""

from __future__ import annotations

import click

from idp.cli.common import app_context, emit


@click.command()
@click.option("--json", "as_json", is_flag=True)
def prune(as_json: bool) -> None:
    """Delete expired challenges, requests, codes, tokens, sessions, links, counters and sent
    messages, and audit events older than audit_retention_days; print how many went."""
    from datetime import timedelta

    from idp.extensions import db
    from idp.models.base import utcnow
    from idp.services.retention import RetentionPolicy, claim_run
    from idp.services.retention import prune as prune_rows
    from idp.services.sign_in_policy import load_policy
    from idp.web import outbox_channels, runtime

    with app_context():
        settings = runtime().settings
        now = utcnow()
        policy = load_policy(db.session(), settings)
        counts = prune_rows(db.session(), RetentionPolicy(
            now=now, audit_retention_days=settings.audit_retention_days,
            session_idle_ttl=policy.session_idle_ttl, refresh_token_ttl=settings.refresh_token_ttl,
        ), channels=outbox_channels())  # fmt: skip
        # The nodes' opportunistic prune need not run again right after this one.
        claim_run(db.session(), now, timedelta(0))
        emit(counts, as_json,
              lambda c: "\n".join(f"{table:24} {n}" for table, n in c.items()))  # fmt: skip

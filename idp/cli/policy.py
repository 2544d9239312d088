"""``idp policy``: the sign-in policy, shown, overridden and reset (the console's policy page)."""

from __future__ import annotations

from typing import Any

import click

from idp.cli import Group
from idp.cli.common import app_context, emit, fail


@click.group(cls=Group)
def policy() -> None:
    """Show or change the sign-in policy (the admin console's policy page)."""


def _policy_text(data: dict[str, Any]) -> str:
    return "\n".join(
        f"{name:28} {', '.join(value) if isinstance(value, list) else value}"
        + ("  (overridden)" if name in data["overridden"] else "")
        for name, value in data["policy"].items()
    )


def _policy_data() -> dict[str, Any]:
    from idp.extensions import db
    from idp.services.sign_in_policy import load_policy, overridden_fields
    from idp.web import runtime

    current = load_policy(db.session(), runtime().settings)
    return {"policy": current.as_dict(), "overridden": sorted(overridden_fields(db.session()))}


@policy.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def policy_show(as_json: bool) -> None:
    """The policy in force; "overridden" marks values stored over the configuration."""
    with app_context():
        emit(_policy_data(), as_json, _policy_text)


@policy.command("set")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=VALUE...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def policy_set(assignments: tuple[str, ...], as_json: bool) -> None:
    """Override policy values: `idp policy set passwords_allowed=false lockout_threshold=20`.

    Lists are comma-separated. Every change is audited with the old and the new values."""
    from idp.composition import clock
    from idp.extensions import db
    from idp.services.audit import CLI_ACTOR
    from idp.services.sign_in_policy import change_policy
    from idp.web import runtime

    changes: dict[str, str] = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals:
            fail(f"expected NAME=VALUE, got {assignment!r}")
        changes[name.strip()] = value
    with app_context():
        change_policy(db.session(), runtime().settings, changes, actor_id=CLI_ACTOR,
                      context=None, now=clock().now(), via="cli")  # fmt: skip
        db.session.commit()
        emit(_policy_data(), as_json, _policy_text)


@policy.command("reset")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def policy_reset(as_json: bool) -> None:
    """Drop every override: the configured defaults apply again."""
    from idp.composition import clock
    from idp.extensions import db
    from idp.services.audit import CLI_ACTOR
    from idp.services.sign_in_policy import reset_policy
    from idp.web import runtime

    with app_context():
        reset_policy(db.session(), runtime().settings, actor_id=CLI_ACTOR, context=None,
                     now=clock().now(), via="cli")  # fmt: skip
        db.session.commit()
        emit(_policy_data(), as_json, _policy_text)

"""``idp login-link``: one-time sign-in links, issued, listed and revoked."""

from __future__ import annotations

import click

from idp.cli import Group
from idp.cli.common import app_context, emit, fail
from idp.cli.users import find_user, link_url, user_admin_service


class _IssueByDefault(Group):
    """``idp login-link EMAIL`` stays the short form of ``idp login-link issue EMAIL``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["issue", *args]
        return super().parse_args(ctx, args)


@click.group("login-link", cls=_IssueByDefault, subcommand_metavar="EMAIL | COMMAND [ARGS]...")
def login_link() -> None:
    """One-time sign-in links for a user who lost every way in (or the first admin).

    `idp login-link EMAIL` is short for `idp login-link issue EMAIL`."""


@login_link.command("issue")
@click.argument("email")
@click.option("--ttl", type=int, help="Seconds the link stays valid (default: login_link_ttl).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def login_link_issue(email: str, ttl: int | None, as_json: bool) -> None:
    """Make a one-time sign-in link for a user who lost every way in (or the first admin)."""
    from idp.composition import clock
    from idp.extensions import db

    with app_context() as app:
        settings = app.extensions["idp"].settings
        lifetime = ttl or settings.login_link_ttl
        if not 60 <= lifetime <= 86400:
            fail("--ttl must be between 60 seconds and 24 hours")
        service = user_admin_service()
        user = find_user(service, email)
        # Emailed to the user (or kept in the outbox) and printed for the admin, who can pass
        # it on by another channel.
        issued = service.send_login_link(
            user, ttl=lifetime, now=clock().now(), url_for_secret=link_url(app)
        )
        db.session.commit()
        data = {"email": user.email, "url": issued.url, "id": issued.id,
                "expires_at": issued.link.expires_at.isoformat()}  # fmt: skip
        # The terminal reads the time as the pages do (2026-05-04 14:07 UTC); --json keeps ISO 8601.
        until = issued.link.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        emit(data, as_json, lambda d: f"{d['url']}\n(one use, valid until {until})")


@login_link.command("list")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def login_link_list(email: str, as_json: bool) -> None:
    """A user's unused login links and invites (never their secrets)."""
    from idp.composition import clock
    from idp.services.user_descriptions import describe_link

    with app_context():
        service = user_admin_service()
        rows = [
            describe_link(k) for k in service.live_links(find_user(service, email), clock().now())
        ]
        emit(
            rows, as_json,
            lambda r: "\n".join(f"{k['id']}  {k['purpose']}  until {k['expires_at']}" for k in r)
            or "no unused links",
        )  # fmt: skip


@login_link.command("revoke")
@click.argument("email")
@click.argument("link_id", required=False)
@click.option("--all", "revoke_all", is_flag=True, help="Every unused link of the user.")
def login_link_revoke(email: str, link_id: str | None, revoke_all: bool) -> None:
    """Revoke one unused link (its id from `list`) or, with --all, every one."""
    from idp.composition import clock
    from idp.extensions import db

    if bool(link_id) == revoke_all:
        fail("give a link id (from `idp login-link list EMAIL`) or --all")
    with app_context():
        service = user_admin_service()
        user = find_user(service, email)
        now = clock().now()
        ids = [link_id] if link_id else [k.id_hash[:16] for k in service.live_links(user, now)]
        for public_id in ids:
            service.revoke_link(user, public_id, now)
        db.session.commit()
        click.echo(f"revoked {len(ids)} link{'' if len(ids) == 1 else 's'} of {user.email}")

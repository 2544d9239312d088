"""``idp users``: the console's user pages on the command line (``idp.services.user_admin``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from idp.cli import Group
from idp.cli.common import app_context, emit, fail

if TYPE_CHECKING:
    from flask import Flask

    from idp.models import User
    from idp.services.user_admin import UserAdmin


@click.group(cls=Group)
def users() -> None:
    """Manage users."""


def user_admin_service() -> UserAdmin:
    """The service the console's user pages use, acting as ``cli``."""
    from idp.composition import services
    from idp.services.audit import CLI_ACTOR

    # Called inside the command's application context (``app_context``), whose session it uses.
    return services().user_admin(CLI_ACTOR, "cli")


def find_user(service: UserAdmin, email: str) -> User:
    """The user with this email address, or the command's error."""
    user = service.find(email)
    if user is None:
        fail(f"no user {email}")
    return user


def link_url(app: Flask) -> Callable[[str, str], str]:
    """The address of a one-time link from its purpose and secret."""
    from idp.services.login_links import link_path

    settings = app.extensions["idp"].settings
    return lambda purpose, secret: settings.endpoint(link_path(purpose, secret))


def _user_text(data: dict[str, Any]) -> str:
    flags = [f for f, on in (("admin", data["admin"]), ("disabled", data["disabled"])) if on]
    return f"{data['email']}  {data['name'] or '-'}  sub {data['sub']}" + (
        f"  ({', '.join(flags)})" if flags else ""
    )


@users.command("list")
@click.option("--search", "query", default="", help="Part of an email address or name.")
@click.option(
    "--unverified-passkeys",
    is_flag=True,
    help="Only users with a passkey whose attestation no configured root verified.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def users_list(query: str, unverified_passkeys: bool, as_json: bool) -> None:
    """List every matching user, by email address."""
    from idp.composition import runtime
    from idp.extensions import db
    from idp.services.attestation import root_fingerprints
    from idp.services.user_descriptions import describe_user

    with app_context():
        roots = runtime().relying_party.attestation_roots
        unverified_by = root_fingerprints(roots) if unverified_passkeys else None
        # Printed batch by batch as the keyset reads them (UserDirectory.each_batch): a list of
        # any size, each batch its own short read, no transaction held while the output drains.
        printed = 0
        for batch in user_admin_service().each_batch(query, unverified_by):
            rows = [describe_user(u) for u in batch]
            db.session.rollback()  # nothing was written: the read's transaction ends here
            for row in rows:
                if as_json:
                    item = json.dumps(row, indent=2, default=str).replace("\n", "\n  ")
                    click.echo(("[\n  " if printed == 0 else ",\n  ") + item, nl=False)
                else:
                    click.echo(_user_text(row))
                printed += 1
        if as_json:
            click.echo("\n]" if printed else "[]")
        elif not printed:
            click.echo("no users")


@users.command("create")
@click.argument("email")
@click.option("--name", default="", help="Their name (they can change it).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--admin", is_flag=True, help="Give them the admin role.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def users_create(email: str, name: str, password_stdin: bool, admin: bool, as_json: bool) -> None:
    """Create a user; without --password-stdin they have no way in until an invite or a login
    link (`idp login-link EMAIL`) gives them one."""
    from idp.extensions import db
    from idp.services.user_descriptions import describe_user

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    with app_context():
        user = user_admin_service().create(email, name=name, password=password, admin=admin)
        db.session.commit()
        emit(describe_user(user), as_json, lambda d: f"created user {d['email']} (sub {d['sub']})")


@users.command("invite")
@click.argument("email")
@click.option("--name", default="", help="Their name (they can change it).")
@click.option("--admin", is_flag=True, help="Give them the admin role.")
@click.option("--ttl", type=int, default=86400, show_default=True, help="Seconds (at most a day).")
@click.option(
    "--email-only/--print-url",
    "email_only",
    default=None,
    help="Only email the invite, accepting it then confirms the address (the default with a mail "
    "server, smtp_url); or also print its link to pass on another way, the address then "
    "unconfirmed until its owner confirms it (the default without one).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def users_invite(
    email: str, name: str, admin: bool, ttl: int, email_only: bool | None, as_json: bool
) -> None:
    """Create a user and a one-time invite: emailed with a mail server (smtp_url), printed
    without one or with --print-url."""
    from idp.composition import clock, runtime
    from idp.extensions import db
    from idp.services.user_descriptions import describe_user

    with app_context() as app:
        mails = bool(runtime().settings.smtp_url)
        if email_only is None:
            email_only = mails
        if email_only and not mails:
            # The invite would wait in the outbox, its link shown to no one.
            fail("no mail server is configured (smtp_url): use --print-url to pass the link on")
        # A link printed here proves nothing about the mailbox (OIDC Core 5.1 email_verified):
        # only an invite idp's mail alone delivered marks the address verified when accepted.
        user, issued = user_admin_service().invite(
            email, name=name, admin=admin, ttl=ttl, now=clock().now(),
            url_for_secret=link_url(app), inviter="An administrator", mailed_only=email_only,
        )  # fmt: skip
        db.session.commit()
        data = describe_user(user) | {
            "url": issued.url, "link_id": issued.id,
            "expires_at": issued.link.expires_at.isoformat(),
        }  # fmt: skip
        # The terminal reads the time as the pages do (2026-05-04 14:07 UTC); --json keeps ISO 8601.
        until = issued.link.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        shown = issued.url or f"emailed an invite to {user.email}"
        emit(data, as_json, lambda _d: f"{shown}\n(one use, valid until {until})")


@users.command("show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def users_show(email: str, as_json: bool) -> None:
    """One user: sign-in methods, sessions, connected apps, unused links."""
    from idp.composition import clock, runtime
    from idp.services.attestation import attestation_state
    from idp.services.user_descriptions import describe_link, describe_user

    with app_context():
        service = user_admin_service()
        user = find_user(service, email)
        now = clock().now()
        roots = runtime().relying_party.attestation_roots
        data = describe_user(user) | {
            "email_verified": user.email_verified,
            "password": user.password_hash is not None,
            "passkeys": [
                {"credential_id": p.credential_id, "name": p.name,
                 "created_at": p.created_at.isoformat(),
                 "last_used_at": p.last_used_at.isoformat() if p.last_used_at else None,
                 # docs/admins.md, "Verified attestation": the roots configured now decide.
                 "attestation": attestation_state(p.attestation_root, roots),
                 "attestation_root": p.attestation_root}
                for p in service.passkeys(user)
            ],
            "totp": service.totp.is_enabled(user),
            "backup_codes_left": service.backup_codes.remaining(user),
            "sessions": [
                {"sid": s.sid, "created_at": s.created_at.isoformat(), "ip_address": s.ip_address,
                 "user_agent": s.user_agent, "restricted": s.restricted}
                for s in service.sessions(user, now)
            ],
            "consents": [
                {"client_id": c.client.client_id, "name": c.client.name, "scopes": c.scopes,
                 "consented": c.consented, "offline": c.offline}
                for c in service.consents(user, now)
            ],
            "links": [describe_link(link) for link in service.live_links(user, now)],
        }  # fmt: skip
        emit(data, as_json, _user_detail_text)


def _user_detail_text(data: dict[str, Any]) -> str:
    lines = [_user_text(data)]
    lines.append(f"password: {'yes' if data['password'] else 'no'}; authenticator app: "
                 f"{'yes' if data['totp'] else 'no'}; backup codes left: "
                 f"{data['backup_codes_left']}")  # fmt: skip
    lines += [f"passkey: {p['name']} ({p['credential_id'][:16]}...), attestation "
              f"{p['attestation'].replace('_', ' ')}" for p in data["passkeys"]]  # fmt: skip
    lines += [f"session: {s['sid']} since {s['created_at']}" for s in data["sessions"]]
    lines += [f"app: {c['name']} ({c['client_id']})" for c in data["consents"]]
    lines += [f"{k['purpose']} link {k['id']} until {k['expires_at']}" for k in data["links"]]
    return "\n".join(lines)


def _user_action(
    email: str, as_json: bool, act: Callable[[UserAdmin, User], None], done: str
) -> None:
    """``act`` on the user; a refusal is audited (as the console audits it) before it is the
    command's error."""
    from idp.extensions import db
    from idp.services.user_admin import UserAdminError
    from idp.services.user_descriptions import describe_user

    with app_context():
        service = user_admin_service()
        user = find_user(service, email)
        data = describe_user(user)
        try:
            act(service, user)
            db.session.commit()
        except UserAdminError as error:
            db.session.rollback()
            service.record_refusal(done, user, error)
            db.session.commit()
            raise
        if done != "deleted":
            data = describe_user(user)
        emit(data, as_json, lambda d: f"{done} {d['email']}")


@users.command("disable")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def users_disable(email: str, as_json: bool) -> None:
    """Disable a user: sessions end, tokens are revoked, no new code or token."""
    from idp.composition import clock

    _user_action(email, as_json, lambda s, u: s.disable(u, clock().now()), "disabled")


@users.command("enable")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def users_enable(email: str, as_json: bool) -> None:
    """Enable a disabled user: they sign in again, with none of their sessions or tokens of
    before (one a request racing the disable made ends now)."""
    from idp.composition import clock

    _user_action(email, as_json, lambda s, u: s.enable(u, clock().now()), "enabled")


@users.command("promote")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def users_promote(email: str, as_json: bool) -> None:
    """Give a user the admin role (their unspent login links end)."""
    from idp.composition import clock

    _user_action(email, as_json, lambda s, u: s.promote(u, clock().now()), "promoted")


@users.command("demote")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def users_demote(email: str, as_json: bool) -> None:
    """Take the admin role away (never from the last active admin); the API tokens they created
    are revoked."""
    from idp.composition import clock

    _user_action(email, as_json, lambda s, u: s.demote(u, clock().now()), "demoted")


@users.command("delete")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def users_delete(email: str, yes: bool, as_json: bool) -> None:
    """Delete a user and everything issued to them (the audit log keeps its history)."""
    from idp.composition import clock

    if not yes:
        click.confirm(f"Delete {email} and everything issued to them?", abort=True)
    _user_action(email, as_json, lambda s, u: s.delete(u, clock().now()), "deleted")


@users.command("unlock")
@click.argument("email")
def users_unlock(email: str) -> None:
    """Lift the failed-attempt locks and delays on a user's sign-in methods."""
    from idp.composition import services
    from idp.extensions import db
    from idp.services import audit

    with app_context():
        user = services().users.find_by_email(email)
        if user is None:
            fail(f"no user {email}")
        services().sign_in.unlock(user)
        # docs/admins.md: actions from the command line are audited as coming from ``cli``.
        audit.record(db.session(), "admin.user_unlocked", actor_id=audit.CLI_ACTOR,
                     subject_id=user.id, via="cli")  # fmt: skip
        db.session.commit()
        click.echo(f"unlocked {user.email}")

"""The ``idp`` command: init, serve, users, clients, keys. Scriptable; ``--json`` prints data."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from cryptography.fernet import InvalidToken
from flask import Flask

from idp.services.audit import CLI_ACTOR
from idp.settings import SettingsError


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


@contextmanager
def _app() -> Iterator[Flask]:
    from idp import create_app

    try:
        app = create_app()
    except SettingsError as error:
        raise click.ClickException(f"configuration: {error}") from error
    with app.app_context():
        yield app


def _emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text(data))


def prepare_database(app: Flask) -> list[str]:
    """Create or upgrade the schema and make sure every signing alg has an active key."""
    from idp.database import upgrade
    from idp.extensions import db
    from idp.runtime import Runtime

    upgrade(app.config["SQLALCHEMY_DATABASE_URI"])
    runtime: Runtime = app.extensions["idp"]
    created = runtime.keys.ensure_keys(db.session())
    db.session.commit()
    try:
        runtime.keys.public_jwks(db.session())
    except InvalidToken:
        raise click.ClickException(
            "the secret key does not decrypt the stored signing keys: every node must run with "
            "the same IDP_SECRET_KEY that created them"
        ) from None
    return [f"{key.alg} {key.kid}" for key in created]


@click.group()
def main() -> None:
    """idp: a passkey-first OpenID Connect identity provider."""


@main.command()
@click.option("--admin-email", default="", help="The first admin (default: IDP_ADMIN_EMAIL).")
def init(admin_email: str) -> None:
    """Create the database and the signing keys (safe to run again)."""
    with _app() as app:
        for line in prepare_database(app):
            click.echo(f"created signing key {line}")
        click.echo("\n".join(_welcome(app, admin_email)))


def _welcome(app: Flask, admin_email: str = "", *, production_server: bool = False) -> list[str]:
    """Where discovery lives and, until an admin has a passkey, how the first admin signs in."""
    from idp.extensions import db
    from idp.models.base import utcnow
    from idp.services.bootstrap import admin_can_sign_in, bootstrap_first_admin

    runtime = app.extensions["idp"]
    settings = runtime.settings
    lines = [f"Discovery: {settings.endpoint('/.well-known/openid-configuration')}"]
    if production_server:
        # A production server's output lands in a log store: a live sign-in link must not.
        if not admin_can_sign_in(db.session()):
            lines.append(
                "No admin can sign in yet: run `idp init` in a terminal for a one-time link."
            )
        return lines
    email = (
        admin_email or settings.admin_email or ("" if settings.production else "admin@localhost")
    )
    if not email:
        from sqlalchemy import select

        from idp.models import User

        if db.session.scalar(select(User.id).where(User.is_admin.is_(True)).limit(1)) is None:
            lines.append(
                "No admin yet. Set IDP_ADMIN_EMAIL (or run `idp init --admin-email "
                "you@example.com`) for a one-time sign-in link, or:\n"
                "  idp users create you@example.com --name 'Your Name' --admin\n"
                "  idp login-link you@example.com"
            )
        return lines
    from idp.services.users import UserError

    try:
        first = bootstrap_first_admin(
            db.session(), runtime.passwords, email, ttl=settings.login_link_ttl, now=utcnow(),
            allow_local_domains=not settings.production,
        )  # fmt: skip
    except UserError as error:
        db.session.rollback()
        _fail(f"the first admin's {error}")
    db.session.commit()
    if first is None:
        return lines
    if first.secret is None:
        lines.append(
            f"No admin can sign in yet. The one-time link printed earlier for {first.user.email} "
            f"works until {first.expires_at:%H:%M} UTC; lost it? `idp login-link "
            f"{first.user.email}` makes a new one."
        )
        return lines
    lines.append(
        f"No admin can sign in yet. {'Created' if first.created else 'The admin is'} "
        f"{first.user.email}. Open this one-time link (valid until "
        f"{first.expires_at:%H:%M} UTC), confirm, and register a passkey:\n"
        f"  {settings.endpoint(f'/login/link/{first.secret}')}\n"
        "Then manage the deployment at " + settings.endpoint("/admin") + ". Until an admin has a "
        "passkey, a start after this link expired prints a new one; `idp login-link EMAIL` makes "
        "one at any time."
    )
    return lines


#: What sets the development banner apart from the log lines around it.
BANNER_RULE = "=" * 72


def local_address(host: str, port: int) -> str:
    """The address a person opens for a server bound to ``host``: ``localhost`` for a loopback
    or wildcard bind, since passkeys never work on an IP address (WebAuthn L3 5.1.3: the RP ID is
    a domain)."""
    from idp.settings import is_loopback_host

    if host in ("", "0.0.0.0", "::") or is_loopback_host(host):  # noqa: S104 - a comparison
        return f"http://localhost:{port}"
    return f"http://{host}:{port}"


def issuer_port_warning(issuer: str, port: int) -> str | None:
    """A loud warning when a development issuer (a loopback http one) names another port than the
    one served: every link, cookie and passkey then belongs to an address nobody serves."""
    from urllib.parse import urlsplit

    from idp.settings import is_loopback_host

    parts = urlsplit(issuer)
    if parts.scheme != "http" or not is_loopback_host(parts.hostname or ""):
        return None  # an https issuer is served through a proxy on a port of its own
    if (parts.port or 80) == port:
        return None
    return "\n".join([
        BANNER_RULE,
        f"WARNING: the issuer is {issuer}, but this server listens on port {port}.",
        f"Links, cookies and passkeys belong to the issuer: at http://localhost:{port} sign-in",
        "pages will point elsewhere and passkeys will fail. Serve on the issuer's port, or set",
        f"IDP_ISSUER=http://localhost:{port} (`make run PORT={port}` does both).",
        BANNER_RULE,
    ])  # fmt: skip


def announce_when_ready(host: str, port: int, lines: list[str]) -> None:
    """Print ``lines`` as a banner once the server answers: after the WSGI server's start-up
    lines rather than above them, where they scroll away."""
    import http.client
    import threading
    import time

    target = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104

    def wait() -> None:
        while True:
            try:
                connection = http.client.HTTPConnection(target, port, timeout=2)
                connection.request("GET", "/healthz")
                ready = connection.getresponse().status == 200
                connection.close()
            except OSError:
                ready = False
            if ready:
                click.echo("\n".join(["", BANNER_RULE, *lines, BANNER_RULE, ""]))
                return
            time.sleep(0.2)

    threading.Thread(target=wait, name="idp-ready-banner", daemon=True).start()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    default=5000,
    show_default=True,
    type=int,
    help="Also the issuer's port when no issuer is set (http://localhost:PORT).",
)
@click.option("--production", is_flag=True, help="One worker per CPU, 4 threads each.")
@click.option(
    "--server",
    type=click.Choice(["granian", "gunicorn"]),
    default=None,
    help="The WSGI server (default: granian; docs/performance.md compares them).",
)
def serve(host: str, port: int, production: bool, server: str | None) -> None:
    """Serve idp (granian or gunicorn); the embedded database is created or upgraded first."""
    import dataclasses
    import os

    from idp import json_logs, metrics, serving
    from idp.extensions import db
    from idp.settings import given_settings

    try:
        given = given_settings()
    except SettingsError as error:
        _fail(f"configuration: {error}")
    if "issuer" not in given:
        # An issuer nobody set follows the port (docs/configuration.md, ``issuer``); the
        # workers build their own application and inherit it through the environment.
        os.environ["IDP_ISSUER"] = f"http://localhost:{port}"
    with _app() as app:
        settings = app.extensions["idp"].settings
        try:
            settings.refuse_development_secret(production_server=production)
        except SettingsError as error:
            _fail(f"configuration: {error}")
        production_server = production or settings.production
        prepare_database(app)
        lines = _welcome(app, production_server=production_server)
        if not production_server:
            lines.insert(0, f"idp is ready at {local_address(host, port)}")
            if not settings.smtp_url:
                lines.append(
                    "Mail: no SMTP server is set (smtp_url), so nothing is sent: each message "
                    "is printed here, links included, and `idp outbox` lists them."
                )
        # Workers build their own application and pool; no connection crosses the fork.
        db.engine.dispose()
        log_level = settings.log_level
        log_format = settings.resolved_log_format(development=not production)
        warning = issuer_port_warning(settings.issuer, port)
    if warning:
        click.echo(warning, err=True)
    # The workers' lines in the same format (idp.wsgi reads the setting).
    os.environ["IDP_LOG_FORMAT"] = log_format
    # Log lines from here on (the server's own lines too), and one metrics directory that every
    # worker counts in (docs/operations.md).
    json_logs.configure(log_level, log_format)
    try:
        # Checked before the banner is promised (serving.run checks again).
        serving.refuse_a_taken_port(host, port)
        if production_server:
            click.echo("\n".join(lines))
        else:
            announce_when_ready(host, port, lines)
        with metrics.multiprocess_directory():
            make = serving.production_options if production else serving.development_options
            options = dataclasses.replace(
                make(host, port), log_level=log_level, log_format=log_format
            )
            serving.run(server or serving.DEFAULT_SERVER, options)
    except serving.PortInUseError:
        where = local_address(host, port) if not production_server else f"{host}:{port}"
        _fail(f"{where} is already in use; is another idp already serving there?")


# -- users ----------------------------------------------------------------------------------------
@main.group()
def users() -> None:
    """Manage users."""


def _user_admin(app: Flask) -> Any:
    """The service the console's user pages use, acting as ``cli``."""
    from idp.extensions import db
    from idp.services.backup_codes import BackupCodeService
    from idp.services.notifications import Notifier
    from idp.services.totp import TotpService
    from idp.services.user_admin import UserAdmin

    runtime = app.extensions["idp"]
    settings = runtime.settings
    return UserAdmin(
        db.session(),
        passwords=runtime.passwords,
        notifier=Notifier(db.session(), settings.smtp_url, settings.smtp_sender),
        backup_codes=BackupCodeService(db.session(), runtime.backup_code_hasher),
        totp=TotpService(db.session(), runtime.totp_fernet, settings.webauthn_rp_name),
        actor_id=CLI_ACTOR,
        allow_local_domains=not settings.production,
    )


def _find_user(service: Any, email: str) -> Any:
    user = service.find(email)
    if user is None:
        _fail(f"no user {email}")
    return user


def _link_url(app: Flask) -> Callable[[str, str], str]:
    from idp.services.user_admin import link_path

    settings = app.extensions["idp"].settings
    return lambda purpose, secret: settings.endpoint(link_path(purpose, secret))


def _user_text(data: dict[str, Any]) -> str:
    flags = [f for f, on in (("admin", data["admin"]), ("disabled", data["disabled"])) if on]
    return f"{data['email']}  {data['name'] or '-'}  sub {data['sub']}" + (
        f"  ({', '.join(flags)})" if flags else ""
    )


@users.command("list")
@click.option("--search", "query", default="", help="Part of an email address or name.")
@click.option("--page", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
def users_list(query: str, page: int, as_json: bool) -> None:
    """List users, newest first (25 a page)."""
    from idp.services.user_admin import describe_user

    with _app() as app:
        result = _user_admin(app).search(query, page)
        rows = [describe_user(u) for u in result.users]
        _emit(rows, as_json, lambda r: "\n".join(_user_text(u) for u in r) or "no users")


@users.command("create")
@click.argument("email")
@click.option("--name", default="")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--admin", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def users_create(email: str, name: str, password_stdin: bool, admin: bool, as_json: bool) -> None:
    """Create a user; without --password-stdin, follow with `idp login-link` (or use invite)."""
    from idp.extensions import db
    from idp.services.user_admin import UserAdminError, describe_user

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    with _app() as app:
        try:
            user = _user_admin(app).create(email, name=name, password=password, admin=admin)
            db.session.commit()
        except UserAdminError as error:
            _fail(str(error))
        _emit(describe_user(user), as_json, lambda d: f"created user {d['email']} (sub {d['sub']})")


@users.command("invite")
@click.argument("email")
@click.option("--name", default="")
@click.option("--admin", is_flag=True)
@click.option("--ttl", type=int, default=86400, show_default=True, help="Seconds (at most a day).")
@click.option("--json", "as_json", is_flag=True)
def users_invite(email: str, name: str, admin: bool, ttl: int, as_json: bool) -> None:
    """Create a user and a one-time invite (emailed, and printed to pass on another way)."""
    from idp.extensions import db
    from idp.models.base import utcnow
    from idp.services.user_admin import UserAdminError, describe_user

    with _app() as app:
        try:
            user, issued = _user_admin(app).invite(
                email, name=name, admin=admin, ttl=ttl, now=utcnow(),
                url_for_secret=_link_url(app), inviter="An administrator",
            )  # fmt: skip
            db.session.commit()
        except UserAdminError as error:
            _fail(str(error))
        data = describe_user(user) | {
            "url": issued.url, "link_id": issued.id,
            "expires_at": issued.link.expires_at.isoformat(),
        }  # fmt: skip
        _emit(data, as_json, lambda d: f"{d['url']}\n(one use, valid until {d['expires_at']})")


@users.command("show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True)
def users_show(email: str, as_json: bool) -> None:
    """One user: sign-in methods, sessions, connected apps, unused links."""
    from idp.models.base import utcnow
    from idp.services.user_admin import describe_link, describe_user

    with _app() as app:
        service = _user_admin(app)
        user = _find_user(service, email)
        now = utcnow()
        data = describe_user(user) | {
            "email_verified": user.email_verified,
            "password": user.password_hash is not None,
            "passkeys": [
                {"credential_id": p.credential_id, "name": p.name,
                 "created_at": p.created_at.isoformat(),
                 "last_used_at": p.last_used_at.isoformat() if p.last_used_at else None}
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
                {"client_id": c.client.client_id, "name": c.client.name, "scopes": c.scopes}
                for c in service.consents(user)
            ],
            "links": [describe_link(link) for link in service.live_links(user, now)],
        }  # fmt: skip
        _emit(data, as_json, _user_detail_text)


def _user_detail_text(data: dict[str, Any]) -> str:
    lines = [_user_text(data)]
    lines.append(f"password: {'yes' if data['password'] else 'no'}; authenticator app: "
                 f"{'yes' if data['totp'] else 'no'}; backup codes left: "
                 f"{data['backup_codes_left']}")  # fmt: skip
    lines += [f"passkey: {p['name']} ({p['credential_id'][:16]}...)" for p in data["passkeys"]]
    lines += [f"session: {s['sid']} since {s['created_at']}" for s in data["sessions"]]
    lines += [f"app: {c['name']} ({c['client_id']})" for c in data["consents"]]
    lines += [f"{k['purpose']} link {k['id']} until {k['expires_at']}" for k in data["links"]]
    return "\n".join(lines)


def _user_action(email: str, as_json: bool, act: Callable[[Any, Any], None], done: str) -> None:
    from idp.extensions import db
    from idp.services.user_admin import UserAdminError, describe_user

    with _app() as app:
        service = _user_admin(app)
        user = _find_user(service, email)
        data = describe_user(user)
        try:
            act(service, user)
            db.session.commit()
        except UserAdminError as error:
            db.session.rollback()
            service.record_refusal(done, user, error)
            db.session.commit()
            _fail(str(error))
        if done != "deleted":
            data = describe_user(user)
        _emit(data, as_json, lambda d: f"{done} {d['email']}")


@users.command("disable")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True)
def users_disable(email: str, as_json: bool) -> None:
    """Disable a user: sessions end, tokens are revoked, no new code or token."""
    from idp.models.base import utcnow

    _user_action(email, as_json, lambda s, u: s.disable(u, utcnow()), "disabled")


@users.command("enable")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True)
def users_enable(email: str, as_json: bool) -> None:
    """Enable a disabled user."""
    _user_action(email, as_json, lambda s, u: s.enable(u), "enabled")


@users.command("promote")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True)
def users_promote(email: str, as_json: bool) -> None:
    """Give a user the admin role."""
    _user_action(email, as_json, lambda s, u: s.promote(u), "promoted")


@users.command("demote")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True)
def users_demote(email: str, as_json: bool) -> None:
    """Take the admin role away (never from the last active admin)."""
    _user_action(email, as_json, lambda s, u: s.demote(u), "demoted")


@users.command("delete")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True)
def users_delete(email: str, yes: bool, as_json: bool) -> None:
    """Delete a user and everything issued to them (the audit log keeps its history)."""
    from idp.models.base import utcnow

    if not yes:
        click.confirm(f"Delete {email} and everything issued to them?", abort=True)
    _user_action(email, as_json, lambda s, u: s.delete(u, utcnow()), "deleted")


@users.command("unlock")
@click.argument("email")
def users_unlock(email: str) -> None:
    """Lift the failed-attempt locks and delays on a user's sign-in methods."""
    from idp.extensions import db
    from idp.login.views import sign_in_service
    from idp.services.users import UserService

    with _app() as app:
        user = UserService(db.session(), app.extensions["idp"].passwords).find_by_email(email)
        if user is None:
            _fail(f"no user {email}")
        with app.test_request_context():
            sign_in_service().unlock(user)
            db.session.commit()
        click.echo(f"unlocked {user.email}")


class _IssueByDefault(click.Group):
    """``idp login-link EMAIL`` stays the short form of ``idp login-link issue EMAIL``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["issue", *args]
        return super().parse_args(ctx, args)


@main.group("login-link", cls=_IssueByDefault)
def login_link() -> None:
    """One-time sign-in links: `idp login-link EMAIL`, `... list EMAIL`, `... revoke EMAIL`."""


@login_link.command("issue")
@click.argument("email")
@click.option("--ttl", type=int, help="Seconds the link stays valid (default: login_link_ttl).")
@click.option("--json", "as_json", is_flag=True)
def login_link_issue(email: str, ttl: int | None, as_json: bool) -> None:
    """Make a one-time sign-in link for a user who lost every way in (or the first admin)."""
    from idp.extensions import db
    from idp.models.base import utcnow
    from idp.services.user_admin import UserAdminError

    with _app() as app:
        settings = app.extensions["idp"].settings
        lifetime = ttl or settings.login_link_ttl
        if not 60 <= lifetime <= 86400:
            _fail("--ttl must be between 60 seconds and 24 hours")
        service = _user_admin(app)
        user = _find_user(service, email)
        try:
            # Emailed to the user (or kept in the outbox) and printed for the admin, who can
            # pass it on by another channel.
            issued = service.send_login_link(
                user, ttl=lifetime, now=utcnow(), url_for_secret=_link_url(app)
            )
        except UserAdminError as error:
            _fail(str(error))
        db.session.commit()
        data = {"email": user.email, "url": issued.url, "id": issued.id,
                "expires_at": issued.link.expires_at.isoformat()}  # fmt: skip
        _emit(data, as_json, lambda d: f"{d['url']}\n(one use, valid until {d['expires_at']})")


@login_link.command("list")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True)
def login_link_list(email: str, as_json: bool) -> None:
    """A user's unused login links and invites (never their secrets)."""
    from idp.models.base import utcnow
    from idp.services.user_admin import describe_link

    with _app() as app:
        service = _user_admin(app)
        rows = [describe_link(k) for k in service.live_links(_find_user(service, email), utcnow())]
        _emit(
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
    from idp.extensions import db
    from idp.models.base import utcnow
    from idp.services.user_admin import UserAdminError

    if bool(link_id) == revoke_all:
        _fail("give a link id (from `idp login-link list EMAIL`) or --all")
    with _app() as app:
        service = _user_admin(app)
        user = _find_user(service, email)
        now = utcnow()
        try:
            ids = [link_id] if link_id else [k.id_hash[:16] for k in service.live_links(user, now)]
            for public_id in ids:
                service.revoke_link(user, public_id, now)
        except UserAdminError as error:
            _fail(str(error))
        db.session.commit()
        click.echo(f"revoked {len(ids)} link{'' if len(ids) == 1 else 's'} of {user.email}")


# -- clients --------------------------------------------------------------------------------------
# The console's pages and these commands share ``idp.services.clients``: the rules live there.
KIND_HELP = "web: confidential, has a backend; spa / native: public, PKCE (native: RFC 8252)."


@main.group()
def clients() -> None:
    """Manage relying-party applications."""


def _client_service(app: Flask) -> Any:
    from idp.extensions import db
    from idp.services.clients import ClientService

    rt = app.extensions["idp"]
    return ClientService(db.session(), rt.client_secrets, issuer=rt.settings.issuer)


def _cli_actor() -> Any:
    from idp.services.clients import Actor

    return Actor(user_id=CLI_ACTOR, via="cli")


def _read_jwks(jwks_file: Path | None) -> dict[str, Any] | None:
    if jwks_file is None:
        return None
    try:
        jwks = json.loads(jwks_file.read_text())
    except (ValueError, RecursionError):
        _fail(f"{jwks_file} is not JSON")
    if not isinstance(jwks, dict):
        _fail(f"{jwks_file} must hold a JSON object with a 'keys' list")
    return jwks


def _client_options(create: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options ``create`` and ``edit`` share; on ``edit`` an absent option changes nothing."""

    def flag(name: str, help: str) -> Any:
        if create:
            return click.option(name, is_flag=True, default=False, help=help)
        positive = name.removeprefix("--")
        return click.option(f"{name}/--not-{positive}", default=None, help=help)

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option("--name", required=create, help="Shown to users on the consent page."),
            click.option("--kind", type=click.Choice(["web", "spa", "native"]), help=KIND_HELP),
            click.option(
                "--redirect-uri",
                "redirect_uris",
                multiple=True,
                help="Repeat for several"
                + ("" if create else "; replaces the list")
                + " (required with the authorization_code grant).",
            ),
            click.option("--post-logout-redirect-uri", "post_logout_uris", multiple=True),
            click.option(
                "--auth-method",
                type=click.Choice(
                    ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
                ),
            ),
            flag("--first-party", "Trusted: skips the consent screen."),
            click.option("--id-token-alg", type=click.Choice(["RS256", "ES256", "EdDSA"])),
            click.option("--scope", "scopes", multiple=True, help="Allowed scope (repeat)."),
            click.option(
                "--grant-type", "grant_types", multiple=True, help="Allowed grant type (repeat)."
            ),
            click.option(
                "--jwks-file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
            ),
            click.option("--logo-uri", help="https URL of the logo on the consent page."),
            click.option("--tos-uri", help="https URL of the terms of service."),
            click.option("--policy-uri", help="https URL of the privacy policy."),
            # OpenID Connect Back-Channel Logout 1.0 (docs/integrating.md).
            click.option(
                "--backchannel-logout-uri",
                help="https URL that gets a logout token when a session of the app's users ends"
                + ("." if create else " ('' removes it)."),
            ),
            flag(
                "--backchannel-logout-session-required",
                "The app needs the session id (sid) in logout tokens (idp always sends it).",
            ),
            click.option(
                "--allowed-group",
                "allowed_groups",
                multiple=True,
                help="Only members of this group may sign in (repeat)"
                + ("" if create else "; replaces the list")
                + ".",
            ),
            click.option(
                "--allow-everyone", is_flag=True, help="Every user may sign in (no group needed)."
            ),
            click.option(
                "--claim-map",
                "claim_maps",
                multiple=True,
                metavar="CLAIM:GROUP=VALUE",
                help="Members of GROUP get VALUE in CLAIM (repeat)"
                + ("" if create else "; replaces the maps")
                + ".",
            ),
            click.option("--json", "as_json", is_flag=True),
        ]
        if create:
            options.append(click.option("--public", is_flag=True, help="Same as --kind spa."))
        else:
            options.append(
                click.option("--clear-post-logout-redirect-uris", "clear_post_logout", is_flag=True)
            )
            options.append(click.option("--clear-claim-maps", is_flag=True))
        for option in reversed(options):
            command = option(command)
        return command

    return apply


@clients.command("create")
@_client_options(create=True)
def clients_create(
    name: str,
    kind: str | None,
    redirect_uris: tuple[str, ...],
    post_logout_uris: tuple[str, ...],
    auth_method: str | None,
    first_party: bool,
    id_token_alg: str | None,
    scopes: tuple[str, ...],
    grant_types: tuple[str, ...],
    jwks_file: Path | None,
    logo_uri: str | None,
    tos_uri: str | None,
    policy_uri: str | None,
    allowed_groups: tuple[str, ...],
    allow_everyone: bool,
    claim_maps: tuple[str, ...],
    as_json: bool,
    public: bool,
    backchannel_logout_uri: str | None,
    backchannel_logout_session_required: bool,
) -> None:
    """Register a client; its secret is shown once."""
    from idp.extensions import db
    from idp.services.clients import ClientFields, ClientRegistrationError
    from idp.services.groups import GroupError

    if public and kind not in (None, "spa", "native"):
        _fail("--public contradicts --kind web")
    fields = ClientFields(
        name=name,
        kind=kind or ("spa" if public else "web"),
        redirect_uris=list(redirect_uris),
        post_logout_redirect_uris=list(post_logout_uris),
        auth_method=auth_method,
        first_party=first_party,
        id_token_alg=id_token_alg or "RS256",
        scopes=list(scopes) or None,
        grant_types=list(grant_types) or None,
        jwks=_read_jwks(jwks_file),
        logo_uri=logo_uri,
        tos_uri=tos_uri,
        policy_uri=policy_uri,
        backchannel_logout_uri=backchannel_logout_uri,
        backchannel_logout_session_required=backchannel_logout_session_required,
    )
    with _app() as app:
        try:
            new = _client_service(app).create_from(fields, actor=_cli_actor())
            db.session.flush()
            _apply_group_options(new.client, allowed_groups, allow_everyone, claim_maps, False)
            db.session.commit()
        except (ClientRegistrationError, GroupError) as error:
            _fail(str(error))
        data = _describe_client(new.client) | {"client_secret": new.client_secret}
        _emit(data, as_json, _client_text)


def _apply_group_options(
    client: Any,
    allowed_groups: tuple[str, ...],
    allow_everyone: bool,
    claim_maps: tuple[str, ...],
    clear_claim_maps: bool,
) -> None:
    """``--allowed-group``/``--allow-everyone`` and ``--claim-map``: through the groups service,
    in the same transaction as the rest of the change (an error changes nothing)."""
    from idp.extensions import db
    from idp.services.groups import GroupError, GroupService, parse_claim_map

    service = GroupService(db.session())
    if allow_everyone and allowed_groups:
        raise GroupError("--allow-everyone contradicts --allowed-group")
    if allow_everyone or allowed_groups:
        service.set_allowed_groups(client, list(allowed_groups))
    if claim_maps or clear_claim_maps:
        service.set_claim_maps(client, [parse_claim_map(m) for m in claim_maps])


def _describe_client(client: Any) -> dict[str, Any]:
    from idp.extensions import db
    from idp.services.clients import describe
    from idp.services.groups import GroupService

    service = GroupService(db.session())
    return describe(client) | {
        "allowed_groups": (
            [g.name for g in service.allowed_groups(client.client_id)]
            if client.restricted_to_groups
            else None
        ),
        "claim_maps": [str(m) for m in service.claim_maps(client.client_id)],
    }


def _client_text(data: dict[str, Any]) -> str:
    lines = [f"{k}: {v}" for k, v in data.items() if k != "client_secret"]
    if data.get("client_secret"):
        lines.append(f"client_secret: {data['client_secret']}  (shown once: store it now)")
    return "\n".join(lines)


@clients.command("list")
@click.option("--json", "as_json", is_flag=True)
def clients_list(as_json: bool) -> None:
    """List clients: client id, kind, status, name."""
    from idp.services.clients import describe

    with _app() as app:
        rows = [describe(c) for c in _client_service(app).list()]
        _emit(
            rows,
            as_json,
            lambda r: "\n".join(
                f"{c['client_id']}  {c['kind']:6}  {c['status']:8}  {c['name']}" for c in r
            ),
        )


def _load_client(client_id: str) -> Any:
    from idp.extensions import db
    from idp.models import Client

    client = db.session.get(Client, client_id) if len(client_id) <= 64 else None
    if client is None:
        _fail(f"no client {client_id}")
    return client


@clients.command("show")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True)
def clients_show(client_id: str, as_json: bool) -> None:
    """Show one client (never its secret)."""
    with _app():
        _emit(_describe_client(_load_client(client_id)), as_json, _client_text)


@clients.command("edit")
@click.argument("client_id")
@_client_options(create=False)
def clients_edit(
    client_id: str,
    name: str | None,
    kind: str | None,
    redirect_uris: tuple[str, ...],
    post_logout_uris: tuple[str, ...],
    auth_method: str | None,
    first_party: bool | None,
    id_token_alg: str | None,
    scopes: tuple[str, ...],
    grant_types: tuple[str, ...],
    jwks_file: Path | None,
    logo_uri: str | None,
    tos_uri: str | None,
    policy_uri: str | None,
    allowed_groups: tuple[str, ...],
    allow_everyone: bool,
    claim_maps: tuple[str, ...],
    as_json: bool,
    clear_post_logout: bool,
    clear_claim_maps: bool,
    backchannel_logout_uri: str | None,
    backchannel_logout_session_required: bool | None,
) -> None:
    """Change a client; options not given stay as they are (an empty --logo-uri '' clears it).
    A new secret is printed once if the change needs one."""
    import dataclasses

    from idp.extensions import db
    from idp.services.clients import ClientRegistrationError, fields_of
    from idp.services.groups import GroupError

    changes: dict[str, Any] = {
        key: value
        for key, value in {
            "name": name,
            "kind": kind,
            "auth_method": auth_method,
            "first_party": first_party,
            "id_token_alg": id_token_alg,
            "jwks": _read_jwks(jwks_file),
            "logo_uri": logo_uri,
            "tos_uri": tos_uri,
            "policy_uri": policy_uri,
            "backchannel_logout_uri": backchannel_logout_uri,
            "backchannel_logout_session_required": backchannel_logout_session_required,
        }.items()
        if value is not None
    }
    lists = {"redirect_uris": redirect_uris, "post_logout_redirect_uris": post_logout_uris,
             "scopes": scopes, "grant_types": grant_types}  # fmt: skip
    for key, values in lists.items():
        if values:
            changes[key] = list(values)
    if clear_post_logout:
        changes["post_logout_redirect_uris"] = []
    with _app() as app:
        client = _load_client(client_id)
        try:
            secret = None
            if changes or not (allowed_groups or allow_everyone or claim_maps or clear_claim_maps):
                fields = dataclasses.replace(fields_of(client), **changes)
                secret = _client_service(app).update(client, fields, actor=_cli_actor())
            _apply_group_options(
                client, allowed_groups, allow_everyone, claim_maps, clear_claim_maps
            )
            db.session.commit()
        except (ClientRegistrationError, GroupError) as error:
            _fail(str(error))
        _emit(_describe_client(client) | {"client_secret": secret}, as_json, _client_text)


def _client_switch(
    client_id: str, as_json: bool, act: Callable[[Any, Any], None], done: str
) -> None:
    from idp.extensions import db
    from idp.services.clients import describe

    with _app() as app:
        client = _load_client(client_id)
        act(_client_service(app), client)
        db.session.commit()
        _emit(describe(client), as_json, lambda d: f"{done} client {d['client_id']}")


@clients.command("disable")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True)
def clients_disable(client_id: str, as_json: bool) -> None:
    """Stop a client: no sign-ins, no tokens, and its access tokens are revoked now."""
    _client_switch(client_id, as_json, lambda s, c: s.disable(c, actor=_cli_actor()), "disabled")


@clients.command("enable")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True)
def clients_enable(client_id: str, as_json: bool) -> None:
    """Let a disabled client sign users in again."""
    _client_switch(client_id, as_json, lambda s, c: s.enable(c, actor=_cli_actor()), "enabled")


@clients.command("rotate-secret")
@click.argument("client_id")
@click.option(
    "--overlap",
    type=int,
    help="Seconds the old secret keeps working (default: client_secret_rotation_overlap; "
    "0: it stops at once).",
)
@click.option("--json", "as_json", is_flag=True)
def clients_rotate_secret(client_id: str, overlap: int | None, as_json: bool) -> None:
    """Give a client a new secret (shown once); the old one works on for the overlap."""
    from idp.extensions import db
    from idp.services.clients import ClientRegistrationError

    with _app() as app:
        settings = app.extensions["idp"].settings
        client = _load_client(client_id)
        chosen = settings.client_secret_rotation_overlap if overlap is None else overlap
        try:
            secret = _client_service(app).rotate_secret(client, overlap=chosen, actor=_cli_actor())
        except ClientRegistrationError as error:
            _fail(str(error))
        db.session.commit()
        expires = client.previous_secret_expires_at
        data = {
            "client_id": client_id,
            "client_secret": secret,
            "previous_secret_expires_at": expires.isoformat() if expires else None,
        }
        _emit(data, as_json, _client_text)


@clients.command("delete")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True)
def clients_delete(client_id: str, as_json: bool) -> None:
    """Delete a client and everything issued to it."""
    from idp.extensions import db

    with _app() as app:
        _client_service(app).delete(_load_client(client_id), actor=_cli_actor())
        db.session.commit()
        _emit({"client_id": client_id, "deleted": True}, as_json,
              lambda d: f"deleted client {d['client_id']}")  # fmt: skip


# -- groups ---------------------------------------------------------------------------------------
@main.group()
def groups() -> None:
    """Manage groups: who belongs, and which apps they open (docs/admins.md)."""


@contextmanager
def _group_service() -> Iterator[Any]:
    """The groups service acting as ``cli``; a ``GroupError`` is the command's error, and
    nothing it refused is committed."""
    from idp.extensions import db
    from idp.services.groups import GroupError, GroupService

    with _app():
        try:
            yield GroupService(db.session())
        except GroupError as error:
            db.session.rollback()
            _fail(str(error))


def _group_text(data: dict[str, Any]) -> str:
    lines = [f"{data['name']}  {data['display_name']}"]
    if data.get("description"):
        lines.append(f"  {data['description']}")
    if "members" in data:
        lines.append(f"  members: {', '.join(data['members']) or '-'}")
    if data.get("allowed_at"):
        lines.append(f"  opens: {', '.join(data['allowed_at'])}")
    return "\n".join(lines)


@groups.command("create")
@click.argument("name")
@click.option("--display-name", default="", help="Shown in the console and the portal.")
@click.option("--description", default="")
@click.option("--json", "as_json", is_flag=True)
def groups_create(name: str, display_name: str, description: str, as_json: bool) -> None:
    """Create a group. NAME: lowercase letters, digits, '-', '_', '.'; at most 64."""
    from idp.extensions import db
    from idp.services.groups import describe_group

    with _group_service() as service:
        group = service.create(name, display_name, description)
        db.session.commit()
        _emit(describe_group(group, []), as_json, lambda d: f"created group {d['name']}")


@groups.command("list")
@click.option("--json", "as_json", is_flag=True)
def groups_list(as_json: bool) -> None:
    """Every group with its member count."""
    from idp.services.groups import describe_group

    with _group_service() as service:
        rows = [describe_group(g) | {"member_count": n} for g, n in service.list_with_counts()]
        _emit(rows, as_json, lambda r: "\n".join(
            f"{g['name']}  {g['member_count']} member(s)  {g['display_name']}" for g in r
        ))  # fmt: skip


@groups.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def groups_show(name: str, as_json: bool) -> None:
    """One group: its members and the clients it opens."""
    from idp.services.groups import describe_group

    with _group_service() as service:
        group = service.require(name)
        data = describe_group(group, service.members(group)) | {
            "allowed_at": [c.client_id for c in service.clients_of(group)]
        }
        _emit(data, as_json, _group_text)


@groups.command("rename")
@click.argument("old")
@click.argument("new")
@click.option("--json", "as_json", is_flag=True)
def groups_rename(old: str, new: str, as_json: bool) -> None:
    """Rename a group (apps see the new name in the groups claim at the next sign-in)."""
    from idp.extensions import db
    from idp.services.groups import describe_group

    with _group_service() as service:
        group = service.require(old)
        service.rename(group, new)
        db.session.commit()
        _emit(describe_group(group), as_json, lambda d: f"renamed group {old} to {d['name']}")


@groups.command("delete")
@click.argument("name")
@click.option(
    "--yes",
    is_flag=True,
    help="Also when it is some client's only allowed group (that client then admits no one).",
)
@click.option("--json", "as_json", is_flag=True)
def groups_delete(name: str, yes: bool, as_json: bool) -> None:
    """Delete a group; its members lose the access it gave them."""
    from idp.extensions import db

    with _group_service() as service:
        revoked = service.delete(service.require(name), confirmed=yes)
        db.session.commit()
        _emit({"name": name, "deleted": True, "revoked_grants": revoked}, as_json,
              lambda d: f"deleted group {d['name']}")  # fmt: skip


def _membership_change(name: str, emails: tuple[str, ...], as_json: bool, add: bool) -> None:
    from idp.extensions import db

    with _group_service() as service:
        group = service.require(name)
        users = service.find_users(list(emails))
        changed = service.add_members(group, users) if add else service.remove_members(group, users)
        db.session.commit()
        key = "added" if add else "removed"
        data = {"group": group.name, key: [u.email for u in changed],
                "unchanged": [u.email for u in users if u not in changed]}  # fmt: skip
        _emit(data, as_json, lambda d: f"{key} {', '.join(d[key]) or 'no one'}" + (
            f" ({', '.join(d['unchanged'])} unchanged)" if d["unchanged"] else ""
        ))  # fmt: skip


@groups.command("add")
@click.argument("name")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@click.option("--json", "as_json", is_flag=True)
def groups_add(name: str, emails: tuple[str, ...], as_json: bool) -> None:
    """Add users to a group (an unknown address changes nothing)."""
    _membership_change(name, emails, as_json, add=True)


@groups.command("remove")
@click.argument("name")
@click.argument("emails", nargs=-1, required=True, metavar="EMAIL...")
@click.option("--json", "as_json", is_flag=True)
def groups_remove(name: str, emails: tuple[str, ...], as_json: bool) -> None:
    """Remove users from a group; their grants to apps they may no longer use are revoked."""
    _membership_change(name, emails, as_json, add=False)


# -- keys -----------------------------------------------------------------------------------------
@main.group()
def keys() -> None:
    """Manage signing keys."""


def _key_rows(app: Flask) -> list[dict[str, Any]]:
    from idp.extensions import db

    return [
        {
            "kid": k.kid,
            "alg": k.alg,
            "created_at": k.created_at.isoformat(),
            "active": k.retired_at is None,
            "unpublish_after": k.unpublish_after.isoformat() if k.unpublish_after else None,
        }
        for k in app.extensions["idp"].keys.list_keys(db.session())
    ]


def _keys_text(rows: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{r['alg']:6} {r['kid']}  {'active' if r['active'] else 'retired'}"
        + (f" (published until {r['unpublish_after']})" if r["unpublish_after"] else "")
        for r in rows
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
def keys_list(as_json: bool) -> None:
    """List signing keys."""
    with _app() as app:
        _emit(_key_rows(app), as_json, _keys_text)


@keys.command("rotate")
@click.option("--json", "as_json", is_flag=True)
def keys_rotate(as_json: bool) -> None:
    """Activate new signing keys; old public keys stay published until their tokens expire."""
    from idp.extensions import db

    with _app() as app:
        app.extensions["idp"].keys.rotate(db.session())
        db.session.commit()
        _emit(_key_rows(app), as_json, _keys_text)


# -- admin API tokens ----------------------------------------------------------------------------
@main.group("api-tokens")
def api_tokens() -> None:
    """Bearer tokens of the admin API (docs/api.md)."""


@contextmanager
def _token_service() -> Iterator[Any]:
    """The tokens service acting as ``cli``; an ``ApiTokenError`` is the command's error."""
    from idp.extensions import db
    from idp.services.api_tokens import ApiTokenError, ApiTokenService

    with _app() as app:
        try:
            yield ApiTokenService(db.session(), app.extensions["idp"].api_token_hasher)
        except ApiTokenError as error:
            db.session.rollback()
            _fail(str(error))


def _token_text(data: dict[str, Any]) -> str:
    return (
        f"{data['name']}  {' '.join(data['scopes'])}  {data['status']}  created "
        f"{data['created_at']}  expires {data['expires_at'] or 'never'}  last used "
        f"{data['last_used_at'] or 'never'}"
    )


@api_tokens.command("create")
@click.option("--name", required=True, help="1 to 48 lowercase letters, digits, '-', '_', '.'.")
@click.option("--scope", "scopes", multiple=True, required=True,
              help="Repeat for each scope, e.g. clients:write (implies clients:read).")  # fmt: skip
@click.option("--expires-in", "expires_in", type=int, default=None,
              help="Days until it expires (default: never).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
def api_tokens_create(name: str, scopes: tuple[str, ...], expires_in: int | None,
                      as_json: bool) -> None:  # fmt: skip
    """Create a token; it is printed once, here, and never again."""
    from idp.extensions import db
    from idp.services.api_tokens import describe_token

    with _token_service() as service:
        new = service.create(name, scopes, expires_in_days=expires_in)
        db.session.commit()
        data = {"token": new.secret} | describe_token(new.token)
        _emit(data, as_json, lambda d: f"{d['token']}\n(shown once: store it now)")


@api_tokens.command("list")
@click.option("--json", "as_json", is_flag=True)
def api_tokens_list(as_json: bool) -> None:
    """Every token: name, scopes, status, created, expires, last used (never the secret)."""
    from idp.services.api_tokens import describe_token

    with _token_service() as service:
        rows = [describe_token(t) for t in service.list()]
        _emit(rows, as_json, lambda r: "\n".join(_token_text(t) for t in r) or "no tokens")


@api_tokens.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def api_tokens_revoke(name: str, as_json: bool) -> None:
    """Revoke a token now: its next request gets 401."""
    from idp.extensions import db
    from idp.services.api_tokens import describe_token

    with _token_service() as service:
        token = service.revoke(name)
        db.session.commit()
        _emit(describe_token(token), as_json, lambda d: f"revoked {d['name']}")


# -- audit log, sign-in policy, pruning (the admin console uses the same services) ----


@main.group()
def audit() -> None:
    """Read the audit log."""


@audit.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="jsonl",
              show_default=True)  # fmt: skip
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

    try:
        given = {"user": user, "client": client, "kind": kind, "outcome": outcome,
                 "since": since, "until": until}  # fmt: skip
        where = audit_log.AuditFilter.parse(given)
    except audit_log.AuditFilterError as error:
        _fail(str(error))
    with _app():
        audit_log.record(db.session(), "audit.exported", actor_id=CLI_ACTOR,
                         format=fmt, filter=where.as_query(), via="cli")  # fmt: skip
        db.session.commit()
        for chunk in audit_log.EXPORTERS[fmt](audit_log.iter_rows(db.session(), where)):
            click.echo(chunk, nl=False)


@main.group()
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
@click.option("--json", "as_json", is_flag=True)
def policy_show(as_json: bool) -> None:
    """The policy in force; "overridden" marks values stored over the configuration."""
    with _app():
        _emit(_policy_data(), as_json, _policy_text)


@policy.command("set")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=VALUE...")
@click.option("--json", "as_json", is_flag=True)
def policy_set(assignments: tuple[str, ...], as_json: bool) -> None:
    """Override policy values, e.g. ``idp policy set passwords_allowed=false lockout_threshold=20``
    (lists comma-separated). Audited with old and new values."""
    from idp.extensions import db
    from idp.models.base import utcnow
    from idp.services.sign_in_policy import PolicyError, change_policy
    from idp.web import runtime

    changes: dict[str, str] = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals:
            _fail(f"expected NAME=VALUE, got {assignment!r}")
        changes[name.strip()] = value
    with _app():
        try:
            change_policy(db.session(), runtime().settings, changes, actor_id=CLI_ACTOR,
                          context=None, now=utcnow(), via="cli")  # fmt: skip
        except PolicyError as error:
            _fail(str(error))
        db.session.commit()
        _emit(_policy_data(), as_json, _policy_text)


@policy.command("reset")
@click.option("--json", "as_json", is_flag=True)
def policy_reset(as_json: bool) -> None:
    """Drop every override: the configured defaults apply again."""
    from idp.extensions import db
    from idp.models.base import utcnow
    from idp.services.sign_in_policy import reset_policy
    from idp.web import runtime

    with _app():
        reset_policy(db.session(), runtime().settings, actor_id=CLI_ACTOR, context=None,
                     now=utcnow(), via="cli")  # fmt: skip
        db.session.commit()
        _emit(_policy_data(), as_json, _policy_text)


@main.command()
@click.option("--follow", is_flag=True, help="Then wait for new messages and print each one.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1),
              help="How many of the newest messages to print first.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="JSON (with --follow: one object a line).")
def outbox(follow: bool, limit: int, as_json: bool) -> None:
    """The messages idp wrote to users, oldest first, with their links while unsent and
    unexpired: without an SMTP server (smtp_url) this is where they are."""
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

    with _app():
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


@main.command()
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

    with _app():
        settings = runtime().settings
        now = utcnow()
        policy = load_policy(db.session(), settings)
        counts = prune_rows(db.session(), RetentionPolicy(
            now=now, audit_retention_days=settings.audit_retention_days,
            session_idle_ttl=policy.session_idle_ttl, refresh_token_ttl=settings.refresh_token_ttl,
        ), channels=outbox_channels())  # fmt: skip
        # The nodes' opportunistic prune need not run again right after this one.
        claim_run(db.session(), now, timedelta(0))
        _emit(counts, as_json,
              lambda c: "\n".join(f"{table:24} {n}" for table, n in c.items()))  # fmt: skip

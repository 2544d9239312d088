"""``idp init`` and ``idp serve``: the schema, the signing keys, the first admin, the server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from idp.cli.common import app_context, fail

if TYPE_CHECKING:
    from flask import Flask


def prepare_database(app: Flask) -> list[str]:
    """Create or upgrade the schema and make sure every signing alg has an active key."""
    from alembic.util.exc import CommandError
    from cryptography.fernet import InvalidToken

    from idp.composition import container
    from idp.database import upgrade
    from idp.extensions import db

    try:
        upgrade(app.config["SQLALCHEMY_DATABASE_URI"])
    except CommandError as error:
        # Alembic finds no revision of ours: the schema is a newer idp's (docs/operations.md,
        # "Upgrades and migrations": going back restores the backup, never a newer schema).
        raise click.ClickException(
            f"the database's schema is not one this idp knows ({error}): it was made or upgraded "
            "by a newer idp. Run that version, or restore the backup taken before the upgrade."
        ) from None
    from idp.services.subjects import ensure_secret

    runtime = container(app)
    created = runtime.keys.ensure_keys(db.session())
    # The pairwise subjects' secret (OIDC Core 8.1): made by the migration, here for a database
    # that lacks it.
    ensure_secret(db.session(), runtime.clock.now())
    db.session.commit()
    try:
        runtime.keys.public_jwks(db.session())
    except InvalidToken:
        raise click.ClickException(
            "the secret key does not decrypt the stored signing keys: every node must run with "
            "the same IDP_SECRET_KEY that created them"
        ) from None
    return [f"{key.alg} {key.kid}" for key in created]


@click.command()
@click.option("--admin-email", default="", help="The first admin (default: IDP_ADMIN_EMAIL).")
def init(admin_email: str) -> None:
    """Create the database and the signing keys (safe to run again)."""
    with app_context() as app:
        for line in prepare_database(app):
            click.echo(f"created signing key {line}")
        click.echo("\n".join(_welcome(app, admin_email)))


def _welcome(app: Flask, admin_email: str = "", *, production_server: bool = False) -> list[str]:
    """Where discovery lives and, until an admin has a passkey, how the first admin signs in."""
    from idp.composition import clock
    from idp.extensions import db
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
            db.session(), runtime.passwords, email, ttl=settings.login_link_ttl, now=clock().now(),
            allow_local_domains=not settings.production,
        )  # fmt: skip
    except UserError as error:
        db.session.rollback()
        fail(f"the first admin's {error}")
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


def announce_when_ready(address: str, port: int, lines: list[str]) -> None:
    """Print ``lines`` as a banner once the server listening on ``address`` (an IP address,
    idp.serving ``listening_address``) answers: after the WSGI server's start-up lines rather
    than above them, where they scroll away.

    The thread that waits runs while the server forks its workers, and a fork copies every lock
    another thread holds at that instant, held, with nobody left in the worker to release it.
    So the thread takes none the workers need: it connects to the numeric address (no
    ``getaddrinfo``, which imports the ``idna`` codec the first time and takes glibc's resolver
    locks), sends bytes encoded here and reads bytes, and imports nothing. An HTTP client's
    resolving once imported the codec just as granian forked: the worker inherited the codec's
    import lock held, and every request waited on it forever, since Werkzeug encodes each
    request's host with that codec (tests/unit/test_ready_banner_fork.py)."""
    import socket
    import threading
    import time

    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)  # noqa: S104
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    authority = f"[{target}]:{port}" if family == socket.AF_INET6 else f"{target}:{port}"
    probe = f"GET /healthz HTTP/1.0\r\nHost: {authority}\r\n\r\n".encode("ascii")
    banner = "\n".join(["", BANNER_RULE, *lines, BANNER_RULE, ""])

    def answers() -> bool:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as connection:
                connection.settimeout(2)
                connection.connect((target, port))
                connection.sendall(probe)
                head = b""
                while b"\r\n" not in head and len(head) < 64:
                    received = connection.recv(64)
                    if not received:
                        break
                    head += received
        except OSError:
            return False
        return head.split(b" ", 2)[1:2] == [b"200"]  # "HTTP/1.1 200 OK"

    def wait() -> None:
        while not answers():
            time.sleep(0.2)
        click.echo(banner)

    threading.Thread(target=wait, name="idp-ready-banner", daemon=True).start()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
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
        address = serving.listening_address(host)
    except serving.UnknownHostError as error:
        fail(f"{error}: pass an IP address or a name this machine resolves (--host).")
    given = given_settings()
    if "issuer" not in given:
        # An issuer nobody set follows the port (docs/configuration.md, ``issuer``); the
        # workers build their own application and inherit it through the environment.
        os.environ["IDP_ISSUER"] = f"http://localhost:{port}"
    with app_context() as app:
        settings = app.extensions["idp"].settings
        settings.refuse_development_secret(production_server=production)
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
        serving.refuse_a_taken_port(address, port)
        if production_server:
            click.echo("\n".join(lines))
        else:
            announce_when_ready(address, port, lines)
        with metrics.multiprocess_directory():
            make = serving.production_options if production else serving.development_options
            options = dataclasses.replace(
                make(address, port), log_level=log_level, log_format=log_format
            )
            serving.run(server or serving.DEFAULT_SERVER, options)
    except serving.PortInUseError:
        where = local_address(host, port) if not production_server else f"{host}:{port}"
        # A newcomer's `make run` meets this when port 5000 is taken: say how to pick another.
        fail(
            f"{where} is already in use; is another idp already serving there? To serve another "
            "port: `make run PORT=8080` in idp's repository, or `idp serve --port 8080` (the "
            "issuer follows the port unless IDP_ISSUER names one)."
        )

"""The helpers every command group shares: the application context, errors, output."""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from flask import Flask

#: What a command prints: one value, as JSON (``--json``) or through its text function.
Data = TypeVar("Data")


def fail(message: str) -> NoReturn:
    """Stop the command with ``message`` on standard error and exit status 1."""
    raise click.ClickException(message)


@contextmanager
def cli_errors() -> Iterator[None]:
    """The one place where the command line turns errors of the layers below into its own: a
    service's refusal (:class:`idp.errors.DomainError`) becomes the command's error message, as
    does a change that lost to another (:class:`idp.errors.StaleVersionError`), and
    a configuration that does not load (:class:`idp.settings.SettingsError`) one that says so."""
    from idp.errors import DomainError, StaleVersionError
    from idp.settings import SettingsError

    try:
        yield
    except DomainError as error:
        raise click.ClickException(str(error)) from error
    except StaleVersionError as error:
        raise click.ClickException(
            f"{error}, by another change while this command ran: nothing was changed; run it again"
        ) from error
    except SettingsError as error:
        raise click.ClickException(f"configuration: {error}") from error


def started() -> None:
    """The command's application is built. If the console script paused the collector for the
    start (idp.cli ``run``), what the start built moves to the collector's permanent generation
    (gc.freeze: never walked again, nor by the collection at exit) and the collector resumes for
    what the command itself makes. In a process that did not pause it (a test's, through
    ``CliRunner``), nothing changes."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


@contextmanager
def app_context() -> Iterator[Flask]:
    """The application, configured from the environment, with its context pushed. A refusal
    leaves it with nothing of the command's uncommitted work."""
    from sqlalchemy.exc import SQLAlchemyError

    from idp import create_app
    from idp.database import describe_failure
    from idp.errors import DomainError
    from idp.extensions import db
    from idp.services.dependencies import DependencyUnavailableError

    app = create_app()
    started()
    engines = []
    try:
        with app.app_context():
            engines = list(db.engines.values())
            try:
                yield app
            except DomainError:
                db.session.rollback()
                raise
            except SQLAlchemyError as error:
                # A database not initialised (or behind this idp's schema) or not answering is
                # the operator's to fix: a line that says which, not a driver's traceback.
                with contextlib.suppress(SQLAlchemyError):
                    db.session.rollback()
                reason = describe_failure(db.engine, error)
                if reason is None:
                    raise
                fail(reason)
            except DependencyUnavailableError as error:
                # Redis down (``idp users unlock`` resets the counters there): the same one line
                # a server's refusal logs, and nothing of the command's work kept (docs/admins.md).
                db.session.rollback()
                fail(f"Redis is unavailable ({error.reason or 'not answering'}): nothing was "
                     "changed; run the command again once it answers")  # fmt: skip
    finally:
        # Its connections closed once the context's teardown (which mails what the command
        # committed) is done, not when the process exits: a command run inside another process
        # (the tests' CliRunner) leaves no pool behind.
        for engine in engines:
            engine.dispose()


def emit(data: Data, as_json: bool, text: Callable[[Data], str]) -> None:
    """Print ``data``: JSON with ``--json``, else the text ``text`` makes of it."""
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text(data))

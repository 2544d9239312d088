"""The helpers every command group shares: the application context, errors, output."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from flask import Flask

from idp.settings import SettingsError


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


@contextmanager
def app_context() -> Iterator[Flask]:
    from idp import create_app

    try:
        app = create_app()
    except SettingsError as error:
        raise click.ClickException(f"configuration: {error}") from error
    with app.app_context():
        yield app


def emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text(data))

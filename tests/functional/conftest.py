"""Fixtures shared by the functional tests: a user with a password, a first-party RP, and a live
multi-worker server on each database for the parallel-request tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from idp.checkpoints import CHECKPOINT_DIR_ENV
from tests.support.apps import live_on
from tests.support.checkpoints import Checkpoints
from tests.support.factories import CreatedUser, create_client, create_user
from tests.support.flow import RelyingParty
from tests.support.live import LiveIdp


@pytest.fixture
def user(app: Flask) -> CreatedUser:
    return create_user(app)


@pytest.fixture
def rp(app: Flask, client: FlaskClient) -> RelyingParty:
    return RelyingParty(client, create_client(app))


@pytest.fixture
def tokens(rp: RelyingParty, user: CreatedUser) -> dict[str, Any]:
    return rp.tokens_for(user)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveIdp]:
    """``idp serve --production`` (2 workers) on SQLite, then on a fresh PostgreSQL database."""
    directory = tmp_path_factory.mktemp(f"live-{request.param}")
    with live_on(request.param, directory, production=True) as idp:
        yield idp


@pytest.fixture
def checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Checkpoints:
    """Checkpoints for the requests of this test's app (idp.checkpoints): the variable is set, so
    every checkpoint is reached, and each lets requests through until the test holds it."""
    held = Checkpoints(tmp_path / "checkpoints")
    held.open_all()
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(held.directory))
    return held

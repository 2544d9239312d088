"""Fixtures shared by the functional tests: a user with a password and a first-party RP."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.factories import CreatedUser, create_client, create_user
from tests.support.flow import RelyingParty


@pytest.fixture
def user(app: Flask) -> CreatedUser:
    return create_user(app)


@pytest.fixture
def rp(app: Flask, client: FlaskClient) -> RelyingParty:
    return RelyingParty(client, create_client(app))


@pytest.fixture
def tokens(rp: RelyingParty, user: CreatedUser) -> dict[str, Any]:
    return rp.tokens_for(user)

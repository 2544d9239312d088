"""The composition root (idp.composition): one place builds the services, and it builds each one."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from idp.composition import Container, Services
from idp.models import Base
from idp.services.audit import RequestContext
from idp.settings import load_settings

PACKAGE = Path(__file__).resolve().parents[2] / "idp"
COMPOSITION = PACKAGE / "composition.py"
#: Values the factory passes along, not services: views may make their own.
VALUES = {"Actor", "RelyingParty", "RequestContext"}


def _service_classes() -> set[str]:
    """The classes idp.composition constructs from idp.services: the services and their stores."""
    tree = ast.parse(COMPOSITION.read_text())
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("idp.services")
        for alias in node.names
    }
    built = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    return {name for name in built & imported if name[0].isupper()} - VALUES


def test_the_composition_root_builds_the_services() -> None:
    assert {"GrantService", "SessionService", "PasskeyService", "UserAdmin"} <= _service_classes()


def test_nothing_else_outside_idp_services_constructs_a_service() -> None:
    services = _service_classes()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if path == COMPOSITION or relative.startswith("services/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in services:
                found.append(f"idp/{relative}:{node.lineno} {name}(")
    assert not found, "ask idp.composition.services() instead: " + ", ".join(found)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    settings = load_settings(
        {"issuer": "http://localhost", "secret_key": "composition-test-secret-0123456789abcdef"},
        environ={},
    )
    engine = create_engine(f"sqlite:///{tmp_path / 'composition.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield Services(Container.build(settings), lambda: session, RequestContext())
    engine.dispose()


def test_every_service_of_the_factory_builds(services: Services) -> None:
    for name, member in vars(Services).items():
        if isinstance(member, property):
            assert getattr(services, name) is not None or name == "mailer", name
    assert services.user_admin("admin-id", "console") is not None
    assert services.groups_as("admin-id", "console") is not None
    assert services.api_tokens(None) is not None
    assert services.outbox_channels()
    assert services.retention(datetime(2026, 1, 1, tzinfo=UTC)).session_idle_ttl > 0


def test_the_sign_in_policy_is_read_once_until_it_changes(services: Services) -> None:
    first = services.policy
    assert services.policy is first
    services.policy_changed()
    assert services.policy is not first


def test_a_redis_command_is_tried_once_with_a_two_second_timeout() -> None:
    """docs/operations.md, Redis: "each command waits at most 2 s"; a retry policy of redis-py's
    choosing (its constructor's default retries ten times) would multiply that per request."""
    from idp.redis_client import redis_client

    client = redis_client("redis://127.0.0.1:1/0")  # nothing is connected until a command
    options = client.connection_pool.connection_kwargs
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (2, 2)
    assert options["retry"]._retries == 0  # redis-py 5.2 has no public reader of it

"""Every refusal a service raises derives from ``idp.errors.DomainError``, so that each surface
turns refusals into its own errors in one place (the command line: ``idp.cli.LazyGroup``)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import idp.services
from idp.errors import DomainError


def _value_errors_of_the_services() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(idp.services.__path__, "idp.services."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, ValueError)
                and value.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_the_services_refuse_with_domain_errors() -> None:
    errors = _value_errors_of_the_services()
    assert "idp.services.group_fields.GroupError" in errors  # the walk finds the services' errors
    others = sorted(name for name, cls in errors.items() if not issubclass(cls, DomainError))
    assert others == [], f"derive these from idp.errors.DomainError: {others}"

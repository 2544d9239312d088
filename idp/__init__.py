"""idp: a passkey-first OpenID Connect identity provider.

The application factory is idp.app's ``create_app``. It is named here too, and imported only when
asked for (PEP 562), so that what needs no application imports none of it: ``idp --help`` and a
command's own help start without Flask, SQLAlchemy or a service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idp.app import create_app, load_checked_settings

__all__ = ["create_app", "load_checked_settings"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from idp import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

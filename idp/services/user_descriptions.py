"""Users and their login links as the command line's ``--json`` and the admin API print them."""

from __future__ import annotations

from typing import Any

from idp.models import (
    LoginLink,
    User,
)
from idp.services.login_links import link_id


def describe_user(user: User) -> dict[str, Any]:
    """A user as ``--json`` prints it."""
    return {
        "id": user.id,
        "sub": user.id,
        "email": user.email,
        "name": user.name,
        "admin": user.is_admin,
        "disabled": user.disabled_at is not None,
        "disabled_at": user.disabled_at.isoformat() if user.disabled_at else None,
        "created_at": user.created_at.isoformat() if user.created_at else None,
    }


def describe_link(link: LoginLink) -> dict[str, Any]:
    return {
        "id": link_id(link),
        "purpose": link.purpose,
        "created_by": link.created_by,
        "created_at": link.created_at.isoformat(),
        "expires_at": link.expires_at.isoformat(),
    }

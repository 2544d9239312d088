"""The admin console: client apps, users, login links, the audit log and the sign-in policy.

One blueprint, split into a module per page family; every route is behind ``_guard`` (admin role
and a passkey sign-in within ten minutes, ``idp.services.admin_access``), and every POST is
CSRF-checked by the application-wide ``CSRFProtect``.
"""

from __future__ import annotations

from idp.admin import api_tokens, audit, clients, groups, overview, policy, users
from idp.admin.blueprint import bp

# Importing the page families registers their routes on ``bp``.
__all__ = ["api_tokens", "audit", "bp", "clients", "groups", "overview", "policy", "users"]

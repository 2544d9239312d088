"""The admin API under ``/api/v1`` (docs/api.md): a third surface on the services the admin
console and the ``idp`` commands use, with no rule of its own.

docs/security.md, "Admin API":

- Bearer tokens only (RFC 6750 2.1): the blueprint never reads a cookie, so a signed-in admin's
  browser cannot be made to call it (no CSRF surface; that, and only that, is why it is exempt from
  the CSRF check), and it sends no CORS headers, so no other origin's script can read it.
- Every operation names the scope it needs; a token without it gets 403 ``insufficient_scope``.
- Failed authentications are audited and counted per client address; past the budget the address
  gets 429 until the window ends.
- Every error is ``application/problem+json`` (RFC 9457); bad input is a 4xx, never a 5xx.
"""

from __future__ import annotations

from idp.api import audit, clients, core, groups, openapi, users
from idp.api.blueprint import bp

# Importing the operations registers their routes on ``bp``.
__all__ = ["audit", "bp", "clients", "core", "groups", "openapi", "users"]

"""The end-user portal: one blueprint (``idp.account.blueprint``), three page families: the sign-in
methods (``methods``), the passkeys among them (``passkeys``), and the sessions, apps, activity and
profile (``profile``)."""

from __future__ import annotations

from idp.account import methods, passkeys, profile
from idp.account.blueprint import bp

# Importing the page families registers their routes on ``bp``.
__all__ = ["bp", "methods", "passkeys", "profile"]

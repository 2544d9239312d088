"""The application's container under its former name, for idp/cli.py until the command line asks
idp.composition for its services (then this module goes)."""

from __future__ import annotations

from idp.composition import Container as Runtime

__all__ = ["Runtime"]

"""The admin API's blueprint (docs/api.md), apart from ``idp/api/__init__.py`` so that the
operations import it without importing their own package back (tests/unit/test_import_graph.py).
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

"""The console's landing page."""

from __future__ import annotations

from typing import Any

from flask import g, render_template

from idp.admin.blueprint import bp


@bp.get("")
def index() -> Any:
    """The admin overview: where to go next."""
    return render_template("admin/index.html", admin=g.admin)

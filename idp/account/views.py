"""The portal's home page (the full portal has its own issue)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, url_for

from idp.web import current_session

bp = Blueprint("account", __name__)


@bp.get("/")
def index() -> Any:
    """Send visitors to their account."""
    return redirect(url_for("account.home"))


@bp.get("/account")
def home() -> Any:
    """Show who is signed in."""
    session = current_session()
    if session is None:
        return redirect(url_for("login.login"))
    return render_template("account/home.html", user=session.user, session=session)

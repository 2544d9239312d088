"""The OpenID Provider's blueprint, and the Authlib server its token-side views hand requests to."""

from __future__ import annotations

from authlib.integrations.flask_oauth2 import AuthorizationServer
from flask import (
    Blueprint,
    current_app,
)

bp = Blueprint("oidc", __name__)


def oauth_server() -> AuthorizationServer:
    server = current_app.extensions["idp.oauth"]
    assert isinstance(server, AuthorizationServer)
    return server

"""The well-known documents for passkeys."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient

from idp import create_app
from idp.models import Base
from tests.conftest import app_overrides


def test_related_origins_lists_the_configured_origins(client: FlaskClient) -> None:
    """WebAuthn L3 5.11 Related Origin Requests: {"origins": [...]} at /.well-known/webauthn."""
    response = client.get("/.well-known/webauthn")
    assert response.status_code == 200
    assert response.get_json() == {"origins": ["http://localhost"]}


def test_related_origins_include_extra_configured_origins(tmp_path: Path) -> None:
    origins = ("https://id.example.com", "https://login.example.net")
    app = create_app(
        app_overrides(
            f"sqlite:///{tmp_path / 'idp.db'}",
            tmp_path,
            issuer="https://id.example.com",
            webauthn_rp_id="example.com",
            webauthn_origins=origins,
        )
    )
    with app.app_context():
        Base.metadata.create_all(app.extensions["sqlalchemy"].engine)
    response = app.test_client().get("/.well-known/webauthn", base_url="https://id.example.com")
    assert response.get_json() == {"origins": list(origins)}


def test_passkey_endpoints_point_to_the_account_page(client: FlaskClient) -> None:
    """W3C Passkey Endpoints: enroll and manage URLs for credential managers."""
    response = client.get("/.well-known/passkey-endpoints")
    assert response.status_code == 200
    assert response.get_json() == {
        "enroll": "http://localhost/account",
        "manage": "http://localhost/account",
    }

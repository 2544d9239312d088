"""Test data: users and clients created through the real services, and rows read back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask
from sqlalchemy import Integer, select

from idp.extensions import db
from idp.services.clients import ClientService
from idp.services.users import UserService

DEFAULT_PASSWORD = "correct horse battery staple"
REDIRECT_URI = "https://rp.example/callback"
POST_LOGOUT_URI = "https://rp.example/signed-out"


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    client_secret: str | None
    redirect_uri: str


@dataclass(frozen=True)
class CreatedUser:
    id: str
    email: str
    password: str


def create_user(
    app: Flask, email: str = "ada@example.com", password: str = DEFAULT_PASSWORD, **kwargs: Any
) -> CreatedUser:
    with app.app_context():
        user = UserService(db.session(), app.extensions["idp"].passwords).create(
            email,
            password=password,
            name=kwargs.pop("name", "Ada Lovelace"),
            allow_local_domains=not app.extensions["idp"].settings.production,
            **kwargs,
        )
        db.session.commit()
        return CreatedUser(id=user.id, email=user.email, password=password)


def create_client(app: Flask, **kwargs: Any) -> RegisteredClient:
    kwargs.setdefault("name", "Relying Party")
    kwargs.setdefault("redirect_uris", [REDIRECT_URI])
    kwargs.setdefault("post_logout_redirect_uris", [POST_LOGOUT_URI])
    kwargs.setdefault("first_party", True)
    with app.app_context():
        rt = app.extensions["idp"]
        new = ClientService(db.session(), rt.client_secrets, issuer=rt.settings.issuer).create(
            **kwargs
        )
        db.session.commit()
        return RegisteredClient(
            client_id=new.client.client_id,
            client_secret=new.client_secret,
            redirect_uri=(kwargs["redirect_uris"] or [""])[0],
        )


def rows(app: Flask, model: Any, *where: Any) -> list[Any]:
    """The ``model`` rows matching ``where``, detached (readable after the app context); in the
    order they were written when the table's key counts up (an autoincrement integer, as the
    audit log's): whatever plan the database picks, an index on a filtered column (the audit
    log's kind then id) would return them in that column's order."""
    key = list(model.__table__.primary_key.columns)
    order = key if len(key) == 1 and isinstance(key[0].type, Integer) else []
    with app.app_context():
        found = list(db.session.scalars(select(model).where(*where).order_by(*order)))
        db.session.expunge_all()
        return found


def change(app: Flask, statement: Any) -> None:
    """Run one statement (an UPDATE or DELETE a test sets its scene with) and commit it."""
    with app.app_context():
        db.session.execute(statement)
        db.session.commit()

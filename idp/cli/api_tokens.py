"""``idp api-tokens``: bearer tokens of the admin API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from idp.cli import Group
from idp.cli.common import app_context, emit

if TYPE_CHECKING:
    from idp.services.api_tokens import ApiTokenService


@click.group("api-tokens", cls=Group)
def api_tokens() -> None:
    """Bearer tokens of the admin API (docs/api.md)."""


@contextmanager
def _token_service() -> Iterator[ApiTokenService]:
    """The tokens service acting as ``cli`` (audited so, as every command's change is; a token
    made here has no creating admin); nothing it refused is committed (``app_context``)."""
    from idp.composition import services
    from idp.services.audit import CLI_ACTOR

    with app_context():
        yield services().api_tokens(CLI_ACTOR)


def _token_text(data: dict[str, Any]) -> str:
    from idp.services.token_creators import WHY

    status = data["status"] + (f" ({WHY[data['reason']]})" if data.get("reason") else "")
    return (
        f"{data['name']}  {' '.join(data['scopes'])}  {status}  created "
        f"{data['created_at']} by {data.get('created_by') or 'the command line'}  expires "
        f"{data['expires_at'] or 'never'}  last used {data['last_used_at'] or 'never'}"
    )


@api_tokens.command("create")
@click.option("--name", required=True, help="1 to 48 lowercase letters, digits, '-', '_', '.'.")
@click.option("--scope", "scopes", multiple=True, required=True,
              help="Repeat for each scope, e.g. clients:write (implies clients:read).")  # fmt: skip
@click.option("--expires-in", "expires_in", type=int, default=None,
              help="Days until it expires (default: never).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def api_tokens_create(name: str, scopes: tuple[str, ...], expires_in: int | None,
                      as_json: bool) -> None:  # fmt: skip
    """Create a token; it is printed once, here, and never again."""
    from idp.extensions import db
    from idp.services.api_tokens import describe_token

    with _token_service() as service:
        new = service.create(name, scopes, expires_in_days=expires_in)
        db.session.commit()
        data = {"token": new.secret} | describe_token(new.token)
        emit(data, as_json, lambda d: f"{d['token']}\n(shown once: store it now)")


@api_tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def api_tokens_list(as_json: bool) -> None:
    """Every token: name, scopes, status, created, expires, last used (never the secret)."""
    from idp.services.api_tokens import describe_token

    with _token_service() as service:
        rows = [describe_token(t, creator=service.creator(t)) for t in service.list()]
        emit(rows, as_json, lambda r: "\n".join(_token_text(t) for t in r) or "no tokens")


@api_tokens.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def api_tokens_revoke(name: str, as_json: bool) -> None:
    """Revoke a token now: its next request gets 401."""
    from idp.extensions import db
    from idp.services.api_tokens import describe_token

    with _token_service() as service:
        token = service.revoke(name)
        db.session.commit()
        emit(describe_token(token, creator=service.creator(token)), as_json,
             lambda d: f"revoked {d['name']}")  # fmt: skip

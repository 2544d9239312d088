"""``idp keys``: the signing keys, listed and rotated."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from idp.cli import Group
from idp.cli.common import app_context, emit

if TYPE_CHECKING:
    from flask import Flask


@click.group(cls=Group)
def keys() -> None:
    """Manage signing keys."""


def _key_rows(app: Flask) -> list[dict[str, Any]]:
    from idp.extensions import db

    store = app.extensions["idp"].keys
    signing = store.signing_kids(db.session())
    return [
        {
            "kid": k.kid,
            "alg": k.alg,
            "created_at": k.created_at.isoformat(),
            # Not retired: the key that signs once it has been published long enough.
            "active": k.retired_at is None,
            # Signs now: a new key only after ``publish_first``, its predecessor until then.
            "signing": k.kid in signing,
            "signs_from": (k.created_at + store.publish_first).isoformat()
            if k.retired_at is None and k.kid not in signing
            else None,
            "unpublish_after": k.unpublish_after.isoformat() if k.unpublish_after else None,
        }
        for k in store.list_keys(db.session())
    ]


def _state(row: dict[str, Any]) -> str:
    if row["active"]:
        return "signing" if row["signing"] else f"published, signs from {row['signs_from']}"
    return "retired, still signing" if row["signing"] else "retired"


def _keys_text(rows: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{r['alg']:6} {r['kid']}  {_state(r)}"
        + (f" (published until {r['unpublish_after']})" if r["unpublish_after"] else "")
        for r in rows
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def keys_list(as_json: bool) -> None:
    """List signing keys."""
    with app_context() as app:
        emit(_key_rows(app), as_json, _keys_text)


@keys.command("rotate")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def keys_rotate(as_json: bool) -> None:
    """New signing keys: published at once, signing two key cache windows later; the old public
    keys stay published until their tokens expire."""
    from idp.extensions import db
    from idp.services import audit

    with app_context() as app:
        created = app.extensions["idp"].keys.rotate(db.session())
        # docs/admins.md: actions from the command line are audited as coming from ``cli``.
        audit.record(db.session(), "keys.rotated", actor_id=audit.CLI_ACTOR, via="cli",
                     kids=[row.kid for row in created])  # fmt: skip
        db.session.commit()
        emit(_key_rows(app), as_json, _keys_text)

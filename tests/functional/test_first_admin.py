"""The first admin's one-time link is printed by an interactive command, never into a production
server's output (which a container platform ships to its log store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, update
from sqlalchemy.orm import Session

from idp.models import LoginLink
from tests.support.live import start_live_idp


def test_a_production_server_prints_no_sign_in_link(tmp_path: Path) -> None:
    env = {"IDP_ADMIN_EMAIL": "root@example.com"}
    with start_live_idp(tmp_path, production=True, separate_stderr=True, env=env) as idp:
        # `idp init`, run before the server, made the admin and printed its link. Once that
        # link has expired, a development start would print a new one; a production one must not.
        idp.stop()
        engine = create_engine(idp.env["IDP_DATABASE_URL"])
        with Session(engine) as db:
            db.execute(update(LoginLink).values(expires_at=datetime.now(UTC) - timedelta(1)))
            db.commit()
        engine.dispose()
        before = idp.log_path.stat().st_size
        idp.start()
        output = idp.log_path.read_text()[before:]
        assert "run `idp init`" in output
        assert "/login/link/" not in output
        assert "/login/link/" in idp.run("init").stdout

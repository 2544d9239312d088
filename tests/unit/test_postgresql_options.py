"""PostgreSQL's connection arguments (idp/database.py ``engine_options``): a connect timeout and
dead-peer detection by default, each of them left to ``database_url`` where it names one
(docs/operations.md, "PostgreSQL stopped, and back")."""

from __future__ import annotations

from sqlalchemy import create_engine

from idp.database import engine_options

URL = "postgresql+psycopg://idp@db.example.com/idp"


def test_postgresql_connections_give_up_on_a_server_that_is_gone() -> None:
    assert engine_options(URL)["connect_args"] == {
        "connect_timeout": 5,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": 30_000,
    }


def test_a_value_in_the_database_url_wins_over_idps() -> None:
    url = URL + "?keepalives_idle=60&tcp_user_timeout=0&connect_timeout=9"
    options = engine_options(url)
    assert set(options["connect_args"]) == {"keepalives", "keepalives_interval", "keepalives_count"}
    engine = create_engine(url, **options)
    _, parameters = engine.dialect.create_connect_args(engine.url)
    assert parameters["keepalives_idle"] == "60"
    assert parameters["tcp_user_timeout"] == "0"
    assert parameters["connect_timeout"] == "9"

"""One Alembic history for SQLite and PostgreSQL: up, down, up again; Postgres behind stops start-up."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from chittyos.app import open_app
from chittyos.config import load_settings
from chittyos.db.engine import sync_url
from chittyos.db.migrate import SchemaBehind, alembic_config, current_revision, head_revision, upgrade
from chittyos.db.models import Base
from tests.conftest import create_database, drop_database

pytestmark = pytest.mark.anyio


def test_upgrade_downgrade_upgrade_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    assert current_revision(url) == head_revision()
    engine = create_engine(sync_url(url))
    with engine.connect() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade(url)
    engine = create_engine(sync_url(url))
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


@pytest.mark.postgres
def test_postgres_history_runs_up_and_down(postgres_server_url: str) -> None:
    name = f"chitty_mig_{uuid.uuid4().hex[:8]}"
    url = create_database(postgres_server_url, name)
    try:
        upgrade(url)
        assert current_revision(url) == head_revision()
        engine = create_engine(sync_url(url))
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        engine.dispose()
    finally:
        drop_database(postgres_server_url, name)


@pytest.mark.postgres
async def test_a_postgres_schema_that_is_behind_stops_start_up(postgres_server_url: str, tmp_path: Path) -> None:
    name = f"chitty_behind_{uuid.uuid4().hex[:8]}"
    url = create_database(postgres_server_url, name)
    try:
        settings = load_settings(chitty_database_url=url, chitty_data_dir=tmp_path)
        with pytest.raises(SchemaBehind, match="run `chittyos db upgrade`"):
            async with open_app(settings):
                pass
    finally:
        drop_database(postgres_server_url, name)


async def test_the_embedded_sqlite_is_migrated_on_start(tmp_path: Path) -> None:
    settings = load_settings(chitty_data_dir=tmp_path / "data", chitty_database_url=None)
    async with open_app(settings) as app:
        assert app.engine.dialect.name == "sqlite"
    assert (tmp_path / "data" / "chittyos.db").exists()
    assert current_revision(settings.database_url) == head_revision()

"""Alembic, driven from code: one migration history for SQLite and PostgreSQL.

The history lives inside the package (``chittyos/db/migrations``) so that an installed
``chittyos`` can upgrade its own database: ``chittyos db upgrade``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.pool import NullPool

from chittyos.db.engine import configure_sqlite, is_sqlite, sync_url
from chittyos.errors import ConfigurationError

__all__ = ["SchemaBehind", "alembic_config", "current_revision", "ensure_current", "head_revision", "upgrade"]

MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaBehind(ConfigurationError):
    """The database schema is older than this version of chittyos."""


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = sync_url(url)
    return cfg


def _sync_engine(url: str):
    engine = create_sync_engine(sync_url(url), poolclass=NullPool)
    if is_sqlite(url):
        configure_sqlite(engine)
    return engine


def upgrade(url: str, revision: str = "head") -> None:
    """Run migrations up to ``revision`` (blocking; call from a worker thread in async code)."""
    engine = _sync_engine(url)
    try:
        with engine.connect() as connection:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migration history must have one head, found {heads}")
    return heads[0]


def current_revision(url: str) -> str | None:
    engine = _sync_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def ensure_current(url: str, *, auto_upgrade: bool) -> None:
    """Make sure the schema is at head.

    SQLite (the embedded default) is upgraded in place when ``auto_upgrade``; PostgreSQL is
    shared infrastructure, so a schema that is behind stops start-up with ``SchemaBehind``
    telling the operator to run ``chittyos db upgrade``.
    """
    head = head_revision()
    current = current_revision(url)
    if current == head:
        return
    if auto_upgrade:
        upgrade(url)
        return
    raise SchemaBehind(
        f"database schema is at {current or 'empty'}, this version needs {head}: run `chittyos db upgrade`"
    )

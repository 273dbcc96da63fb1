"""Alembic, driven from code: one migration history for SQLite and PostgreSQL.

The history lives inside the package (``chittyos/db/migrations``) so that an installed
``chittyos`` can upgrade its own database: ``chittyos db upgrade``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script.revision import RevisionError
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.pool import NullPool

from chittyos.db.engine import configure_sqlite, create_private_sqlite_file, display_url, is_sqlite, sync_url
from chittyos.errors import ConfigurationError

__all__ = [
    "SchemaAhead",
    "SchemaBehind",
    "alembic_config",
    "current_revision",
    "ensure_current",
    "head_revision",
    "sync_engine",
    "upgrade",
]

MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaBehind(ConfigurationError):
    """The database schema is older than this version of chittyos (or there is none)."""


class SchemaAhead(ConfigurationError):
    """The database is at a schema revision this version of chittyos does not know."""


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = sync_url(url)
    return cfg


def sync_engine(url: str, *, configure: bool = True):
    """A blocking engine without a pool, for one-shot work outside the app's async engine.
    ``configure=False`` only reads: not even SQLite's switch to WAL, which writes the file."""
    if configure and is_sqlite(url):
        create_private_sqlite_file(sync_url(url))
    engine = create_sync_engine(sync_url(url), poolclass=NullPool)
    if configure and is_sqlite(url):
        configure_sqlite(engine)
    return engine


def upgrade(url: str, revision: str = "head") -> None:
    """Run migrations up to ``revision`` (blocking; call from a worker thread in async code).

    Raises ``SchemaAhead`` when the database is at a revision this version does not know."""
    engine = sync_engine(url)
    try:
        with engine.connect() as connection:
            _check_known(url, MigrationContext.configure(connection).get_current_revision())
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def _check_known(url: str, current: str | None) -> None:
    """Alembic would say "Can't locate revision identified by ..." about a newer version's schema."""
    if current is None:
        return
    try:
        known = _script().get_revision(current) is not None
    except (RevisionError, CommandError):
        known = False
    if not known:
        raise SchemaAhead(
            f"database at {display_url(url)}: its schema revision {current} is unknown to this version of "
            f"chittyos ({_version()}; written by a newer version?): upgrade chittyos, or point "
            "CHITTY_DATABASE_URL at this version's database"
        )


def _version() -> str:
    from chittyos import __version__

    return __version__


def head_revision() -> str:
    heads = _script().get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migration history must have one head, found {heads}")
    return heads[0]


def current_revision(url: str) -> str | None:
    """Only reads: not even SQLite's switch to WAL, which would write an empty file's header."""
    engine = sync_engine(url, configure=False)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def ensure_current(url: str, *, auto_upgrade: bool, read_only: bool = False) -> None:
    """Make sure the schema is at head.

    SQLite (the embedded default) is upgraded in place when ``auto_upgrade``; PostgreSQL is
    shared infrastructure, so a schema that is behind stops start-up with ``SchemaBehind``
    telling the operator to run ``chittyos db upgrade``. ``read_only`` (commands that must not
    create or migrate a database) refuses any schema not at head the same way, naming the
    database. Raises ``SchemaAhead`` for a revision this version does not know.
    """
    if is_sqlite(url) and not read_only:  # before anything opens (and so creates) the file
        create_private_sqlite_file(sync_url(url))
    head = head_revision()
    current = current_revision(url)
    if current == head:
        return
    _check_known(url, current)
    if auto_upgrade and not read_only:
        upgrade(url)
        return
    if read_only:
        state = "has no ChittyOS schema" if current is None else f"has schema revision {current}"
        server = " (or start the server once)" if is_sqlite(url) else ""
        raise SchemaBehind(
            f"database at {display_url(url)} {state}, this version needs {head}: run "
            f"`chittyos db upgrade`{server} first"
        )
    raise SchemaBehind(
        f"database schema is at {current or 'empty'}, this version needs {head}: run `chittyos db upgrade`"
    )

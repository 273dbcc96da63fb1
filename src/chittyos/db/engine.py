"""Engine and session factory for SQLite (aiosqlite) and PostgreSQL (psycopg 3).

* ``async_url`` / ``sync_url`` turn the configured URL into the driver-specific form, so users
  write plain ``postgresql://`` or ``sqlite:///`` URLs.
* SQLite runs in WAL mode with a busy timeout, and every transaction starts with
  ``BEGIN IMMEDIATE``: writers queue for the one write lock up front instead of failing with
  "database is locked" when a read transaction tries to upgrade. That is also the per-log lock
  the chain needs (DESIGN.md, ChittyChain).
* The pool does not roll back on check-in: every session and connection here ends its own
  transaction (UnitOfWork, and ``Connection.close`` rolls back an open one), so the reset would
  be one more round trip per transaction for nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote, unquote_plus

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from chittyos.errors import ConfigurationError

__all__ = [
    "async_url",
    "create_engine",
    "make_session_factory",
    "sync_url",
    "is_sqlite",
    "display_url",
    "url_secrets",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except Exception:  # sqlalchemy raises ArgumentError with the URL in it; keep passwords out
        raise ConfigurationError(
            "CHITTY_DATABASE_URL: not a database URL (expected postgresql://... or sqlite:///path)"
        ) from None


def async_url(url: str) -> URL:
    """``postgresql://`` -> ``postgresql+psycopg://``, ``sqlite://`` -> ``sqlite+aiosqlite://``."""
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ConfigurationError(f"CHITTY_DATABASE_URL: unsupported database {backend!r} (use postgresql or sqlite)")


def sync_url(url: str) -> URL:
    """The same database through a blocking driver (for Alembic)."""
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    return parsed


def is_sqlite(url: str | URL) -> bool:
    parsed = url if isinstance(url, URL) else _parse(url)
    return parsed.get_backend_name() == "sqlite"


def _secret_key(key: str) -> bool:
    """A query parameter whose value is a secret: ``password``, libpq's ``sslpassword``, in any case."""
    key = key.lower()
    return "password" in key or "passwd" in key


def display_url(url: str) -> str:
    """The URL with its passwords masked, for logs and /health: the userinfo one, and the value
    of every password query parameter (``?password=``, ``?sslpassword=``, any case), which libpq
    takes as well. Raises ``ConfigurationError`` (which names no part of it) for a URL that does
    not parse."""
    parsed = _parse(url)
    shown = parsed.set(query={}).render_as_string(hide_password=True)
    if parsed.query:  # as SQLAlchemy renders it (keys sorted), but "***" unquoted
        shown += "?" + "&".join(
            f"{quote_plus(key)}={'***' if _secret_key(key) else quote_plus(value)}"
            for key in sorted(parsed.query)
            for value in _values(parsed.query[key])
        )
    return shown


def _values(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


_USERINFO_PASSWORD = re.compile(r"^[^:/?#]*://[^:/@]*:([^@]*)@")
"""The userinfo password as written, as SQLAlchemy's URL pattern finds it (up to the first ``@``)."""
_QUERY_PARAMETER = re.compile(r"[?&;]([^=&?;#]*)=([^&;#]*)")


def url_secrets(url: str) -> list[str]:
    """The secrets in ``url``: its userinfo password and the values of its password query
    parameters, as parsed and as written (percent-encoded), longest first; for replacing in a
    message that quotes them (a driver's). Found in the text too, so a URL that does not parse
    gives its secrets as well."""
    found: set[str] = set()
    try:
        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy parses: the text below still finds them
        pass
    else:
        if parsed.password:
            found.add(str(parsed.password))
        for key, value in parsed.query.items():
            if _secret_key(key):
                found.update(_values(value))
    written = _USERINFO_PASSWORD.match(url)
    if written:
        found.update((written.group(1), unquote(written.group(1))))
    for key, value in _QUERY_PARAMETER.findall(url):
        if _secret_key(unquote_plus(key)):
            found.update((value, unquote_plus(value)))
    found.discard("")
    return sorted(found, key=lambda secret: (-len(secret), secret))


def configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, busy timeout, and BEGIN IMMEDIATE on every transaction."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below (pysqlite would
        # otherwise issue a deferred BEGIN of its own).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_private_sqlite_file(url: URL) -> None:
    """Create the SQLite file of ``url`` (and its directory) readable by this user only, when it
    does not exist: it holds who asked what and the chain, and SQLite gives its -wal and -shm
    files the database file's permissions. An empty file is an empty database."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url`` (plain or driver-qualified).

    Raises ``ConfigurationError`` naming CHITTY_DATABASE_URL when the URL is unusable.
    """
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        create_private_sqlite_file(parsed)
        engine = create_async_engine(parsed, echo=echo, pool_reset_on_return=None)
        configure_sqlite(engine.sync_engine)
        return engine
    return create_async_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip per checkout; a dropped connection instead fails
        # one transaction (rolled back whole) and the pool replaces it.
        pool_recycle=1800,
        pool_reset_on_return=None,
    )


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)

"""Unit of work: one transaction, committed on success, rolled back on any exception.

Services never commit. They take a session from ``UnitOfWork.begin()`` and the block's end
decides: all rows of a step land together or none do.

The end of a transaction (commit, rollback, returning the connection) is shielded from
cancellation. Under anyio, cancellation is level-triggered: a cancelled MCP request would
otherwise cancel its own rollback too, leaving the connection checked out and its locks held
(SQLite then reports "database is locked" to everyone else).

On SQLite every transaction takes the one write lock (``BEGIN IMMEDIATE``), so this process's
transactions first queue for it here, in arrival order, holding no connection while they wait.
Left to SQLite's busy handler, a burst of callers would each hold a pooled connection while
polling for the lock with growing sleeps: the pool ran dry (SQLAlchemy's pool timeout) and
unlucky pollers starved past the busy timeout ("database is locked"), where the queue serves
them in a few ms each. Waiting past the wait raises ``DatabaseBusy``, as does a pool timeout or
a lock held by another process past SQLite's busy timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlite3

import anyio
from psycopg.pq import TransactionStatus
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chittyos.db.engine import SQLITE_BUSY_TIMEOUT_MS
from chittyos.errors import DatabaseBusy

__all__ = ["UnitOfWork"]


class UnitOfWork:
    """Transactions on one engine. ``busy_wait_s``: how long a transaction waits for its turn at
    SQLite's write lock in this process (seconds) before ``DatabaseBusy``."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        busy_wait_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000,
    ) -> None:
        self._factory = session_factory
        bind = session_factory.kw.get("bind")
        self._sqlite = bind if isinstance(bind, AsyncEngine) and bind.dialect.name == "sqlite" else None
        self._postgres = bind if isinstance(bind, AsyncEngine) and bind.dialect.name == "postgresql" else None
        self._sqlite_turn = anyio.Lock() if self._sqlite is not None else None
        self._busy_wait_s = busy_wait_s

    @property
    def is_postgres(self) -> bool:
        return self._postgres is not None

    @asynccontextmanager
    async def postgres_autocommit(self) -> AsyncIterator[Any | None]:
        """On PostgreSQL, a pooled psycopg ``AsyncConnection`` in autocommit mode: each statement
        is a transaction of its own, with no BEGIN and COMMIT round trips around it. None on any
        other database.

        For a write that is one statement and needs nothing after it (an append that guessed the
        head: ``ChainLog.append_now``). Autocommit is switched off again before the connection
        goes back to the pool; a connection left inside a transaction by an error is closed.
        """
        if self._postgres is None:
            yield None
            return
        connection = await self._postgres.connect()
        try:
            raw = (await connection.get_raw_connection()).driver_connection
            await raw.set_autocommit(True)
            try:
                yield raw
            finally:
                with anyio.CancelScope(shield=True):
                    if raw.info.transaction_status == TransactionStatus.IDLE and not raw.closed:
                        await raw.set_autocommit(False)
                    else:  # cut off mid-statement: the pool must not hand it out again
                        await connection.invalidate()
        finally:
            with anyio.CancelScope(shield=True):
                await connection.close()

    async def peek_sqlite(self, statement: str, params: Sequence[Any]) -> list[Any] | None:
        """On SQLite, the rows of one read ``statement`` (driver SQL, ``?`` parameters) run on a
        pooled connection outside any transaction: WAL gives the statement a snapshot of its
        own and it takes no write lock, where ``begin()``/``read()`` would take it (``BEGIN
        IMMEDIATE``) at the cost of several thread hand-offs. None on any other database: the
        caller reads in a transaction instead.

        For a quick negative answer ahead of a locking transaction (is there anything to
        lock?), never for a read that must agree with a write that follows it.
        """
        if self._sqlite is None:
            return None
        connection = await self._sqlite.connect()
        try:
            raw = (await connection.get_raw_connection()).driver_connection
            return list(await raw.execute_fetchall(statement, params))
        finally:
            with anyio.CancelScope(shield=True):
                await connection.close()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        """A session inside a transaction; commit on normal exit, rollback on exception.

        Raises ``DatabaseBusy`` when the transaction could not start within the wait (see the
        module docstring)."""
        async with self._turn():
            async with self._transaction() as session:
                yield session

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """This process's turn at SQLite's write lock (nothing to wait for on PostgreSQL)."""
        if self._sqlite_turn is None:
            yield
            return
        acquired = False
        with anyio.move_on_after(self._busy_wait_s):
            await self._sqlite_turn.acquire()
            acquired = True
        if not acquired:
            raise DatabaseBusy(self._busy_wait_s, _WAITED)
        try:
            yield
        finally:
            self._sqlite_turn.release()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        session = self._factory()
        try:
            await session.begin()
            # Take the connection and open the transaction (BEGIN IMMEDIATE on SQLite: it waits
            # for the write lock) out of reach of cancellation. Cancelled midway, the driver's
            # connection would be dropped in mid-statement, neither closed nor returned to the
            # pool, and its aiosqlite thread would keep the process from exiting. A cancelled
            # caller instead waits for the lock (at most the busy timeout), then rolls back.
            with anyio.CancelScope(shield=True):
                try:
                    await session.connection()
                except sa_exc.TimeoutError:
                    waited = _pool_timeout(self._sqlite or self._postgres)
                    raise DatabaseBusy(waited, "no database connection came free") from None
                except sa_exc.OperationalError as exc:
                    if not _locked(exc):
                        raise
                    raise DatabaseBusy(SQLITE_BUSY_TIMEOUT_MS / 1000, _WAITED) from None
            yield session
            with anyio.CancelScope(shield=True):
                await session.commit()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await session.rollback()
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await session.close()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only. Still a transaction (one consistent snapshot)."""
        async with self.begin() as session:
            yield session


_WAITED = "SQLite's write lock stayed taken (by this server's other calls, or another process on this file)"
"""Either wait: the turn's holder may itself be waiting for another process's lock."""


def _locked(exc: sa_exc.OperationalError) -> bool:
    """SQLite's busy timeout ran out (``SQLITE_BUSY``: "database is locked")."""
    return isinstance(exc.orig, sqlite3.OperationalError) and "locked" in str(exc.orig)


def _pool_timeout(engine: AsyncEngine | None) -> float:
    """How long the engine's pool waits for a connection (s); QueuePool's default when unknown."""
    timeout = getattr(engine.sync_engine.pool, "timeout", None) if engine is not None else None
    return float(timeout()) if callable(timeout) else 30.0

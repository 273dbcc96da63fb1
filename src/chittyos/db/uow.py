"""Unit of work: one transaction, committed on success, rolled back on any exception.

Services never commit. They take a session from ``UnitOfWork.begin()`` and the block's end
decides: all rows of a step land together or none do.

The end of a transaction (commit, rollback, returning the connection) is shielded from
cancellation. Under anyio, cancellation is level-triggered: a cancelled MCP request would
otherwise cancel its own rollback too, leaving the connection checked out and its locks held
(SQLite then reports "database is locked" to everyone else).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from psycopg.pq import TransactionStatus
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

__all__ = ["UnitOfWork"]


class UnitOfWork:
    def __init__(self, *, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = session_factory
        bind = session_factory.kw.get("bind")
        self._sqlite = bind if isinstance(bind, AsyncEngine) and bind.dialect.name == "sqlite" else None
        self._postgres = bind if isinstance(bind, AsyncEngine) and bind.dialect.name == "postgresql" else None

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
        """A session inside a transaction; commit on normal exit, rollback on exception."""
        session = self._factory()
        try:
            await session.begin()
            # Take the connection and open the transaction (BEGIN IMMEDIATE on SQLite: it waits
            # for the write lock) out of reach of cancellation. Cancelled midway, the driver's
            # connection would be dropped in mid-statement, neither closed nor returned to the
            # pool, and its aiosqlite thread would keep the process from exiting. A cancelled
            # caller instead waits for the lock (at most the busy timeout), then rolls back.
            with anyio.CancelScope(shield=True):
                await session.connection()
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

"""Unit of work: one transaction, committed on success, rolled back on any exception.

Services never commit. They take a session from ``UnitOfWork.begin()`` and the block's end
decides: all rows of a step land together or none do.

The end of a transaction (commit, rollback, returning the connection) is shielded from
cancellation. Under anyio, cancellation is level-triggered: a cancelled MCP request would
otherwise cancel its own rollback too, leaving the connection checked out and its locks held
(SQLite then reports "database is locked" to everyone else).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["UnitOfWork"]


class UnitOfWork:
    def __init__(self, *, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = session_factory

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        """A session inside a transaction; commit on normal exit, rollback on exception."""
        session = self._factory()
        try:
            await session.begin()
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

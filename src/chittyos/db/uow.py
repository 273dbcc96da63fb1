"""Unit of work: one transaction, committed on success, rolled back on any exception.

Services never commit. They take a session from ``UnitOfWork.begin()`` and the block's end
decides: all rows of a step land together or none do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["UnitOfWork"]


class UnitOfWork:
    def __init__(self, *, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = session_factory

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        """A session inside a transaction; commit on normal exit, rollback on exception."""
        async with self._factory() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only. Still a transaction (one consistent snapshot)."""
        async with self._factory() as session, session.begin():
            yield session

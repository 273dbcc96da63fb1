"""The unit of work under cancellation and contention: a cancelled transaction gives its
connection back, SQLite transactions queue for the write lock, and a turn not had is busy."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chittyos.db import UnitOfWork, create_engine, make_session_factory, upgrade
from chittyos.errors import DatabaseBusy

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def sqlite_uow(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[AsyncEngine, UnitOfWork]]:
    """A migrated SQLite database ``x.db`` in ``tmp_path``, its engine and a UnitOfWork on it."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    engine = create_engine(url)
    try:
        yield engine, UnitOfWork(session_factory=make_session_factory(engine), **options)
    finally:
        await engine.dispose()


@contextmanager
def another_process_writing(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A second connection to ``x.db`` holding SQLite's write lock, as another process would."""
    other = sqlite3.connect(tmp_path / "x.db", isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield other
    finally:
        other.close()


async def test_a_transaction_cancelled_while_waiting_for_the_sqlite_write_lock_returns_its_connection(
    tmp_path: Path,
) -> None:
    # Cancelled in mid-BEGIN IMMEDIATE, the driver connection used to be dropped: neither closed
    # nor back in the pool, its aiosqlite thread alive (the process could not exit).
    reached = False
    async with sqlite_uow(tmp_path) as (engine, uow):
        with another_process_writing(tmp_path) as other:

            async def release_later() -> None:
                await anyio.sleep(0.5)
                other.execute("ROLLBACK")

            async with anyio.create_task_group() as tg:
                tg.start_soon(release_later)
                with anyio.move_on_after(0.1) as scope:
                    async with uow.begin() as session:
                        await session.execute(text("SELECT 1"))
                        await anyio.sleep(5)  # the cancellation lands here, once the lock is had
                        reached = True
            assert scope.cancelled_caught and not reached
            assert engine.sync_engine.pool.checkedout() == 0
            with anyio.fail_after(5):
                async with uow.begin() as session:
                    assert (await session.execute(text("SELECT 1"))).scalar_one() == 1


async def test_a_burst_of_sqlite_transactions_queues_for_the_write_lock_holding_no_connection(tmp_path: Path) -> None:
    # 400 at once used to hold the pool's 15 connections while SQLite's busy handler polled:
    # the rest ran into the pool timeout and unlucky pollers into "database is locked".
    most_out = 0
    async with sqlite_uow(tmp_path) as (engine, uow):

        async def one(n: int) -> None:
            nonlocal most_out
            async with uow.begin() as session:
                most_out = max(most_out, engine.sync_engine.pool.checkedout())
                await session.execute(text("CREATE TABLE IF NOT EXISTS burst (n INTEGER)"))
                await session.execute(text("INSERT INTO burst VALUES (:n)"), {"n": n})

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(400):
                    tg.start_soon(one, n)
        async with uow.read() as session:
            assert (await session.execute(text("SELECT count(DISTINCT n) FROM burst"))).scalar_one() == 400
        assert most_out == 1


async def test_a_transaction_that_gets_no_turn_within_the_wait_is_refused_as_busy(tmp_path: Path) -> None:
    holding = anyio.Event()
    release = anyio.Event()
    async with sqlite_uow(tmp_path, busy_wait_s=0.2) as (_, uow):

        async def hold() -> None:
            async with uow.begin():
                holding.set()
                await release.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            await holding.wait()
            with pytest.raises(DatabaseBusy, match=r"database busy: .* for 0.2 s; nothing was written, retry"):
                async with uow.begin():
                    pass
            release.set()
        async with uow.begin() as session:  # the turn is free again
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1


async def test_another_process_holding_the_sqlite_write_lock_past_the_busy_timeout_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chittyos.db import engine as engine_module

    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    async with sqlite_uow(tmp_path) as (engine, uow):
        with another_process_writing(tmp_path):
            with pytest.raises(DatabaseBusy, match="SQLite's write lock stayed taken .* or another process"):
                async with uow.begin():
                    pass
            assert engine.sync_engine.pool.checkedout() == 0

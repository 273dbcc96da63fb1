"""The unit of work under cancellation: a cancelled transaction gives its connection back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text

from chittyos.db import UnitOfWork, create_engine, make_session_factory, upgrade
from chittyos.errors import DatabaseBusy

pytestmark = pytest.mark.anyio


async def test_a_transaction_cancelled_while_waiting_for_the_sqlite_write_lock_returns_its_connection(
    tmp_path: Path,
) -> None:
    # Cancelled in mid-BEGIN IMMEDIATE, the driver connection used to be dropped: neither closed
    # nor back in the pool, its aiosqlite thread alive (the process could not exit).
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    engine = create_engine(url)
    uow = UnitOfWork(session_factory=make_session_factory(engine))
    other = sqlite3.connect(tmp_path / "x.db", isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    reached = False

    async def release_later() -> None:
        await anyio.sleep(0.5)
        other.execute("ROLLBACK")

    try:
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
    finally:
        other.close()
        await engine.dispose()


async def test_a_burst_of_sqlite_transactions_queues_for_the_write_lock_holding_no_connection(tmp_path: Path) -> None:
    # 400 at once used to hold the pool's 15 connections while SQLite's busy handler polled:
    # the rest ran into the pool timeout and unlucky pollers into "database is locked".
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    engine = create_engine(url)
    uow = UnitOfWork(session_factory=make_session_factory(engine))
    most_out = 0

    async def one(n: int) -> None:
        nonlocal most_out
        async with uow.begin() as session:
            most_out = max(most_out, engine.sync_engine.pool.checkedout())
            await session.execute(text("CREATE TABLE IF NOT EXISTS burst (n INTEGER)"))
            await session.execute(text("INSERT INTO burst VALUES (:n)"), {"n": n})

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(400):
                    tg.start_soon(one, n)
        async with uow.read() as session:
            assert (await session.execute(text("SELECT count(DISTINCT n) FROM burst"))).scalar_one() == 400
        assert most_out == 1
    finally:
        await engine.dispose()


async def test_a_transaction_that_gets_no_turn_within_the_wait_is_refused_as_busy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    engine = create_engine(url)
    uow = UnitOfWork(session_factory=make_session_factory(engine), busy_wait_s=0.2)
    holding = anyio.Event()
    release = anyio.Event()

    async def hold() -> None:
        async with uow.begin():
            holding.set()
            await release.wait()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            await holding.wait()
            with pytest.raises(DatabaseBusy, match=r"database busy: .* for 0.2 s; nothing was written, retry"):
                async with uow.begin():
                    pass
            release.set()
        async with uow.begin() as session:  # the turn is free again
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_another_process_holding_the_sqlite_write_lock_past_the_busy_timeout_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chittyos.db import engine as engine_module

    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    engine = create_engine(url)
    uow = UnitOfWork(session_factory=make_session_factory(engine))
    other = sqlite3.connect(tmp_path / "x.db", isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseBusy, match="SQLite's write lock stayed taken .* or another process"):
            async with uow.begin():
                pass
        assert engine.sync_engine.pool.checkedout() == 0
    finally:
        other.close()
        await engine.dispose()

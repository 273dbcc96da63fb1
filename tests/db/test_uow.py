"""The unit of work under cancellation: a cancelled transaction gives its connection back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text

from chittyos.db import UnitOfWork, create_engine, make_session_factory, upgrade

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

"""``ChainLog.append_now``, the standalone append a tool call makes: on PostgreSQL one autocommit
statement when the guessed head holds, a transaction when it does not; on SQLite always a
transaction. Either way: gapless indices, one tree, nothing written by a refused append, and the
pooled connection handed back as the pool expects it."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from chittyos.chain import ChainLog, Fact, store
from chittyos.db import UnitOfWork
from chittyos.db.models import ChainFact
from chittyos.errors import IntegrityError
from tests.chain.conftest import LOG_KEY, insert_stray_fact, make_fact
from tests.chain.test_append import reference_nodes, stored_nodes
from tests.chain.test_log import mth, stored_leaves

pytestmark = pytest.mark.anyio


class Alone:
    """Counts the autocommit statements ``append_now`` sends and how many of them wrote."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent = self.written = self.facts = 0
        pg_lock_head = store.pg_lock_head

        async def counting(raw: object, *args: object, **kwargs: object) -> store.LockedHead | None:
            alone = bool(getattr(raw, "autocommit", False))
            self.sent += alone
            locked = await pg_lock_head(raw, *args, **kwargs)  # type: ignore[arg-type]
            if alone and locked is not None and locked.written:
                self.written += 1
                self.facts += len(kwargs["guess"].facts)  # type: ignore[union-attr]
            return locked

        monkeypatch.setattr(store, "pg_lock_head", counting)


async def indices(uow: UnitOfWork) -> list[int]:
    async with uow.read() as session:
        return list(await session.scalars(select(ChainFact.leaf_index).order_by(ChainFact.leaf_index)))


async def pooled_connections_are_as_the_pool_expects(engine: AsyncEngine) -> None:
    """Every connection the pool holds: not in autocommit, not inside a transaction."""
    if engine.dialect.name != "postgresql":
        return
    connections = [await engine.connect() for _ in range(engine.pool.checkedin())]
    try:
        for connection in connections:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw.autocommit is False
            assert raw.info.transaction_status.name == "IDLE"
    finally:
        for connection in connections:
            await connection.close()


async def test_after_the_first_each_append_now_is_one_autocommit_statement_on_postgres(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone = Alone(monkeypatch)
    facts = [make_fact(n) for n in range(20)]
    placed = [await chain.append_now([fact]) for fact in facts[:15]]
    placed.append(await chain.append_now(facts[15:]))  # a batch goes alone too
    postgres = engine.dialect.name == "postgresql"
    # The first knows no head to guess; SQLite has no autocommit path (its lock is per transaction).
    assert (alone.sent, alone.written) == ((15, 15) if postgres else (0, 0))
    assert [p.leaf_index for batch in placed for p in batch] == list(range(20))
    assert not any(p.existed for batch in placed for p in batch)
    leaves = [f.leaf_bytes() for f in facts]
    assert await stored_leaves(uow) == leaves and await stored_nodes(uow) == reference_nodes(leaves)
    report = await chain.verify_log()
    assert report.ok and bytes.fromhex(report.root) == mth(leaves)
    await pooled_connections_are_as_the_pool_expects(engine)


async def test_a_stored_fact_is_not_appended_again_and_a_stale_guess_goes_on_in_a_transaction(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c, d = (make_fact(n) for n in range(4))
    await chain.append_now([a])
    alone = Alone(monkeypatch)
    again = await chain.append_now([a, b])  # the guess holds a new: not written, then placed
    assert [(p.leaf_index, p.existed) for p in again] == [(0, True), (1, False)]
    other = ChainLog(uow=uow, signer=LOG_KEY)  # another process appends: this one's guess is stale
    assert [p.leaf_index for p in await other.append_now([c])] == [2]
    assert [p.leaf_index for p in await chain.append_now([d])] == [3]
    if engine.dialect.name == "postgresql":
        assert (alone.sent, alone.written) == (2, 0)
    assert await indices(uow) == [0, 1, 2, 3]
    assert (await chain.verify_log()).ok
    await pooled_connections_are_as_the_pool_expects(engine)


async def test_a_guess_that_collides_with_a_stored_row_fails_writes_nothing_and_hands_back_a_clean_connection(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    for n in range(4):
        await chain.append_now([make_fact(n)])
    await insert_stray_fact(engine, make_fact(99), leaf_index=4)  # behind the log's back; the head says 4
    with pytest.raises(IntegrityError, match=r"leaves 4\.\.5 conflicts with stored rows"):
        await chain.append_now([make_fact(10), make_fact(11)])
    async with uow.read() as session:
        assert (await session.execute(text("SELECT tree_size FROM chitty_chain_head"))).scalar_one() == 4
        nodes = (await session.execute(text("SELECT count(*) FROM chitty_chain_nodes"))).scalar_one()
    assert nodes == len(reference_nodes([make_fact(n).leaf_bytes() for n in range(4)]))
    await pooled_connections_are_as_the_pool_expects(engine)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM chitty_chain_facts WHERE leaf_index = 4"))
    assert [p.leaf_index for p in await chain.append_now([make_fact(10)])] == [4]
    assert (await chain.verify_log()).ok


async def test_two_logs_appending_at_once_get_gapless_indices_and_one_tree(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    # Two processes' logs, several tool calls at once in each: a statement that waited for the
    # other's lock finds another head, writes nothing, and the append goes on in a transaction.
    other = ChainLog(uow=uow, signer=LOG_KEY)
    postgres = engine.dialect.name == "postgresql"
    writers, each = (4, 60) if postgres else (2, 15)
    work = {
        (log, w): [make_fact(k * 10_000 + w * 1_000 + n) for n in range(each)]
        for k, log in enumerate((chain, other))
        for w in range(writers)
    }

    async def writer(log: ChainLog, mine: list[Fact]) -> None:
        for n, fact in enumerate(mine):
            batch = [fact, make_fact(99_000 + n)] if n % 7 == 0 else [fact]  # shared facts too
            try:
                await log.append_now(batch)
            except IntegrityError:  # the shared fact appended by the other log meanwhile
                await log.append_now(batch)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for (log, _), mine in work.items():
                tg.start_soon(writer, log, mine)
    expected = {f.leaf_bytes() for mine in work.values() for f in mine}
    expected |= {make_fact(99_000 + n).leaf_bytes() for n in range(0, each, 7)}
    assert await indices(uow) == list(range(len(expected)))
    leaves = await stored_leaves(uow)
    assert set(leaves) == expected and len(leaves) == len(expected)
    assert await stored_nodes(uow) == reference_nodes(leaves)
    assert (await chain.verify_log()).ok
    await pooled_connections_are_as_the_pool_expects(engine)


async def test_a_cancelled_append_now_is_written_whole_or_not_at_all(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    await chain.append_now([make_fact(0)])
    with anyio.move_on_after(0):  # cancelled before it starts, shielded once it has
        await chain.append_now([make_fact(1)])
    for n in range(2, 6):
        with anyio.move_on_after(0.0005 * n):
            await chain.append_now([make_fact(n)])
    await chain.append_now([make_fact(9)])
    assert await indices(uow) == list(range(len(await indices(uow))))
    assert (await chain.verify_log()).ok
    await pooled_connections_are_as_the_pool_expects(engine)


# -- group commit (PostgreSQL): standalone appends that arrive while one is in flight ---------------


async def test_appends_at_once_go_together_each_caller_getting_its_own_places(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await chain.append_now([make_fact(0)])
    alone = Alone(monkeypatch)
    writers, each = 16, 12
    got: dict[str, int] = {}

    async def writer(w: int) -> None:
        for n in range(each):
            batch = [make_fact(1 + w * 100 + n)] + ([make_fact(5000 + w)] if n == 0 else [])
            for fact, place in zip(batch, await chain.append_now(batch), strict=True):
                assert place.fact_id == fact.fact_id and not place.existed
                got[fact.fact_id] = place.leaf_index

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for w in range(writers):
                tg.start_soon(writer, w)
    appends = writers * each
    assert sorted(got.values()) == list(range(1, 1 + appends + writers))
    for fact_id, index in list(got.items())[::17]:
        assert (await chain.get(fact_id)).leaf_index == index
    if engine.dialect.name == "postgresql":
        assert alone.written == alone.sent  # every guess held
        assert alone.facts == appends + writers  # no append needed a transaction
        assert alone.sent < appends / 2  # they went together
    assert (await chain.verify_log()).ok
    await pooled_connections_are_as_the_pool_expects(engine)


async def test_a_group_holding_a_stored_fact_writes_nothing_and_each_append_goes_on_alone(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    await chain.append_now([make_fact(0), make_fact(1)])
    results: dict[int, list[tuple[int, bool]]] = {}

    async def one(n: int, facts: list[Fact]) -> None:
        results[n] = [(p.leaf_index, p.existed) for p in await chain.append_now(facts)]

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, 0, [make_fact(2)])
            for n in range(1, 8):  # the same new fact twice, and a stored one, among new ones
                facts = [make_fact(10 + n)]
                facts += [make_fact(1)] if n == 3 else [make_fact(50)] if n in (4, 5) else []
                tg.start_soon(one, n, facts)
    assert results[3][1] == (1, True)
    (index4, existed4), (index5, existed5) = results[4][1], results[5][1]
    assert index4 == index5 and sorted([existed4, existed5]) == [False, True]  # one placed it
    assert await indices(uow) == list(range(2 + 1 + 7 + 1))
    assert (await chain.verify_log()).ok


async def test_a_failing_lead_fails_only_its_own_append_and_the_others_go_on(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await chain.append_now([make_fact(0)])
    pg_lock_head, failed = store.pg_lock_head, []

    async def once_broken(raw: object, *args: object, **kwargs: object) -> store.LockedHead | None:
        if not failed and getattr(raw, "autocommit", False):
            failed.append(True)
            await anyio.sleep(0.05)  # the others queue meanwhile
            raise OSError("the connection broke")
        return await pg_lock_head(raw, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "pg_lock_head", once_broken)
    outcomes: list[str] = []

    async def one(n: int) -> None:
        try:
            await chain.append_now([make_fact(100 + n)])
            outcomes.append("ok")
        except OSError:
            outcomes.append("failed")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(one, n)
    if engine.dialect.name == "postgresql":
        assert sorted(outcomes) == ["failed"] + ["ok"] * 7
    else:
        assert outcomes == ["ok"] * 8
    assert await indices(uow) == list(range(1 + outcomes.count("ok")))
    assert (await chain.verify_log()).ok
    await pooled_connections_are_as_the_pool_expects(engine)


async def test_appends_cancelled_while_queued_or_leading_leave_no_gap_and_no_one_waiting(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    await chain.append_now([make_fact(0)])

    async def writer(w: int) -> None:
        for n in range(10):
            with anyio.move_on_after(0.0003 * ((w * 7 + n * 3) % 11)):
                await chain.append_now([make_fact(1 + w * 100 + n)])

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for w in range(12):
                tg.start_soon(writer, w)
        await chain.append_now([make_fact(99_999)])  # nobody holds the lead
    assert not chain._queue and not chain._leading
    assert await indices(uow) == list(range(len(await indices(uow))))
    assert (await chain.verify_log()).ok
    await pooled_connections_are_as_the_pool_expects(engine)


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_an_append_cancelled_just_as_it_is_handed_the_lead_passes_it_on(
    chain: ChainLog, uow: UnitOfWork, monkeypatch: pytest.MonkeyPatch
) -> None:
    # anyio does not cancel a task whose wait has just ended, but a plain asyncio cancel does:
    # the task then raises at the wait it was woken from, holding a lead no one else would take.
    await chain.append_now([make_fact(0)])
    pg_lock_head, go, held = store.pg_lock_head, anyio.Event(), []

    async def held_once(raw: object, *args: object, **kwargs: object) -> store.LockedHead | None:
        if not held:
            held.append(True)
            await go.wait()  # the lead's statement is in flight while a and b queue
        return await pg_lock_head(raw, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "pg_lock_head", held_once)
    with anyio.fail_after(30):
        async def lead_then_cancel_a() -> None:
            await chain.append_now([make_fact(1)])
            a.cancel()  # in the step that handed a the lead: a has not run since

        lead = asyncio.ensure_future(lead_then_cancel_a())
        while not held:
            await anyio.sleep(0.001)
        a = asyncio.ensure_future(chain.append_now([make_fact(2)]))
        await anyio.sleep(0.01)
        b = asyncio.ensure_future(chain.append_now([make_fact(3)]))
        await anyio.sleep(0.01)
        go.set()
        await asyncio.wait([lead, a, b])
    assert a.cancelled()
    assert [p.leaf_index for p in b.result()] == [2]  # a's fact was never taken into a group
    assert await indices(uow) == [0, 1, 2]
    assert not chain._queue and not chain._leading


async def test_the_same_fact_sent_at_once_by_two_logs_is_placed_once_and_found_by_the_rest(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    # Two processes (two logs), each with many tool calls at once carrying the same assertion:
    # none fails, one places it, the others find it (a new user saw "conflicts with stored rows").
    other = ChainLog(uow=uow, signer=LOG_KEY)
    await chain.append_now([make_fact(0)])
    await other.append_now([make_fact(1)])
    rounds, each = (8, 12) if engine.dialect.name == "postgresql" else (3, 4)
    for r in range(rounds):
        fact = make_fact(1000 + r)
        outcomes: list[tuple[int, bool]] = []

        async def send(log: ChainLog, fact: Fact = fact, outcomes: list[tuple[int, bool]] = outcomes) -> None:
            (placed,) = await log.append_now([fact])
            outcomes.append((placed.leaf_index, placed.existed))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(each):
                    tg.start_soon(send, chain if n % 2 else other)
        assert len({index for index, _ in outcomes}) == 1
        assert sorted(existed for _, existed in outcomes) == [False] + [True] * (each - 1)
    assert await indices(uow) == list(range(2 + rounds))
    assert (await chain.verify_log()).ok

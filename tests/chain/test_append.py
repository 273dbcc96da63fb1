"""The append fast paths, on SQLite and PostgreSQL: the guessed head (one statement per append on
PostgreSQL), what happens when the guess is wrong, the bounded turn between appends of one
process, rows written straight through the driver, and the fact text check."""

from __future__ import annotations

import hashlib
import unicodedata
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from chittyos.chain import ChainLog, Fact, store
from chittyos.chain import facts as facts_module
from chittyos.db import UnitOfWork
from chittyos.db.models import ChainFact, ChainNode
from chittyos.errors import IntegrityError, InvalidInput
from tests.chain.conftest import LOG_KEY, append_all, insert_stray_fact, make_fact
from tests.chain.test_log import mth, stored_leaves

pytestmark = pytest.mark.anyio


class Statements:
    """Counts what ``lock_head`` reports: how many appends wrote with their locking statement."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.guessed = self.written = self.writes = 0
        lock_head, write_leaves = store.lock_head, store.write_leaves

        async def counting_lock_head(*args: object, **kwargs: object) -> store.LockedHead | None:
            locked = await lock_head(*args, **kwargs)  # type: ignore[arg-type]
            self.guessed += kwargs.get("guess") is not None
            self.written += bool(locked is not None and locked.written)
            return locked

        async def counting_write_leaves(*args: object, **kwargs: object) -> bool:
            self.writes += 1
            return await write_leaves(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "lock_head", counting_lock_head)
        monkeypatch.setattr(store, "write_leaves", counting_write_leaves)


async def stored_nodes(uow: UnitOfWork) -> dict[tuple[int, int], bytes]:
    async with uow.read() as session:
        rows = (await session.execute(select(ChainNode.level, ChainNode.index, ChainNode.hash))).all()
    return {(level, index): bytes(h) for level, index, h in rows}


def reference_nodes(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every complete subtree of the tree of ``leaves``, by the naive RFC 9162 recursion."""
    return {
        (level, index): mth(leaves[index << level : (index + 1) << level])
        for level in range(len(leaves).bit_length())
        for index in range(len(leaves) >> level)
    }


async def test_appends_after_the_first_write_with_the_locking_statement_on_postgres(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Statements(monkeypatch)
    facts = [make_fact(n) for n in range(23)]
    await append_all(chain, uow, facts[:1])
    await append_all(chain, uow, facts[1:12])
    await append_all(chain, uow, facts[12:], batch=5)
    postgres = engine.dialect.name == "postgresql"
    # The first append has nothing to guess from; every later one guesses right on PostgreSQL.
    # SQLite never guesses (its write lock is the transaction's; a guess would save nothing).
    appends = 1 + 11 + 3
    assert (counted.guessed, counted.written) == ((appends - 1, appends - 1) if postgres else (0, 0))
    assert counted.writes == (1 if postgres else appends)
    leaves = [f.leaf_bytes() for f in facts]
    assert await stored_nodes(uow) == reference_nodes(leaves)
    assert await stored_leaves(uow) == leaves
    report = await chain.verify_log()
    assert report.ok and report.tree_size == 23 and bytes.fromhex(report.root) == mth(leaves)


async def test_a_wrong_guess_writes_nothing_and_the_append_goes_on_from_the_locked_head(
    chain: ChainLog, uow: UnitOfWork, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two logs on one database (two processes): each one's guess is stale after the other wrote.
    other = ChainLog(uow=uow, signer=LOG_KEY)
    facts = [make_fact(n) for n in range(12)]
    await append_all(chain, uow, facts[:2])
    counted = Statements(monkeypatch)
    for n in range(2, 12, 2):
        await append_all(other, uow, facts[n : n + 1])
        await append_all(chain, uow, facts[n + 1 : n + 2])
    assert counted.written == 0  # every guess was stale: nothing written by a locking statement
    async with uow.read() as session:
        indices = await session.scalars(select(ChainFact.leaf_index).order_by(ChainFact.leaf_index))
        assert list(indices) == list(range(12))
    leaves = [f.leaf_bytes() for f in facts]
    assert await stored_leaves(uow) == leaves and await stored_nodes(uow) == reference_nodes(leaves)
    assert (await chain.verify_log()).ok


async def test_two_logs_writing_at_once_still_get_gapless_indices_and_one_tree(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    # Two processes' logs on one database, several writers each: a guessed statement that waited
    # for the other's lock finds another head (READ COMMITTED re-reads the locked row) and must
    # write nothing; the append then goes on from that head.
    other = ChainLog(uow=uow, signer=LOG_KEY)
    postgres = engine.dialect.name == "postgresql"
    writers, each = (3, 60) if postgres else (2, 15)
    work = {
        (log, w): [make_fact(k * 10_000 + w * 1_000 + n) for n in range(each)]
        for k, log in enumerate((chain, other))
        for w in range(writers)
    }

    async def writer(log: ChainLog, mine: list[Fact]) -> None:
        for n, fact in enumerate(mine):
            batch = [fact, make_fact(99_000 + n)] if n % 7 == 0 else [fact]  # shared facts too
            async with uow.begin() as session:
                try:
                    await log.append(session, batch)
                except IntegrityError:  # the shared fact appended by the other log meanwhile
                    await session.rollback()
                    async with uow.begin() as retry:
                        await log.append(retry, batch)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for (log, _), mine in work.items():
                tg.start_soon(writer, log, mine)
    expected = {f.leaf_bytes() for mine in work.values() for f in mine}
    expected |= {make_fact(99_000 + n).leaf_bytes() for n in range(0, each, 7)}
    async with uow.read() as session:
        indices = await session.scalars(select(ChainFact.leaf_index).order_by(ChainFact.leaf_index))
        assert list(indices) == list(range(len(expected)))
    leaves = await stored_leaves(uow)
    assert set(leaves) == expected and len(leaves) == len(expected)
    assert await stored_nodes(uow) == reference_nodes(leaves)
    assert (await chain.verify_log()).ok


async def test_a_guess_is_not_written_over_a_stored_fact_nor_after_a_rollback(
    chain: ChainLog, uow: UnitOfWork
) -> None:
    a, b, c = make_fact(1), make_fact(2), make_fact(3)
    await append_all(chain, uow, [a])
    async with uow.begin() as session:
        placed = await chain.append(session, [a, b])  # guessed with a new; a is stored: not written
    assert [(p.leaf_index, p.existed) for p in placed] == [(0, True), (1, False)]
    with pytest.raises(RuntimeError):
        async with uow.begin() as session:
            await chain.append(session, [c])  # the process now expects size 3 ...
            raise RuntimeError("the caller rolls back")
    async with uow.begin() as session:
        (again,) = await chain.append(session, [c])  # ... but the log has 2: no gap
    assert again.leaf_index == 2
    report = await chain.verify_log()
    assert report.ok and report.tree_size == 3


async def test_guessed_leaves_that_collide_with_stored_rows_fail_and_write_nothing(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    await append_all(chain, uow, [make_fact(n) for n in range(4)])
    await insert_stray_fact(engine, make_fact(99), leaf_index=4)  # behind the log's back; the head says 4
    with pytest.raises(IntegrityError, match=r"leaves 4\.\.5 conflicts with stored rows"):
        await append_all(chain, uow, [make_fact(10), make_fact(11)], batch=2)
    async with uow.read() as session:
        assert (await session.execute(text("SELECT tree_size FROM chitty_chain_head"))).scalar_one() == 4
        count = (await session.execute(text("SELECT count(*) FROM chitty_chain_nodes"))).scalar_one()
    assert count == len(reference_nodes([make_fact(n).leaf_bytes() for n in range(4)]))


# PostgreSQL only: SQLite serialises whole transactions (BEGIN IMMEDIATE), no second writer can queue.
@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_a_second_append_in_one_transaction_does_not_wait_for_an_append_queued_behind_it(
    chain: ChainLog, uow: UnitOfWork
) -> None:
    # T1 appends (and holds the log lock until it commits); another task's append takes its turn
    # and waits for that lock; T1 appends again. Waiting for the turn without bound would deadlock.
    await append_all(chain, uow, [make_fact(0)])
    queued = anyio.Event()
    with anyio.fail_after(30):
        async with uow.begin() as session:
            await chain.append(session, [make_fact(1)])
            async with anyio.create_task_group() as tg:

                async def behind() -> None:
                    queued.set()
                    await append_all(chain, uow, [make_fact(3)])

                tg.start_soon(behind)
                await queued.wait()
                while not chain._turn.locked():  # it takes the turn, then waits for our lock
                    await anyio.sleep(0.005)
                await anyio.sleep(0.05)
                started = anyio.current_time()
                await chain.append(session, [make_fact(2)])
                assert anyio.current_time() - started < 5
                await session.commit()
    async with uow.read() as session:
        rows = (await session.execute(select(ChainFact.id, ChainFact.leaf_index))).all()
    assert {fact_id: index for fact_id, index in rows} == {
        make_fact(0).fact_id: 0,
        make_fact(1).fact_id: 1,
        make_fact(2).fact_id: 2,
        make_fact(3).fact_id: 3,
    }
    assert (await chain.verify_log()).ok


async def test_rows_written_through_the_driver_read_back_as_through_the_orm(
    chain: ChainLog, uow: UnitOfWork
) -> None:
    when = datetime(2026, 11, 30, 23, 59, 58, 123456, tzinfo=UTC)
    clocked = ChainLog(uow=uow, signer=LOG_KEY, clock=lambda: when)
    signed = Fact(
        subject="assertion:1",
        predicate="says",
        object="line one\u2028line two ü \"quoted\" \\ back",
        source="chittyos:assert",
        timestamp=1_764_547_200_000,
        evidence_id="ev-9",
        signer="a" * 40,
        signature="-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----",
    )
    await append_all(clocked, uow, [make_fact(1), signed], batch=2)
    await append_all(clocked, uow, [make_fact(2)])  # the guessed path on PostgreSQL
    async with uow.read() as session:
        rows = (await session.execute(select(ChainFact).order_by(ChainFact.leaf_index))).scalars().all()
        assert [r.created_at for r in rows] == [when] * 3
        assert [r.verification_status for r in rows] == ["unsigned", "unverified", "unsigned"]
        appended = (make_fact(1), signed, make_fact(2))
        assert [bytes(r.leaf_hash) for r in rows] == [f.leaf_hash for f in appended]
        head = (await session.execute(text("SELECT updated_at FROM chitty_chain_head"))).scalar_one()
    record = await chain.get(signed.fact_id)
    assert record.fact() == signed and record.created_at == when
    assert head is not None
    ids = [f.fact_id for f in (make_fact(1), signed, make_fact(2))]
    assert [hashlib.sha256(r.leaf_bytes()).hexdigest() for r in [await chain.get(i) for i in ids]] == ids


async def test_many_facts_in_one_append_and_many_ids_asked_for(chain: ChainLog, uow: UnitOfWork) -> None:
    # More ids than one IN list / SQLite variable limit would take, some stored already.
    first = [make_fact(n) for n in range(700)]
    await append_all(chain, uow, first, batch=700)
    more = [make_fact(n) for n in range(300, 1500)]
    async with uow.begin() as session:
        placed = await chain.append(session, more)
    assert [p.leaf_index for p in placed[:400]] == list(range(300, 700))
    assert all(p.existed for p in placed[:400]) and not any(p.existed for p in placed[400:])
    assert [p.leaf_index for p in placed[400:]] == list(range(700, 1500))
    report = await chain.verify_log()
    assert report.ok and report.tree_size == 1500


def test_the_text_check_refuses_exactly_the_control_and_surrogate_code_points() -> None:
    refused = {c for c in range(0x110000) if unicodedata.category(chr(c)) in ("Cc", "Cs")}
    assert {c for c in range(0x110000) if facts_module._FORBIDDEN.match(chr(c))} == refused
    multiline = {c for c in range(0x110000) if facts_module._FORBIDDEN_MULTILINE.match(chr(c))}
    assert multiline == refused - {0x0A}
    with pytest.raises(InvalidInput) as info:
        make_fact(1, subject="execution:\u0085x")
    assert (info.value.field, info.value.got) == ("subject", "U+0085 at offset 10")


# Format characters Unicode added after this project's oldest Python (3.11: Unicode 14.0); the
# check refuses them already.
CF_AFTER_UNICODE_14 = set(range(0x13439, 0x13440))


def test_identifier_fields_also_refuse_exactly_the_format_code_points() -> None:
    refused = {c for c in range(0x110000) if unicodedata.category(chr(c)) in ("Cc", "Cs", "Cf", "Zl", "Zp")}
    matched = {c for c in range(0x110000) if facts_module._IDENTIFIER.match(chr(c))}
    assert refused <= matched and matched - refused <= CF_AFTER_UNICODE_14
    for field in ("subject", "predicate", "source"):
        for char in ("\u202e", "\u200b", "\u2066", "\ufeff", "\U000e0041"):
            with pytest.raises(InvalidInput) as info:
                make_fact(1, **{field: f"ab{char}c"})
            assert (info.value.field, info.value.got) == (field, f"U+{ord(char):04X} at offset 2")
            assert info.value.rule.startswith("must not contain invisible format characters (Unicode Cf")
    for field in ("subject", "predicate", "source"):
        for char in ("\u2028", "\u2029"):
            with pytest.raises(InvalidInput) as info:
                make_fact(1, **{field: f"ab{char}c"})
            assert info.value.rule.startswith("must not contain line or paragraph separators")
    with pytest.raises(InvalidInput) as info:
        make_fact(1, subject="a\x07b")  # a control character keeps its own rule
    assert info.value.rule == "must not contain control characters or lone surrogates"
    # The object is free text: a right-to-left override, a zero-width joiner are kept.
    fact = make_fact(1, object="note: \u202eevil\u202c \U0001f469\u200d\U0001f4bb")
    assert "\u202e" in fact.object and b"\xe2\x80\xae" in fact.leaf_bytes()


def test_a_fact_leaf_is_the_canonical_json_of_its_fields() -> None:
    fact = make_fact(5, evidence_id="ev-\u2028", timestamp=1_764_547_200_000 + 5)
    assert fact.leaf_bytes() == facts_module.canonical_leaf(fact.fields())
    assert fact.when - datetime(1970, 1, 1, tzinfo=UTC) == timedelta(milliseconds=fact.timestamp)

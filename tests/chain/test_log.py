"""ChainLog on SQLite and PostgreSQL: appends, proofs, checkpoints, queries, concurrency, the subscriber."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import anyio
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from chittyos.app import App
from chittyos.chain import (
    ChainLog,
    CompactRange,
    Fact,
    NoteSigner,
    open_checkpoint,
    verify_consistency,
    verify_inclusion,
    verify_tlog_proof,
)
from chittyos.chain.proof_text import parse_tlog_proof
from chittyos.db import UnitOfWork
from chittyos.db.models import ChainCheckpoint, ChainFact, ChainNode, SecureExecution
from chittyos.errors import ConfigurationError, InvalidInput, NotFound
from chittyos.execution import ExecutionFailedError, ExecutionRequest
from tests.chain.conftest import LOG_KEY, LOG_ORIGIN, append_all, make_fact

pytestmark = pytest.mark.anyio


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, the naive recursion: the reference the stored tree must agree with."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


async def stored_leaves(uow: UnitOfWork) -> list[bytes]:
    """Leaf bytes recomputed from the fact rows, in index order."""
    async with uow.read() as session:
        rows = (await session.execute(select(ChainFact).order_by(ChainFact.leaf_index))).scalars().all()
        return [
            Fact(
                subject=r.subject,
                predicate=r.predicate,
                object=r.object,
                source=r.source,
                timestamp=r.timestamp,
                execution_id=r.execution_id,
                evidence_id=r.evidence_id,
                signer=r.signer,
                signature=r.signature,
            ).leaf_bytes()
            for r in rows
        ]


async def count(uow: UnitOfWork, model: Any) -> int:
    async with uow.read() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


# -- appends and proofs ---------------------------------------------------------------------------


async def test_appended_facts_get_proofs_that_verify_offline(chain: ChainLog, uow: UnitOfWork) -> None:
    facts = [make_fact(n) for n in range(37)]
    await append_all(chain, uow, facts[:5])
    await append_all(chain, uow, facts[5:30], batch=11)
    await append_all(chain, uow, facts[30:], batch=7)

    for n in (0, 1, 16, 31, 36):
        proof = await chain.inclusion_proof(facts[n].fact_id)
        assert proof.fact.leaf_index == n and proof.fact.fact_id == facts[n].fact_id
        assert proof.checkpoint.tree_size == 37
        # 1. the pure RFC 9162 verifier, from the parts
        verify_inclusion(
            facts[n].leaf_hash,
            n,
            37,
            [bytes.fromhex(h) for h in proof.inclusion],
            bytes.fromhex(proof.checkpoint.root_hash),
        )
        # 2. the C2SP text, as a third party would check it, with the published key only
        verified = verify_tlog_proof(
            proof.tlog_proof, verifier=LOG_KEY.verifier(), leaf=facts[n].leaf_bytes()
        )
        assert verified.index == n and verified.checkpoint.tree_size == 37
        assert verified.extra == facts[n].leaf_bytes()  # the entry travels with its proof
        assert proof.vkey == LOG_KEY.verifier().to_vkey()
    # 3. the root is the naive MTH of the leaves, and of what the rows hold
    leaves = [f.leaf_bytes() for f in facts]
    root = (await chain.latest_checkpoint()).root_hash  # type: ignore[union-attr]
    assert bytes.fromhex(root) == mth(leaves) == mth(await stored_leaves(uow))


async def test_every_stored_node_is_the_hash_of_its_subtree(chain: ChainLog, uow: UnitOfWork) -> None:
    facts = [make_fact(n) for n in range(45)]
    for start, size in ((0, 1), (1, 6), (7, 1), (8, 13), (21, 24)):
        await append_all(chain, uow, facts[start : start + size], batch=size)
    leaves = [f.leaf_bytes() for f in facts]
    async with uow.read() as session:
        rows = (await session.execute(select(ChainNode.level, ChainNode.index, ChainNode.hash))).all()
    stored = {(level, index): bytes(h) for level, index, h in rows}
    expected = {
        (level, index): mth(leaves[index << level : (index + 1) << level])
        for level in range(6)
        for index in range(len(leaves) >> level)
    }
    assert stored == expected


async def test_a_stored_fact_is_not_appended_again(chain: ChainLog, uow: UnitOfWork) -> None:
    a, b, c = make_fact(1), make_fact(2), make_fact(3)
    async with uow.begin() as session:
        first = await chain.append(session, [a, b, a])  # twice in one batch: one leaf
    assert [(x.leaf_index, x.existed) for x in first] == [(0, False), (1, False), (0, False)]
    async with uow.begin() as session:
        again = await chain.append(session, [b, c])
    assert [(x.fact_id, x.leaf_index, x.existed) for x in again] == [
        (b.fact_id, 1, True),
        (c.fact_id, 2, False),
    ]
    assert await count(uow, ChainFact) == 3
    assert (await chain.verify_log()).ok


async def test_append_now_commits_in_its_own_transaction(chain: ChainLog) -> None:
    (first,) = await chain.append_now([make_fact(1)])
    again = await chain.append_now([make_fact(2), make_fact(1)])
    assert (first.leaf_index, [(a.leaf_index, a.existed) for a in again]) == (0, [(1, False), (0, True)])
    assert (await chain.get(first.fact_id)).fact() == make_fact(1)


async def test_an_empty_append_does_nothing(chain: ChainLog, uow: UnitOfWork) -> None:
    async with uow.begin() as session:
        assert await chain.append(session, []) == []
    with pytest.raises(InvalidInput) as info:
        async with uow.begin() as session:
            await chain.append(session, [make_fact(1), {"subject": "x"}])  # type: ignore[list-item]
    assert info.value.field == "facts[1]"


async def test_a_rolled_back_append_leaves_no_gap(chain: ChainLog, uow: UnitOfWork) -> None:
    await append_all(chain, uow, [make_fact(n) for n in range(3)])
    with pytest.raises(RuntimeError, match="caller failed"):
        async with uow.begin() as session:
            await chain.append(session, [make_fact(10), make_fact(11)])
            raise RuntimeError("caller failed after appending")
    async with uow.begin() as session:
        (placed,) = await chain.append(session, [make_fact(4)])
    assert placed.leaf_index == 3
    report = await chain.verify_log()
    assert report.ok and report.tree_size == 4, report.findings
    with pytest.raises(NotFound):
        await chain.inclusion_proof(make_fact(10).fact_id)


async def test_concurrent_writers_get_gapless_indices_and_one_tree(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    postgres = engine.dialect.name == "postgresql"
    writers, each = (8, 500) if postgres else (4, 40)
    facts = [[make_fact(w * 100_000 + n) for n in range(each)] for w in range(writers)]

    async def writer(mine: list[Fact]) -> None:
        for fact in mine:  # one transaction, one session per fact
            async with uow.begin() as session:
                await chain.append(session, [fact])

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for mine in facts:
                tg.start_soon(writer, mine)

    async with uow.read() as session:
        indices = (
            await session.execute(select(ChainFact.leaf_index).order_by(ChainFact.leaf_index))
        ).scalars()
        assert list(indices) == list(range(writers * each))
    leaves = await stored_leaves(uow)
    assert sorted(leaves) == sorted(f.leaf_bytes() for mine in facts for f in mine)
    cr = CompactRange()
    cr.extend(hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves)
    checkpoint = await chain.checkpoint()
    assert checkpoint.tree_size == writers * each and bytes.fromhex(checkpoint.root_hash) == cr.root()
    report = await chain.verify_log()
    assert report.ok, report.findings[:5]


async def test_a_full_verify_while_writers_append_reports_nothing(chain: ChainLog, uow: UnitOfWork) -> None:
    await append_all(chain, uow, [make_fact(n) for n in range(300)], batch=50)
    await chain.checkpoint()

    async def writer() -> None:
        for n in range(300, 360):
            await append_all(chain, uow, [make_fact(n)])
            if n % 20 == 0:
                await chain.checkpoint()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            reports = [await chain.verify_log(page_size=16) for _ in range(3)]
    assert all(r.ok for r in reports), [r.findings for r in reports]
    assert (await chain.verify_log()).tree_size == 360


# -- checkpoints ----------------------------------------------------------------------------------


async def test_checkpoints_are_signed_lazily_not_per_append(chain: ChainLog, uow: UnitOfWork) -> None:
    facts = [make_fact(n) for n in range(60)]
    await append_all(chain, uow, facts[:50])
    assert await count(uow, ChainCheckpoint) == 0 and await chain.latest_checkpoint() is None

    first = await chain.inclusion_proof(facts[3].fact_id)  # asked for: signed now
    assert first.checkpoint.tree_size == 50 and await count(uow, ChainCheckpoint) == 1
    for n in (0, 17, 49):  # covered already: nothing new is signed
        assert (await chain.inclusion_proof(facts[n].fact_id)).checkpoint == first.checkpoint
    assert await chain.checkpoint() == first.checkpoint  # the log did not grow: the same one

    await append_all(chain, uow, facts[50:])
    assert await count(uow, ChainCheckpoint) == 1
    newer = await chain.inclusion_proof(facts[55].fact_id)
    assert newer.checkpoint.tree_size == 60 and await count(uow, ChainCheckpoint) == 2
    assert (await chain.inclusion_proof(facts[3].fact_id)).checkpoint.tree_size == 60  # the newest

    opened = open_checkpoint(newer.checkpoint.note, LOG_KEY.verifier())
    assert opened.origin == LOG_ORIGIN and opened.tree_size == 60
    assert base64.b64encode(bytes.fromhex(newer.checkpoint.root_hash)).decode() in newer.checkpoint.note


async def test_the_checkpointer_signs_every_n_leaves(uow: UnitOfWork) -> None:
    chain = ChainLog(uow=uow, signer=LOG_KEY, checkpoint_every=10, checkpoint_interval_s=3600)
    async with anyio.create_task_group() as tg:
        await tg.start(chain.run_checkpointer)
        await append_all(chain, uow, [make_fact(n) for n in range(9)])
        with anyio.fail_after(5):
            await anyio.sleep(0.05)
            assert await chain.latest_checkpoint() is None  # 9 < 10: nothing yet
            await append_all(chain, uow, [make_fact(9)])
            while (latest := await chain.latest_checkpoint()) is None:
                await anyio.sleep(0.01)
        assert latest.tree_size == 10
        tg.cancel_scope.cancel()


async def test_the_checkpointer_signs_after_the_interval_when_the_log_grew(uow: UnitOfWork) -> None:
    chain = ChainLog(uow=uow, signer=LOG_KEY, checkpoint_every=1000, checkpoint_interval_s=0.05)
    async with anyio.create_task_group() as tg:
        await tg.start(chain.run_checkpointer)
        await append_all(chain, uow, [make_fact(n) for n in range(3)])
        with anyio.fail_after(5):
            while (latest := await chain.latest_checkpoint()) is None or latest.tree_size < 3:
                await anyio.sleep(0.01)
        signed = await count(uow, ChainCheckpoint)
        await anyio.sleep(0.2)  # four intervals without appends: nothing new to sign
        assert await count(uow, ChainCheckpoint) == signed
        tg.cancel_scope.cancel()


async def test_cancelling_the_checkpointer_or_a_verify_leaks_no_connection(
    uow: UnitOfWork, engine: AsyncEngine
) -> None:
    # Cancelled inside a transaction, a session cannot roll back under anyio (every await raises
    # again): its connection would stay checked out and keep its locks. The DB work is shielded.
    chain = ChainLog(uow=uow, signer=LOG_KEY, checkpoint_every=1, checkpoint_interval_s=0.0001)
    for attempt in range(30):
        async with anyio.create_task_group() as tg:
            await tg.start(chain.run_checkpointer)
            await append_all(chain, uow, [make_fact(attempt)])
            await anyio.sleep(0.001 * (attempt % 5))
            tg.cancel_scope.cancel()
        assert engine.pool.checkedout() == 0, attempt
    await append_all(chain, uow, [make_fact(n) for n in range(100, 400)], batch=100)
    for attempt in range(5):
        with anyio.move_on_after(0.002 * attempt):
            await chain.verify_log(page_size=8)
        assert engine.pool.checkedout() == 0, attempt
    assert (await chain.verify_log()).ok


async def test_consistency_proofs_between_checkpoints_verify(chain: ChainLog, uow: UnitOfWork) -> None:
    await append_all(chain, uow, [make_fact(n) for n in range(20)], batch=20)
    old = await chain.checkpoint()
    await append_all(chain, uow, [make_fact(n) for n in range(20, 33)], batch=5)
    proof = await chain.consistency(old.tree_size)  # to the newest checkpoint, signed on demand
    assert (proof.old_size, proof.new_size) == (20, 33) and proof.checkpoint is not None
    assert proof.old_root == old.root_hash and proof.new_root == proof.checkpoint.root_hash
    verify_consistency(
        20,
        33,
        [bytes.fromhex(h) for h in proof.proof],
        bytes.fromhex(old.root_hash),
        bytes.fromhex(proof.new_root),
    )
    between = await chain.consistency(7, 29)
    assert between.checkpoint is None
    leaves = [make_fact(n).leaf_bytes() for n in range(33)]
    assert bytes.fromhex(between.new_root) == mth(leaves[:29]) and bytes.fromhex(between.old_root) == mth(
        leaves[:7]
    )
    verify_consistency(7, 29, [bytes.fromhex(h) for h in between.proof], mth(leaves[:7]), mth(leaves[:29]))
    for old_size, new_size, field in ((0, 5, "old_size"), (6, 5, "old_size"), (5, 34, "new_size")):
        with pytest.raises(InvalidInput) as info:
            await chain.consistency(old_size, new_size)
        assert info.value.field == field


# -- reading --------------------------------------------------------------------------------------


async def test_query_filters_and_pages_in_log_order(chain: ChainLog, uow: UnitOfWork) -> None:
    facts = [
        make_fact(
            n,
            predicate="completed" if n % 2 else "prompt",
            source=f"chittyos:{'fortress' if n < 4 else 'standard'}",
            subject=f"execution:{n % 3}",
            evidence_id="ev-1" if n == 5 else None,
        )
        for n in range(10)
    ]
    await append_all(chain, uow, facts, batch=4)
    page = await chain.query(subject="execution:1")
    assert [r.leaf_index for r in page.facts] == [1, 4, 7] and not page.has_more
    page = await chain.query(predicate="completed", source="chittyos:standard")
    assert [r.leaf_index for r in page.facts] == [5, 7, 9]
    assert [r.leaf_index for r in (await chain.query(evidence_id="ev-1")).facts] == [5]
    assert [r.leaf_index for r in (await chain.query(execution_id="exec-2")).facts] == [2]
    since, until = facts[3].timestamp, facts[6].timestamp
    assert [r.leaf_index for r in (await chain.query(since=since, until=until)).facts] == [3, 4, 5]
    assert [r.leaf_index for r in (await chain.query(since=facts[8].when)).facts] == [8, 9]
    first = await chain.query(limit=4)
    second = await chain.query(limit=4, offset=4)
    last = await chain.query(limit=4, offset=8)
    assert [r.leaf_index for r in first.facts + second.facts + last.facts] == list(range(10))
    assert first.has_more and second.has_more and not last.has_more
    record = first.facts[2]
    assert record.fact() == facts[2] and record.leaf_hash == facts[2].leaf_hash.hex()
    assert record.verification_status == "unsigned" and record.created_at.tzinfo is not None
    for kwargs, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"offset": -1}, "offset"),
        ({"subject": ""}, "subject"),
        ({"since": "yesterday"}, "since"),
    ):
        with pytest.raises(InvalidInput) as info:
            await chain.query(**kwargs)
        assert info.value.field == field


async def test_unknown_and_malformed_fact_ids(chain: ChainLog, uow: UnitOfWork) -> None:
    await append_all(chain, uow, [make_fact(1)])
    with pytest.raises(NotFound):
        await chain.inclusion_proof("ab" * 32)
    with pytest.raises(NotFound):
        await chain.get("ab" * 32)
    for bad in ("xyz", "ab" * 31, 5):
        with pytest.raises(InvalidInput) as info:
            await chain.inclusion_proof(bad)  # type: ignore[arg-type]
        assert info.value.field == "fact_id"
    assert (await chain.get(make_fact(1).fact_id.upper())).leaf_index == 0


async def test_a_log_of_another_origin_is_refused(chain: ChainLog, uow: UnitOfWork) -> None:
    await append_all(chain, uow, [make_fact(1)])
    other = ChainLog(uow=uow, signer=NoteSigner(name="other.example/chain", seed=bytes(32)))
    with pytest.raises(ConfigurationError, match="CHITTY_LOG_ORIGIN"):
        await append_all(other, uow, [make_fact(2)])
    with pytest.raises(ConfigurationError, match="CHITTY_LOG_ORIGIN"):
        await other.checkpoint()
    assert await count(uow, ChainFact) == 1


async def test_verify_runs_extra_checks_per_fact(chain: ChainLog, uow: UnitOfWork) -> None:
    facts = [make_fact(n) for n in range(5)]
    await append_all(chain, uow, facts, batch=5)

    async def odd_subjects_fail(record: Any) -> str | None:
        return "subject is odd" if record.leaf_index % 2 else None

    report = await chain.verify([f.fact_id for f in facts], checks={"parity": odd_subjects_fail})
    assert not report.ok
    assert [(x.check, x.leaf_index) for x in report.findings] == [("check.parity", 1), ("check.parity", 3)]
    assert report.checkpoint is not None and report.checkpoint.tree_size == 5
    assert all(v.record is not None for v in report.facts)
    clean = await chain.verify([facts[0].fact_id, facts[0].fact_id])
    assert clean.ok and len(clean.facts) == 1
    for bad in ([], "ab" * 32, ["nope"]):
        with pytest.raises(InvalidInput):
            await chain.verify(bad)  # type: ignore[arg-type]


# -- the ExecutionCompleted subscriber, through the real ExecutionService ---------------------------


async def test_a_completed_execution_is_in_the_log_with_its_fact_ids_on_the_row(app: App) -> None:
    chain = app.chain.log  # app.py wires the subscriber
    view = await app.executions.execute(
        ExecutionRequest(prompt="Summarise the lease", user_id="alice", case_id="C-7")
    )
    assert len(view.chain_facts) == 6
    assert (await app.executions.status(view.execution_id)).chain_facts == view.chain_facts
    records = [await chain.get(fact_id) for fact_id in view.chain_facts]
    completed = records[0]
    assert (completed.subject, completed.predicate) == (f"execution:{view.execution_id}", "completed")
    assert completed.object == f"sha256:{view.results.output_hash}"
    assert completed.source == "chittyos:standard" and completed.execution_id == view.execution_id
    assert completed.fact().when == view.completed_at.replace(
        microsecond=view.completed_at.microsecond // 1000 * 1000
    )
    assert [r.predicate for r in records] == [
        "completed",
        "prompt",
        "model",
        "requested_model",
        "requested_by",
        "case",
    ]
    assert view.model == "gpt-4o-mini"  # the model asked for (the default): the row's model column
    assert [r.object for r in records[1:]] == [
        f"sha256:{view.prompt_hash}",
        "gpt-4o-mini",
        view.model,
        "user:alice",
        "C-7",
    ]
    assert [r.leaf_index for r in records] == [0, 1, 2, 3, 4, 5]
    proof = await chain.inclusion_proof(completed.fact_id)
    verify_tlog_proof(proof.tlog_proof, verifier=chain.verifier, leaf=completed.leaf_bytes())
    assert parse_tlog_proof(proof.tlog_proof).index == 0


async def test_a_failing_append_rolls_the_completion_back(app: App) -> None:
    # The database's log belongs to another origin: the subscriber's append raises.
    other = ChainLog(uow=app.uow, signer=NoteSigner(name="other.example/chain", seed=bytes(32)))
    async with app.uow.begin() as session:
        await other.append(session, [make_fact(1)])
    with pytest.raises(ExecutionFailedError) as caught:
        await app.executions.execute(ExecutionRequest(prompt="hello", user_id="bob"))
    assert "CHITTY_LOG_ORIGIN" in caught.value.reason
    view = await app.executions.status(caught.value.execution_id)
    assert view.status == "failed" and view.chain_facts == []
    async with app.uow.read() as session:
        assert (await session.execute(select(func.count()).select_from(ChainFact))).scalar_one() == 1
        row = await session.get(SecureExecution, uuid.UUID(view.execution_id))
        assert row is not None and row.chain_facts == []
        size = (await session.execute(text("SELECT tree_size FROM chitty_chain_head"))).scalar_one()
        assert size == 1

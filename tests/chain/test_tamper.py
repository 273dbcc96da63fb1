"""Tampering with the stored log is reported by verify() and verify_log(), naming what and where.

Each test builds the same log (40 facts, checkpoints signed at 20 and 40), changes the database
behind the log's back with plain SQL, and checks the findings: their codes and their places.
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chittyos.chain import ChainLog, Checkpoint, CompactRange, Finding, NoteSigner, sign_checkpoint
from chittyos.db import UnitOfWork
from chittyos.errors import IntegrityError
from tests.chain.conftest import LOG_KEY, LOG_ORIGIN, append_all, make_fact

pytestmark = pytest.mark.anyio

N = 40
FACTS = [make_fact(n) for n in range(N)]
IDS = [f.fact_id for f in FACTS]


@pytest.fixture
async def built(chain: ChainLog, uow: UnitOfWork) -> ChainLog:
    await append_all(chain, uow, FACTS[:20], batch=6)
    assert (await chain.checkpoint()).tree_size == 20
    await append_all(chain, uow, FACTS[20:], batch=1)
    assert (await chain.checkpoint()).tree_size == N
    assert (await chain.verify(IDS)).ok and (await chain.verify_log(page_size=16)).ok
    return chain


async def sql(engine: AsyncEngine, *statements: str, **params: object) -> None:
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement), params)


def where(findings: Iterable[Finding]) -> set[tuple[object, ...]]:
    """(check, leaf index, node, checkpoint size) of each finding."""
    return {(f.check, f.leaf_index, f.node, f.tree_size) for f in findings}


def ancestors(index: int, size: int) -> set[tuple[object, ...]]:
    """node.mismatch places for every complete subtree above leaf ``index`` in a tree of ``size``."""
    out = set()
    level = 0
    while ((index >> level) + 1) << level <= size:
        out.add(("node.mismatch", None, (level, index >> level), None))
        level += 1
    return out


async def test_an_edited_fact_field(built: ChainLog, engine: AsyncEngine) -> None:
    await sql(engine, "UPDATE chitty_chain_facts SET object = 'sha256:forged' WHERE leaf_index = 13")

    report = await built.verify([IDS[12], IDS[13]])
    assert not report.ok and report.facts[0].ok
    assert where(report.facts[1].findings) == {
        ("fact.id", 13, None, None),
        ("fact.leaf_hash", 13, None, None),
        ("fact.inclusion", 13, None, N),
    }
    assert report.log_findings == ()

    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {
        ("fact.id", 13, None, None),
        ("fact.leaf_hash", 13, None, None),
        *ancestors(13, N),
        ("checkpoint.root", None, None, 20),
        ("checkpoint.root", None, None, N),
    }
    assert all(f.fact_id == IDS[13] for f in log.findings if f.check.startswith("fact."))


async def test_a_deleted_fact_row(built: ChainLog, engine: AsyncEngine) -> None:
    await sql(engine, "DELETE FROM chitty_chain_facts WHERE leaf_index = 7")

    report = await built.verify([IDS[7], IDS[8]])
    assert where(report.findings) == {("fact.missing", None, None, None)}
    assert report.facts[0].findings[0].fact_id == IDS[7] and report.facts[1].ok

    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {("index.gap", 7, None, None), ("head.size", None, None, None)}
    assert log.root == built_root(N) and log.counts == {"index.gap": 1, "head.size": 1}


async def test_two_facts_swapped_in_place(built: ChainLog, engine: AsyncEngine) -> None:
    await sql(
        engine,
        "UPDATE chitty_chain_facts SET leaf_index = 1000 WHERE leaf_index = 3",
        "UPDATE chitty_chain_facts SET leaf_index = 3 WHERE leaf_index = 9",
        "UPDATE chitty_chain_facts SET leaf_index = 9 WHERE leaf_index = 1000",
    )
    report = await built.verify([IDS[3], IDS[9], IDS[4]])
    assert where(report.findings) == {("fact.inclusion", 9, None, N), ("fact.inclusion", 3, None, N)}
    assert "; on its proof path, its own stored node (level 0, index 9) is another leaf hash (the fact was moved" in (
        report.findings[0].message
    )

    log = await built.verify_log(page_size=16)
    # Leaves 3 and 9 differ from the stored level-0 nodes, and so does every subtree above them.
    assert where(log.findings) == {
        *ancestors(3, N),
        *ancestors(9, N),
        ("checkpoint.root", None, None, 20),
        ("checkpoint.root", None, None, N),
    }
    assert ("node.mismatch", None, (5, 0), None) in where(log.findings) and len(log.findings) == 12


async def test_an_altered_subtree_hash(built: ChainLog, engine: AsyncEngine) -> None:
    # (2, 1) covers leaves 4..7; it is a sibling on the proof path of leaves 0..3.
    await sql(engine, 'UPDATE chitty_chain_nodes SET hash = :h WHERE level = 2 AND "index" = 1', h=bytes(32))

    report = await built.verify([IDS[0], IDS[5], IDS[30]])
    assert ("fact.inclusion", 0, None, N) in where(report.findings)
    assert report.facts[1].ok and report.facts[2].ok  # their paths do not use (2, 1)
    (inclusion,) = [f for f in report.findings if f.check == "fact.inclusion"]
    assert inclusion.message.endswith("stored node (level 2, index 1) != the hash of its two stored children")

    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {("node.mismatch", None, (2, 1), None)}
    assert log.findings[0].message.startswith("node (level 2, index 1): stored " + "00" * 32)


async def test_an_altered_leaf_node_is_named_by_its_own_fact_and_on_its_neighbours_path(
    built: ChainLog, engine: AsyncEngine
) -> None:
    # Fact 5 itself is intact (its proof starts from its recomputed leaf hash); the stored (0, 5)
    # is the sibling on fact 4's path. A new user saw only "calculated root ... != expected".
    await sql(engine, 'UPDATE chitty_chain_nodes SET hash = :h WHERE level = 0 AND "index" = 5', h=bytes(32))
    report = await built.verify([IDS[5], IDS[4], IDS[30]])
    assert where(report.findings) == {("fact.node", 5, None, None), ("fact.inclusion", 4, None, N)}
    own, path = report.findings
    assert "stored node (level 0, index 5) " + "00" * 32 + " != its leaf hash" in own.message
    assert path.message.endswith("stored node (level 0, index 5) != the leaf hash of the fact at that index")


async def test_a_missing_and_an_extra_node(built: ChainLog, engine: AsyncEngine) -> None:
    await sql(
        engine,
        'DELETE FROM chitty_chain_nodes WHERE level = 1 AND "index" = 6',
        'INSERT INTO chitty_chain_nodes (level, "index", hash) VALUES (0, 40, :h), (3, 5, :h)',
        h=bytes(32),
    )
    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {
        ("node.missing", None, (1, 6), None),
        ("node.unexpected", None, (0, 40), None),
        ("node.unexpected", None, (3, 5), None),
    }


async def test_a_replaced_checkpoint_note(built: ChainLog, engine: AsyncEngine) -> None:
    forger = NoteSigner(name=LOG_ORIGIN, seed=bytes(range(1, 33)))  # same name, not the log's key
    async with engine.connect() as conn:
        root = (
            await conn.execute(text("SELECT root_hash FROM chitty_chain_checkpoints WHERE tree_size = 40"))
        ).scalar_one()
    forged = sign_checkpoint(Checkpoint(LOG_ORIGIN, N, bytes(root)), forger)
    await sql(engine, "UPDATE chitty_chain_checkpoints SET note = :note WHERE tree_size = 40", note=forged)

    report = await built.verify([IDS[1]])
    assert where(report.log_findings) == {("checkpoint.signature", None, None, N)}
    assert where(report.facts[0].findings) == {("fact.inclusion", 1, None, None)}  # nothing to trust

    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {("checkpoint.signature", None, None, N)}
    with pytest.raises(IntegrityError, match="checkpoint at size 40 does not verify"):
        await built.inclusion_proof(IDS[1])


async def test_a_replaced_checkpoint_root(built: ChainLog, engine: AsyncEngine) -> None:
    await sql(engine, "UPDATE chitty_chain_checkpoints SET root_hash = :h WHERE tree_size = 20", h=bytes(32))

    report = await built.verify([IDS[1]])
    assert where(report.log_findings) == {("checkpoint.note", None, None, 20)}
    assert report.facts[0].ok  # checked against the newest (40), which is intact

    # The recompute is held to the root the note signs, which is intact: only the row's column is
    # wrong, and the finding says so (it names the column's value, not a "signed root").
    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {("checkpoint.note", None, None, 20)}
    assert "the row says root " + "00" * 32 in log.findings[0].message


async def test_a_checkpoint_row_no_note_signs_is_held_to_its_root_column_and_says_so(
    built: ChainLog, engine: AsyncEngine
) -> None:
    forger = NoteSigner(name=LOG_ORIGIN, seed=bytes(range(1, 33)))
    forged = sign_checkpoint(Checkpoint(LOG_ORIGIN, 20, bytes(32)), forger)
    await sql(
        engine,
        "UPDATE chitty_chain_checkpoints SET note = :note, root_hash = :h WHERE tree_size = 20",
        note=forged,
        h=bytes(32),
    )
    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {("checkpoint.signature", None, None, 20), ("checkpoint.root", None, None, 20)}
    (root,) = [f for f in log.findings if f.check == "checkpoint.root"]
    assert root.message.startswith("checkpoint at size 20: the stored root_hash column (its note does not sign")
    assert "00" * 32 + " != recomputed root " + built_root(20) in root.message
    assert "signed root" not in root.message


async def test_an_edited_fact_is_held_to_the_signed_root(built: ChainLog, engine: AsyncEngine) -> None:
    await sql(engine, FACT_13.format("object = 'sha256:forged'"))
    log = await built.verify_log(page_size=16)
    (at_20,) = [f for f in log.findings if f.check == "checkpoint.root" and f.tree_size == 20]
    assert at_20.message.startswith(f"checkpoint at size 20: signed root {built_root(20)} != recomputed root ")


async def test_a_previous_checkpoint_moved_to_another_size(built: ChainLog, engine: AsyncEngine) -> None:
    # A genuine note (size 20) copied into the row of size 40: signature fine, size wrong.
    await sql(
        engine,
        "UPDATE chitty_chain_checkpoints SET note = (SELECT note FROM chitty_chain_checkpoints WHERE tree_size = 20) "
        "WHERE tree_size = 40",
    )
    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {("checkpoint.note", None, None, N)}
    assert where((await built.verify([IDS[0]])).log_findings) == {("checkpoint.note", None, None, N)}


async def test_signing_refuses_a_tree_inconsistent_with_the_last_checkpoint(
    built: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    # A checkpoint correctly signed by the log key for another history at size 40 (a rewritten log).
    other = sign_checkpoint(Checkpoint(LOG_ORIGIN, N, bytes(range(32))), LOG_KEY)
    await sql(
        engine,
        "UPDATE chitty_chain_checkpoints SET note = :note, root_hash = :root WHERE tree_size = 40",
        note=other,
        root=bytes(range(32)),
    )
    await append_all(built, uow, [make_fact(100)])
    with pytest.raises(IntegrityError, match="not consistent with the checkpoint signed at size 40"):
        await built.checkpoint()
    with pytest.raises(IntegrityError, match="not consistent"):
        await built.inclusion_proof(make_fact(100).fact_id)  # asks for a checkpoint: refused too
    async with uow.read() as session:
        sizes = (
            await session.execute(text("SELECT tree_size FROM chitty_chain_checkpoints ORDER BY 1"))
        ).scalars()
        assert list(sizes) == [20, N]  # nothing was signed
    report = await built.verify([make_fact(100).fact_id, IDS[2]])
    assert ("checkpoint.signing", None, None, None) in where(report.log_findings)
    assert ("checkpoint.consistency", None, None, N) in where(report.log_findings)
    assert ("fact.uncovered", N, None, N) in where(report.findings)
    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {("checkpoint.root", None, None, N)}


async def test_a_changed_node_under_the_last_checkpoint_stops_signing(
    built: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    # (3, 4) covers leaves 32..39: the consistency proof from 40 to 41 passes through it.
    await sql(engine, 'UPDATE chitty_chain_nodes SET hash = :h WHERE level = 3 AND "index" = 4', h=bytes(32))
    await append_all(built, uow, [make_fact(100)])
    with pytest.raises(IntegrityError, match="refusing to sign"):
        await built.checkpoint()


async def test_corrupted_head_peaks_are_caught_before_anything_is_signed(
    built: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    await sql(engine, "UPDATE chitty_chain_head SET peaks = :p", p=bytes(64))  # 40 = 32 + 8: two peaks
    # Appending 8 completes (3, 5) and (4, 2) = H((3, 4), (3, 5)): the bad peak (3, 4) is refused.
    with pytest.raises(IntegrityError, match=r"the head's peak for node \(level \d, index \d\).*refusing to"):
        await append_all(built, uow, [make_fact(n) for n in range(100, 108)], batch=8)
    assert (await built.checkpoint()).tree_size == N  # nothing new to sign
    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {("head.peaks", None, None, None)}  # nothing was written

    await sql(engine, "UPDATE chitty_chain_head SET peaks = :p", p=bytes(33))  # not a whole number of peaks
    with pytest.raises(IntegrityError, match="peaks"):
        await append_all(built, uow, [make_fact(200)])


async def test_a_rewound_head_cannot_fork_the_log(
    built: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    # The head moved back to size 36 with the right peaks: the next append would branch at 36.
    async with engine.connect() as conn:
        peak = (
            await conn.execute(text('SELECT hash FROM chitty_chain_nodes WHERE level = 5 AND "index" = 0'))
        ).scalar_one()
        low = (
            await conn.execute(text('SELECT hash FROM chitty_chain_nodes WHERE level = 2 AND "index" = 8'))
        ).scalar_one()
    await sql(engine, "UPDATE chitty_chain_head SET tree_size = 36, peaks = :p", p=bytes(peak) + bytes(low))
    with pytest.raises(IntegrityError, match="leaves 36..36 conflicts with stored rows"):
        await append_all(built, uow, [make_fact(100)])
    async with uow.read() as session:
        assert (await session.execute(text("SELECT count(*) FROM chitty_chain_facts"))).scalar_one() == N


async def test_stray_rows_beyond_the_head(built: ChainLog, engine: AsyncEngine) -> None:
    stray = make_fact(500)
    await sql(
        engine,
        "INSERT INTO chitty_chain_facts (id, leaf_index, leaf_hash, subject, predicate, object, source, "
        "\"timestamp\", verification_status, created_at) VALUES (:id, 45, :h, 's', 'p', 'o', 'src', 1, 'unsigned', "
        "CURRENT_TIMESTAMP)",
        "INSERT INTO chitty_chain_checkpoints (tree_size, root_hash, note, signed_at) VALUES (99, :h, 'x', "
        "CURRENT_TIMESTAMP)",
        id=stray.fact_id,
        h=bytes(32),
    )
    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {
        ("index.beyond_head", 45, None, None),
        ("head.size", None, None, None),
        ("checkpoint.beyond_head", None, None, 99),
        ("checkpoint.signature", None, None, 99),
    }


async def test_findings_are_capped_and_counted(built: ChainLog, engine: AsyncEngine) -> None:
    await sql(engine, "UPDATE chitty_chain_facts SET source = 'forged'")
    log = await built.verify_log(page_size=16, max_findings=10)
    assert len(log.findings) == 10 and log.findings_dropped > 0
    assert sum(log.counts.values()) == 10 + log.findings_dropped
    assert log.counts["fact.id"] == N and log.counts["fact.leaf_hash"] == N


async def test_progress_is_reported_per_page(built: ChainLog) -> None:
    seen: list[tuple[int, int]] = []
    report = await built.verify_log(lambda done, total: seen.append((done, total)), page_size=16)
    assert report.ok and seen == [(16, N), (32, N), (N, N)]

    async def async_progress(done: int, total: int) -> None:
        seen.append((done, -total))

    await built.verify_log(async_progress, page_size=32)
    assert seen[-2:] == [(32, -N), (N, -N)]


def built_root(size: int) -> str:
    cr = CompactRange()
    cr.extend(f.leaf_hash for f in FACTS[:size])
    return cr.root().hex()


# -- what only the page aggregate could get wrong (scan.py): escapes, shifted bytes, types --------


async def test_a_field_forged_as_its_own_escaped_form(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine
) -> None:
    # The leaf of subject  say "7" \ back  holds  "say \"7\" \\ back". A row holding that escaped
    # text verbatim must not pass for the genuine one (quoting it without escaping would).
    facts = [make_fact(n, subject=f'say "{n}" \\ back', object=f"line\u2028{n}\u00e9") for n in range(N)]
    await append_all(chain, uow, facts[:20], batch=5)
    await chain.checkpoint()
    await append_all(chain, uow, facts[20:], batch=7)
    await chain.checkpoint()
    assert (await chain.verify_log(page_size=16)).ok
    forged = 'say \\"7\\" \\\\ back'
    await sql(engine, "UPDATE chitty_chain_facts SET subject = :s WHERE leaf_index = 7", s=forged)

    log = await chain.verify_log(page_size=16)
    assert where(log.findings) == {
        ("fact.id", 7, None, None),
        ("fact.leaf_hash", 7, None, None),
        *ancestors(7, N),
        ("checkpoint.root", None, None, 20),
        ("checkpoint.root", None, None, N),
    }


async def test_leaf_hashes_shifted_between_neighbours(built: ChainLog, engine: AsyncEngine) -> None:
    # 31 + 33 bytes: concatenated, the two stored leaf hashes are still the genuine ones.
    h4, h5 = FACTS[4].leaf_hash, FACTS[5].leaf_hash
    await sql(
        engine,
        "UPDATE chitty_chain_facts SET leaf_hash = :a WHERE leaf_index = 4",
        "UPDATE chitty_chain_facts SET leaf_hash = :b WHERE leaf_index = 5",
        a=h4[:31],
        b=h4[31:] + h5,
    )
    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {("fact.leaf_hash", 4, None, None), ("fact.leaf_hash", 5, None, None)}


async def test_node_hashes_shifted_between_neighbours(built: ChainLog, engine: AsyncEngine) -> None:
    h4, h5 = FACTS[4].leaf_hash, FACTS[5].leaf_hash
    await sql(
        engine,
        'UPDATE chitty_chain_nodes SET hash = :a WHERE level = 0 AND "index" = 4',
        'UPDATE chitty_chain_nodes SET hash = :b WHERE level = 0 AND "index" = 5',
        a=h4[:31],
        b=h4[31:] + h5,
    )
    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {
        ("node.mismatch", None, (0, 4), None),
        ("node.mismatch", None, (0, 5), None),
    }


FACT_13 = "UPDATE chitty_chain_facts SET {} WHERE leaf_index = 13"


# Only SQLite stores a value of another type than the column's (PostgreSQL columns are typed).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("change", "found"),
    [
        (FACT_13.format("subject = CAST(subject AS BLOB)"), "changed leaf"),
        (FACT_13.format('"timestamp" = "timestamp" + 0.5'), "changed leaf"),
        (FACT_13.format('"timestamp" = CAST("timestamp" AS BLOB)'), "changed leaf"),
        (FACT_13.format("id = CAST(id AS BLOB)"), "id"),
        ('UPDATE chitty_chain_nodes SET hash = hex(hash) WHERE level = 2 AND "index" = 1', "node"),
    ],
    ids=["blob-subject", "real-timestamp", "blob-timestamp", "blob-id", "text-node"],
)
async def test_a_value_of_another_type(
    built: ChainLog, engine: AsyncEngine, change: str, found: str
) -> None:
    # What the recompute reads then is not what a genuine row holds, even where the bytes agree.
    await sql(engine, change)
    log = await built.verify_log(page_size=16)
    expected = {
        "changed leaf": {
            ("fact.id", 13, None, None),
            ("fact.leaf_hash", 13, None, None),
            *ancestors(13, N),
            ("checkpoint.root", None, None, 20),
            ("checkpoint.root", None, None, N),
        },
        "id": {("fact.id", 13, None, None)},
        "node": {("node.mismatch", None, (2, 1), None)},
    }[found]
    assert where(log.findings) == expected


# -- a checkpoint is signed only over a tree the stored data produces ----------------------------


async def checkpoint_sizes(uow: UnitOfWork) -> list[int]:
    async with uow.read() as session:
        return list(
            (await session.execute(text("SELECT tree_size FROM chitty_chain_checkpoints ORDER BY 1"))).scalars()
        )


@pytest.mark.parametrize(("size", "signed_at"), [(15, None), (45, 32)], ids=["never-signed", "signed-at-32"])
async def test_peaks_of_the_right_length_but_wrong_values_are_refused_and_never_signed(
    chain: ChainLog, uow: UnitOfWork, engine: AsyncEngine, size: int, signed_at: int | None
) -> None:
    # The tester's case: 4 peaks (15 = 8+4+2+1, 45 = 32+8+4+1) overwritten with zeros, then 8
    # facts. From 32 the consistency proof alone would pass: the bad nodes lie beyond 32.
    facts = [make_fact(n) for n in range(size + 8)]
    if signed_at is not None:
        await append_all(chain, uow, facts[:signed_at], batch=8)
        assert (await chain.checkpoint()).tree_size == signed_at
    await append_all(chain, uow, facts[signed_at or 0 : size], batch=1)
    await sql(engine, "UPDATE chitty_chain_head SET peaks = :p", p=bytes(128))

    with pytest.raises(IntegrityError, match=r"refusing to append \(the head row or that stored node was changed: run `chittyos"):
        await append_all(chain, uow, facts[size:], batch=8)
    with pytest.raises(IntegrityError) as refused:
        await chain.checkpoint()
    assert str(refused.value).startswith(
        f"chain: refusing to sign a checkpoint at size {size}: the head's peak 0 ({'00' * 32}) is not the stored node"
    )
    assert "run `chittyos chain verify`" in str(refused.value)
    assert await checkpoint_sizes(uow) == ([] if signed_at is None else [signed_at])
    log = await chain.verify_log(page_size=16)
    assert where(log.findings) == {("head.peaks", None, None, None)}


TAIL = 53  # built (signed at 20 and 40) + 13 facts not yet signed


NODE = 'UPDATE chitty_chain_nodes SET hash = :z WHERE level = {} AND "index" = {}'
HASH = "[0-9a-f]{64}"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            NODE.format(1, 22),
            rf"node \(level 1, index 22\) \({HASH}\) is not H\(0x01 \|\| left \|\| right\) of its stored "
            r"children \(level 0, index 44\) and \(level 0, index 45\)",
        ),
        (NODE.format(0, 50), r"node \(level 0, index 50\) is not the leaf hash of the fact at index 50"),
        (
            "UPDATE chitty_chain_facts SET object = 'sha256:forged' WHERE leaf_index = 45",
            rf"fact {HASH} at index 45: its stored fields do not hash to its id and leaf hash",
        ),
        (
            "UPDATE chitty_chain_facts SET leaf_hash = :z WHERE leaf_index = 47",
            rf"fact {HASH} at index 47: its stored fields do not hash",
        ),
        ("DELETE FROM chitty_chain_facts WHERE leaf_index = 48", r"leaf 48 has no fact row"),
        (
            NODE.format(4, 2),
            rf"the head's peak 1 \({HASH}\) is not the stored node \(level 4, index 2\) \(0{{64}}\)",
        ),
    ],
    ids=["inner-node", "leaf-node", "fact-field", "leaf-hash", "missing-fact", "root-node"],
)
async def test_signing_checks_every_leaf_and_node_added_since_the_last_checkpoint(
    built: ChainLog, uow: UnitOfWork, engine: AsyncEngine, change: str, named: str
) -> None:
    await append_all(built, uow, [make_fact(n) for n in range(N, TAIL)], batch=1)
    await sql(engine, change, **({"z": bytes(32)} if ":z" in change else {}))
    with pytest.raises(IntegrityError, match=f"chain: refusing to sign a checkpoint at size {TAIL}: {named}"):
        await built.checkpoint()
    assert await checkpoint_sizes(uow) == [20, N]


async def test_the_background_checkpointer_refuses_too_and_signs_once_the_tree_is_whole_again(
    uow: UnitOfWork, engine: AsyncEngine
) -> None:
    chain = ChainLog(uow=uow, signer=LOG_KEY, checkpoint_every=4, checkpoint_interval_s=0.05)
    await append_all(chain, uow, FACTS[:TAIL - 13], batch=8)
    await chain.checkpoint()
    await append_all(chain, uow, [make_fact(n) for n in range(N, TAIL)], batch=1)
    async with engine.connect() as conn:
        query = text('SELECT hash FROM chitty_chain_nodes WHERE level = 1 AND "index" = 22')
        genuine = bytes((await conn.execute(query)).scalar_one())
    await sql(engine, NODE.format(1, 22), z=bytes(32))
    async with anyio.create_task_group() as tg:
        await tg.start(chain.run_checkpointer)
        await anyio.sleep(0.3)  # several rounds, each refused
        assert await checkpoint_sizes(uow) == [N]
        await sql(engine, NODE.format(1, 22), z=genuine)
        with anyio.fail_after(5):
            while await checkpoint_sizes(uow) != [N, TAIL]:
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()


# -- what the report counts and the order it names findings in ------------------------------------


async def stored_node_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM chitty_chain_nodes"))).scalar_one())


async def test_nodes_checked_counts_the_stored_nodes_compared(built: ChainLog, engine: AsyncEngine) -> None:
    """A deleted node was counted as checked: `chain verify` said 1518 stored nodes when 1517 remained."""
    whole = await built.verify_log(page_size=16)
    assert whole.nodes_checked == await stored_node_count(engine) == 40 + 20 + 10 + 5 + 2 + 1
    await sql(
        engine,
        'DELETE FROM chitty_chain_nodes WHERE level = 1 AND "index" = 6',
        'DELETE FROM chitty_chain_nodes WHERE level = 0 AND "index" = 39',
        # stored, so compared and counted, though it differs
        'UPDATE chitty_chain_nodes SET hash = :z WHERE level = 2 AND "index" = 1',
        z=bytes(32),
    )
    log = await built.verify_log(page_size=16)
    assert where(log.findings) == {
        ("node.missing", None, (1, 6), None),
        ("node.missing", None, (0, 39), None),
        ("node.mismatch", None, (2, 1), None),
    }
    assert log.nodes_checked == whole.nodes_checked - 2 == await stored_node_count(engine)


async def test_failed_signatures_are_reported_in_index_order(chain: ChainLog, uow: UnitOfWork) -> None:
    """Signatures are checked a few at a time and finish in any order; their findings came out
    as 0, 2, 1, 3, ... and, past the cap, whichever finished first were kept."""
    armor = "-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----"
    count = 12
    signed = [make_fact(n, signer="AB" * 20, signature=armor) for n in range(count)]
    await append_all(chain, uow, signed, batch=count)

    async def later_ones_first(values: object) -> str:
        n = int(values["subject"].removeprefix("execution:"))  # type: ignore[index]
        await anyio.sleep(0.003 * (count - n))
        return "BAD signature"

    log = await chain.verify_log(signatures=later_ones_first, page_size=16)
    assert [(f.check, f.leaf_index) for f in log.findings] == [("fact.signature", n) for n in range(count)]
    capped = await chain.verify_log(signatures=later_ones_first, page_size=16, max_findings=5)
    assert [f.leaf_index for f in capped.findings] == list(range(5)) and capped.findings_dropped == count - 5

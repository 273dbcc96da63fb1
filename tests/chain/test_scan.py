"""scan: the database writes each page's leaf bytes exactly as RFC 8785 (``rfc8785.dumps``) and
``facts.canonical_leaf_sorted`` do, and hands back the stored ids, leaf hashes and nodes as stored.

The logs here are written with plain SQL (facts, nodes and head computed in the test), so that
their fields can hold what ``Fact`` would refuse (control characters) and what only a changed
row holds (values of another type), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from chittyos.chain import ChainLog, CompactRange, scan
from chittyos.chain.facts import SORTED_FIELDS, canonical_leaf_sorted
from chittyos.chain.merkle import root_nodes
from chittyos.db import UnitOfWork, is_sqlite
from chittyos.db.models import ChainFact, ChainHead, ChainNode
from tests.chain.conftest import LOG_ORIGIN

pytestmark = pytest.mark.anyio

AWKWARD = [*"\"\\/'<>&~ :-abcXYZ019", "\u2028", "\u2029", "\u00e9", "\U0001f600", "\x7f", "\ufeff", "\u0085"]
CONTROLS = [chr(c) for c in range(1, 32)]
ARMOR = "-----BEGIN PGP SIGNATURE-----\n\niQEz\"\\x/+=\n=abcd\n-----END PGP SIGNATURE-----\n"


def text_value(rng: random.Random, controls: bool) -> str:
    pool = AWKWARD + (CONTROLS if controls else []) + [chr(rng.randrange(0x80, 0xD800))]
    return "".join(rng.choice(pool) for _ in range(rng.randrange(1, 30)))


def fields(rng: random.Random, *, controls: bool) -> tuple[Any, ...]:
    """One fact's fields in ``SORTED_FIELDS`` order, each optional one present or not."""
    values = {
        "subject": text_value(rng, controls),
        "predicate": text_value(rng, controls),
        "object": text_value(rng, controls),
        "source": text_value(rng, controls),
        "timestamp": rng.choice([0, 1, 1_764_547_200_123, 2**53 - 1]),
        "execution_id": rng.choice([None, text_value(rng, controls)]),
        "evidence_id": rng.choice([None, None, text_value(rng, controls)]),
        "signer": rng.choice([None, None, "A" * 40]),
    }
    values["signature"] = ARMOR if values["signer"] and rng.random() < 0.7 else None
    return tuple(values[key] for key in SORTED_FIELDS)


async def write_log(engine: AsyncEngine, rows: list[tuple[Any, ...]]) -> None:
    """Facts, nodes and head of a log of ``rows`` (fields in SORTED_FIELDS order), as appends would."""
    now = datetime.now(UTC)
    cr = CompactRange()
    facts, nodes = [], []
    for index, values in enumerate(rows):
        leaf = canonical_leaf_sorted(values)
        leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
        facts.append(
            {
                "id": hashlib.sha256(leaf).hexdigest(),
                "leaf_index": index,
                "leaf_hash": leaf_hash,
                **dict(zip(SORTED_FIELDS, values, strict=True)),
                "verification_status": "unsigned",
                "created_at": now,
            }
        )
        nodes += [{"level": lv, "index": ix, "hash": h} for lv, ix, h in cr.append(leaf_hash)]
    by_coord = {(n["level"], n["index"]): n["hash"] for n in nodes}
    peaks = b"".join(by_coord[node] for node in root_nodes(len(rows)))
    async with engine.begin() as conn:
        await conn.execute(insert(ChainFact.__table__), facts)
        await conn.execute(insert(ChainNode.__table__), nodes)
        await conn.execute(
            insert(ChainHead.__table__).values(
                log_id=1, origin=LOG_ORIGIN, tree_size=len(rows), peaks=peaks, updated_at=now
            )
        )


async def pages(uow: UnitOfWork, engine: AsyncEngine, size: int, page_size: int) -> list[list[scan.Page]]:
    """Every page of the log, read each way there is: in a session; on SQLite also by SqlitePages."""
    ranges = [(b, min(b + page_size, size)) for b in range(0, size, page_size)]
    ways = []
    async with uow.read() as session:
        ways.append([await scan.read_page(session, b, e) for b, e in ranges])
    path = scan.SqlitePages.path_of(engine.sync_engine)
    if path is not None:
        reader = scan.SqlitePages(path)
        try:
            ways.append([reader.read(b, e) for b, e in ranges])
        finally:
            reader.close()
    return ways


def jcs(values: tuple[Any, ...]) -> bytes:
    return rfc8785.dumps({k: v for k, v in zip(SORTED_FIELDS, values, strict=True) if v is not None})


async def test_every_leaf_is_written_as_rfc8785(
    engine: AsyncEngine, uow: UnitOfWork, database_url: str
) -> None:
    rng = random.Random(8785)
    rows = [fields(rng, controls=False) for _ in range(300)]
    await write_log(engine, rows)
    cr = CompactRange()
    stored: dict[int, list[bytes]] = {}
    for values in rows:
        for level, _, value in cr.append(hashlib.sha256(b"\x00" + canonical_leaf_sorted(values)).digest()):
            stored.setdefault(level, []).append(value)

    ways = await pages(uow, engine, len(rows), 128)
    assert len(ways) == (2 if is_sqlite(database_url) else 1)
    for way in ways:
        assert [p.clean for p in way] == [True, True, True]
        leaves = [leaf for p in way for leaf in p.leaves.split(b"\n")]
        assert leaves == [canonical_leaf_sorted(v) for v in rows] == [jcs(v) for v in rows]
        ids = " ".join(p.ids for p in way).split(" ")
        assert ids == [hashlib.sha256(leaf).hexdigest() for leaf in leaves]
        assert b"".join(p.leaf_hashes for p in way) == b"".join(stored[0])
        for level, values in stored.items():  # each page's run of each level, in index order
            runs = [p.runs[level] for p in way if level in p.runs]
            assert b"".join(blob for _, _, blob in runs) == b"".join(values)
            assert sum(count for _, count, _ in runs) == len(values)


async def test_control_characters_are_escaped_or_sent_row_by_row(
    engine: AsyncEngine, uow: UnitOfWork, chain: ChainLog, database_url: str
) -> None:
    rng = random.Random(31)
    rows = [fields(rng, controls=True) for _ in range(150)]
    await write_log(engine, rows)
    [page, *_] = (await pages(uow, engine, len(rows), 150))[0]
    genuine = b"\n".join(canonical_leaf_sorted(v) for v in rows)
    if is_sqlite(database_url):  # json_quote escapes them as RFC 8785 does
        assert page.leaves == genuine
    else:  # only put in quotes: no genuine leaf looks like that, so the page is taken row by row
        assert page.clean and page.leaves != genuine
    report = await chain.verify_log(page_size=64)
    assert report.ok and report.leaves_checked == len(rows), report.findings[:3]


_UNCLEAN = {
    # name: (the change on SQLite, on PostgreSQL; None where its typed columns cannot hold it)
    "blob-subject": ("UPDATE chitty_chain_facts SET subject = CAST(subject AS BLOB) WHERE leaf_index = 70", None),
    "blob-id": ("UPDATE chitty_chain_facts SET id = CAST(id AS BLOB) WHERE leaf_index = 70", None),
    "text-leaf-hash": ("UPDATE chitty_chain_facts SET leaf_hash = hex(leaf_hash) WHERE leaf_index = 70", None),
    "short-leaf-hash": ("UPDATE chitty_chain_facts SET leaf_hash = substr(leaf_hash, 1, 31) WHERE leaf_index = 70",)
    * 2,
    "missing-row": ("DELETE FROM chitty_chain_facts WHERE leaf_index = 70",) * 2,
}


@pytest.mark.parametrize(
    ("database_url", "change"),
    [
        pytest.param(backend, changes[n], id=f"{backend}-{name}", marks=marks)
        for name, changes in _UNCLEAN.items()
        for n, (backend, marks) in enumerate([("sqlite", ()), ("postgres", pytest.mark.postgres)])
        if changes[n] is not None
    ],
    indirect=["database_url"],
)
async def test_a_row_the_aggregate_cannot_take_makes_its_page_unclean(
    engine: AsyncEngine, uow: UnitOfWork, change: str
) -> None:
    rng = random.Random(4)
    await write_log(engine, [fields(rng, controls=False) for _ in range(200)])
    async with engine.begin() as conn:
        await conn.execute(text(change))
    for way in await pages(uow, engine, 200, 64):
        assert [p.clean for p in way] == [True, False, True, True]
        assert not way[1].leaves and not way[1].ids


async def test_nodes_out_of_shape_are_left_to_the_node_by_node_comparison(
    engine: AsyncEngine, uow: UnitOfWork, database_url: str
) -> None:
    rng = random.Random(5)
    await write_log(engine, [fields(rng, controls=False) for _ in range(64)])
    async with engine.begin() as conn:
        await conn.execute(text('DELETE FROM chitty_chain_nodes WHERE level = 1 AND "index" = 3'))
        await conn.execute(
            text('UPDATE chitty_chain_nodes SET hash = substr(hash, 1, 31) WHERE level = 2 AND "index" = 1')
        )
    for way in await pages(uow, engine, 64, 64):
        assert set(way[0].runs) == {0, 3, 4, 5, 6}  # levels 1 and 2 are compared node by node
        async with uow.read() as session:
            assert len((await scan.nodes_of_level(session, 1, 0, 31))) == 31
            by_index = await scan.nodes_of_level(session, 2, 0, 15)
        assert by_index[1] is None and all(isinstance(by_index[i], bytes) for i in (0, 2, 15))


async def test_verify_reads_the_same_through_the_session(
    engine: AsyncEngine, chain: ChainLog, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An in-memory SQLite database is only visible through the engine's connections: verify_log
    # then reads pages in the log's read transactions, as on PostgreSQL. Both ways must agree.
    rng = random.Random(6)
    await write_log(engine, [fields(rng, controls=False) for _ in range(100)])
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE chitty_chain_facts SET predicate = 'forged' WHERE leaf_index = 41"))
    assert (scan.SqlitePages.path_of(engine.sync_engine) is not None) == is_sqlite(database_url)
    files = await chain.verify_log(page_size=32)
    monkeypatch.setattr(scan.SqlitePages, "path_of", staticmethod(lambda engine: None))
    sessions = await chain.verify_log(page_size=32)
    assert files.findings == sessions.findings and files.root == sessions.root
    assert {(f.check, f.leaf_index) for f in files.findings if f.check.startswith("fact.")} == {
        ("fact.id", 41),
        ("fact.leaf_hash", 41),
    }

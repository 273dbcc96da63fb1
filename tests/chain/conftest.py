"""Shared data for the chain tests: the RFC 6962 / C2SP reference vectors, loaded once; and a
ChainLog on a migrated database (SQLite and PostgreSQL through the shared ``database_url``).

The vectors are the project's shared reference file (``../shared/testdata``). A copy lives in
``tests/data`` so that a clone on its own can run the suite; when the shared file is beside the
repository (CI, a workstation) the two must be byte-identical, so the copy never drifts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chittyos.chain import ChainLog, Fact, NoteSigner
from chittyos.db import UnitOfWork, create_engine, is_sqlite, make_session_factory, upgrade

REPO = Path(__file__).resolve().parents[2]
SHARED_VECTORS = REPO.parent / "shared" / "testdata" / "rfc6962_vectors.json"
VECTORS_PATH = REPO / "tests" / "data" / "rfc6962_vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


# -- the log on a database (SQLite and PostgreSQL via the shared ``database_url``) ----------------

LOG_ORIGIN = "chittyos.test/chain"
LOG_KEY = NoteSigner(name=LOG_ORIGIN, seed=bytes(range(32)))  # fixed: runs are repeatable


def make_fact(n: int, **overrides: object) -> Fact:
    """The n-th test fact: distinct per n, a realistic size."""
    values: dict[str, object] = {
        "subject": f"execution:{n:08d}",
        "predicate": "completed",
        "object": "sha256:" + f"{n:064x}",
        "source": "chittyos:standard",
        "timestamp": 1_764_547_200_000 + n,
        "execution_id": f"exec-{n}",
    }
    values.update(overrides)
    return Fact(**values)  # type: ignore[arg-type]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated, empty database (SQLite file per test; PostgreSQL truncated)."""
    if is_sqlite(database_url):
        await anyio.to_thread.run_sync(upgrade, database_url)
    created = create_engine(database_url, pool_size=12)
    yield created
    await created.dispose()


@pytest.fixture
def uow(engine: AsyncEngine) -> UnitOfWork:
    return UnitOfWork(session_factory=make_session_factory(engine))


@pytest.fixture
def chain(uow: UnitOfWork) -> ChainLog:
    return ChainLog(uow=uow, signer=LOG_KEY, checkpoint_every=1000, checkpoint_interval_s=60.0)


async def append_all(chain: ChainLog, uow: UnitOfWork, facts: list[Fact], *, batch: int = 1) -> None:
    """Append ``facts`` in transactions of ``batch`` facts each."""
    for start in range(0, len(facts), batch):
        async with uow.begin() as session:
            await chain.append(session, facts[start : start + batch])


async def insert_stray_fact(engine: AsyncEngine, fact: Fact, *, leaf_index: int) -> None:
    """Write ``fact`` at ``leaf_index`` straight into the facts table, as tampering would: no
    node, no move of the head."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO chitty_chain_facts (id, leaf_index, leaf_hash, subject, predicate, object, "
                'source, "timestamp", verification_status, created_at) '
                "VALUES (:id, :i, :h, :s, :p, :o, :src, :t, 'unsigned', :now)"
            ),
            {
                "id": fact.fact_id,
                "i": leaf_index,
                "h": fact.leaf_hash,
                "s": fact.subject,
                "p": fact.predicate,
                "o": fact.object,
                "src": fact.source,
                "t": fact.timestamp,
                "now": datetime.now(UTC),
            },
        )

"""The ChittyChain tables, as queries: the repository behind ``ChainLog``. No policy here.

Every function takes the caller's ``AsyncSession`` and runs inside its transaction. Core
statements on the tables (no ORM unit of work), so a full scan streams tuples.

An append is two statements whatever the batch size, both under the log lock:

    lock_head      SELECT tree_size, origin, peaks (+ which facts exist) FROM head FOR UPDATE
    write_leaves   INSERT facts, INSERT nodes, UPDATE head (size, peaks)

The lock is the head row's: ``SELECT ... FOR UPDATE`` on PostgreSQL (after waiting, READ
COMMITTED returns the row as the previous holder committed it, peaks included); on SQLite every
transaction already holds the database write lock (``BEGIN IMMEDIATE``, db/engine.py). On
PostgreSQL both statements go straight to psycopg on the session's own connection (same
transaction), as fixed SQL over arrays (``unnest``) the server prepares once, and the inserts and
the head update are one statement: SQLAlchemy's per-statement cost would otherwise be most of a
single-fact transaction and stretch the time the lock is held.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from chittyos.chain.facts import FACT_FIELDS
from chittyos.chain.merkle import NodeId
from chittyos.chain.records import FactRecord
from chittyos.db.models import ChainCheckpoint, ChainFact, ChainHead, ChainNode

__all__ = [
    "FACT_COLUMNS",
    "FACT_ROW_COLUMNS",
    "LOG_ID",
    "LockedHead",
    "checkpoint_at",
    "checkpoints",
    "ensure_head",
    "existing_facts",
    "facts_by_id",
    "head",
    "head_and_count",
    "insert_checkpoint",
    "is_postgres",
    "latest_checkpoints",
    "lock_checkpoints",
    "lock_head",
    "nodes",
    "nodes_of_level",
    "query_facts",
    "record_from_row",
    "scan_page",
    "stray_facts",
    "stray_nodes",
    "write_leaves",
]

LOG_ID = 1
"""One log per database; the head row's key."""
_CHECKPOINT_LOCK = 0x43_48_41_49_4E_43_50  # "CHAINCP": pg_advisory_xact_lock key for signing

FACTS = ChainFact.__table__
NODES = ChainNode.__table__
HEAD = ChainHead.__table__
CHECKPOINTS = ChainCheckpoint.__table__
FACT_COLUMNS = (
    FACTS.c.id,
    FACTS.c.leaf_index,
    FACTS.c.leaf_hash,
    FACTS.c.subject,
    FACTS.c.predicate,
    FACTS.c.object,
    FACTS.c.source,
    FACTS.c.timestamp,
    FACTS.c.execution_id,
    FACTS.c.evidence_id,
    FACTS.c.signer,
    FACTS.c.signature,
    FACTS.c.verification_status,
    FACTS.c.created_at,
)
_IN_CHUNK = 500  # coordinates / ids per IN list


def record_from_row(row: Any) -> FactRecord:
    """A ``FactRecord`` from a row of ``FACT_COLUMNS``."""
    return FactRecord(
        fact_id=row[0],
        leaf_index=row[1],
        leaf_hash=bytes(row[2]).hex(),
        subject=row[3],
        predicate=row[4],
        object=row[5],
        source=row[6],
        timestamp=row[7],
        execution_id=row[8],
        evidence_id=row[9],
        signer=row[10],
        signature=row[11],
        verification_status=row[12],
        created_at=row[13],
    )


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _insert(session: AsyncSession) -> Any:
    return pg_insert if is_postgres(session) else sqlite_insert


# -- head ---------------------------------------------------------------------------------------


async def head(session: AsyncSession) -> tuple[int, str, bytes] | None:
    """``(tree_size, origin, peaks)`` as committed (no lock), or None before the first append."""
    stmt = select(HEAD.c.tree_size, HEAD.c.origin, HEAD.c.peaks).where(HEAD.c.log_id == LOG_ID)
    row = (await session.execute(stmt)).first()
    return None if row is None else (row[0], row[1], bytes(row[2]))


async def ensure_head(session: AsyncSession, origin: str, now: datetime) -> None:
    """Create the head row (size 0) unless it exists."""
    stmt = _insert(session)(HEAD).values(log_id=LOG_ID, origin=origin, tree_size=0, peaks=b"", updated_at=now)
    await session.execute(stmt.on_conflict_do_nothing(index_elements=[HEAD.c.log_id]))


@dataclass(frozen=True)
class LockedHead:
    """The head as read under the log lock; ``write_leaves`` needs it (proof that the lock is held)."""

    tree_size: int
    origin: str
    peaks: bytes
    existing: dict[str, int]
    """``{fact id: leaf index}`` of the asked-for facts that are stored already."""
    _psycopg: Any = None


async def lock_head(session: AsyncSession, fact_ids: Sequence[str]) -> LockedHead | None:
    """Take the log lock and read the head, and which of ``fact_ids`` are stored already.
    None when there is no head row yet (``ensure_head`` first).

    On PostgreSQL the existing facts are read in the statement that waits for the lock, so a fact
    committed by the previous holder while we waited is not seen: appending it again then fails
    on the primary key (loudly, nothing written) instead of being skipped.
    """
    if is_postgres(session):
        raw = await _psycopg(session)
        # Fact ids are 64 hex digits: a PostgreSQL array literal needs no quoting.
        cursor = await raw.execute(_PG_LOCK_HEAD, ("{" + ",".join(fact_ids) + "}",))
        row = await cursor.fetchone()
        if row is None:
            return None
        existing = {k: int(v) for k, v in (row[3] or {}).items()}
        return LockedHead(row[0], row[1], bytes(row[2]), existing, raw)
    stmt = select(HEAD.c.tree_size, HEAD.c.origin, HEAD.c.peaks).where(HEAD.c.log_id == LOG_ID)
    row = (await session.execute(stmt)).first()
    if row is None:
        return None
    return LockedHead(row[0], row[1], bytes(row[2]), await existing_facts(session, fact_ids))


FACT_ROW_COLUMNS = ("id", "leaf_index", "leaf_hash", *FACT_FIELDS, "verification_status")
"""The keys of a fact row for ``write_leaves`` (``leaf_hash`` as bytes)."""


async def write_leaves(
    session: AsyncSession,
    locked: LockedHead,
    fact_rows: Sequence[dict[str, Any]],
    node_rows: Sequence[tuple[int, int, bytes]],
    *,
    tree_size: int,
    peaks: bytes,
    now: datetime,
) -> None:
    """Insert facts (dicts with ``FACT_ROW_COLUMNS``) and nodes ``(level, index, hash)``, and move
    the head to ``tree_size`` / ``peaks``, under the lock ``locked`` was read with.

    Raises ``sqlalchemy.exc.IntegrityError`` or ``psycopg.IntegrityError`` on a duplicate key."""
    if locked._psycopg is not None:
        # One JSON document per table: one parameter each, which psycopg passes as it is.
        facts_json = json.dumps(
            [{**row, "leaf_hash": row["leaf_hash"].hex()} for row in fact_rows],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        nodes_json = json.dumps([[lv, ix, h.hex()] for lv, ix, h in node_rows], separators=(",", ":"))
        await locked._psycopg.execute(_PG_WRITE_LEAVES, (now, facts_json, nodes_json, tree_size, peaks, now))
        return
    await session.execute(insert(FACTS), [{**row, "created_at": now} for row in fact_rows])
    await session.execute(insert(NODES), [{"level": lv, "index": ix, "hash": h} for lv, ix, h in node_rows])
    await session.execute(
        update(HEAD).where(HEAD.c.log_id == LOG_ID).values(tree_size=tree_size, peaks=peaks, updated_at=now)
    )


async def _psycopg(session: AsyncSession) -> Any:
    """The psycopg ``AsyncConnection`` under the session, inside the session's transaction."""
    return await _driver(session)


_PG_LOCK_HEAD = f"""
SELECT h.tree_size, h.origin, h.peaks,
       (SELECT json_object_agg(f.id, f.leaf_index) FROM chitty_chain_facts f WHERE f.id = ANY(%s::varchar[]))
  FROM chitty_chain_head h WHERE h.log_id = {LOG_ID} FOR UPDATE OF h
"""
_PG_WRITE_LEAVES = f"""
WITH facts AS (
  INSERT INTO chitty_chain_facts (id, leaf_index, leaf_hash, subject, predicate, object, source, "timestamp",
                                  execution_id, evidence_id, signer, signature, verification_status, created_at)
  SELECT r.id, r.leaf_index, decode(r.leaf_hash, 'hex'), r.subject, r.predicate, r.object, r.source,
         r."timestamp", r.execution_id, r.evidence_id, r.signer, r.signature, r.verification_status, %s
    FROM json_to_recordset(%s::json) AS r(id varchar, leaf_index bigint, leaf_hash text, subject varchar,
         predicate varchar, object text, source varchar, "timestamp" bigint, execution_id varchar,
         evidence_id varchar, signer varchar, signature text, verification_status varchar)
), nodes AS (
  INSERT INTO chitty_chain_nodes (level, "index", hash)
  SELECT (n->>0)::smallint, (n->>1)::bigint, decode(n->>2, 'hex') FROM json_array_elements(%s::json) AS n
)
UPDATE chitty_chain_head SET tree_size = %s, peaks = %s, updated_at = %s WHERE log_id = {LOG_ID}
"""


# -- facts --------------------------------------------------------------------------------------


async def existing_facts(session: AsyncSession, fact_ids: Sequence[str]) -> dict[str, int]:
    """``{fact id: leaf index}`` of those ids already in the log."""
    found: dict[str, int] = {}
    for chunk in _chunks(fact_ids):
        rows = await session.execute(select(FACTS.c.id, FACTS.c.leaf_index).where(FACTS.c.id.in_(chunk)))
        found.update((r[0], r[1]) for r in rows)
    return found


async def facts_by_id(session: AsyncSession, fact_ids: Sequence[str]) -> list[Row[Any]]:
    out: list[Row[Any]] = []
    for chunk in _chunks(fact_ids):
        out.extend(await session.execute(select(*FACT_COLUMNS).where(FACTS.c.id.in_(chunk))))
    return out


async def scan_page(
    session: AsyncSession, begin: int, end: int
) -> tuple[list[Any], dict[int, tuple[int, int, bytes]]]:
    """What a full recompute reads for leaves ``[begin, end)``, through the driver (no row objects):

    * the facts, in index order, as ``SCAN_COLUMNS`` tuples;
    * per level, the stored nodes completed by those leaves (``nodes_completed_in``) as
      ``{level: (first index, count, their hashes concatenated in index order)}``.
    """
    ranges = _completed_ranges(begin, end)
    raw = await _driver(session)
    if is_postgres(session):
        rows = await (await raw.execute(_PG_SCAN, (begin, end))).fetchall()
        cursor = await raw.execute(
            _PG_NODE_RUNS, ([r[0] for r in ranges], [r[1] for r in ranges], [r[2] for r in ranges])
        )
        runs = {level: (first, count, bytes(blob)) for level, first, count, blob in await cursor.fetchall()}
        return rows, runs
    rows = list(await (await raw.execute(_SQLITE_SCAN, (begin, end))).fetchall())
    # Concatenated by SQLite: one row per level instead of one per node. group_concat follows the
    # ordered subquery in practice but does not promise to; a run out of order only sends that
    # level to the one-by-one comparison (nodes_of_level), it cannot pass a wrong node.
    where = " OR ".join(['(level = ? AND "index" BETWEEN ? AND ?)'] * len(ranges))
    cursor = await raw.execute(
        "SELECT level, min(\"index\"), count(*), group_concat(hex(hash), '') FROM ("
        f'SELECT level, "index", hash FROM chitty_chain_nodes WHERE {where} ORDER BY level, "index"'
        ") GROUP BY level",
        [value for r in ranges for value in r],
    )
    return rows, {
        level: (first, count, bytes.fromhex(hashes))
        for level, first, count, hashes in await cursor.fetchall()
    }


async def nodes_of_level(session: AsyncSession, level: int, first: int, last: int) -> dict[int, bytes]:
    """``{index: hash}`` of the stored nodes at ``level`` with ``first <= index <= last``."""
    stmt = select(NODES.c.index, NODES.c.hash).where(
        NODES.c.level == level, NODES.c.index.between(first, last)
    )
    return {r[0]: bytes(r[1]) for r in await session.execute(stmt)}


def _completed_ranges(begin: int, end: int) -> list[tuple[int, int, int]]:
    """``(level, first index, last index)`` of the nodes completed by leaves ``[begin, end)``."""
    out = []
    level = 0
    while (end >> level) - 1 >= begin >> level:
        out.append((level, begin >> level, (end >> level) - 1))
        level += 1
    return out


async def _driver(session: AsyncSession) -> Any:
    """The driver's own connection (psycopg / aiosqlite) under the session, in its transaction."""
    connection = await session.connection()
    return (await connection.get_raw_connection()).driver_connection


_SCAN = (
    "SELECT id, leaf_index, leaf_hash, evidence_id, execution_id, object, predicate, signature, signer, "
    'source, subject, "timestamp" FROM chitty_chain_facts WHERE leaf_index >= {p} AND leaf_index < {p} '
    "ORDER BY leaf_index"
)
_PG_SCAN = _SCAN.format(p="%s")
_SQLITE_SCAN = _SCAN.format(p="?")
_PG_NODE_RUNS = """
SELECT r.level, a.first, a.n, a.hashes
  FROM unnest(%s::smallint[], %s::bigint[], %s::bigint[]) AS r(level, first, last)
 CROSS JOIN LATERAL (
       SELECT min(n."index") AS first, count(*) AS n, string_agg(n.hash, ''::bytea ORDER BY n."index") AS hashes
         FROM chitty_chain_nodes n WHERE n.level = r.level AND n."index" BETWEEN r.first AND r.last
       ) AS a
 WHERE a.n > 0
"""


def _head_size() -> Any:
    return select(HEAD.c.tree_size).where(HEAD.c.log_id == LOG_ID).scalar_subquery()


async def stray_facts(session: AsyncSession, limit: int) -> Sequence[Row[Any]]:
    """``(id, leaf_index)`` of facts at or beyond the head's size, read with the size in ONE
    statement (one snapshot: a concurrent append is not mistaken for a stray row)."""
    stmt = (
        select(FACTS.c.id, FACTS.c.leaf_index)
        .where(FACTS.c.leaf_index >= func.coalesce(_head_size(), 0))
        .order_by(FACTS.c.leaf_index)
        .limit(limit)
    )
    return (await session.execute(stmt)).all()


async def head_and_count(session: AsyncSession) -> tuple[int, bytes, int]:
    """``(tree_size, peaks, number of fact rows)`` in one statement (one snapshot)."""
    count = select(func.count()).select_from(FACTS).scalar_subquery()
    row = (
        await session.execute(select(HEAD.c.tree_size, HEAD.c.peaks, count).where(HEAD.c.log_id == LOG_ID))
    ).first()
    if row is None:
        return 0, b"", int((await session.execute(select(count))).scalar_one())
    return row[0], bytes(row[1]), int(row[2])


async def query_facts(
    session: AsyncSession, conditions: Iterable[Any], *, limit: int, offset: int
) -> Sequence[Row[Any]]:
    stmt = select(*FACT_COLUMNS).where(*conditions).order_by(FACTS.c.leaf_index).limit(limit).offset(offset)
    return (await session.execute(stmt)).all()


# -- nodes --------------------------------------------------------------------------------------


async def nodes(session: AsyncSession, coords: Iterable[NodeId]) -> dict[NodeId, bytes]:
    """The stored hashes of ``coords``, one query per 500 (missing ones are left out).

    Through the driver with fixed SQL on PostgreSQL (arrays) and a plain OR of primary-key lookups
    on SQLite (which scans the whole table for a row-value IN list): a proof's cost is this query.
    """
    wanted = list(dict.fromkeys(coords))
    found: dict[NodeId, bytes] = {}
    if not wanted:
        return found
    raw = await _driver(session)
    postgres = is_postgres(session)
    for chunk in _chunks(wanted):
        if postgres:
            cursor = await raw.execute(_PG_NODES, ([c[0] for c in chunk], [c[1] for c in chunk]))
        else:
            where = " OR ".join(['(level = ? AND "index" = ?)'] * len(chunk))
            cursor = await raw.execute(
                f'SELECT level, "index", hash FROM chitty_chain_nodes WHERE {where}',
                [value for c in chunk for value in c],
            )
        found.update(((level, index), bytes(value)) for level, index, value in await cursor.fetchall())
    return found


_PG_NODES = """
SELECT n.level, n."index", n.hash
  FROM unnest(%s::smallint[], %s::bigint[]) AS w(level, idx)
  JOIN chitty_chain_nodes n ON n.level = w.level AND n."index" = w.idx
"""


async def stray_nodes(session: AsyncSession, limit: int) -> Sequence[Row[Any]]:
    """``(level, index)`` of stored nodes a tree of the head's size does not have (index >= size
    >> level), read with the size in one statement."""
    bound = func.coalesce(_head_size(), 0).op(">>")(NODES.c.level)
    stmt = (
        select(NODES.c.level, NODES.c.index)
        .where(NODES.c.index >= bound)
        .order_by(NODES.c.level, NODES.c.index)
        .limit(limit)
    )
    return (await session.execute(stmt)).all()


# -- checkpoints --------------------------------------------------------------------------------


async def lock_checkpoints(session: AsyncSession) -> None:
    """Serialise checkpoint signers until the transaction ends (SQLite: BEGIN IMMEDIATE did)."""
    if is_postgres(session):
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHECKPOINT_LOCK})


async def latest_checkpoints(session: AsyncSession, n: int) -> Sequence[Row[Any]]:
    """The ``n`` checkpoints of largest tree size, largest first: ``(tree_size, root_hash, note, signed_at)``."""
    stmt = (
        select(CHECKPOINTS.c.tree_size, CHECKPOINTS.c.root_hash, CHECKPOINTS.c.note, CHECKPOINTS.c.signed_at)
        .order_by(CHECKPOINTS.c.tree_size.desc())
        .limit(n)
    )
    return (await session.execute(stmt)).all()


async def checkpoint_at(session: AsyncSession, size: int) -> Row[Any] | None:
    stmt = select(
        CHECKPOINTS.c.tree_size, CHECKPOINTS.c.root_hash, CHECKPOINTS.c.note, CHECKPOINTS.c.signed_at
    )
    return (await session.execute(stmt.where(CHECKPOINTS.c.tree_size == size))).first()


async def checkpoints(session: AsyncSession) -> Sequence[Row[Any]]:
    """Every checkpoint, smallest first: ``(tree_size, root_hash, note, signed_at)``."""
    stmt = select(
        CHECKPOINTS.c.tree_size, CHECKPOINTS.c.root_hash, CHECKPOINTS.c.note, CHECKPOINTS.c.signed_at
    )
    return (await session.execute(stmt.order_by(CHECKPOINTS.c.tree_size))).all()


async def insert_checkpoint(session: AsyncSession, size: int, root: bytes, note: str, now: datetime) -> None:
    """Store a signed checkpoint; one that exists at ``size`` already is kept."""
    stmt = _insert(session)(CHECKPOINTS).values(tree_size=size, root_hash=root, note=note, signed_at=now)
    await session.execute(stmt.on_conflict_do_nothing(index_elements=[CHECKPOINTS.c.tree_size]))


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
